"""The routed request path on the real embedded Triton: tiers fused with preprocess, run in the router.

Every CPU tier is deployed with the preprocess step fused in front, so a client may call it with the
raw request; with ``triton.local_tiers: inprocess`` (the default) the router runs those tiers in its
own process, so Triton's statistics show no call of a tier or of the preprocess model while the
router serves, and with ``bls`` they show each call. A tier replaced under traffic (a new version
folder, picked up by a polling server) is served by the router without a failed request.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import yaml

from toolkit.client import RankingClient
from toolkit.data import REQUEST_TENSORS, generate_requests
from toolkit.export import FP32, cpu_session, read_manifest
from toolkit.repository import MARKER
from toolkit.repository.fuse import fuse_preprocess
from toolkit.serve import TritonServer
from toolkit.serve.metrics import router_tier_calls

pytestmark = pytest.mark.e2e


def _counts(client: grpcclient.InferenceServerClient) -> dict[str, int]:
    stats = client.get_inference_statistics(as_json=True)
    return {
        m["name"]: int(m.get("inference_stats", {}).get("success", {}).get("count", 0))
        for m in stats.get("model_stats", [])
    }


def _direct(client: grpcclient.InferenceServerClient, tier: str, raw: dict[str, np.ndarray]) -> np.ndarray:
    inputs = []
    for name in REQUEST_TENSORS:
        value = raw[name]
        tensor = grpcclient.InferInput(
            name, list(value.shape), "FP32" if value.dtype == np.float32 else "INT64"
        )
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return client.infer(tier, inputs, outputs=[grpcclient.InferRequestedOutput("score")]).as_numpy("score")


def _two_step(pipeline: Any, tier: str, variant: str, raw: dict[str, np.ndarray]) -> np.ndarray:
    """The tier's scores as export checked them: the preprocess model, then the tier's variant."""
    pre = cpu_session(str(pipeline.artifacts / pipeline.spec.preprocess_model / FP32 / "model.onnx"))
    model = cpu_session(str(pipeline.artifacts / tier / variant / "model.onnx"))
    return model.run(["score"], dict(zip(REQUEST_TENSORS, pre.run(None, raw), strict=True)))[0]


def _requests(pipeline: Any, count: int, seed: int) -> Any:
    spec = pipeline.spec
    return generate_requests(spec.features, count, (1, 12), 0.5, seed=seed, world_seed=spec.seed)


def test_fused_variants_score_as_the_two_step_path_within_1e_6_for_every_exported_variant(pipeline) -> None:
    import onnx

    spec = pipeline.spec
    preprocess = onnx.load(str(pipeline.artifacts / spec.preprocess_model / FP32 / "model.onnx"))
    requests = _requests(pipeline, 40, seed=5)
    manifest = read_manifest(pipeline.artifacts)
    checked = 0
    for tier in spec.tier_names:
        for variant, entry in manifest.tier(tier).variants.items():
            path = pipeline.artifacts / tier / variant / "model.onnx"
            if not entry.passed or not path.is_file():
                continue
            fused = cpu_session(fuse_preprocess(preprocess, onnx.load(str(path))).SerializeToString())
            for r in range(requests.num_requests):
                raw = requests.request(r)
                expected = _two_step(pipeline, tier, variant, raw)
                np.testing.assert_allclose(fused.run(["score"], raw)[0], expected, atol=1e-6, rtol=0)
            checked += 1
    assert checked >= len(spec.tier_names) + 1


def test_routed_requests_run_the_tiers_in_the_routers_process_and_tiers_take_the_raw_request(
    pipeline, server
) -> None:
    spec = pipeline.spec
    requests = _requests(pipeline, 10, seed=31)
    admin = grpcclient.InferenceServerClient(server.grpc_url)
    variants = json.loads((pipeline.repository / MARKER).read_text())["variants"]
    before = _counts(admin)
    calls_before = router_tier_calls(server.metrics_url)
    routed: dict[tuple[str, int], np.ndarray] = {}
    with RankingClient(server.grpc_url, spec.name, tier_names=spec.tier_names) as client:
        for tier in spec.tier_names:
            for r in range(requests.num_requests):
                ranking = client.rank(tier=tier, **requests.request(r))
                assert set(ranking.tier_names) == {tier}
                routed[(tier, r)] = ranking.scores
    after = _counts(admin)
    calls = router_tier_calls(server.metrics_url)
    served = len(spec.tier_names) * requests.num_requests
    for tier in spec.tier_names:
        count, seconds = calls[(tier, "inprocess")]
        assert count - calls_before.get((tier, "inprocess"), (0.0, 0.0))[0] == requests.num_requests
        assert seconds > 0
    assert not [key for key in calls if key[1] != "inprocess"]

    assert after[spec.router_model] - before[spec.router_model] == served
    for model in (*spec.tier_names, spec.preprocess_model):
        assert after[model] == before[model], f"{model} was called through Triton"
    for tier in spec.tier_names:
        for r in range(requests.num_requests):
            raw = requests.request(r)
            direct = _direct(admin, tier, raw)
            np.testing.assert_array_equal(direct, routed[(tier, r)])
            expected = _two_step(pipeline, tier, variants[tier], raw)
            np.testing.assert_allclose(direct, expected, atol=1e-6, rtol=0)
    assert _counts(admin)[spec.tier_names[0]] - after[spec.tier_names[0]] == requests.num_requests
    admin.close()


def test_bls_local_tiers_answer_the_same_and_show_every_tier_call_in_tritons_statistics(
    pipeline, server, tmp_path: Path
) -> None:
    from helpers import free_port_options, run_cli, write_spec

    spec = pipeline.spec
    data = yaml.safe_load(pipeline.spec_path.read_text(encoding="utf-8"))
    data["triton"]["local_tiers"] = "bls"
    spec_path = write_spec(tmp_path / "spec.yaml", data)
    repository = tmp_path / "repository"
    pins = [a for t, v in pipeline.pins.items() for a in ("--pin", f"{t}={v}")]
    run_cli("deploy", "--spec", str(spec_path), "--out", str(repository), *pins)
    requests = _requests(pipeline, 6, seed=32)
    with TritonServer(free_port_options(repository, tmp_path / "tritonserver.log")) as bls:
        admin = grpcclient.InferenceServerClient(bls.grpc_url)
        before = _counts(admin)
        with (
            RankingClient(bls.grpc_url, spec.name, tier_names=spec.tier_names) as client,
            RankingClient(server.grpc_url, spec.name, tier_names=spec.tier_names) as inprocess,
        ):
            for tier in spec.tier_names:
                for r in range(requests.num_requests):
                    raw = requests.request(r)
                    np.testing.assert_array_equal(
                        client.rank(tier=tier, **raw).scores, inprocess.rank(tier=tier, **raw).scores
                    )
        after = _counts(admin)
        admin.close()
    for tier in spec.tier_names:
        assert after[tier] - before[tier] == requests.num_requests
    assert after[spec.preprocess_model] == before[spec.preprocess_model]


def test_polling_server_serves_a_new_version_of_an_in_process_tier_without_a_failed_request(
    pipeline, tmp_path: Path
) -> None:
    import dataclasses

    import onnx
    from helpers import free_port_options, run_cli, write_spec

    spec = pipeline.spec
    repository = tmp_path / "repository"
    data = yaml.safe_load(pipeline.spec_path.read_text(encoding="utf-8"))
    data["triton"]["queue_timeout_ms"] = 0  # shedding under the test's own CPU load is another test's
    spec_path = write_spec(tmp_path / "spec.yaml", data)
    pins = [a for t, v in pipeline.pins.items() for a in ("--pin", f"{t}={v}")]
    run_cli("deploy", "--spec", str(spec_path), "--out", str(repository), *pins)
    deployed = json.loads((repository / MARKER).read_text())["variants"]
    manifest = read_manifest(pipeline.artifacts)
    tier, variant = next(
        (t, v)
        for t in reversed(spec.tier_names)
        for v, e in manifest.tier(t).variants.items()
        if e.passed and v != deployed[t] and (pipeline.artifacts / t / v / "model.onnx").is_file()
    )
    requests = _requests(pipeline, 8, seed=33)
    raw = requests.request(0)
    new_scores = _two_step(pipeline, tier, variant, raw)
    old_scores = _two_step(pipeline, tier, deployed[tier], raw)
    assert np.max(np.abs(new_scores - old_scores)) > 1e-6, "the two variants score alike; pick another"
    options = dataclasses.replace(
        free_port_options(repository, tmp_path / "tritonserver.log"),
        model_control_mode="poll",
        extra_args=("--repository-poll-secs=1",),
    )
    stop = threading.Event()
    failures: list[str] = []
    answered = [0]

    def traffic(url: str) -> None:
        with RankingClient(url, spec.name, tier_names=spec.tier_names) as client:
            while not stop.is_set():
                for r in range(requests.num_requests):
                    try:
                        ranking = client.rank(tier=tier, **requests.request(r))
                        assert set(ranking.tier_names) == {tier}, ranking.tier_names
                        answered[0] += 1
                    except Exception as exc:
                        failures.append(str(exc))

    with TritonServer(options) as server:
        worker = threading.Thread(target=traffic, args=(server.grpc_url,), daemon=True)
        worker.start()
        try:
            time.sleep(1.0)
            preprocess = onnx.load(str(pipeline.artifacts / spec.preprocess_model / FP32 / "model.onnx"))
            fused = fuse_preprocess(
                preprocess, onnx.load(str(pipeline.artifacts / tier / variant / "model.onnx"))
            )
            staging = repository / tier / ".2"
            staging.mkdir()
            onnx.save_model(fused, str(staging / "model.onnx"))
            runner = repository / tier / "1" / "model.py"
            if runner.is_file():
                (staging / "model.py").write_bytes(runner.read_bytes())
            os.replace(staging, repository / tier / "2")
            deadline = time.monotonic() + 90
            with RankingClient(server.grpc_url, spec.name, tier_names=spec.tier_names) as client:
                while True:
                    scores = client.rank(tier=tier, **raw).scores
                    if np.allclose(scores, new_scores, atol=1e-6, rtol=0):
                        break
                    assert time.monotonic() < deadline, "the router never served the new version"
                    time.sleep(0.2)
            swapped = answered[0]
            _wait_for(lambda: answered[0] >= swapped + 20, "traffic to go on after the swap")
        finally:
            stop.set()
            worker.join(30)
        assert server.running
    assert not failures, failures[:5]


def _wait_for(condition: Any, what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"waited {timeout_s:g} s for {what}"
        time.sleep(0.05)
