"""What toolkit tune writes from a search: the verdict, the overlay and full spec, the report, Model
Analyzer's config and perf_analyzer's data; and the CLI's refusals (nothing here starts a server)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import run_cli, write_spec

from toolkit.bench.load import bench_requests
from toolkit.spec import load_spec, spec_from_dict
from toolkit.tune.report import verdict, write_report
from toolkit.tune.search import Point, SearchResult
from toolkit.tune.space import ServingConfig

START = ServingConfig()
FASTER = ServingConfig(router_instances=4, tier_threads=2)
CURVE = ((100.0, 5.0, 0), (180.0, 9.0, 0), (200.0, 30.0, 0))


def _result(*points: Point, stopped: str | None = None) -> SearchResult:
    best = max((p for p in points if p.meets_slo), key=lambda p: p.throughput, default=None)
    return SearchResult(list(points), START, best, stopped)


def test_the_verdict_names_the_knobs_that_moved_and_the_gain_over_the_start() -> None:
    result = _result(Point(START, 200.0, 18.0, curve=CURVE), Point(FASTER, 300.0, 19.0, curve=CURVE))

    said = verdict(result, 20.0, 0.05)

    assert said.gain == pytest.approx(1.5)
    assert "router_instances 2 -> 4" in said.text and "tier_threads 1 -> 2" in said.text
    assert "1.50x" in said.text and "ran to its end" in said.text


def test_the_verdict_says_why_the_search_ended_and_when_nothing_met_the_slo() -> None:
    cut = verdict(_result(Point(START, 200.0, 18.0), Point(FASTER, 230.0, 19.0), stopped="budget"), 20, 0.05)
    missed = verdict(_result(Point(START, 0.0, math.nan, failed=3)), 20.0, 0.05)

    assert "1.15x" in cut.text and "time budget ran out" in cut.text
    assert missed.chosen is None and math.isnan(missed.gain)
    assert "No configuration met p99 <= 20 ms" in missed.text


def test_the_start_stays_chosen_when_no_point_beat_it_by_the_margin() -> None:
    start = Point(START, 200.0, 18.0)
    result = SearchResult([start, Point(FASTER, 205.0, 19.0)], START, start)

    said = verdict(result, 20.0, 0.05)

    assert said.chosen is start and said.gain == 1.0
    assert "It is the starting configuration: no other configuration beat it by more than 5%" in said.text
    assert "the search's measurements" in said.text


def test_the_verdict_gives_the_confirmed_medians_of_each_configuration() -> None:
    start = Point(START, 200.0, 18.0)
    result = SearchResult([start, Point(FASTER, 260.0, 19.0)], START, Point(FASTER, 260.0, 19.0))
    result.confirmed = {
        START: [Point(START, t, 15.0) for t in (150.0, 170.0, 160.0)],
        FASTER: [Point(FASTER, t, 15.0) for t in (240.0, 250.0, 0.0)],
    }

    said = verdict(result, 20.0, 0.05)

    assert said.chosen.throughput == 240.0 and said.baseline.throughput == 160.0 and said.gain == 1.5
    assert "3 times each and alternating" in said.text
    assert (
        "the start 160.0 (150.0 to 170.0); router_instances 4, tier_threads 2 240.0 (0.0 to 250.0)"
        in said.text
    )
    assert "beat the start in every round, so that chance alone" in said.text
    assert "no faster than the start 12.5% of the time" in said.text


def test_write_report_writes_a_deployable_spec_an_overlay_and_model_analyzer_inputs(
    tiny_spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    spec_path = write_spec(tmp_path / "tiny.yaml", tiny_spec_dict)
    spec = load_spec(spec_path)
    requests = bench_requests(spec, 5)
    result = _result(Point(START, 200.0, 18.0, curve=CURVE), Point(FASTER, 300.0, 19.0, curve=CURVE))

    said, written = write_report(result, tmp_path / "out", 20.0, 0.05, spec, spec_path, requests, {"x": 1})

    names = {p.name for p in written}
    assert {"tune.md", "tune-points.json", "triton.yaml", "spec.yaml", "model_analyzer.yaml"} <= names
    assert "tune.png" in names and (tmp_path / "out" / "tune.png").stat().st_size > 0
    tuned = load_spec(tmp_path / "out" / "spec.yaml")
    assert ServingConfig.from_spec(tuned) == FASTER
    assert tuned.tiers == spec.tiers and tuned.features == spec.features
    overlay = yaml.safe_load((tmp_path / "out" / "triton.yaml").read_text())
    data = copy.deepcopy(tiny_spec_dict)
    data["triton"].update(overlay["triton"])
    assert ServingConfig.from_spec(spec_from_dict(data)) == FASTER
    analyzer = yaml.safe_load((tmp_path / "out" / "model_analyzer.yaml").read_text())
    profiled = analyzer["profile_models"][spec.router_model]
    assert profiled["constraints"]["perf_latency_p99"]["max"] == 20.0
    assert analyzer["bls_composing_models"].split(",")[: len(spec.tier_names)] == list(spec.tier_names)
    samples = json.loads(Path(analyzer["perf_analyzer_flags"]["input-data"]).read_text())["data"]
    first = requests.request(0)
    assert len(samples) == 5
    assert {name: tensor["shape"] for name, tensor in samples[0].items()} == {
        name: list(array.shape) for name, array in first.items()
    }
    assert samples[0]["ad_sparse"]["content"] == first["ad_sparse"].ravel().tolist()
    report = (tmp_path / "out" / "tune.md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("|")]
    assert len(rows) == 2 + 2 and len({line.count("|") for line in rows}) == 1
    assert said.text in report


def test_per_tier_counts_go_into_the_spec_the_overlay_comments_and_the_table(
    tiny_spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    spec_path = write_spec(tmp_path / "tiny.yaml", tiny_spec_dict)
    spec = load_spec(spec_path)
    start = ServingConfig.from_spec(spec, ["lite", "xl"])
    faster = start.with_value("instances.xl", 3)
    result = SearchResult([Point(start, 200.0, 18.0), Point(faster, 300.0, 19.0)], start, None)

    said, _ = write_report(result, tmp_path / "out", 20.0, 0.05, spec, spec_path, bench_requests(spec, 2), {})

    tuned = load_spec(tmp_path / "out" / "spec.yaml")
    assert ServingConfig.from_spec(tuned, ["lite", "xl"]) == faster
    assert [t.instances for t in tuned.tiers] == [1, 0, 3]  # standard keeps the shared count
    assert "instances.xl 1 -> 3" in said.text and "1.50x" in said.text
    overlay = (tmp_path / "out" / "triton.yaml").read_text()
    assert "#   xl: instances: 3" in overlay and "#   lite: instances: 1" in overlay
    assert set(yaml.safe_load(overlay)) == {"triton"}
    header = next(
        line for line in (tmp_path / "out" / "tune.md").read_text().splitlines() if line.startswith("|")
    )
    assert "| instances.lite | instances.xl |" in header
    summary = json.loads((tmp_path / "out" / "tune-points.json").read_text())
    assert summary["knobs"] == list(start.knobs)  # the rows' knob columns, in the search's order
    assert [row["instances.xl"] for row in summary["points"]] == [1, 3]


def test_per_tier_kinds_go_into_the_spec_and_the_overlay_comments(
    tiny_spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    tiny_spec_dict["triton"]["target"] = "gpu"
    spec_path = write_spec(tmp_path / "gpu.yaml", tiny_spec_dict)
    spec = load_spec(spec_path)
    start = ServingConfig.from_spec(spec, ["xl"], kinds=["lite"])
    faster = start.with_value("kind.lite", "cpu")
    result = SearchResult([Point(start, 200.0, 18.0), Point(faster, 300.0, 19.0)], start, None)

    said, _ = write_report(result, tmp_path / "out", 20.0, 0.05, spec, spec_path, bench_requests(spec, 2), {})

    tuned = load_spec(tmp_path / "out" / "spec.yaml")
    assert [t.instance_kind for t in tuned.tiers] == ["cpu", "", ""]
    assert ServingConfig.from_spec(tuned, ["xl"], kinds=["lite"]) == faster
    assert "kind.lite gpu -> cpu" in said.text
    overlay = (tmp_path / "out" / "triton.yaml").read_text()
    assert "#   lite: instance_kind: cpu\n" in overlay
    assert "#   xl: instances: 1\n" in overlay


def test_no_chosen_configuration_writes_the_report_but_no_spec(tiny_spec_dict, tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path / "tiny.yaml", tiny_spec_dict)
    spec = load_spec(spec_path)

    said, written = write_report(
        _result(Point(START, 0.0, math.nan, failed=2, curve=((50.0, 900.0, 2),))),
        tmp_path / "out",
        20.0,
        0.05,
        spec,
        spec_path,
        bench_requests(spec, 2),
        {},
    )

    assert said.chosen is None and not (tmp_path / "out" / "spec.yaml").exists()
    assert json.loads((tmp_path / "out" / "tune-points.json").read_text())["chosen"] is None


@pytest.mark.parametrize(
    ("flags", "named"),
    [
        (["--local-tiers", "grpc"], "--local-tiers"),
        (["--router-instances", "1,2"], "--router-instances"),
        (["--tier-threads", "two"], "--tier-threads"),
        (["--concurrency", "0,4"], "--concurrency"),
        (["--pin", "lite"], "--pin"),
        (["--per-tier-instances", "huge=1,2"], "'huge' is not a tier of the spec (lite, standard, xl)"),
        (["--per-tier-instances", "xl=0,1"], "--per-tier-instances"),
        (["--per-tier-instances", "1,2", "--per-tier-instances", "2,3"], "given twice"),
        (["--per-tier-instances", "1,2", "--tier-instances", "1,2"], "triton.tier_instances changes nothing"),
    ],
    ids=[
        "local_tiers",
        "one_router",
        "not_a_number",
        "concurrency",
        "pin",
        "unknown_tier",
        "zero_instances",
        "two_lists",
        "shared_count_unused",
    ],
)
def test_the_cli_names_the_flag_at_fault(
    tiny_spec_dict, tmp_path: Path, flags: list[str], named: str
) -> None:
    spec_path = write_spec(tmp_path / "tiny.yaml", tiny_spec_dict)

    out = tmp_path / "out"
    result = run_cli(
        "tune", "--spec", str(spec_path), "--slo-ms", "20", "--out", str(out), *flags, check=False
    )

    assert result.returncode != 0 and named in result.stderr
    assert not out.exists()


@pytest.mark.parametrize(
    ("target", "flags", "named"),
    [
        ("cpu", ["--per-tier-kind", "cpu,gpu"], "searched on GPU targets"),
        ("gpu", ["--per-tier-kind", "lite=cpu,tpu"], "kind.lite: 'tpu' is not one of cpu, gpu"),
        ("gpu", ["--per-tier-kind", "gold=cpu"], "'gold' is not a tier of the spec"),
    ],
    ids=["cpu_target", "unknown_kind", "unknown_tier"],
)
def test_the_cli_names_the_kind_flag_at_fault(
    tiny_spec_dict, tmp_path: Path, target: str, flags: list[str], named: str
) -> None:
    tiny_spec_dict["triton"]["target"] = target
    spec_path = write_spec(tmp_path / "tiny.yaml", tiny_spec_dict)

    result = run_cli("tune", "--spec", str(spec_path), "--slo-ms", "20", *flags, check=False)

    assert result.returncode != 0 and "--per-tier-kind" in result.stderr and named in result.stderr


def test_the_cli_needs_an_slo_and_refuses_a_spec_with_pools(tiny_spec_dict, tmp_path: Path) -> None:
    data = copy.deepcopy(tiny_spec_dict)
    data["pools"] = [{"name": "cpu"}, {"name": "big"}]
    data["tiers"][2]["pool"] = "big"
    spec_path = write_spec(tmp_path / "pools.yaml", data)

    no_slo = run_cli("tune", "--spec", str(spec_path), check=False)
    pools = run_cli("tune", "--spec", str(spec_path), "--slo-ms", "20", check=False)

    assert no_slo.returncode != 0 and "--slo-ms" in no_slo.stderr
    assert pools.returncode != 0 and "pools" in pools.stderr and "one server" in pools.stderr


def test_the_cli_names_the_missing_export_before_starting_a_server(tiny_spec_dict, tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path / "tiny.yaml", tiny_spec_dict)
    artifacts = tmp_path / "nothing-exported"

    result = run_cli(
        "tune", "--spec", str(spec_path), "--slo-ms", "20", "--artifacts", str(artifacts), check=False
    )

    assert result.returncode == 1
    assert f"{artifacts / 'manifest.json'}: manifest not found; run `toolkit export` first" in result.stderr
    assert not (artifacts / "tune").exists()
