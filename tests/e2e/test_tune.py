"""toolkit tune on the real embedded tritonserver: two configurations, interrupted, resumed, deployed."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import yaml
from google.protobuf import text_format
from helpers import ROOT, only_extras, run_cli, serving
from tritonclient.grpc import model_config_pb2 as mc

from toolkit.bench.load import bench_requests
from toolkit.client import RankingClient
from toolkit.extras import COMMAND_EXTRAS
from toolkit.repository.plan import DeployOptions, plan_deploy
from toolkit.repository.writer import write_repository
from toolkit.tune.measure import LoadPlan, idle_instances, server_measure
from toolkit.tune.search import brute_force
from toolkit.tune.space import SearchSpace, ServingConfig
from toolkit.tune.store import PointStore

pytestmark = pytest.mark.e2e

SLO_MS = 1000.0
LOAD = LoadPlan(concurrencies=(1, 2), window_s=0.25, max_windows=3, requests=40)


def test_a_two_point_search_measures_both_on_the_server_and_resumes_without_remeasuring(
    pipeline, tmp_path: Path
) -> None:
    """The two points differ in the largest tier's own instance count, with the router calling the
    tier models (``local_tiers: bls``), so that those instances do the work."""
    spec = pipeline.spec
    largest = spec.tier_names[-1]
    start = dataclasses.replace(ServingConfig.from_spec(spec, [largest]), local_tiers="bls")
    space = SearchSpace(
        router_instances=(start.router_instances,),
        local_tiers=("bls",),
        tier_threads=(start.tier_threads,),
        tier_instances=(start.tier_instances,),
        queue_timeout_ms=(start.queue_timeout_ms,),
        admission=(start.admission,),
        tier_counts=((largest, (1, 2)),),
    ).with_start(start)
    options = DeployOptions("python", pins=pipeline.pins)
    lines: list[str] = []
    measure = server_measure(
        spec,
        pipeline.artifacts,
        tmp_path / "work",
        SLO_MS,
        options,
        LOAD,
        progress=lines.append,
    )
    record = tmp_path / "tune.json"
    context = {"slo_ms": SLO_MS, "load": str(LOAD)}

    result = brute_force(space, PointStore(record, context).measured(measure), start=start)

    assert [p.config.value(f"instances.{largest}") for p in result.points] == [1, 2]
    for point in result.points:  # what the router called, read from the server's metrics
        assert {path for _, path, _ in point.tier_calls} == {"bls"}
        assert largest in {tier for tier, _, calls in point.tier_calls if calls > 0}
        assert not idle_instances(point, f"instances.{largest}")
    assert all(p.meets_slo and p.throughput > 0 and p.p99_ms <= SLO_MS for p in result.points)
    assert all(len(p.curve) >= 1 for p in result.points) and result.best is not None
    assert "starting tritonserver" in lines and any(line.startswith("concurrency 1:") for line in lines)
    calls = []
    again = brute_force(space, PointStore(record, context).measured(lambda c: calls.append(c)), start=start)
    assert calls == [] and [p.throughput for p in again.points] == [p.throughput for p in result.points]

    chosen = result.best.config
    repository = tmp_path / "chosen"
    write_repository(plan_deploy(chosen.apply(spec), pipeline.artifacts, options), repository)
    for model, count in [
        (spec.router_model, chosen.router_instances),
        (largest, chosen.value(f"instances.{largest}")),
        (spec.tier_names[0], chosen.tier_instances),
    ]:
        config = text_format.Parse((repository / model / "config.pbtxt").read_text(), mc.ModelConfig())
        assert sum(group.count for group in config.instance_group) == count, model


def _tune_args(pipeline, out: Path) -> list[str]:
    start = ServingConfig.from_spec(pipeline.spec)
    pins = [arg for tier, variant in pipeline.pins.items() for arg in ("--pin", f"{tier}={variant}")]
    return [
        "tune",
        "--spec",
        str(pipeline.spec_path),
        "--slo-ms",
        f"{SLO_MS:g}",
        "--router-instances",
        "2,3",
        "--local-tiers",
        start.local_tiers,
        "--tier-threads",
        str(start.tier_threads),
        "--tier-instances",
        str(start.tier_instances),
        "--queue-timeout-ms",
        f"{start.queue_timeout_ms:g}",
        "--admission",
        start.admission,
        "--search",
        "brute",
        "--confirm",
        "1",
        "--concurrency",
        "1,2",
        "--window-s",
        "0.25",
        "--max-windows",
        "3",
        "--requests",
        "40",
        "--out",
        str(out),
        *pins,
    ]


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text in cmdline.read_bytes().decode(errors="replace"):
                found.append(int(cmdline.parent.name))
        except OSError:
            continue
    return found


def test_the_cli_interrupted_by_ctrl_c_keeps_the_best_so_far_and_resumes_without_remeasuring(
    pipeline, tmp_path: Path
) -> None:
    out = tmp_path / "tune"
    record = out / "tune.json"
    python, env = only_extras(COMMAND_EXTRAS["tune"])
    proc = subprocess.Popen(
        [*python, "-m", "toolkit", *_tune_args(pipeline, out)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if record.is_file() and len(json.loads(record.read_text())["points"]) == 1:
            break
        time.sleep(0.2)
    assert proc.poll() is None, f"tune ended before its first point was recorded: {proc.communicate()}"
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C in a terminal sends: the whole foreground group
    stdout, stderr = proc.communicate(timeout=120)

    assert proc.returncode == 130, stderr
    assert "interrupted (Ctrl-C)" in stdout
    first = json.loads(record.read_text())["points"]
    assert len(first) == 1 and first[0]["config"]["router_instances"] == 2
    assert {path for _, path, _ in first[0]["tier_calls"]} == {"inprocess"}  # tier instances idle
    kept = yaml.safe_load((out / "triton.yaml").read_text())["triton"]
    assert kept["router_instances"] == 2  # the best so far: the only point measured
    assert _processes_mentioning(str(out / "work")) == []  # no tritonserver left behind

    again = run_cli(*_tune_args(pipeline, out), timeout=600)

    assert "1 points already measured" in again.stderr
    summary = json.loads((out / "tune-points.json").read_text())
    searched = [row for row in summary["points"] if not row["role"].startswith("confirm")]
    again = [row for row in summary["points"] if row["role"] == "confirm 1"]
    assert [row["router_instances"] for row in searched] == [2, 3]
    assert sorted(row["router_instances"] for row in again) == [2, 3]  # both measured again
    assert summary["measured this run"] == 3 and summary["from the record"] == 1
    resumed = json.loads(record.read_text())["points"]
    assert resumed[0] == first[0]  # the first point was not measured again
    assert summary["stopped"] is None and summary["chosen"] is not None
    assert len(summary["confirmed"]) == 2

    chosen = yaml.safe_load((out / "spec.yaml").read_text())
    repository = tmp_path / "chosen"
    pins = [arg for tier, variant in pipeline.pins.items() for arg in ("--pin", f"{tier}={variant}")]
    run_cli("deploy", "--spec", str(out / "spec.yaml"), "--out", str(repository), *pins)
    router = text_format.Parse(
        (repository / pipeline.spec.router_model / "config.pbtxt").read_text(), mc.ModelConfig()
    )
    assert sum(g.count for g in router.instance_group) == chosen["triton"]["router_instances"]
    requests = bench_requests(pipeline.spec, 3)
    with (
        serving(repository, tmp_path) as server,
        RankingClient(server.grpc_url, pipeline.spec.name) as client,
    ):
        for r in range(3):
            ranking = client.rank(**requests.request(r))
            assert len(ranking.scores) == requests.candidates_per_request[r]
