"""The ``learned`` policy: a gate model's predicted gains, weighed against each tier's cost.

The gate (an ONNX model deployed beside the router, fitted by ``toolkit calibrate``) predicts, from
what the router knows before a bigger tier runs, each bigger tier's expected log-loss gain per
candidate over the smallest tier. The router serves the tier with the largest
``value * N * gain - lambda * extra cost`` (a knapsack with one price, as in DCAF), where a tier's cost
is its FLOPs for N candidates (``a + b * N``, in MFLOP) above the smallest tier's and ``value`` is
what the request is worth (1 unless the request says).

Plain Python and numpy: it runs inside the router model and offline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def choose_tier(
    gains: Sequence[float],
    num_candidates: int,
    costs: Sequence[Sequence[float]],
    lam: float,
    value: float = 1.0,
) -> int:
    """Index of the tier worth its cost for one request.

    Args:
        gains: Predicted gain per candidate of each tier over the smallest ([T - 1], tiers 1..T-1).
        num_candidates: N.
        costs: Per tier ``(a, b)``: MFLOP for N candidates is ``a + b * N``.
        lam: Price of one MFLOP in log-loss units.
        value: What the request is worth; its predicted gain counts ``value`` times.
    """
    n = float(num_candidates)
    base = costs[0][0] + costs[0][1] * n
    values = [0.0] + [
        float(value) * n * float(g) - lam * (costs[t][0] + costs[t][1] * n - base)
        for t, g in enumerate(gains, start=1)
    ]
    return int(np.argmax(values))


def choose_tiers(
    gains: np.ndarray,
    num_candidates: np.ndarray,
    costs: Sequence[Sequence[float]],
    lam: float,
    values: np.ndarray | None = None,
) -> np.ndarray:
    """:func:`choose_tier` for many requests: ``gains`` [R, T - 1], ``num_candidates``, ``values`` [R]."""
    n = np.asarray(num_candidates, dtype=np.float64)[:, None]
    worth = np.ones_like(n) if values is None else np.asarray(values, dtype=np.float64)[:, None]
    cost = np.array([[a, b] for a, b in costs], dtype=np.float64)
    extra = (cost[1:, 0][None, :] + cost[1:, 1][None, :] * n) - (cost[0, 0] + cost[0, 1] * n)
    gain = worth * n * np.asarray(gains, dtype=np.float64)
    return np.argmax(np.concatenate([np.zeros_like(n), gain - lam * extra], axis=1), axis=1)


def calibrate_lambda(
    gains: np.ndarray,
    num_candidates: np.ndarray,
    costs: Sequence[Sequence[float]],
    target_share: float,
    values: np.ndarray | None = None,
) -> float:
    """The price at which about ``target_share`` of the requests go to the largest tier.

    Bisection on ``lambda`` (the share on the largest tier falls as the price rises).
    """

    def share(lam: float) -> float:
        return float((choose_tiers(gains, num_candidates, costs, lam, values) == len(costs) - 1).mean())

    lo, hi = 0.0, 1.0
    while share(hi) > target_share and hi < 1e12:
        hi *= 4.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if share(mid) > target_share:
            lo = mid
        else:
            hi = mid
    return hi


def calibrate_lambda_to_cost(
    gains: np.ndarray,
    num_candidates: np.ndarray,
    costs: Sequence[Sequence[float]],
    target_mflop: float,
    values: np.ndarray | None = None,
) -> float:
    """The price at which the mean cost per request is about ``target_mflop`` (bisection).

    When even ``lambda = 0`` costs less than the target, returns 0 (every request gets the tier with
    the largest gain).
    """
    n = np.asarray(num_candidates, dtype=np.float64)
    cost = np.array([[a, b] for a, b in costs], dtype=np.float64)

    def mean_cost(lam: float) -> float:
        chosen = choose_tiers(gains, n, costs, lam, values)
        return float((cost[chosen, 0] + cost[chosen, 1] * n).mean())

    if mean_cost(0.0) <= target_mflop:
        return 0.0
    lo, hi = 0.0, 1.0
    while mean_cost(hi) > target_mflop and hi < 1e12:
        hi *= 4.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if mean_cost(mid) > target_mflop:
            lo = mid
        else:
            hi = mid
    return hi
