"""``standard``: a DCNv2-style cross network with mean-pooled history. The middle tier."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from toolkit.models.base import Parts, RankingModel
from toolkit.models.blocks import MLP, SparseEmbeddings, SplitLinear, masked_mean
from toolkit.models.registry import register
from toolkit.spec.schema import Features


@dataclass(frozen=True)
class StandardConfig:
    """Size knobs of ``standard``.

    Attributes:
        embedding_dim: Width of every embedding.
        cross_layers: Number of DCNv2 cross layers (full-rank).
        hidden: Widths of the deep MLP beside the cross network (at least one).
    """

    embedding_dim: int = 16
    cross_layers: int = 2
    hidden: tuple[int, ...] = (128, 64)

    def __post_init__(self) -> None:
        if self.embedding_dim < 1 or self.cross_layers < 1 or not self.hidden or min(self.hidden) < 1:
            raise ValueError(
                "embedding_dim, cross_layers and hidden widths must be positive, hidden non-empty"
            )


@register("standard", StandardConfig)
class Standard(RankingModel):
    """DCNv2 cross network beside a deep MLP.

    Cross layers compute x_{l+1} = x0 * (W_l x_l + b_l) + x_l over [user ids, user dense, pooled
    history, ad ids, ad dense]. The first cross and deep layers are split so their user half runs once
    per request.
    """

    def __init__(self, features: Features, config: StandardConfig) -> None:
        super().__init__()
        self.features = features
        d = config.embedding_dim
        self.history_column = features.history_table_index
        self.user_embeddings = SparseEmbeddings(features.user_sparse, d)
        self.ad_embeddings = SparseEmbeddings(features.ad_sparse, d)
        user_dim = self.user_embeddings.out_dim + features.user_dense + d
        ad_dim = self.ad_embeddings.out_dim + features.ad_dense
        width = user_dim + ad_dim
        self.first_cross = SplitLinear(user_dim, ad_dim, width)
        self.cross = nn.ModuleList(nn.Linear(width, width) for _ in range(config.cross_layers - 1))
        self.first_deep = SplitLinear(user_dim, ad_dim, config.hidden[0])
        self.deep = MLP(config.hidden[0], config.hidden[1:])
        self.out = nn.Linear(width + self.deep.out_dim, 1)

    def user_side(
        self, user_dense: torch.Tensor, user_sparse: torch.Tensor, user_history: torch.Tensor
    ) -> Parts:
        """User features x0_u, and their halves of the first cross and deep layers."""
        table = self.ad_embeddings.tables[self.history_column]
        pooled = masked_mean(table(user_history), (user_history > 0).to(user_dense.dtype))
        x0 = torch.cat([self.user_embeddings(user_sparse), user_dense, pooled], dim=1)
        return x0, self.first_cross.user(x0), self.first_deep.user(x0)

    def candidate_side(self, ad_dense: torch.Tensor, ad_sparse: torch.Tensor) -> Parts:
        """Candidate features x0_c, and their halves of the first cross and deep layers."""
        x0 = torch.cat([self.ad_embeddings(ad_sparse), ad_dense], dim=1)
        return x0, self.first_cross.candidate(x0), self.first_deep.candidate(x0)

    def head(self, user: Parts, candidate: Parts) -> torch.Tensor:
        """Cross network and deep MLP over the joined sides."""
        x0 = torch.cat([user[0], candidate[0]], dim=1)
        x = x0 * (user[1] + candidate[1]) + x0
        for layer in self.cross:
            x = x0 * layer(x) + x
        deep = self.deep(torch.relu(user[2] + candidate[2]))
        return self.out(torch.cat([x, deep], dim=1)).squeeze(-1)
