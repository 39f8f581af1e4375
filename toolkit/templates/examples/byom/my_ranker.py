"""An example of a user's own ranking model, written without the toolkit: a two-tower model.

The user tower (dense context, user ids, the mean of the history's embeddings) runs once per request;
the ad tower runs once per candidate; a small MLP scores each (user, ad) pair. It is request-centric:
``user``, ``user_ids`` and ``history`` have one row, ``ads`` and ``ad_ids`` have N.
"""

from __future__ import annotations

import torch
from torch import nn


class TwoTower(nn.Module):
    """Two towers meeting in an MLP; returns click logits [N, 1]."""

    def __init__(self, dim: int = 16, user_dense: int = 8, ad_dense: int = 4) -> None:
        super().__init__()
        self.user_ids = nn.ModuleList(nn.Embedding(v, dim) for v in (1024, 256, 16))
        self.ad_ids = nn.ModuleList(nn.Embedding(v, dim) for v in (8192, 2048, 64))
        self.history = self.ad_ids[2]
        self.user = nn.Sequential(nn.Linear(user_dense + 2 * dim, dim), nn.ReLU())
        self.ad = nn.Sequential(nn.Linear(ad_dense + dim, dim), nn.ReLU())
        self.head = nn.Sequential(nn.Linear(2 * dim, dim), nn.ReLU(), nn.Linear(dim, 1))

    def forward(
        self,
        user: torch.Tensor,
        user_ids: torch.Tensor,
        history: torch.Tensor,
        ads: torch.Tensor,
        ad_ids: torch.Tensor,
    ) -> torch.Tensor:
        """Logits [N, 1] for one request: user tensors [1, ...], candidate tensors [N, ...]."""
        ids = sum(table(user_ids[:, i]) for i, table in enumerate(self.user_ids))
        mask = (history > 0).unsqueeze(-1).float()
        pooled = (self.history(history) * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        u = self.user(torch.cat([user, ids, pooled], 1))
        item = sum(table(ad_ids[:, i]) for i, table in enumerate(self.ad_ids))
        a = self.ad(torch.cat([ads, item], 1))
        return self.head(torch.cat([u.expand(a.shape[0], -1), a], 1))


def build(dim: int = 16) -> TwoTower:
    """The factory the spec names (``my_ranker:build``)."""
    return TwoTower(dim)
