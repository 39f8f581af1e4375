"""The learned routing gate: from request-level features, each bigger tier's expected gain.

The gate sees only what the router knows before any tier runs: the user's dense features, the
history length and the candidate count. Its target for a request is, per bigger tier, the mean over
the request's candidates of KL(p_big || p_small): the log loss the smallest tier is expected to
lose against the bigger one if the bigger one is right. The target needs no labels, so the gate can
be fitted on any traffic the tiers have scored; ``toolkit evaluate`` measures it against real
labels on held-out requests.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from toolkit.router.learned import gate_features

__all__ = ["Gate", "gate_features", "gate_targets", "predict", "train_gate"]

_EPS = 1e-7


def gate_targets(scores: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per request and bigger tier t >= 1, the mean over candidates of KL(p_t || p_0) [R, T - 1]."""
    p = np.clip(scores.astype(np.float64), _EPS, 1 - _EPS)
    small, big = p[0], p[1:]
    kl = big * np.log(big / small) + (1 - big) * np.log((1 - big) / (1 - small))
    counts = np.diff(offsets)
    sums = np.add.reduceat(kl, offsets[:-1], axis=1) if kl.shape[1] else np.zeros((len(big), len(counts)))
    return (sums / np.maximum(counts, 1)).T


class Gate(nn.Module):
    """A small MLP: gate features -> predicted gain of each bigger tier (non-negative)."""

    def __init__(self, in_dim: int, out_dim: int, hidden: tuple[int, ...] = (32, 16)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*layers)
        self.register_buffer("mean", torch.zeros(in_dim))
        self.register_buffer("scale", torch.ones(in_dim))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Predicted gains [R, T - 1]."""
        return nn.functional.softplus(self.net((features - self.mean) / self.scale))


def train_gate(
    features: np.ndarray, targets: np.ndarray, seed: int, epochs: int = 60, batch: int = 256
) -> Gate:
    """Fit a :class:`Gate` by mean squared error on log-scaled gains (full-batch Adam, seeded)."""
    torch.manual_seed(seed)
    x = torch.from_numpy(features.astype(np.float32))
    y = torch.from_numpy(targets.astype(np.float32))
    gate = Gate(x.shape[1], y.shape[1])
    gate.mean.copy_(x.mean(0))
    gate.scale.copy_(x.std(0).clamp(min=1e-3))
    optimizer = torch.optim.Adam(gate.parameters(), lr=3e-3)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            loss = nn.functional.mse_loss(torch.log1p(gate(x[idx]) * 100), torch.log1p(y[idx] * 100))
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return gate.eval()


def predict(gate: Gate, features: np.ndarray) -> np.ndarray:
    """Predicted gains [R, T - 1] as numpy."""
    with torch.no_grad():
        return gate(torch.from_numpy(features.astype(np.float32))).numpy()
