"""Stable timing: windows repeat until three agree within the spread, at most max_windows."""

from __future__ import annotations

import time

import numpy as np

from toolkit.export.timing import TimingPolicy, measure, measure_counts, measure_interleaved

FAST = TimingPolicy(window_ms=5.0, warmup=1)


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_measure_stops_after_three_windows_when_calls_take_constant_time() -> None:
    timing = measure(lambda: _busy(0.0005), FAST)
    assert timing.stable and timing.spread <= FAST.spread
    assert FAST.stable_windows <= timing.windows < FAST.max_windows
    assert 0.4 <= timing.median_ms <= 5.0


def test_measure_reports_unstable_after_max_windows_when_calls_keep_slowing_down() -> None:
    calls = [0]

    def slower_each_time() -> None:
        calls[0] += 1
        _busy(0.00005 * 1.08 ** (calls[0] // 5))

    policy = TimingPolicy(window_ms=1.0, min_calls=5, warmup=0, max_windows=6)
    timing = measure(slower_each_time, policy)
    assert not timing.stable and timing.windows == policy.max_windows
    assert timing.spread > policy.spread


def test_measure_counts_times_each_candidate_count_with_its_own_inputs() -> None:
    seen = []

    def run(inputs: dict[str, np.ndarray]) -> None:
        seen.append(inputs["ad_dense"].shape[0])
        _busy(0.00002 * inputs["ad_dense"].shape[0])

    out = measure_counts(run, lambda n: {"ad_dense": np.zeros((n, 4))}, [4, 64], FAST)
    assert set(out) == {4, 64} and set(seen) == {4, 64}
    assert out[64].median_ms > out[4].median_ms


def test_measure_interleaved_ranks_calls_by_duration_and_runs_them_window_for_window() -> None:
    order = []

    def call(name: str, seconds: float):
        def run() -> None:
            order.append(name)
            _busy(seconds)

        return run

    timed = measure_interleaved({"slow": call("slow", 0.0008), "fast": call("fast", 0.0002)}, FAST)
    assert timed["fast"].median_ms < timed["slow"].median_ms
    assert timed["fast"].stable and timed["slow"].stable
    assert timed["fast"].windows == timed["slow"].windows >= FAST.stable_windows
    calibration = 2 * (FAST.warmup + 1)
    windowed = order[calibration:]
    assert len(windowed) == timed["fast"].windows * (timed["fast"].calls + timed["slow"].calls)
    names = ["slow", "fast"]
    at = 0
    for w in range(timed["fast"].windows):
        for name in names[w % 2 :] + names[: w % 2]:
            block = windowed[at : at + timed[name].calls]
            assert block == [name] * timed[name].calls, f"window {w} of {name} was not run whole"
            at += timed[name].calls
