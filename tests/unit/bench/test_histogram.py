"""The log-bucketed latency histogram against exact percentiles."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.bench.histogram import LatencyHistogram


@pytest.mark.parametrize("seed", range(3))
def test_percentiles_are_within_one_percent_of_the_exact_ones(seed: int) -> None:
    values = np.random.default_rng(seed).lognormal(mean=1.0, sigma=0.8, size=20_000)
    hist = LatencyHistogram()
    for v in values:
        hist.record(float(v))
    assert hist.total == len(values) and hist.max_ms == pytest.approx(values.max())
    for p in (50, 90, 95, 99):
        exact = np.percentile(values, p, method="inverted_cdf")
        assert hist.percentile(p) == pytest.approx(exact, rel=0.011)
    summary = hist.summary()
    assert (
        summary["p50_ms"] <= summary["p90_ms"] <= summary["p95_ms"] <= summary["p99_ms"] <= summary["max_ms"]
    )


def test_merge_adds_counts_and_keeps_the_largest_max() -> None:
    a, b = LatencyHistogram(), LatencyHistogram()
    for v in (1.0, 2.0, 3.0):
        a.record(v)
    b.record(50.0)
    a.merge(b)
    assert a.total == 4 and a.max_ms == 50.0 and a.percentile(100) == 50.0
    assert np.isnan(LatencyHistogram().percentile(50))
