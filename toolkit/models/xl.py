"""``xl``: a transformer over the user's history and target attention from each candidate.

The largest tier. Its knobs (``embedding_dim``, ``heads``, ``layers``, ``ffn_multiplier``, ``hidden``)
scale it from the small CPU demo to billions of parameters on a GPU. The history encoder runs once per
request; only the target attention and the MLP run per candidate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from toolkit.models.base import Parts, RankingModel
from toolkit.models.blocks import MLP, SparseEmbeddings, SplitLinear
from toolkit.models.registry import register
from toolkit.spec.schema import Features

_MASKED = -1.0e4


@dataclass(frozen=True)
class XLConfig:
    """Size knobs of ``xl``.

    Attributes:
        embedding_dim: Width of every embedding and of the history transformer.
        heads: Attention heads (must divide ``embedding_dim``).
        layers: Transformer layers over the history.
        ffn_multiplier: Feed-forward width as a multiple of ``embedding_dim``.
        hidden: Widths of the final MLP (at least one).
    """

    embedding_dim: int = 32
    heads: int = 2
    layers: int = 1
    ffn_multiplier: int = 2
    hidden: tuple[int, ...] = (256, 128)

    def __post_init__(self) -> None:
        if min(self.embedding_dim, self.heads, self.ffn_multiplier) < 1 or self.layers < 0:
            raise ValueError("embedding_dim, heads and ffn_multiplier must be positive, layers >= 0")
        if self.embedding_dim % self.heads:
            raise ValueError(f"heads ({self.heads}) must divide embedding_dim ({self.embedding_dim})")
        if not self.hidden or min(self.hidden) < 1:
            raise ValueError("hidden must be a non-empty list of positive widths")


class HistoryBlock(nn.Module):
    """One post-norm transformer layer over the history; padded positions are masked as keys."""

    def __init__(self, dim: int, heads: int, ffn_multiplier: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = nn.Sequential(
            nn.Linear(dim, ffn_multiplier * dim), nn.ReLU(), nn.Linear(ffn_multiplier * dim, dim)
        )
        self.norm2 = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor) -> torch.Tensor:
        """``x`` [B, L, D]; ``key_bias`` [B, 1, 1, L], 0 for real items and a large negative for padding."""
        b, length, dim = x.shape
        dh = dim // self.heads
        q, k, v = self.qkv(x).reshape(b, length, 3, self.heads, dh).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-1, -2) / math.sqrt(dh) + key_bias
        attended = (torch.softmax(scores, dim=-1) @ v).transpose(1, 2).reshape(b, length, dim)
        x = self.norm1(x + self.proj(attended))
        return self.norm2(x + self.ffn(x))


@register("xl", XLConfig)
class XL(RankingModel):
    """History transformer, then target attention from each candidate, then an MLP.

    The candidate's ad is the query, the encoded history the keys and values, and a learned null slot
    takes the attention of empty histories.
    """

    def __init__(self, features: Features, config: XLConfig) -> None:
        super().__init__()
        self.features = features
        d = config.embedding_dim
        self.heads = config.heads
        self.history_column = features.history_table_index
        self.user_embeddings = SparseEmbeddings(features.user_sparse, d)
        self.ad_embeddings = SparseEmbeddings(features.ad_sparse, d)
        self.positions = nn.Parameter(torch.randn(features.history.length, d) * 0.02)
        self.blocks = nn.ModuleList(
            HistoryBlock(d, config.heads, config.ffn_multiplier) for _ in range(config.layers)
        )
        self.key = nn.Linear(d, d)
        self.value = nn.Linear(d, d)
        self.query = nn.Linear(d, d)
        self.null_key = nn.Parameter(torch.zeros(config.heads, d // config.heads))
        self.null_value = nn.Parameter(torch.zeros(config.heads, d // config.heads))
        self.first = SplitLinear(
            self.user_embeddings.out_dim + features.user_dense,
            self.ad_embeddings.out_dim + features.ad_dense + 2 * d,
            config.hidden[0],
        )
        self.mlp = MLP(config.hidden[0], config.hidden[1:])
        self.out = nn.Linear(self.mlp.out_dim, 1)

    def user_side(
        self, user_dense: torch.Tensor, user_sparse: torch.Tensor, user_history: torch.Tensor
    ) -> Parts:
        """The user half of the first layer, and the history's attention keys, values and key bias."""
        mask = (user_history > 0).to(user_dense.dtype)
        key_bias = (1.0 - mask) * _MASKED
        x = self.ad_embeddings.tables[self.history_column](user_history) + self.positions
        for block in self.blocks:
            x = block(x, key_bias[:, None, None, :])
        b, length, d = x.shape
        dh = d // self.heads
        keys = self.key(x).reshape(b, length, self.heads, dh).transpose(1, 2)
        values = self.value(x).reshape(b, length, self.heads, dh).transpose(1, 2)
        user = self.first.user(torch.cat([self.user_embeddings(user_sparse), user_dense], dim=1))
        return user, keys, values, key_bias

    def candidate_side(self, ad_dense: torch.Tensor, ad_sparse: torch.Tensor) -> Parts:
        """Candidate embeddings, the candidate ad's attention query, and its item embedding."""
        item = self.ad_embeddings.tables[self.history_column](ad_sparse[:, self.history_column])
        n, d = item.shape
        query = self.query(item).reshape(n, self.heads, 1, d // self.heads)
        return torch.cat([self.ad_embeddings(ad_sparse), ad_dense], dim=1), query, item

    def broadcast(self, user: Parts, n: int, request_index: torch.Tensor | None) -> Parts:
        """One request's parts stay as they are: ``head`` attends with one GEMM per head."""
        if request_index is None:
            return user
        return super().broadcast(user, n, request_index)

    def head(self, user: Parts, candidate: Parts) -> torch.Tensor:
        """Target attention over the history, then the MLP.

        With one request (user parts of leading dim 1, serving) the N queries of a head attend to
        the one history as a single [N, dh] x [dh, L] product; with per-candidate user parts
        (training batches of many requests) each candidate attends to its own request's history.
        """
        user_proj, keys, values, key_bias = user
        features, query, item = candidate
        n, heads, _, dh = query.shape
        if keys.shape[0] == 1:
            attended = self._attend_one_request(query, keys[0], values[0], key_bias[0])
        else:
            attended = self._attend_per_candidate(query, keys, values, key_bias)
        joined = torch.cat([features, attended, attended * item], dim=1)
        hidden = torch.relu(user_proj + self.first.candidate(joined))
        return self.out(self.mlp(hidden)).squeeze(-1)

    def _attend_one_request(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, key_bias: torch.Tensor
    ) -> torch.Tensor:
        """``query`` [N, h, 1, dh]; ``keys``/``values`` [h, L, dh]; ``key_bias`` [L] -> [N, h * dh]."""
        n, heads, _, dh = query.shape
        q = query.squeeze(2).transpose(0, 1)
        scores = q @ keys.transpose(-1, -2) / math.sqrt(dh) + key_bias
        null_score = (q * self.null_key[:, None, :]).sum(-1, keepdim=True) / math.sqrt(dh)
        weights = torch.softmax(torch.cat([null_score, scores], dim=-1), dim=-1)
        attended = weights[..., 1:] @ values + weights[..., :1] * self.null_value[:, None, :]
        return attended.transpose(0, 1).reshape(n, heads * dh)

    def _attend_per_candidate(
        self, query: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, key_bias: torch.Tensor
    ) -> torch.Tensor:
        """``query`` [N, h, 1, dh]; ``keys``/``values`` [N, h, L, dh]; ``key_bias`` [N, L]."""
        n, heads, _, dh = query.shape
        scores = (query @ keys.transpose(-1, -2)).squeeze(2) / math.sqrt(dh) + key_bias[:, None, :]
        null_score = (query.squeeze(2) * self.null_key).sum(-1, keepdim=True) / math.sqrt(dh)
        weights = torch.softmax(torch.cat([null_score, scores], dim=-1), dim=-1)
        attended = (weights[..., 1:, None] * values).sum(2) + weights[..., :1] * self.null_value
        return attended.reshape(n, heads * dh)
