"""``lite``: embeddings and a small MLP; no history. The cheapest tier."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from toolkit.models.base import Parts, RankingModel
from toolkit.models.blocks import MLP, SparseEmbeddings, SplitLinear
from toolkit.models.registry import register
from toolkit.spec.schema import Features


@dataclass(frozen=True)
class LiteConfig:
    """Size knobs of ``lite``.

    Attributes:
        embedding_dim: Width of every embedding.
        hidden: Widths of the MLP layers (at least one).
    """

    embedding_dim: int = 8
    hidden: tuple[int, ...] = (64, 32)

    def __post_init__(self) -> None:
        if self.embedding_dim < 1 or not self.hidden or min(self.hidden) < 1:
            raise ValueError("embedding_dim and every hidden width must be positive, hidden non-empty")


@register("lite", LiteConfig)
class Lite(RankingModel):
    """Embeddings of the user and ad ids plus dense features, one MLP over both sides."""

    def __init__(self, features: Features, config: LiteConfig) -> None:
        super().__init__()
        self.features = features
        self.user_embeddings = SparseEmbeddings(features.user_sparse, config.embedding_dim)
        self.ad_embeddings = SparseEmbeddings(features.ad_sparse, config.embedding_dim)
        self.first = SplitLinear(
            self.user_embeddings.out_dim + features.user_dense,
            self.ad_embeddings.out_dim + features.ad_dense,
            config.hidden[0],
        )
        self.mlp = MLP(config.hidden[0], config.hidden[1:])
        self.out = nn.Linear(self.mlp.out_dim, 1)

    def user_side(
        self, user_dense: torch.Tensor, user_sparse: torch.Tensor, user_history: torch.Tensor
    ) -> Parts:
        """The user half of the first layer, [B, hidden[0]]."""
        return (self.first.user(torch.cat([self.user_embeddings(user_sparse), user_dense], dim=1)),)

    def candidate_side(self, ad_dense: torch.Tensor, ad_sparse: torch.Tensor) -> Parts:
        """The candidate half of the first layer, [N, hidden[0]]."""
        return (self.first.candidate(torch.cat([self.ad_embeddings(ad_sparse), ad_dense], dim=1)),)

    def head(self, user: Parts, candidate: Parts) -> torch.Tensor:
        """MLP over the summed halves."""
        return self.out(self.mlp(torch.relu(user[0] + candidate[0]))).squeeze(-1)
