"""``toolkit bench``'s load generator: closed-loop concurrency or open-loop request rate over gRPC.

Each load step runs measurement windows until the last three agree within 10% on throughput and
median latency (at most ten), like perf_analyzer. Latencies go to a log-bucketed histogram (no
sorting of unbounded lists). In open-loop mode a request's latency counts from its scheduled
arrival, so a client that falls behind does not hide the wait (no coordinated omission).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit.bench.histogram import LatencyHistogram
from toolkit.client import AsyncRankingClient, ClientError
from toolkit.data.generator import generate_requests
from toolkit.data.requests import RequestSet
from toolkit.errors import ServerError
from toolkit.metrics import ctr_entropy, log_loss
from toolkit.spec.schema import Spec

STATS_FIELDS = ("queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class StepSpec:
    """One load level.

    Attributes:
        mode: ``concurrency`` (closed loop: that many requests in flight) or ``rate`` (open loop:
            that many arrivals per second).
        level: Concurrency or requests per second.
        arrivals: With ``rate``: ``poisson`` or ``constant`` inter-arrival times.
    """

    mode: str
    level: float
    arrivals: str = "poisson"


@dataclass(frozen=True)
class StabilityPolicy:
    """When a step's measurement is stable: ``stable_windows`` windows within ``spread``.

    Attributes:
        window_s: Length of a measurement window.
        stable_windows: Windows in a row whose throughput and median latency must agree.
        spread: How far they may differ, as a share of the lowest.
        max_windows: Windows at most; the figures are then the last ``stable_windows``.
        warmup_s: Seconds the step's load runs before its first window: what completes then counts
            in no figure but its failures (:attr:`StepResult.warmup_failed`), so that a server's
            answer to a change of load (a queue draining, a router stepping down) is not taken for
            its answer to the load.
    """

    window_s: float = 2.0
    stable_windows: int = 3
    spread: float = 0.10
    max_windows: int = 10
    warmup_s: float = 0.0


@dataclass
class Window:
    """What completed during one measurement window."""

    histogram: LatencyHistogram = field(default_factory=LatencyHistogram)
    candidates: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    tiers: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0
    log_loss: float = 0.0

    @property
    def completed(self) -> int:
        """Requests answered without error."""
        return self.histogram.total


@dataclass
class StepResult:
    """The measured figures of one load step (over its last ``stable_windows`` windows)."""

    step: StepSpec
    windows: int
    stable: bool
    requests: int
    failed: int
    seconds: float
    latency: dict[str, float]
    errors: dict[str, int]
    tier_mix: dict[str, float]
    candidates: int
    server: dict[str, dict[str, float]] = field(default_factory=dict)
    sent: int = 0
    ne: float = float("nan")
    warmup_failed: int = 0

    @property
    def all_failed(self) -> int:
        """Failed requests, those of the warm-up included."""
        return self.failed + self.warmup_failed

    @property
    def requests_per_s(self) -> float:
        """Answered requests per second."""
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def candidates_per_s(self) -> float:
        """Candidates scored per second."""
        return self.candidates / self.seconds if self.seconds else 0.0

    def row(self) -> dict[str, Any]:
        """A flat record for CSV and JSON."""
        return {
            "mode": self.step.mode,
            "level": self.step.level,
            "windows": self.windows,
            "stable": self.stable,
            "requests": self.requests,
            "failed": self.failed,
            "warmup_failed": self.warmup_failed,
            "seconds": round(self.seconds, 3),
            "requests_per_s": round(self.requests_per_s, 2),
            "candidates_per_s": round(self.candidates_per_s, 1),
            "ne": round(self.ne, 5),
            **{k: round(v, 3) for k, v in self.latency.items()},
            "errors": dict(self.errors),
            "tier_mix": self.tier_mix,
            "server_us": self.server,
        }


def _spread(values: list[float]) -> float:
    low = min(values)
    return (max(values) - low) / low if low > 0 else float("inf")


class _Load:
    def __init__(self, requests: RequestSet, tier_names: tuple[str, ...]) -> None:
        self.requests = requests
        self.tier_names = tier_names
        self.order = itertools.cycle(range(requests.num_requests))
        self.current = Window()
        self.sent = 0

    async def send(
        self, client: AsyncRankingClient, tier: str | None, budget: float | None, started: float
    ) -> None:
        r = next(self.order)
        self.sent += 1
        try:
            ranking = await client.rank(tier=tier, latency_budget_ms=budget, **self.requests.request(r))
        except ClientError as exc:
            self.current.errors[exc.status or type(exc).__name__] += 1
            return
        window = self.current
        window.histogram.record((time.perf_counter() - started) * 1000.0)
        window.candidates += len(ranking.scores)
        window.log_loss += log_loss(self.requests.request_labels(r), ranking.scores) * len(ranking.scores)
        served = ranking.tiers[0] if len(ranking.tiers) else -1
        window.tiers[self.tier_names[served] if 0 <= served < len(self.tier_names) else str(served)] += 1


async def _server_stats(url: str) -> dict[str, dict[str, int]]:
    import tritonclient.grpc.aio as grpcclient
    from tritonclient.utils import InferenceServerException

    client = grpcclient.InferenceServerClient(url)
    try:
        data = await client.get_inference_statistics(as_json=True)
    except InferenceServerException as exc:
        raise ServerError(
            f"{url}: cannot read Triton's statistics; is the server running there? ({exc.message()})"
        ) from None
    finally:
        await client.close()
    return statistics_by_model(data)


def statistics_by_model(data: dict) -> dict[str, dict[str, int]]:
    """Per model: successful requests (``count``) and the summed ns of each :data:`STATS_FIELDS` phase.

    Args:
        data: Triton's statistics, as ``get_inference_statistics(as_json=True)`` returns them.
    """
    out = {}
    for model in data.get("model_stats", []):
        stats = model.get("inference_stats", {})
        entry = {"count": int(stats.get("success", {}).get("count", 0))}
        for name in STATS_FIELDS:
            entry[name] = int(stats.get(name, {}).get("ns", 0))
        out[model["name"]] = entry
    return out


def server_split(before: dict, after: dict) -> dict[str, dict[str, float]]:
    """Per model, requests handled during the step and mean microseconds per request in each phase."""
    split = {}
    for name, end in after.items():
        start = before.get(name, {})
        count = end["count"] - start.get("count", 0)
        if count <= 0:
            continue
        split[name] = {"requests": count}
        for phase in STATS_FIELDS:
            split[name][f"{phase}_us"] = round((end[phase] - start.get(phase, 0)) / count / 1000.0, 1)
    return split


async def run_step(
    url: str,
    model: str,
    requests: RequestSet,
    step: StepSpec,
    tier_names: tuple[str, ...],
    tier: str | None = None,
    latency_budget_ms: float | None = None,
    policy: StabilityPolicy | None = None,
    seed: int = 0,
    on_window: Callable[[int, Window], None] | None = None,
) -> StepResult:
    """Drive one load step against ``model`` at ``url`` and measure it.

    Args:
        url: gRPC address of a running Triton.
        model: The ensemble to call.
        requests: Requests to send, cycled.
        step: Load level.
        tier_names: The spec's tiers, to name the ``tier`` output.
        tier: Request parameter ``tier`` (None: routed).
        latency_budget_ms: Request parameter ``latency_budget_ms``.
        policy: Window length and stability rule.
        seed: Seed of Poisson arrivals.
        on_window: Called after each window with its number and contents.
    """
    policy = policy or StabilityPolicy()
    load = _Load(requests, tier_names)
    done: list[Window] = []
    before = await _server_stats(url)
    stop = asyncio.Event()
    async with AsyncRankingClient(url, model, timeout_s=60.0) as client:

        async def closed_loop_worker() -> None:
            while not stop.is_set():
                await load.send(client, tier, latency_budget_ms, time.perf_counter())

        async def open_loop() -> None:
            rng = np.random.default_rng(seed)
            pending: set[asyncio.Task[None]] = set()
            next_at = time.perf_counter()
            while not stop.is_set():
                gap = rng.exponential(1.0 / step.level) if step.arrivals == "poisson" else 1.0 / step.level
                next_at += gap
                delay = next_at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(load.send(client, tier, latency_budget_ms, next_at))
                pending.add(task)
                task.add_done_callback(pending.discard)
            if pending:
                await asyncio.gather(*pending)

        drivers = (
            [asyncio.create_task(closed_loop_worker()) for _ in range(int(step.level))]
            if step.mode == "concurrency"
            else [asyncio.create_task(open_loop())]
        )
        warmup = Window()
        if policy.warmup_s > 0:
            await asyncio.sleep(policy.warmup_s)
            warmup, load.current = load.current, Window()
        stable = False
        while len(done) < policy.max_windows:
            started = time.perf_counter()
            await asyncio.sleep(policy.window_s)
            window, load.current = load.current, Window()
            window.seconds = time.perf_counter() - started
            done.append(window)
            if on_window is not None:
                on_window(len(done), window)
            last = done[-policy.stable_windows :]
            if len(last) == policy.stable_windows and all(w.completed for w in last):
                rates = [w.completed / w.seconds for w in last]
                medians = [w.histogram.percentile(50) for w in last]
                if _spread(rates) <= policy.spread and _spread(medians) <= policy.spread:
                    stable = True
                    break
        stop.set()
        await asyncio.gather(*drivers)
    after = await _server_stats(url)
    measured = done[-policy.stable_windows :]
    merged = LatencyHistogram()
    errors: Counter[str] = Counter()
    tiers: Counter[str] = Counter()
    for window in measured:
        merged.merge(window.histogram)
        errors.update(window.errors)
        tiers.update(window.tiers)
    answered = merged.total
    candidates = sum(w.candidates for w in measured)
    entropy = ctr_entropy(float(requests.labels.mean()))
    return StepResult(
        step=step,
        windows=len(done),
        stable=stable,
        requests=answered,
        failed=sum(errors.values()),
        seconds=sum(w.seconds for w in measured),
        latency=merged.summary(),
        errors=dict(errors),
        tier_mix={t: c / answered for t, c in sorted(tiers.items())} if answered else {},
        candidates=candidates,
        server=server_split(before, after),
        sent=load.sent,
        ne=sum(w.log_loss for w in measured) / candidates / entropy if candidates else float("nan"),
        warmup_failed=sum(warmup.errors.values()),
    )


def bench_requests(spec: Spec, count: int, candidates: tuple[int, int] | None = None) -> RequestSet:
    """The requests a load cycles through: the spec's traffic, ``count`` requests of it.

    With ``data.files`` in the spec and no ``candidates``, the first of the held-out log; otherwise
    generated requests (a seed of their own) of ``candidates`` (default: the spec's data) candidates.
    """
    if spec.data.files is not None and candidates is None:
        from toolkit.data.demo import demo_holdout_set

        return demo_holdout_set(spec, count)
    bounds = candidates or (spec.data.candidates.min, spec.data.candidates.max)
    return generate_requests(
        spec.features, count, bounds, spec.data.informative_share, seed=99, world_seed=spec.seed
    )


def highest_within_slo(results: list[StepResult], slo_ms: float) -> StepResult | None:
    """The step with the highest throughput whose p99 meets ``slo_ms`` with no failed request.

    A request that failed in the step's warm-up counts as failed.
    """
    ok = [r for r in results if r.all_failed == 0 and r.requests and r.latency["p99_ms"] <= slo_ms]
    return max(ok, key=lambda r: r.requests_per_s, default=None)
