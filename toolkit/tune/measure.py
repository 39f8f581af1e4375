"""Measuring one serving configuration on the real server: deploy it, serve it, load it step by step."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from toolkit.bench.load import (
    StabilityPolicy,
    StepResult,
    StepSpec,
    bench_requests,
    highest_within_slo,
    run_step,
)
from toolkit.data.requests import RequestSet
from toolkit.errors import ServerError
from toolkit.repository.plan import DeployOptions, plan_deploy
from toolkit.repository.writer import write_repository
from toolkit.serve import ServerOptions, TritonServer
from toolkit.serve.metrics import router_tier_calls
from toolkit.spec.schema import Spec
from toolkit.tune.search import Measure, Point
from toolkit.tune.space import TIER_KNOB, ServingConfig


@dataclass(frozen=True)
class LoadPlan:
    """How each configuration is loaded.

    Attributes:
        concurrencies: Closed-loop steps, rising; the climb stops at the first that misses the SLO.
        window_s: Length of a measurement window (as ``toolkit bench --window-s``).
        max_windows: Windows per step at most (as ``toolkit bench --max-windows``).
        requests: Requests the load cycles through (the spec's traffic, as ``toolkit bench``'s).
        candidates: Candidates per generated request (MIN, MAX); None: the spec's traffic.
        plateau: The climb also stops after two steps in a row that do not beat the best throughput
            so far by this share: the server is saturated and more load only adds latency.
    """

    concurrencies: tuple[int, ...] = (1, 2, 4, 8)
    window_s: float = 1.0
    max_windows: int = 6
    requests: int = 200
    candidates: tuple[int, int] | None = None
    plateau: float = 0.03

    def __post_init__(self) -> None:
        if not self.concurrencies or list(self.concurrencies) != sorted(set(self.concurrencies)):
            raise ValueError(
                f"concurrencies: expected distinct levels in rising order, got {self.concurrencies!r}"
            )


def server_measure(
    spec: Spec,
    artifacts: Path,
    workdir: Path,
    slo_ms: float,
    options: DeployOptions,
    load: LoadPlan | None = None,
    progress: Callable[[str], None] | None = None,
    tritonserver: Path | None = None,
    requests: RequestSet | None = None,
) -> Measure:
    """A :data:`~toolkit.tune.search.Measure` that runs each configuration on a real ``tritonserver``.

    For a configuration it writes the repository (the spec with the configuration applied, deployed
    with ``options``) to ``<workdir>/repository``, starts the server on free ports, runs the load
    plan's steps with ``toolkit bench``'s load generator on the spec's traffic (:func:`bench_requests`),
    stops the server, and reports the highest throughput whose p99 met ``slo_ms`` with no failed
    request. The climb stops at the first step that misses the SLO or fails a request, or once
    throughput has stopped rising (:attr:`LoadPlan.plateau`).

    Args:
        spec: The ensemble spec.
        artifacts: Export output the repository is deployed from.
        workdir: Scratch folder for the repository and the server log.
        slo_ms: The p99 latency a load level must meet.
        options: Backend, target and pins of the deploy.
        load: The load steps.
        progress: Called with a short line at each stage (deploy, server start, each window).
        tritonserver: The ``tritonserver`` binary (default: the one ``toolkit serve`` runs).
        requests: The requests to load with (default: :func:`bench_requests` of the load plan's
            count and candidates).
    """
    load = load or LoadPlan()
    if requests is None:
        requests = bench_requests(spec, load.requests, load.candidates)
    policy = StabilityPolicy(window_s=load.window_s, max_windows=load.max_windows)

    say = progress or (lambda line: None)

    def measure(config: ServingConfig) -> Point:
        started = time.perf_counter()
        repository = workdir / "repository"
        say("writing the repository")
        write_repository(plan_deploy(config.apply(spec), artifacts, options), repository)
        server_options = ServerOptions.on_free_ports(
            repository, tritonserver=tritonserver, log_file=workdir / "tritonserver.log"
        )
        results: list[StepResult] = []
        flat = 0
        say("starting tritonserver")
        with TritonServer(server_options) as server:
            for level in load.concurrencies:
                step = StepSpec("concurrency", level)
                result = asyncio.run(
                    run_step(
                        server.grpc_url,
                        spec.name,
                        requests,
                        step,
                        spec.tier_names,
                        policy=policy,
                        on_window=lambda i, w, c=level: say(
                            f"concurrency {c}: window {i}, {w.completed / max(w.seconds, 1e-9):.0f} req/s"
                        ),
                    )
                )
                peak = max((r.requests_per_s for r in results), default=0.0)
                flat = flat + 1 if result.requests_per_s <= peak * (1.0 + load.plateau) else 0
                results.append(result)
                if result.failed or result.latency["p99_ms"] > slo_ms or flat >= 2:
                    break
            try:
                counted = router_tier_calls(server.metrics_url, router=spec.router_model)
            except ServerError:
                counted = {}
        calls = tuple(sorted((tier, path, int(n)) for (tier, path), (n, _) in counted.items() if n > 0))
        best = highest_within_slo(results, slo_ms)
        seconds = time.perf_counter() - started
        curve = tuple((r.requests_per_s, r.latency["p99_ms"], r.failed) for r in results)
        if best is None:
            return Point(config, 0.0, math.nan, sum(r.failed for r in results), seconds, curve, calls)
        return Point(config, best.requests_per_s, best.latency["p99_ms"], best.failed, seconds, curve, calls)

    return measure


def idle_instances(point: Point, knob: str) -> bool:
    """Whether ``knob`` is a tier instance count whose models the router called not at all at ``point``.

    The router runs the CPU tiers in its own process with ``local_tiers: inprocess``, and a policy
    may send a tier no traffic: then that tier model's instances do no work, and measuring another
    count of them would only measure noise. What the router called comes from the point's own
    measurement (:attr:`Point.tier_calls`); a point without it leaves every knob to be searched.
    ``tier_instances`` also sets the preprocess and gate models' instances, so it is idle only when
    the router called no model at all (everything ran in its process). An :data:`Idle` for
    :func:`~toolkit.tune.search.quick_search`.
    """
    if not point.tier_calls:
        return False
    called = {tier for tier, path, calls in point.tier_calls if path != "inprocess" and calls > 0}
    if knob.startswith(TIER_KNOB):
        return knob.removeprefix(TIER_KNOB) not in called
    if knob == "tier_instances":
        return not called
    return False
