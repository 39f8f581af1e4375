"""Load-aware routing on the real embedded Triton: past the largest tier's capacity and back.

The tiny spec is deployed with a policy that wishes the largest tier for every request and
``routing.slo_ms`` set, so that only the router's load ceiling moves requests down. The largest and
the cheapest tier's capacities are measured first (closed loop, the tier forced); then routed
requests arrive (open loop) at a rate past the largest tier's capacity but within the cheapest's,
and then at a fraction of the largest tier's capacity.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from pathlib import Path

import pytest
from helpers import serving

from toolkit.bench.load import StabilityPolicy, StepSpec, Window, run_step
from toolkit.data import generate_requests
from toolkit.repository.plan import DeployOptions, plan_deploy
from toolkit.repository.writer import write_repository
from toolkit.serve.metrics import router_events

pytestmark = pytest.mark.e2e

SLO_MS = 100.0
CANDIDATES = (768, 1024)
"""Large requests: the largest tier's cost then outweighs the fixed cost of a request."""
WINDOWS = StabilityPolicy(window_s=1.0, stable_windows=3, max_windows=6)


def _run(url: str, spec, requests, step: StepSpec, tier: str | None = None) -> tuple[list[Window], float]:
    windows: list[Window] = []
    result = asyncio.run(
        run_step(
            url,
            spec.name,
            requests,
            step,
            spec.tier_names,
            tier,
            policy=WINDOWS,
            on_window=lambda _, window: windows.append(window),
        )
    )
    return windows, result.requests_per_s


def _share(windows: list[Window], tier: str) -> float:
    served: Counter[str] = Counter()
    for window in windows:
        served.update(window.tiers)
    return served[tier] / max(sum(served.values()), 1)


def test_past_the_largest_tiers_capacity_requests_move_to_cheaper_tiers_and_back_without_failing(
    pipeline, tmp_path: Path
) -> None:
    largest, cheapest = pipeline.spec.tier_names[-1], pipeline.spec.tier_names[0]
    routing = dataclasses.replace(
        pipeline.spec.routing, policy="static", default_tier=largest, rules=(), slo_ms=SLO_MS
    )
    spec = dataclasses.replace(pipeline.spec, routing=routing)
    repository = tmp_path / "repository"
    write_repository(
        plan_deploy(spec, pipeline.artifacts, DeployOptions("python", pins=pipeline.pins)), repository
    )
    requests = generate_requests(spec.features, 60, CANDIDATES, 1.0, seed=29, world_seed=spec.seed)

    with serving(repository, tmp_path) as server:
        url = server.grpc_url
        _, largest_capacity = _run(url, spec, requests, StepSpec("concurrency", 4), largest)
        _, cheapest_capacity = _run(url, spec, requests, StepSpec("concurrency", 4), cheapest)
        assert cheapest_capacity > 1.25 * largest_capacity, (
            f"the cheapest tier ({cheapest_capacity:.0f} req/s) must be well above the largest "
            f"({largest_capacity:.0f} req/s) for load-aware routing to have room on this machine"
        )
        offered = max((largest_capacity + 0.8 * cheapest_capacity) / 2.0, 1.1 * largest_capacity)
        overload, _ = _run(url, spec, requests, StepSpec("rate", offered))
        calm, _ = _run(url, spec, requests, StepSpec("rate", 0.3 * largest_capacity))
        events = router_events(server.metrics_url)

    print(
        f"\ncapacity: {largest} {largest_capacity:.0f} req/s, {cheapest} {cheapest_capacity:.0f} req/s; "
        f"offered {offered:.0f} req/s: {largest} share {_share(overload, largest):.0%} "
        f"(last 3 windows {_share(overload[-3:], largest):.0%}), failed "
        f"{sum(sum(w.errors.values()) for w in overload)}; then {0.3 * largest_capacity:.0f} req/s: "
        f"{largest} share of the last 3 windows {_share(calm[-3:], largest):.0%}"
    )
    assert sum(sum(w.errors.values()) for w in overload) == 0  # the cheaper tiers had room
    assert _share(overload[-3:], largest) < 0.5  # moved down
    assert events.get(("reason", "load"), 0) > 0
    assert sum(sum(w.errors.values()) for w in calm) == 0
    assert _share(calm[-3:], largest) > 0.9  # and back
