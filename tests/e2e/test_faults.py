"""Faults behind the router on the real embedded Triton: the largest tier unloaded and replaced under load.

A server in ``explicit`` model-control mode serves a fresh deployment of the session's spec (without
the router's queue timeout, so that the test's own deploy cannot get requests shed) while the load
generator sends requests that ask for the largest tier for 20 seconds. A few seconds in, that tier is
unloaded; ``toolkit deploy`` then writes the repository again with another variant of it, and the
tier is loaded again. No request may fail: while the tier is gone the router answers with the next
cheaper tier (the ``tier`` output says so) and counts the fallback; afterwards the tier serves the
new variant's scores.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import threading
import time

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml

from toolkit.bench.load import StabilityPolicy, StepSpec, run_step
from toolkit.client import RankingClient
from toolkit.data import REQUEST_TENSORS, generate_requests
from toolkit.export import FP32, cpu_session, read_manifest
from toolkit.repository import MARKER
from toolkit.serve import TritonServer

pytestmark = pytest.mark.e2e

LOAD_S = 20.0


def test_unloading_the_largest_tier_under_load_fails_no_request_and_reloading_brings_it_back(
    pipeline, tmp_path
) -> None:
    from helpers import free_port_options, run_cli, write_spec

    spec = pipeline.spec
    largest, cheaper = spec.tier_names[-1], spec.tier_names[-2]
    data = yaml.safe_load(pipeline.spec_path.read_text(encoding="utf-8"))
    data["triton"]["queue_timeout_ms"] = 0  # shedding under the test's own CPU load is another test's
    spec_path = write_spec(tmp_path / "spec.yaml", data)
    repository = tmp_path / "repository"
    keep = [a for t, v in pipeline.pins.items() if t != largest for a in ("--pin", f"{t}={v}")]
    before = (
        pipeline.pins.get(largest)
        or json.loads((pipeline.repository / MARKER).read_text())["variants"][largest]
    )
    run_cli(
        "deploy", "--spec", str(spec_path), "--out", str(repository), *keep, "--pin", f"{largest}={before}"
    )
    entries = read_manifest(pipeline.artifacts).tier(largest).variants
    replacement = next(v for v, e in entries.items() if e.passed and v != before)
    options = dataclasses.replace(
        free_port_options(repository, tmp_path / "tritonserver.log"),
        model_control_mode="explicit",
        load_models=("*",),
    )
    requests = generate_requests(spec.features, 60, (2, 12), 0.5, seed=71, world_seed=spec.seed)
    windows = int(LOAD_S / 2)
    policy = StabilityPolicy(window_s=2.0, stable_windows=windows, max_windows=windows)
    result = {}
    with TritonServer(options) as server:
        pid = server.pid
        admin = grpcclient.InferenceServerClient(server.grpc_url)

        def drive() -> None:
            step = StepSpec("concurrency", 2)
            result["step"] = asyncio.run(
                run_step(server.grpc_url, spec.name, requests, step, spec.tier_names, largest, policy=policy)
            )

        load = threading.Thread(target=drive)
        started = time.monotonic()
        load.start()
        _wait_until(started + 4.0)
        admin.unload_model(largest)
        _wait_until(started + 6.0)
        assert not admin.is_model_ready(largest)
        run_cli(
            "deploy",
            "--spec",
            str(spec_path),
            "--out",
            str(repository),
            *keep,
            "--pin",
            f"{largest}={replacement}",
        )
        _wait_until(started + 12.0)
        admin.load_model(largest)
        assert admin.is_model_ready(largest)
        load.join(timeout=LOAD_S + 60)
        assert not load.is_alive()
        raw = requests.request(0)
        with RankingClient(server.grpc_url, spec.name, tier_names=spec.tier_names) as client:
            after = client.rank(tier=largest, **raw)
        assert server.running and server.pid == pid
        admin.close()
    log = (tmp_path / "tritonserver.log").read_text(encoding="utf-8", errors="replace")

    step = result["step"]
    assert step.seconds >= LOAD_S - 1
    assert step.failed == 0 and step.errors == {}, step.errors
    assert step.requests > 0
    assert step.tier_mix.get(cheaper, 0) > 0 and step.tier_mix.get(largest, 0) > 0
    assert np.all(after.tiers == spec.tier_names.index(largest))
    preprocess = cpu_session(str(pipeline.artifacts / spec.preprocess_model / FP32 / "model.onnx"))
    tier = cpu_session(str(pipeline.artifacts / largest / replacement / "model.onnx"))
    expected = tier.run(["score"], dict(zip(REQUEST_TENSORS, preprocess.run(None, raw), strict=True)))[0]
    assert np.max(np.abs(after.scores - expected)) <= 1e-5
    counts = re.findall(rf"'fallback:{largest}': (\d+)", log)
    assert counts and sum(int(c) for c in counts) > 0


def _wait_until(deadline: float) -> None:
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(left, 0.1))
