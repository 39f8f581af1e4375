"""The load generator against the real embedded Triton: counts add up, errors counted, percentiles ordered."""

from __future__ import annotations

import asyncio
import csv
import dataclasses
import json
import time

import pytest
from helpers import run_cli

from toolkit.bench.load import StabilityPolicy, StepSpec, run_step
from toolkit.data import generate_requests

pytestmark = pytest.mark.e2e

SHORT = StabilityPolicy(window_s=0.3, max_windows=4)


def _requests(spec):
    return generate_requests(spec.features, 40, (2, 12), 0.5, seed=61, world_seed=spec.seed)


@pytest.mark.parametrize(
    "step", [StepSpec("concurrency", 2), StepSpec("rate", 40, "poisson")], ids=["closed", "open"]
)
def test_run_step_counts_add_up_and_percentiles_are_ordered(pipeline, server, step) -> None:
    spec = pipeline.spec
    result = asyncio.run(
        run_step(server.grpc_url, spec.name, _requests(spec), step, spec.tier_names, policy=SHORT)
    )
    assert result.requests > 0 and result.failed == 0
    assert 3 <= result.windows <= SHORT.max_windows
    assert result.requests + result.failed <= result.sent
    latency = result.latency
    assert (
        0
        < latency["p50_ms"]
        <= latency["p90_ms"]
        <= latency["p95_ms"]
        <= latency["p99_ms"]
        <= latency["max_ms"]
    )
    assert sum(result.tier_mix.values()) == pytest.approx(1.0)
    assert set(result.tier_mix) <= set(spec.tier_names)
    assert result.candidates >= 2 * result.requests
    assert result.server[spec.name]["requests"] >= result.requests
    assert {"queue_us", "compute_infer_us"} <= set(result.server[spec.name])


def test_run_step_scores_what_was_served_against_the_requests_labels(pipeline, server) -> None:
    spec = pipeline.spec
    requests = _requests(spec)
    flipped = dataclasses.replace(requests, labels=1.0 - requests.labels)
    step = StepSpec("concurrency", 2)
    ne = {
        name: asyncio.run(run_step(server.grpc_url, spec.name, pool, step, spec.tier_names, policy=SHORT)).ne
        for name, pool in (("labels", requests), ("flipped", flipped))
    }
    assert 0 < ne["labels"] < 1.5
    assert ne["flipped"] > ne["labels"] + 0.5


def test_run_step_counts_every_refused_request_by_its_grpc_status(pipeline, server) -> None:
    spec = pipeline.spec
    step = StepSpec("concurrency", 2)
    result = asyncio.run(
        run_step(server.grpc_url, spec.name, _requests(spec), step, spec.tier_names, "gold", policy=SHORT)
    )
    assert result.requests == 0 and result.failed > 0
    assert list(result.errors) == ["StatusCode.INVALID_ARGUMENT"]


def test_a_warmup_runs_the_load_before_the_first_window_and_counts_its_failures(pipeline, server) -> None:
    spec = pipeline.spec
    requests, step = _requests(spec), StepSpec("concurrency", 2)
    warm = dataclasses.replace(SHORT, warmup_s=0.5)
    windows: list[float] = []
    started = time.perf_counter()
    result = asyncio.run(
        run_step(
            server.grpc_url,
            spec.name,
            requests,
            step,
            spec.tier_names,
            policy=warm,
            on_window=lambda i, w: windows.append(w.seconds),
        )
    )
    assert result.requests > 0 and result.failed == 0 and result.warmup_failed == 0
    assert all(seconds < warm.warmup_s for seconds in windows)  # no window took the warm-up in
    assert time.perf_counter() - started >= warm.warmup_s + sum(windows)

    refused = asyncio.run(
        run_step(server.grpc_url, spec.name, requests, step, spec.tier_names, "gold", policy=warm)
    )
    assert refused.warmup_failed > 0 and refused.failed > 0
    assert refused.row()["warmup_failed"] == refused.warmup_failed


def test_bench_cli_writes_csv_json_and_png_and_reports_the_slo(pipeline, server, tmp_path) -> None:
    out = tmp_path / "bench"
    args = ("--url", server.grpc_url, "--concurrency", "1,2", "--window-s", "0.2", "--max-windows", "3")
    args += ("--warmup-s", "0.2")
    proc = run_cli(
        "bench",
        "--spec",
        str(pipeline.spec_path),
        *args,
        "--slo-ms",
        "10000",
        "--out",
        str(out),
        extras=["export"],
    )
    rows = list(csv.DictReader((out / "bench.csv").open()))
    assert [r["level"] for r in rows] == ["1.0", "2.0"]
    assert [r["warmup_failed"] for r in rows] == ["0", "0"]
    data = json.loads((out / "bench.json").read_text())
    assert len(data["steps"]) == 2 and data["slo_ms"] == 10000
    assert (out / "bench.png").stat().st_size > 5_000
    assert "highest load with p99 <= 10000 ms" in proc.stdout


def test_bench_cli_on_the_client_install_writes_csv_and_json_and_says_why_no_plot(
    pipeline, server, tmp_path
) -> None:
    out = tmp_path / "bench"
    args = ("--url", server.grpc_url, "--concurrency", "1", "--window-s", "0.2", "--max-windows", "3")
    proc = run_cli("bench", "--spec", str(pipeline.spec_path), *args, "--out", str(out), extras=[])
    assert json.loads((out / "bench.json").read_text())["steps"][0]["requests"] > 0
    assert (out / "bench.csv").is_file() and not (out / "bench.png").exists()
    assert "bench.png needs matplotlib: pip install 'adaptive-ranking-toolkit[export]'" in proc.stdout
    bad = run_cli("bench", "--spec", str(pipeline.spec_path), "--concurrency", "1,x", check=False)
    assert bad.returncode == 2 and "--concurrency" in bad.stderr
