"""The learned routing gate: from what the router knows before a bigger tier runs, each one's gain.

Two designs, one contract. Both take the preprocessed request (and, in cheapest-first mode, the
cheapest tier's scores of its candidates) and return, per bigger tier, the expected log-loss gain
per candidate over the cheapest tier, as ``gains`` [1, T - 1].

- ``request`` (the default): a small request-centric model of its own. Embeddings of the user's ids
  and of the history's items (its own small tables; the history shares the table of the ad feature
  it indexes), a mean-pooled history, and for each candidate its embeddings, dense features and a
  one-head attention over the history (how close the candidate is to what the user engaged with),
  plus candidate-set statistics; in cheapest-first mode also the cheapest tier's score of each
  candidate and their spread. A per-candidate MLP gives each candidate's gain; the request's gain
  is their mean.
- ``summary``: an MLP over request summaries only (dense user features, history length, N).

Targets per candidate and bigger tier t: ``kl``, the label-free KL(p_t || p_0) (the log loss the
cheapest tier loses if tier t is right); ``gain``, the realised log-loss gain with the labels;
``blend``, their mean. ``toolkit calibrate`` fits one gate per target and keeps the one that routes
best on a held-back part of its data (see :mod:`toolkit.evaluate.calibrate`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from toolkit.models.blocks import MLP, SparseEmbeddings, SplitLinear
from toolkit.spec.schema import Features

__all__ = [
    "GATE_DESIGNS",
    "GATE_TARGETS",
    "GateData",
    "RequestGate",
    "SummaryGate",
    "candidate_targets",
    "predict",
    "train_gate",
]

GATE_DESIGNS = ("request", "summary")
GATE_TARGETS = ("kl", "gain", "blend")
_EPS = 1e-7
_MASKED = -1.0e4


def candidate_targets(scores: np.ndarray, labels: np.ndarray, target: str) -> np.ndarray:
    """Per candidate and bigger tier, the gain the gate learns [C, T - 1].

    Args:
        scores: [T, C] every tier's scores (cheapest first), out of sample for the gate's data.
        labels: [C] 0/1 labels (used by ``gain`` and ``blend``).
        target: ``kl``, ``gain`` or ``blend``.
    """
    if target not in GATE_TARGETS:
        raise ValueError(f"unknown gate target {target!r}; expected one of {', '.join(GATE_TARGETS)}")
    p = np.clip(scores.astype(np.float64), _EPS, 1 - _EPS)
    small, big = p[0], p[1:]
    kl = big * np.log(big / small) + (1 - big) * np.log((1 - big) / (1 - small))
    y = np.asarray(labels, dtype=np.float64)
    loss = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    gain = loss[0] - loss[1:]
    out = {"kl": kl, "gain": gain, "blend": 0.5 * (kl + gain)}[target]
    return out.T.astype(np.float32)


def _log_count(x: torch.Tensor) -> torch.Tensor:
    return torch.log1p(x.to(torch.float32))


class _Segments:
    """Per-request sums and means over candidate rows, for one request or a batch of them.

    With one request (``request_index`` None, serving and export) a sum over dim 0; with many
    (training) an ``index_add`` by each candidate's request. ``n`` [B] counts each one's candidates.
    """

    def __init__(self, request_index: torch.Tensor | None, requests: int, rows: torch.Tensor) -> None:
        self.index = request_index
        self.requests = requests
        self.n = self.sum(torch.ones_like(rows[:, :1]))[:, 0]

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        if self.index is None:
            return x.sum(0, keepdim=True)
        return torch.zeros((self.requests, *x.shape[1:]), dtype=x.dtype).index_add(0, self.index, x)

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.sum(x) / self.n.reshape(-1, *([1] * (x.dim() - 1)))

    def spread(self, x: torch.Tensor) -> torch.Tensor:
        """Standard deviation over each request's candidates."""
        mean = self.mean(x)
        return torch.sqrt((self.mean(x * x) - mean * mean).clamp(min=0.0) + 1e-6)

    def broadcast(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        if self.index is None:
            return x.expand(rows, *x.shape[1:])
        return x.index_select(0, self.index)


class _Gate(nn.Module):
    """What both designs share: per-candidate gains, and one request's gains as their mean."""

    def per_candidate(
        self,
        user_dense: torch.Tensor,
        user_sparse: torch.Tensor,
        user_history: torch.Tensor,
        ad_dense: torch.Tensor,
        ad_sparse: torch.Tensor,
        cheapest_score: torch.Tensor | None = None,
        request_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Each candidate's predicted gains [C, T - 1].

        Args:
            user_dense: FP32 [B, Du], preprocessed.
            user_sparse: INT64 [B, Su], folded ids.
            user_history: INT64 [B, L], folded ids, 0 = padding.
            ad_dense: FP32 [C, Da].
            ad_sparse: INT64 [C, Sa].
            cheapest_score: FP32 [C], the cheapest tier's scores (cheapest-first mode only).
            request_index: INT64 [C], the request of each candidate; None means B == 1.
        """
        raise NotImplementedError

    def forward(
        self,
        user_dense: torch.Tensor,
        user_sparse: torch.Tensor,
        user_history: torch.Tensor,
        ad_dense: torch.Tensor,
        ad_sparse: torch.Tensor,
        cheapest_score: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Predicted gains per candidate of one request, averaged over its candidates [1, T - 1]."""
        gains = self.per_candidate(user_dense, user_sparse, user_history, ad_dense, ad_sparse, cheapest_score)
        return gains.mean(0, keepdim=True)


class RequestGate(_Gate):
    """Per-candidate gains from the request's ids, history, candidates (and cheapest scores).

    Args:
        features: The request schema.
        outputs: Bigger tiers (T - 1).
        embedding_dim: Width of the gate's own embeddings.
        hidden: MLP widths (at least one).
        cheapest_first: Whether the cheapest tier's scores are an input.
    """

    def __init__(
        self,
        features: Features,
        outputs: int,
        embedding_dim: int = 8,
        hidden: Sequence[int] = (32,),
        cheapest_first: bool = False,
    ) -> None:
        super().__init__()
        d = embedding_dim
        self.cheapest_first = cheapest_first
        self.history_column = features.history_table_index
        self.user_embeddings = SparseEmbeddings(features.user_sparse, d)
        self.ad_embeddings = SparseEmbeddings(features.ad_sparse, d)
        self.query = nn.Linear(d, d, bias=False)
        self.scale = float(d) ** -0.5
        request_in = features.user_dense + self.user_embeddings.out_dim + d + 2 + 2 * features.ad_dense
        candidate_in = self.ad_embeddings.out_dim + features.ad_dense + d + 2
        if cheapest_first:
            request_in += 3
            candidate_in += 2
        self.first = SplitLinear(request_in, candidate_in, hidden[0])
        self.mlp = MLP(hidden[0], hidden[1:])
        self.out = nn.Linear(self.mlp.out_dim, outputs)

    def per_candidate(
        self,
        user_dense: torch.Tensor,
        user_sparse: torch.Tensor,
        user_history: torch.Tensor,
        ad_dense: torch.Tensor,
        ad_sparse: torch.Tensor,
        cheapest_score: torch.Tensor | None = None,
        request_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Each candidate's predicted gains [C, T - 1] (see :meth:`_Gate.per_candidate`)."""
        rows = ad_dense.shape[0]
        requests = user_dense.shape[0]
        seg = _Segments(request_index, requests, ad_dense)
        mask = (user_history > 0).to(torch.float32)
        table = self.ad_embeddings.tables[self.history_column]
        history = table(user_history)
        length = mask.sum(1, keepdim=True)
        pooled = (history * mask[..., None]).sum(1) / length.clamp(min=1.0)
        request = [
            user_dense,
            self.user_embeddings(user_sparse),
            pooled,
            _log_count(length),
            _log_count(seg.n[:, None]),
            seg.mean(ad_dense),
            seg.spread(ad_dense),
        ]
        item = table(ad_sparse[:, self.history_column])
        query = self.query(item)
        keys = seg.broadcast(history, rows)
        key_bias = (1.0 - seg.broadcast(mask, rows)) * _MASKED
        affinity = (keys @ query[:, :, None]).squeeze(-1) * self.scale + key_bias
        weights = torch.softmax(affinity, dim=-1) * (seg.broadcast(length, rows) > 0).to(torch.float32)
        attended = (weights[:, None, :] @ keys).squeeze(1)
        closest = affinity.max(dim=1, keepdim=True).values.clamp(min=-10.0)
        candidate = [
            self.ad_embeddings(ad_sparse),
            ad_dense,
            attended,
            closest,
            (item * attended).sum(1, keepdim=True),
        ]
        if self.cheapest_first:
            if cheapest_score is None:
                raise ValueError("a cheapest-first gate needs the cheapest tier's scores")
            p = cheapest_score.clamp(_EPS, 1 - _EPS)[:, None]
            entropy = -(p * torch.log(p) + (1 - p) * torch.log(1 - p))
            request += [seg.mean(p), seg.mean(entropy), torch.log1p(seg.sum(p))]
            candidate += [torch.log(p / (1 - p)), entropy]
        user = self.first.user(torch.cat(request, dim=1))
        hidden = torch.relu(seg.broadcast(user, rows) + self.first.candidate(torch.cat(candidate, dim=1)))
        return self.out(self.mlp(hidden))


class SummaryGate(_Gate):
    """An MLP over request summaries: dense user features, log history length, log N."""

    def __init__(
        self, features: Features, outputs: int, hidden: Sequence[int] = (32, 16), cheapest_first: bool = False
    ) -> None:
        super().__init__()
        self.cheapest_first = cheapest_first
        width = features.user_dense + 2 + (2 if cheapest_first else 0)
        self.net = nn.Sequential(MLP(width, hidden), nn.Linear(hidden[-1], outputs))
        self.register_buffer("mean", torch.zeros(width))
        self.register_buffer("scale", torch.ones(width))

    def summaries(
        self,
        user_dense: torch.Tensor,
        user_history: torch.Tensor,
        cheapest_score: torch.Tensor | None,
        seg: _Segments,
    ) -> torch.Tensor:
        """The MLP's inputs [B, F]: dense user features, log history length and log N.

        Cheapest first, also the mean cheapest score and the log of their sum.
        """
        parts = [user_dense, _log_count((user_history > 0).sum(1, keepdim=True)), _log_count(seg.n[:, None])]
        if self.cheapest_first:
            if cheapest_score is None:
                raise ValueError("a cheapest-first gate needs the cheapest tier's scores")
            p = cheapest_score.clamp(_EPS, 1 - _EPS)[:, None]
            parts += [seg.mean(p), torch.log1p(seg.sum(p))]
        return torch.cat(parts, dim=1)

    def per_candidate(
        self,
        user_dense: torch.Tensor,
        user_sparse: torch.Tensor,
        user_history: torch.Tensor,
        ad_dense: torch.Tensor,
        ad_sparse: torch.Tensor,
        cheapest_score: torch.Tensor | None = None,
        request_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The request's predicted gains repeated on each of its candidates [C, T - 1]."""
        seg = _Segments(request_index, user_dense.shape[0], ad_dense)
        x = self.summaries(user_dense, user_history, cheapest_score, seg)
        return seg.broadcast(self.net((x - self.mean) / self.scale), ad_dense.shape[0])


@dataclass(frozen=True)
class GateData:
    """Preprocessed requests, as torch tensors, with what the gate learns from them.

    Attributes:
        tensors: The five preprocessed request tensors (user ones [R, ...], candidate ones [C, ...]).
        offsets: INT64 [R + 1], request r owns candidates ``offsets[r]:offsets[r + 1]``.
        scores: FP32 [T, C], each tier's scores, out of sample.
        labels: FP32 [C].
    """

    tensors: dict[str, torch.Tensor]
    offsets: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    @property
    def num_requests(self) -> int:
        """R."""
        return len(self.offsets) - 1

    def subset(self, requests: np.ndarray) -> GateData:
        """The given requests, in order."""
        from toolkit.data.requests import candidate_rows

        requests = np.asarray(requests, dtype=np.int64)
        rows = candidate_rows(self.offsets, requests)
        counts = np.diff(self.offsets)[requests]
        req, rw = torch.from_numpy(requests), torch.from_numpy(rows)
        user = ("user_dense", "user_sparse", "user_history")
        return GateData(
            {k: v[req] if k in user else v[rw] for k, v in self.tensors.items()},
            np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            self.scores[:, rows],
            self.labels[rows],
        )


def _inputs(data: GateData, requests: np.ndarray, cheapest_first: bool) -> tuple[tuple, np.ndarray]:
    from toolkit.data.requests import candidate_rows

    rows = candidate_rows(data.offsets, requests)
    counts = data.offsets[requests + 1] - data.offsets[requests]
    req, rw = torch.from_numpy(requests), torch.from_numpy(rows)
    t = data.tensors
    cheapest = torch.from_numpy(data.scores[0, rows]) if cheapest_first else None
    index = torch.from_numpy(np.repeat(np.arange(len(requests)), counts))
    args = (
        t["user_dense"][req],
        t["user_sparse"][req],
        t["user_history"][req],
        t["ad_dense"][rw],
        t["ad_sparse"][rw],
    )
    return (*args, cheapest, index), rows


def build_gate(
    design: str, features: Features, outputs: int, cheapest_first: bool, embedding_dim: int = 8
) -> nn.Module:
    """A fresh gate of ``design`` (``request`` or ``summary``)."""
    if design == "request":
        return RequestGate(features, outputs, embedding_dim=embedding_dim, cheapest_first=cheapest_first)
    if design == "summary":
        return SummaryGate(features, outputs, cheapest_first=cheapest_first)
    raise ValueError(f"unknown gate design {design!r}; expected one of {', '.join(GATE_DESIGNS)}")


def train_gate(
    data: GateData,
    features: Features,
    design: str = "request",
    target: str = "kl",
    cheapest_first: bool = False,
    seed: int = 0,
    epochs: int = 8,
    batch_requests: int = 128,
    embedding_dim: int = 8,
) -> nn.Module:
    """Fit a gate on ``data`` (Adam, seeded).

    The loss is the squared error of each request's mean gain (weighted by its N, as its gain counts
    N times when the router decides) plus that of each candidate's gain, which gives the per-candidate
    model of the ``request`` design a denser signal. Targets are scaled by their standard deviation
    per tier during training; the last layer is rescaled after, so the gate predicts log-loss units.
    """
    torch.manual_seed(seed)
    targets = torch.from_numpy(candidate_targets(data.scores, data.labels, target))
    scale = targets.std(0).clamp(min=1e-6)
    gate = build_gate(design, features, targets.shape[1], cheapest_first, embedding_dim)
    if isinstance(gate, SummaryGate):
        with torch.no_grad():
            n = np.diff(data.offsets)
            seg = _Segments(
                torch.from_numpy(np.repeat(np.arange(len(n)), n)), len(n), data.tensors["ad_dense"]
            )
            cheapest = torch.from_numpy(data.scores[0]) if cheapest_first else None
            x = gate.summaries(data.tensors["user_dense"], data.tensors["user_history"], cheapest, seg)
            gate.mean.copy_(x.mean(0))
            gate.scale.copy_(x.std(0).clamp(min=1e-3))
    optimizer = torch.optim.Adam(gate.parameters(), lr=3e-3, weight_decay=1e-5)
    rng = np.random.default_rng(seed)
    mean_n = float(np.diff(data.offsets).mean())
    gate.train()
    for _ in range(epochs):
        order = rng.permutation(data.num_requests)
        for start in range(0, len(order), batch_requests):
            requests = order[start : start + batch_requests]
            args, rows = _inputs(data, requests, cheapest_first)
            out = gate.per_candidate(*args)
            wanted = targets[rows] / scale
            seg = _Segments(args[-1], len(requests), out)
            loss = (((seg.mean(out) - seg.mean(wanted)) ** 2).sum(1) * seg.n / mean_n).mean()
            loss = loss + ((out - wanted) ** 2).sum(1).mean()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
    with torch.no_grad():
        last = gate.out if isinstance(gate, RequestGate) else gate.net[-1]
        last.weight.mul_(scale[:, None])
        last.bias.mul_(scale)
    return gate.eval()


def predict(gate: nn.Module, data: GateData, cheapest_first: bool, batch_requests: int = 512) -> np.ndarray:
    """Predicted gains per candidate of each request, averaged per request [R, T - 1]."""
    out = []
    with torch.no_grad():
        for start in range(0, data.num_requests, batch_requests):
            requests = np.arange(start, min(start + batch_requests, data.num_requests))
            args, _ = _inputs(data, requests, cheapest_first)
            out.append(_Segments(args[-1], len(requests), args[3]).mean(gate.per_candidate(*args)).numpy())
    return np.concatenate(out)
