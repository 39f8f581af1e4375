"""toolkit tune's measurement on the real embedded tritonserver: two configurations, resumable."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from toolkit.repository.plan import DeployOptions, plan_deploy
from toolkit.repository.writer import write_repository
from toolkit.tune.measure import LoadPlan, server_measure
from toolkit.tune.search import brute_force
from toolkit.tune.space import SearchSpace, ServingConfig
from toolkit.tune.store import PointStore

pytestmark = pytest.mark.e2e

SLO_MS = 1000.0
LOAD = LoadPlan(concurrencies=(1, 2), window_s=0.25, max_windows=3, requests=40)


def test_a_two_point_search_measures_both_on_the_server_and_resumes_without_remeasuring(
    pipeline, tmp_path: Path
) -> None:
    spec = pipeline.spec
    start = ServingConfig.from_spec(spec)
    space = SearchSpace(
        router_instances=(2, 3),
        tier_instances=(start.tier_instances,),
        queue_timeout_ms=(start.queue_timeout_ms,),
    )
    options = DeployOptions("python", pins=pipeline.pins)
    steps = []
    measure = server_measure(
        spec,
        pipeline.artifacts,
        tmp_path / "work",
        SLO_MS,
        options,
        LOAD,
        on_step=lambda c, r: steps.append(c),
    )
    record = tmp_path / "tune.json"
    context = {"slo_ms": SLO_MS, "load": str(LOAD)}

    result = brute_force(space, PointStore(record, context).measured(measure), start=start)

    assert [p.config.router_instances for p in result.points] == [2, 3]
    assert all(p.meets_slo and p.throughput > 0 and p.p99_ms <= SLO_MS for p in result.points)
    assert len(steps) >= 2 and result.best is not None
    calls = []
    again = brute_force(space, PointStore(record, context).measured(lambda c: calls.append(c)), start=start)
    assert calls == [] and [p.throughput for p in again.points] == [p.throughput for p in result.points]

    chosen = result.best.config
    repository = tmp_path / "chosen"
    write_repository(plan_deploy(chosen.apply(spec), pipeline.artifacts, options), repository)
    router = text_format.Parse(
        (repository / spec.router_model / "config.pbtxt").read_text(), mc.ModelConfig()
    )
    assert sum(group.count for group in router.instance_group) == chosen.router_instances
