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
from toolkit.repository.plan import DeployOptions, plan_deploy
from toolkit.repository.writer import write_repository
from toolkit.serve import ServerOptions, TritonServer, free_port
from toolkit.spec.schema import Spec
from toolkit.tune.search import Measure, Point
from toolkit.tune.space import ServingConfig


@dataclass(frozen=True)
class LoadPlan:
    """How each configuration is loaded.

    Attributes:
        concurrencies: Closed-loop steps, rising; the climb stops at the first that misses the SLO.
        window_s: Length of a measurement window (as ``toolkit bench --window-s``).
        max_windows: Windows per step at most (as ``toolkit bench --max-windows``).
        requests: Requests the load cycles through (the spec's traffic, as ``toolkit bench``'s).
    """

    concurrencies: tuple[int, ...] = (1, 2, 4, 8)
    window_s: float = 1.0
    max_windows: int = 6
    requests: int = 200

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
    on_step: Callable[[ServingConfig, StepResult], None] | None = None,
) -> Measure:
    """A :data:`~toolkit.tune.search.Measure` that runs each configuration on a real ``tritonserver``.

    For a configuration it writes the repository (the spec with the configuration applied, deployed
    with ``options``) to ``<workdir>/repository``, starts the server on free ports, runs the load
    plan's steps with ``toolkit bench``'s load generator on the spec's traffic (:func:`bench_requests`),
    stops the server, and reports the highest throughput whose p99 met ``slo_ms`` with no failed
    request.

    Args:
        spec: The ensemble spec.
        artifacts: Export output the repository is deployed from.
        workdir: Scratch folder for the repository and the server log.
        slo_ms: The p99 latency a load level must meet.
        options: Backend, target and pins of the deploy.
        load: The load steps.
        on_step: Called after each load step.
    """
    load = load or LoadPlan()
    requests = bench_requests(spec, load.requests)
    policy = StabilityPolicy(window_s=load.window_s, max_windows=load.max_windows)

    def measure(config: ServingConfig) -> Point:
        started = time.perf_counter()
        repository = workdir / "repository"
        write_repository(plan_deploy(config.apply(spec), artifacts, options), repository)
        server_options = ServerOptions(
            repository=repository,
            grpc_port=free_port(),
            http_port=free_port(),
            metrics_port=free_port(),
            log_file=workdir / "tritonserver.log",
        )
        results: list[StepResult] = []
        with TritonServer(server_options) as server:
            for level in load.concurrencies:
                step = StepSpec("concurrency", level)
                result = asyncio.run(
                    run_step(server.grpc_url, spec.name, requests, step, spec.tier_names, policy=policy)
                )
                results.append(result)
                if on_step is not None:
                    on_step(config, result)
                if result.failed or result.latency["p99_ms"] > slo_ms:
                    break
        best = highest_within_slo(results, slo_ms)
        seconds = time.perf_counter() - started
        if best is None:
            return Point(config, 0.0, math.nan, sum(r.failed for r in results), seconds)
        return Point(config, best.requests_per_s, best.latency["p99_ms"], best.failed, seconds)

    return measure
