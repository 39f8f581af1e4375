"""Bootstrap intervals over requests for the routing frontier's APGR and CPT.

The request is the unit that a router routes, so it is the unit resampled: each resample draws R
requests with replacement from the per-request losses of :class:`~toolkit.evaluate.frontier.RequestLosses`,
re-derives the weak (tier 0) and strong (last tier) NE on it, and summarises the router's curve on it
with :func:`~toolkit.evaluate.frontier.apgr` and :func:`~toolkit.evaluate.frontier.cpt`. The spread of
those summaries over resamples gives percentile intervals.

A random router's APGR is 0.5; :func:`within_noise_of_random` says whether an interval fails to rule
that out.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from toolkit.evaluate.frontier import RequestLosses, apgr, cpt, score_curve

__all__ = ["bootstrap_frontier", "within_noise_of_random"]


def _interval(values: np.ndarray, level: float) -> tuple[float, float, float]:
    """``(lower, median, upper)`` percentiles of ``values`` ignoring NaN; all NaN when every value is."""
    if values.size == 0 or np.all(np.isnan(values)):
        return (float("nan"), float("nan"), float("nan"))
    tail = 100.0 * (1.0 - level) / 2.0
    lower, median, upper = np.nanpercentile(values, [tail, 50.0, 100.0 - tail])
    return (float(lower), float(median), float(upper))


def bootstrap_frontier(
    losses: RequestLosses,
    router_scores: np.ndarray,
    shares: np.ndarray,
    resamples: int = 200,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Percentile bootstrap intervals, over requests, of a score router's APGR, CPT(50%) and CPT(80%).

    Each resample draws R request indices with replacement (``numpy.random.default_rng(seed)``) and keeps
    those rows of ``losses.loss``, ``losses.candidates`` and ``router_scores`` (with the same background
    entropy). On it come the NE of tier 0 (weak) and of the last tier (strong), the router's curve as
    :func:`frontier.score_curve` draws it at ``shares`` (ties between equal scores, duplicates of a
    request included, go in resampled order), and APGR, CPT(0.5) and CPT(0.8) of that curve.

    A resample is skipped when its weak tier is not worse than its strong one (PGR is undefined there)
    or when it drew only requests without candidates; ``"resamples"`` counts the kept ones. A CPT that
    a resample never reaches is NaN there and is left out of that CPT's percentiles.

    Args:
        losses: Per-request losses of every tier (at least two tiers).
        router_scores: ``[R]`` finite scores, higher = more deserving of the strong tier.
        shares: Strictly increasing target shares in ``[0, 1]`` whose realized shares
            ``round(share * R) / R`` start at 0 and end at 1, as APGR needs.
        resamples: Number of resamples drawn, >= 1.
        seed: Seed of the resampling generator.
        level: Central probability of the intervals, in ``(0, 1)``.

    Returns:
        ``{"apgr": (lo, median, hi), "cpt50": (lo, median, hi), "cpt80": (lo, median, hi),
        "resamples": kept, "level": level}``; intervals are NaN where no resample gives a value.

    Raises:
        ValueError: If the tiers, scores, shares, ``resamples`` or ``level`` are invalid.
    """
    if isinstance(resamples, bool) or not isinstance(resamples, numbers.Integral) or resamples < 1:
        raise ValueError(f"resamples must be an integer >= 1, got {resamples!r}.")
    if not 0.0 < float(level) < 1.0:
        raise ValueError(f"level must lie strictly between 0 and 1, got {level}.")
    num = losses.num_requests
    if losses.num_tiers < 2:
        raise ValueError(f"losses must hold at least two tiers (weak and strong), got {losses.num_tiers}.")
    scores = np.asarray(router_scores, dtype=np.float64)
    if scores.shape != (num,):
        raise ValueError(
            f"router_scores must have shape [{num}] (one score per request), got {scores.shape}."
        )
    if not np.all(np.isfinite(scores)):
        raise ValueError("router_scores must be finite.")
    # Every resample has R requests, so its realized shares are those of the full data's curve; drawing
    # that curve once checks the shares up front.
    realized = score_curve(losses, scores, shares).strong_share
    if realized[0] != 0.0 or realized[-1] != 1.0:
        raise ValueError(
            f"shares must reach strong shares 0 and 1 once rounded to whole requests (APGR needs both); "
            f"with {num} requests they span {realized[0]} to {realized[-1]}."
        )

    rng = np.random.default_rng(seed)
    results: list[tuple[float, float, float]] = []
    for _ in range(int(resamples)):
        rows = rng.integers(0, num, size=num)
        candidates = losses.candidates[rows]
        if candidates.sum() == 0:
            continue
        sample = RequestLosses(
            loss=losses.loss[rows], candidates=candidates, entropy_per_candidate=losses.entropy_per_candidate
        )
        ne_weak, ne_strong = sample.ne_of_tier(0), sample.ne_of_tier(-1)
        if not ne_weak > ne_strong:
            continue
        curve = score_curve(sample, scores[rows], shares)
        cpt50 = cpt(curve, 0.5, ne_weak, ne_strong)
        cpt80 = cpt(curve, 0.8, ne_weak, ne_strong)
        results.append(
            (
                apgr(curve, ne_weak, ne_strong),
                float("nan") if cpt50 is None else cpt50,
                float("nan") if cpt80 is None else cpt80,
            )
        )
    table = np.array(results, dtype=np.float64).reshape(-1, 3)
    return {
        "apgr": _interval(table[:, 0], float(level)),
        "cpt50": _interval(table[:, 1], float(level)),
        "cpt80": _interval(table[:, 2], float(level)),
        "resamples": len(results),
        "level": float(level),
    }


def within_noise_of_random(interval: tuple[float, float, float], random_apgr: float = 0.5) -> bool:
    """Whether an APGR interval fails to beat a random router: its lower bound is <= ``random_apgr``.

    Args:
        interval: ``(lower, median, upper)`` as :func:`bootstrap_frontier` returns for ``"apgr"``.
        random_apgr: APGR of a random router; 0.5 for RouteLLM's.

    Raises:
        ValueError: If the interval is not three numbers or its lower bound is NaN (no resample kept).
    """
    if len(interval) != 3:
        raise ValueError(f"interval must be (lower, median, upper), got {interval!r}.")
    lower = float(interval[0])
    if np.isnan(lower):
        raise ValueError("The interval's lower bound is NaN (no resample was kept), so it says nothing.")
    return bool(lower <= float(random_apgr))
