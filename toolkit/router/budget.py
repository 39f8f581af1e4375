"""Latency budgets: the router's own estimates of each tier's latency, and the cap they impose.

The router times every tier call it makes and keeps, per tier and per candidate-count bucket
(powers of two), the most recent calls; a tier's estimate for N is a percentile of its bucket. A
BLS or remote call includes the time a request waits in the tier's queue, so under overload the
estimates rise and requests with a budget step down to cheaper tiers instead of queueing; a tier run
in the router's own process has no queue of its own (requests wait in the router's), so its
estimate is its compute time alone. Before a bucket has enough
calls, the estimate comes from export's measured latency (``latency_prior_ms`` in ``router.json``).
Calls older than ``max_age_s`` are forgotten: a tier the budget stepped away from gets no new calls,
so without ageing its last slow calls would keep it capped after the load has passed; once they age
out, the prior lets a few requests probe it again.

Plain Python and numpy, like the rest of this package: it runs inside the router model.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from .policy import Decision, RouterConfig

MIN_SAMPLES = 8
"""Calls a bucket needs before its own percentile replaces the prior."""


def percentile(values: list[float], q: float) -> float:
    """The ``q``-th percentile of ``values``, as ``numpy.percentile`` computes it (linear).

    Plain Python: for the few dozen values of a bucket, asked on every request, it is ten times
    quicker than numpy.
    """
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (position - low))


def bucket(num_candidates: int) -> int:
    """Candidate-count bucket: ceil(log2(N)) (N = 1 -> 0, 2 -> 1, 3..4 -> 2, ...)."""
    return max(0, math.ceil(math.log2(max(int(num_candidates), 1))))


class LatencyTracker:
    """Recent tier-call latencies per tier and candidate-count bucket.

    Args:
        tiers: Tier names.
        priors: Per tier, measured latency (ms) by candidate count, used until a bucket has
            :data:`MIN_SAMPLES` calls.
        window: Calls kept per bucket.
        percentile: Percentile of a bucket's calls used as the estimate.
        max_age_s: Calls older than this (seconds) no longer count.
        clock: Seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        tiers: tuple[str, ...],
        priors: dict[str, dict[str, float]] | None = None,
        window: int = 64,
        percentile: float = 90.0,
        max_age_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.window = window
        self.percentile = percentile
        self.max_age_s = max_age_s
        self.clock = clock
        self.samples: dict[str, dict[int, deque[tuple[float, float]]]] = {t: {} for t in tiers}
        self.priors = {
            tier: (sorted(int(n) for n in values), [values[n] for n in sorted(values, key=int)])
            for tier, values in (priors or {}).items()
            if values
        }

    def observe(self, tier: str, num_candidates: int, ms: float) -> None:
        """Record one call of ``tier`` with ``num_candidates`` candidates that took ``ms``."""
        buckets = self.samples.setdefault(tier, {})
        calls = buckets.setdefault(bucket(num_candidates), deque(maxlen=self.window))
        calls.append((self.clock(), float(ms)))

    def recent(self, tier: str, num_candidates: int) -> float | None:
        """The percentile of ``tier``'s recent calls for N candidates, or None with too few of them."""
        calls = self.samples.get(tier, {}).get(bucket(num_candidates), ())
        since = self.clock() - self.max_age_s
        recent = [ms for at, ms in calls if at >= since]
        return percentile(recent, self.percentile) if len(recent) >= MIN_SAMPLES else None

    def estimate(self, tier: str, num_candidates: int) -> float | None:
        """Expected latency (ms) of ``tier`` for N candidates, or None when nothing is known."""
        recent = self.recent(tier, num_candidates)
        if recent is not None:
            return recent
        if tier in self.priors:
            counts, values = self.priors[tier]
            return float(np.interp(num_candidates, counts, values))
        return None


def cap(
    config: RouterConfig,
    decision: Decision,
    budget_ms: float | None,
    num_candidates: int,
    tracker: LatencyTracker,
) -> Decision:
    """The wished-for decision, stepped down to the most expensive tier expected to meet the budget.

    A forced tier and a request without a budget are left alone. A cascade whose second call would
    miss the budget loses the second call. When no tier is expected to meet the budget, the
    cheapest tier answers: a request is always served.
    """
    if budget_ms is None or decision.reason == "forced":
        return decision
    if decision.rescore_tier is not None:
        first = tracker.estimate(decision.tier, num_candidates) or 0.0
        second = tracker.estimate(decision.rescore_tier, min(num_candidates, decision.top_k)) or 0.0
        if first + second <= budget_ms:
            return decision
        decision = Decision(decision.tier, decision.index, "budget:cascade")
    for index in range(decision.index, -1, -1):
        tier = config.tiers[index]
        expected = tracker.estimate(tier, num_candidates)
        if expected is None or expected <= budget_ms:
            if index == decision.index:
                return decision
            return Decision(tier, index, f"budget:{decision.reason}")
    return Decision(config.tiers[0], 0, "budget:cheapest")
