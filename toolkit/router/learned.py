"""The ``learned`` policy: a gate model's predicted gains, weighed against each tier's cost.

The gate (an ONNX model deployed beside the router, fitted by ``toolkit calibrate``) predicts, from
request-level features only, each bigger tier's expected log-loss gain per candidate over the
smallest tier. The router serves the tier with the largest ``N * gain - lambda * extra cost``, where
a tier's cost is its FLOPs for N candidates (``a + b * N``, in MFLOP) above the smallest tier's.

Plain Python and numpy: it runs inside the router model and offline.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def gate_features(
    user_dense: np.ndarray, history_length: np.ndarray, num_candidates: np.ndarray
) -> np.ndarray:
    """Gate inputs [R, Du + 2]: the preprocessed dense user features, log1p history length and N."""
    return np.concatenate(
        [
            np.asarray(user_dense, dtype=np.float32).reshape(len(np.atleast_1d(history_length)), -1),
            np.log1p(np.atleast_1d(np.asarray(history_length, dtype=np.float32)))[:, None],
            np.log1p(np.atleast_1d(np.asarray(num_candidates, dtype=np.float32)))[:, None],
        ],
        axis=1,
    )


def choose_tier(
    gains: Sequence[float], num_candidates: int, costs: Sequence[Sequence[float]], lam: float
) -> int:
    """Index of the tier worth its cost for one request.

    Args:
        gains: Predicted gain per candidate of each tier over the smallest ([T - 1], tiers 1..T-1).
        num_candidates: N.
        costs: Per tier ``(a, b)``: MFLOP for N candidates is ``a + b * N``.
        lam: Price of one MFLOP in log-loss units.
    """
    n = float(num_candidates)
    base = costs[0][0] + costs[0][1] * n
    values = [0.0] + [
        n * float(g) - lam * (costs[t][0] + costs[t][1] * n - base) for t, g in enumerate(gains, start=1)
    ]
    return int(np.argmax(values))


def choose_tiers(
    gains: np.ndarray, num_candidates: np.ndarray, costs: Sequence[Sequence[float]], lam: float
) -> np.ndarray:
    """:func:`choose_tier` for many requests at once (``gains`` [R, T - 1], ``num_candidates`` [R])."""
    n = np.asarray(num_candidates, dtype=np.float64)[:, None]
    cost = np.array([[a, b] for a, b in costs], dtype=np.float64)
    extra = (cost[1:, 0][None, :] + cost[1:, 1][None, :] * n) - (cost[0, 0] + cost[0, 1] * n)
    values = np.concatenate([np.zeros_like(n), n * np.asarray(gains, dtype=np.float64) - lam * extra], axis=1)
    return np.argmax(values, axis=1)


def calibrate_lambda(
    gains: np.ndarray, num_candidates: np.ndarray, costs: Sequence[Sequence[float]], target_share: float
) -> float:
    """The price at which about ``target_share`` of the requests go to the largest tier.

    Bisection on ``lambda`` (the share on the largest tier falls as the price rises).
    """
    lo, hi = 0.0, 1.0
    while (
        choose_tiers(gains, num_candidates, costs, hi) == len(costs) - 1
    ).mean() > target_share and hi < 1e12:
        hi *= 4.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if (choose_tiers(gains, num_candidates, costs, mid) == len(costs) - 1).mean() > target_share:
            lo = mid
        else:
            hi = mid
    return hi


def calibrate_lambda_to_cost(
    gains: np.ndarray, num_candidates: np.ndarray, costs: Sequence[Sequence[float]], target_mflop: float
) -> float:
    """The price at which the mean cost per request is about ``target_mflop`` (bisection).

    When even ``lambda = 0`` costs less than the target, returns 0 (every request gets the tier with
    the largest gain).
    """
    n = np.asarray(num_candidates, dtype=np.float64)
    cost = np.array([[a, b] for a, b in costs], dtype=np.float64)

    def mean_cost(lam: float) -> float:
        chosen = choose_tiers(gains, n, costs, lam)
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
