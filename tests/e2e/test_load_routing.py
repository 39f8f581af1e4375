"""Load-aware routing on the real embedded Triton: past the largest tier's capacity and back.

The tiny spec is deployed with a policy that wishes the largest tier for every request and
``routing.slo_ms`` set, so that only the router's load ceiling moves requests down. Its largest tier
is retrained wider (:data:`HEAVY_XL`): at the tiny sizes every tier costs about what the router's
own work per request costs, and the cheapest tier's capacity came out only 1.17x the largest's on
a 2-core machine, too little room to test routing in. The largest and the cheapest tier's
capacities are measured first (closed loop, the tier forced); then routed requests arrive (open
loop) at a rate past the largest tier's capacity but within the cheapest's, and then at a fraction
of the largest tier's capacity.
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from helpers import run_cli, serving, write_spec

from toolkit.bench.load import StabilityPolicy, StepSpec, Window, run_step
from toolkit.data import generate_requests
from toolkit.export import FP32
from toolkit.repository.plan import DeployOptions, plan_deploy
from toolkit.repository.writer import write_repository
from toolkit.serve.metrics import router_events
from toolkit.spec import load_spec

pytestmark = pytest.mark.e2e

SLO_MS = 100.0
CANDIDATES = (768, 1024)
"""Large requests: the largest tier's cost then outweighs the fixed cost of a request."""
WINDOWS = StabilityPolicy(window_s=1.0, stable_windows=3, max_windows=6)
"""Capacity: closed loop, until three 1 s windows agree."""
ROUTED = StabilityPolicy(window_s=1.0, stable_windows=8, max_windows=8)
"""Routed steps: always eight 1 s windows, so that the ceiling has time to settle before the last
three, however soon the throughput is steady."""
HEAVY_XL = {"embedding_dim": 16, "heads": 2, "layers": 1, "hidden": [384, 384]}
"""The largest tier's parameters here: its per-candidate MLP is what makes it several times the
cheapest tier's cost on large requests."""


def _with_heavy_largest(pipeline, folder: Path):
    """The session's trained and exported tiny spec, its largest tier retrained as :data:`HEAVY_XL`
    and exported (fp32) into copies of the checkpoints and artifacts under ``folder``.

    Returns:
        The spec and the pins to deploy (the session's for the others, fp32 for the largest).
    """
    largest = pipeline.spec.tier_names[-1]
    data = yaml.safe_load(pipeline.spec_path.read_text(encoding="utf-8"))
    next(t for t in data["tiers"] if t["name"] == largest)["params"] = HEAVY_XL
    data["paths"] = {name: str(folder / name) for name in ("checkpoints", "artifacts", "repository")}
    shutil.copytree(pipeline.checkpoints, folder / "checkpoints")
    shutil.copytree(pipeline.artifacts, folder / "artifacts")
    spec_path = write_spec(folder / "heavy.yaml", data)
    run_cli("train", "--spec", str(spec_path), "--tier", largest)
    run_cli("export", "--spec", str(spec_path), "--tier", largest, "--precision", FP32)
    return load_spec(spec_path), {**pipeline.pins, largest: FP32}


def _run(
    url: str, spec, requests, step: StepSpec, tier: str | None = None, policy: StabilityPolicy = WINDOWS
) -> tuple[list[Window], float]:
    windows: list[Window] = []
    result = asyncio.run(
        run_step(
            url,
            spec.name,
            requests,
            step,
            spec.tier_names,
            tier,
            policy=policy,
            on_window=lambda _, window: windows.append(window),
        )
    )
    return windows, result.requests_per_s


def _trace(windows: list[Window], tier: str) -> str:
    return "; ".join(
        f"{_share([w], tier):.0%} {tier} p99 {w.histogram.percentile(99):.0f} ms"
        + (f" {dict(w.errors)}" if w.errors else "")
        for w in windows
    )


def _share(windows: list[Window], tier: str) -> float:
    served: Counter[str] = Counter()
    for window in windows:
        served.update(window.tiers)
    return served[tier] / max(sum(served.values()), 1)


def test_past_the_largest_tiers_capacity_requests_move_to_cheaper_tiers_and_back_without_failing(
    pipeline, tmp_path: Path
) -> None:
    heavy, pins = _with_heavy_largest(pipeline, tmp_path)
    largest, cheapest = heavy.tier_names[-1], heavy.tier_names[0]
    routing = dataclasses.replace(
        heavy.routing, policy="static", default_tier=largest, rules=(), slo_ms=SLO_MS
    )
    spec = dataclasses.replace(heavy, routing=routing)
    repository = tmp_path / "repository"
    write_repository(
        plan_deploy(spec, Path(heavy.paths.artifacts), DeployOptions("python", pins=pins)), repository
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
        overload, _ = _run(url, spec, requests, StepSpec("rate", offered), policy=ROUTED)
        calm, _ = _run(url, spec, requests, StepSpec("rate", 0.3 * largest_capacity), policy=ROUTED)
        events = router_events(server.metrics_url)

    print(
        f"\ncapacity: {largest} {largest_capacity:.0f} req/s, {cheapest} {cheapest_capacity:.0f} req/s; "
        f"offered {offered:.0f} req/s: {largest} share {_share(overload, largest):.0%} "
        f"(last 3 windows {_share(overload[-3:], largest):.0%}), failed "
        f"{sum(sum(w.errors.values()) for w in overload)}; then {0.3 * largest_capacity:.0f} req/s: "
        f"{largest} share of the last 3 windows {_share(calm[-3:], largest):.0%}\n"
        f"overload windows: {_trace(overload, largest)}\ncalm windows: {_trace(calm, largest)}"
    )
    assert sum(sum(w.errors.values()) for w in overload) == 0  # the cheaper tiers had room
    assert _share(overload[-3:], largest) < 0.5  # moved down
    assert events.get(("reason", "load"), 0) > 0
    assert sum(sum(w.errors.values()) for w in calm) == 0
    assert _share(calm[-3:], largest) > 0.9  # and back
