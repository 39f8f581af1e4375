"""Latency measurement that repeats until it is stable, the way perf_analyzer does.

A *window* is a batch of back-to-back calls lasting about ``window_ms``; its statistic is the
median call time. Windows are added until the last ``stable_windows`` medians lie within
``spread`` of each other (or ``max_windows`` were run); the reported figure is the median of every
call in those last windows.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class TimingPolicy:
    """When a measurement is stable.

    Attributes:
        stable_windows: Consecutive windows whose medians must agree.
        spread: Largest allowed ``(max - min) / min`` of those medians.
        max_windows: Give up (and report unstable) after this many windows.
        window_ms: Target duration of one window.
        min_calls: Fewest calls in a window.
        warmup: Untimed calls before the first window.
    """

    stable_windows: int = 3
    spread: float = 0.10
    max_windows: int = 10
    window_ms: float = 40.0
    min_calls: int = 5
    warmup: int = 5


@dataclass(frozen=True)
class Timing:
    """One stable (or best-effort) latency figure.

    Attributes:
        median_ms: Median call time over the last ``stable_windows`` windows.
        windows: Windows run.
        calls: Calls per window.
        stable: Whether the last windows agreed within the policy's spread.
        spread: ``(max - min) / min`` of the last windows' medians.
    """

    median_ms: float
    windows: int
    calls: int
    stable: bool
    spread: float


def measure(call: Callable[[], Any], policy: TimingPolicy | None = None) -> Timing:
    """Time ``call`` until stable.

    Args:
        call: Runs one request; its result is ignored.
        policy: Stability rule (default :class:`TimingPolicy`).
    """
    policy = policy or TimingPolicy()
    for _ in range(policy.warmup):
        call()
    started = time.perf_counter()
    call()
    one = max(time.perf_counter() - started, 1e-7) * 1000.0
    calls = int(min(max(policy.window_ms / one, policy.min_calls), 10_000))
    windows: list[np.ndarray] = []
    medians: list[float] = []
    spread = float("inf")
    while len(windows) < policy.max_windows:
        samples = np.empty(calls)
        for i in range(calls):
            started = time.perf_counter()
            call()
            samples[i] = (time.perf_counter() - started) * 1000.0
        windows.append(samples)
        medians.append(float(np.median(samples)))
        if len(medians) >= policy.stable_windows:
            last = medians[-policy.stable_windows :]
            spread = (max(last) - min(last)) / max(min(last), 1e-9)
            if spread <= policy.spread:
                break
    tail = np.concatenate(windows[-policy.stable_windows :])
    return Timing(
        median_ms=float(np.median(tail)),
        windows=len(windows),
        calls=calls,
        stable=spread <= policy.spread,
        spread=round(float(spread), 4) if np.isfinite(spread) else float("nan"),
    )


def measure_counts(
    run: Callable[[dict[str, np.ndarray]], Any],
    make_inputs: Callable[[int], dict[str, np.ndarray]],
    candidate_counts: Sequence[int],
    policy: TimingPolicy | None = None,
) -> dict[int, Timing]:
    """Time ``run`` on one request of each candidate count.

    Args:
        run: Runs the model on one request's inputs.
        make_inputs: Builds a request with the given candidate count.
        candidate_counts: Candidate counts to time.
        policy: Stability rule.
    """
    out = {}
    for n in candidate_counts:
        inputs = make_inputs(int(n))
        out[int(n)] = measure(lambda inputs=inputs: run(inputs), policy)
    return out


def measure_interleaved(
    calls: dict[str, Callable[[], Any]], policy: TimingPolicy | None = None
) -> dict[str, Timing]:
    """Time several calls with their windows interleaved, so that drift of the machine hits all alike.

    Window ``w`` of every call runs before window ``w + 1`` of any (the order rotates each time);
    windows are added until every call's last ``stable_windows`` medians agree within ``spread``, or
    ``max_windows`` were run.

    Args:
        calls: Name -> a callable running one request.
        policy: Stability rule (default :class:`TimingPolicy`).
    """
    policy = policy or TimingPolicy()
    sizes = {}
    for name, call in calls.items():
        for _ in range(policy.warmup):
            call()
        started = time.perf_counter()
        call()
        one = max(time.perf_counter() - started, 1e-7) * 1000.0
        sizes[name] = int(min(max(policy.window_ms / one, policy.min_calls), 10_000))
    windows: dict[str, list[np.ndarray]] = {name: [] for name in calls}
    names = list(calls)
    for w in range(policy.max_windows):
        for name in names[w % len(names) :] + names[: w % len(names)]:
            call = calls[name]
            samples = np.empty(sizes[name])
            for i in range(sizes[name]):
                started = time.perf_counter()
                call()
                samples[i] = (time.perf_counter() - started) * 1000.0
            windows[name].append(samples)
        spreads = {name: _spread(ws, policy.stable_windows) for name, ws in windows.items()}
        if all(sp <= policy.spread for sp in spreads.values()):
            break
    out = {}
    for name, ws in windows.items():
        spread = _spread(ws, policy.stable_windows)
        out[name] = Timing(
            median_ms=float(np.median(np.concatenate(ws[-policy.stable_windows :]))),
            windows=len(ws),
            calls=sizes[name],
            stable=spread <= policy.spread,
            spread=round(spread, 4) if np.isfinite(spread) else float("nan"),
        )
    return out


def _spread(windows: list[np.ndarray], last: int) -> float:
    if len(windows) < last:
        return float("inf")
    medians = [float(np.median(w)) for w in windows[-last:]]
    return (max(medians) - min(medians)) / max(min(medians), 1e-9)
