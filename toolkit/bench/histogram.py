"""A latency histogram with log-spaced buckets (HDR-style): fixed memory, ~1% relative precision."""

from __future__ import annotations

import math

import numpy as np


class LatencyHistogram:
    """Counts latencies in buckets whose width grows with the value; percentiles need no sorting.

    Args:
        lowest_ms: Smallest distinguishable latency; smaller values land in the first bucket.
        highest_ms: Largest tracked latency; larger values land in the last bucket (``max`` stays exact).
        precision: Relative width of a bucket (0.01 = 1%).
    """

    def __init__(self, lowest_ms: float = 1e-3, highest_ms: float = 1e6, precision: float = 0.01) -> None:
        self.lowest_ms = lowest_ms
        self.growth = math.log1p(precision)
        self.counts = np.zeros(
            int(math.ceil(math.log(highest_ms / lowest_ms) / self.growth)) + 1, dtype=np.int64
        )
        self.max_ms = 0.0
        self.total = 0

    def _index(self, ms: float) -> int:
        if ms <= self.lowest_ms:
            return 0
        return min(int(math.log(ms / self.lowest_ms) / self.growth) + 1, len(self.counts) - 1)

    def record(self, ms: float) -> None:
        """Add one latency in milliseconds."""
        self.counts[self._index(ms)] += 1
        self.max_ms = max(self.max_ms, ms)
        self.total += 1

    def merge(self, other: LatencyHistogram) -> None:
        """Add another histogram with the same buckets."""
        self.counts += other.counts
        self.max_ms = max(self.max_ms, other.max_ms)
        self.total += other.total

    def percentile(self, p: float) -> float:
        """The latency below which ``p`` percent of the recorded values lie (bucket upper edge, <= max)."""
        if self.total == 0:
            return float("nan")
        rank = max(1, math.ceil(self.total * p / 100.0))
        index = int(np.searchsorted(np.cumsum(self.counts), rank))
        upper = self.lowest_ms * math.exp(self.growth * index)
        return min(upper, self.max_ms)

    def summary(self) -> dict[str, float]:
        """p50, p90, p95, p99 and max in milliseconds."""
        return {
            "p50_ms": self.percentile(50),
            "p90_ms": self.percentile(90),
            "p95_ms": self.percentile(95),
            "p99_ms": self.percentile(99),
            "max_ms": self.max_ms if self.total else float("nan"),
        }
