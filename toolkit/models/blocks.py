"""Small building blocks shared by the tiers."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from toolkit.spec.schema import SparseFeature


class MLP(nn.Sequential):
    """Linear + ReLU layers of the given widths (ReLU after every layer)."""

    def __init__(self, in_dim: int, widths: Sequence[int]) -> None:
        layers: list[nn.Module] = []
        for width in widths:
            layers += [nn.Linear(in_dim, width), nn.ReLU()]
            in_dim = width
        super().__init__(*layers)
        self.out_dim = in_dim


class SparseEmbeddings(nn.Module):
    """One ``nn.Embedding`` table per sparse feature; row 0 (missing) embeds to zeros.

    ``nn.Embedding`` exports as Gather, which TensorRT takes; ``nn.EmbeddingBag`` does not.
    """

    def __init__(self, features: Sequence[SparseFeature], dim: int) -> None:
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(f.vocab, dim, padding_idx=0) for f in features)
        self.dim = dim
        for table in self.tables:
            nn.init.normal_(table.weight, std=0.05)
            with torch.no_grad():
                table.weight[0].zero_()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        """Embed ``ids`` [B, S] into [B, S * dim] (the features' embeddings side by side)."""
        return torch.cat([table(ids[:, i]) for i, table in enumerate(self.tables)], dim=1)

    @property
    def out_dim(self) -> int:
        """Width of the concatenated embeddings."""
        return self.dim * len(self.tables)


class SplitLinear(nn.Module):
    """A linear layer over ``concat(user, candidate)``, split in two.

    The user half runs once per request, the candidate half once per candidate.
    """

    def __init__(self, user_dim: int, candidate_dim: int, out_dim: int) -> None:
        super().__init__()
        self.user = nn.Linear(user_dim, out_dim, bias=False)
        self.candidate = nn.Linear(candidate_dim, out_dim)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` [B, L, D] over the positions where ``mask`` [B, L] is 1 (zeros if none)."""
    weights = mask.unsqueeze(-1)
    total = (values * weights).sum(dim=1)
    return total / weights.sum(dim=1).clamp(min=1.0)
