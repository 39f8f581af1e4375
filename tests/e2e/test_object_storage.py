"""Repositories on object storage, end to end.

``toolkit deploy --out s3://...`` publishes the session's tiny pipeline to a local S3-compatible
server (moto, in a subprocess on 127.0.0.1), the embedded tritonserver serves it from there (through
``toolkit serve`` and through :class:`~toolkit.serve.TritonServer` in poll mode), and a republish
that changes a tier's variant is picked up by the polling server without a failed request.
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import numpy as np
import pytest
import yaml
from helpers import ROOT, run_cli

from toolkit.client import RankingClient
from toolkit.data import demo_holdout_set
from toolkit.errors import ServerError
from toolkit.evaluate.offline import OfflineEnsemble
from toolkit.export import FP32, read_manifest
from toolkit.repository import MARKER
from toolkit.repository.object_store import PUBLISHING
from toolkit.serve import ServerOptions, TritonServer, find_tritonserver, free_port
from toolkit.spec.variants import VARIANTS

pytestmark = pytest.mark.e2e

BUCKET = "models"
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(scope="module", autouse=True)
def _need_tritonserver() -> None:
    try:
        find_tritonserver(None)
    except ServerError as exc:
        pytest.skip(f"no tritonserver on this machine: {exc}")


@pytest.fixture(scope="module")
def endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on 127.0.0.1 with the bucket, and fake credentials in the environment."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        _wait_http(url, process, 60)
        with pytest.MonkeyPatch.context() as env:
            env.setenv("AWS_ACCESS_KEY_ID", "testing")
            env.setenv("AWS_SECRET_ACCESS_KEY", "testing")
            env.setenv("AWS_DEFAULT_REGION", "us-east-1")
            env.setenv("AWS_EC2_METADATA_DISABLED", "true")
            env.delenv("AWS_PROFILE", raising=False)
            env.delenv("AWS_SESSION_TOKEN", raising=False)
            s3(url).create_bucket(Bucket=BUCKET)
            yield url
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_http(url: str, process: subprocess.Popen[Any], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{process.args} exited with {process.returncode}")
        try:
            with _NO_PROXY.open(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.2)
    raise AssertionError(f"nothing answered on {url} after {timeout:g} s")


def s3(endpoint: str) -> Any:
    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")


def keys(endpoint: str, prefix: str) -> set[str]:
    pages = s3(endpoint).get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix + "/")
    return {obj["Key"][len(prefix) + 1 :] for page in pages for obj in page.get("Contents", [])}


def remote_marker(endpoint: str, prefix: str) -> dict:
    return json.loads(s3(endpoint).get_object(Bucket=BUCKET, Key=f"{prefix}/{MARKER}")["Body"].read())


def deploy_to_s3(pipeline: Any, endpoint: str, prefix: str, pins: dict[str, str]) -> str:
    pin_args = [arg for tier, variant in pins.items() for arg in ("--pin", f"{tier}={variant}")]
    url = f"s3://{BUCKET}/{prefix}"
    spec = str(pipeline.spec_path)
    return run_cli("deploy", "--spec", spec, *pin_args, "--out", url, "--s3-endpoint", endpoint).stdout


def assert_scores_equal_onnxruntime(
    client: RankingClient, pipeline: Any, variants: dict[str, str], n: int
) -> None:
    spec = pipeline.spec
    offline = OfflineEnsemble(spec, pipeline.artifacts, variants)
    holdout = demo_holdout_set(spec)
    routed = set()
    for r in range(n):
        raw = holdout.request(r)
        served = client.rank(**raw)
        decision, scores, tiers = offline.route(raw)
        assert set(served.tier_names) == {decision.tier}, f"request {r}"
        np.testing.assert_array_equal(served.tiers, tiers)
        np.testing.assert_allclose(served.scores, scores, atol=1e-5, rtol=0)
        routed.add(decision.tier)
        for tier in spec.tier_names:
            forced = client.rank(tier=tier, **raw)
            assert set(forced.tier_names) == {tier}
            expected = offline.score(offline.preprocessed(raw), tier)
            np.testing.assert_allclose(forced.scores, expected, atol=1e-5, rtol=0)
    assert routed


def repository_index(http_url: str) -> list[dict]:
    request = urllib.request.Request(f"http://{http_url}/v2/repository/index", data=b"{}", method="POST")
    with _NO_PROXY.open(request, timeout=5) as reply:
        return json.loads(reply.read())


@pytest.fixture(scope="module")
def published(pipeline, endpoint: str) -> str:
    """The session's pipeline published to s3://models/ranking/prod with the session's pins."""
    return deploy_to_s3(pipeline, endpoint, "ranking/prod", pipeline.pins)


def test_deploy_publishes_every_model_config_last_and_the_marker_when_out_is_s3(
    pipeline, endpoint: str, published: str
) -> None:
    spec = pipeline.spec
    stored = keys(endpoint, "ranking/prod")
    local = {
        p.relative_to(pipeline.repository).as_posix()
        for p in pipeline.repository.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }
    local_models = {key for key in local if "/" in key}
    assert local_models <= stored
    assert MARKER in stored and PUBLISHING not in stored
    assert f"{spec.name}/1/" in stored
    for model in (spec.name, spec.preprocess_model, spec.router_model, *spec.tier_names):
        assert f"  {model}" in published and f"{model}/config.pbtxt" in stored
    assert "config.pbtxt last" in published
    host_port = endpoint.removeprefix("http://")
    assert f"--model-repository=s3://{host_port}/{BUCKET}/ranking/prod" in published  # Triton's HTTP form
    local_marker = json.loads((pipeline.repository / MARKER).read_text())
    assert remote_marker(endpoint, "ranking/prod")["variants"] == local_marker["variants"]


def test_deploy_leaves_every_model_unchanged_when_published_again(
    pipeline, endpoint: str, published: str
) -> None:
    before = keys(endpoint, "ranking/prod")
    again = deploy_to_s3(pipeline, endpoint, "ranking/prod", pipeline.pins)
    assert f"  {pipeline.spec.name:<28} unchanged, version 1 kept" in again
    assert "0 model(s) uploaded" in again and "0 stale object(s) removed" in again
    assert keys(endpoint, "ranking/prod") == before


def test_serve_cli_serves_the_s3_repository_with_scores_equal_onnxruntime_when_published(
    pipeline, endpoint: str, published: str, tmp_path: Path
) -> None:
    spec = pipeline.spec
    grpc_port, http_port, metrics_port = free_port(), free_port(), free_port()
    argv = [
        sys.executable, "-m", "toolkit", "serve", "--spec", str(pipeline.spec_path),
        "--repository", f"s3://{BUCKET}/ranking/prod", "--s3-endpoint", endpoint,
        "--grpc-port", str(grpc_port), "--http-port", str(http_port), "--metrics-port", str(metrics_port),
        "--log-file", str(tmp_path / "tritonserver.log"), "--startup-timeout", "240",
    ]  # fmt: skip
    process = subprocess.Popen(argv, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_ready(f"127.0.0.1:{http_port}", process, 300)
        index = repository_index(f"127.0.0.1:{http_port}")
        assert {m["name"] for m in index if m.get("state") == "READY"} >= {spec.name, *spec.tier_names}
        variants = remote_marker(endpoint, "ranking/prod")["variants"]
        with RankingClient(f"127.0.0.1:{grpc_port}", spec.name, tier_names=spec.tier_names) as client:
            assert_scores_equal_onnxruntime(client, pipeline, variants, 8)
    finally:
        process.terminate()
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            out, err = process.communicate()
    assert process.returncode == 0, err
    assert "Triton ready: gRPC" in out and "Triton stopped (exit code 0)" in err


def _wait_ready(http_url: str, process: subprocess.Popen[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            out, err = process.communicate()
            raise AssertionError(f"toolkit serve exited with {process.returncode}:\n{out}\n{err}")
        try:
            with _NO_PROXY.open(f"http://{http_url}/v2/health/ready", timeout=1) as reply:
                if reply.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"toolkit serve was not ready after {timeout:g} s")


def _other_variant(pipeline: Any, deployed: dict[str, str]) -> tuple[str, str]:
    """A tier and a variant of it, other than the deployed one, that passed export's gate on the CPU."""
    manifest = read_manifest(pipeline.artifacts)
    for tier in pipeline.spec.tier_names:
        variants = manifest.tier(tier).variants
        ok = [v for v, e in variants.items() if e.passed and "cpu" in VARIANTS[v].targets]
        others = sorted((v for v in ok if v != deployed[tier]), key=lambda v: v != FP32)
        if others:
            return tier, others[0]
    pytest.skip("no tier has a second variant that passed the acceptance check")


def test_polling_server_switches_to_the_republished_tier_without_a_failed_request_when_republished(
    pipeline, endpoint: str, tmp_path: Path
) -> None:
    spec = pipeline.spec
    deploy_to_s3(pipeline, endpoint, "ranking/canary", pipeline.pins)
    deployed = remote_marker(endpoint, "ranking/canary")["variants"]
    tier, variant = _other_variant(pipeline, deployed)
    options = ServerOptions(
        repository=f"s3://{BUCKET}/ranking/canary",
        s3_endpoint=endpoint,
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        log_file=tmp_path / "tritonserver.log",
        model_control_mode="poll",
        extra_args=("--repository-poll-secs=1",),
        startup_timeout_s=240,
    )
    raw = demo_holdout_set(spec).request(0)
    stop = threading.Event()
    served: list[tuple[str, str]] = []
    failures: list[str] = []

    def traffic(url: str) -> None:
        with RankingClient(url, spec.name, tier_names=spec.tier_names) as client:
            while not stop.is_set():
                for name in spec.tier_names:
                    try:
                        ranking = client.rank(tier=name, **raw)
                        served.extend((name, t) for t in set(ranking.tier_names))
                    except Exception as exc:
                        failures.append(f"{name}: {exc}")

    with TritonServer(options) as server:
        worker = threading.Thread(target=traffic, args=(server.grpc_url,), daemon=True)
        worker.start()
        try:
            republished = deploy_to_s3(pipeline, endpoint, "ranking/canary", {**pipeline.pins, tier: variant})
            assert f"  {tier:<28} version 2:" in republished
            deadline = time.monotonic() + 120
            while True:
                states = {
                    (m["name"], m.get("version")): m.get("state") for m in repository_index(server.http_url)
                }
                if states.get((tier, "2")) == "READY" and states.get((tier, "1")) != "READY":
                    break
                assert time.monotonic() < deadline, f"{tier} version 2 not served after 120 s: {states}"
                time.sleep(0.5)
            time.sleep(1.0)
        finally:
            stop.set()
            worker.join(30)
        assert not failures, failures[:5]
        assert served and all(forced == got for forced, got in served)
        with RankingClient(server.grpc_url, spec.name, tier_names=spec.tier_names) as client:
            assert_scores_equal_onnxruntime(client, pipeline, {**deployed, tier: variant}, 4)
    stored = keys(endpoint, "ranking/canary")
    assert not any(key.startswith(f"{tier}/1/") for key in stored)
    assert any(key.startswith(f"{tier}/2/") for key in stored)


def test_deploy_publishes_one_prefix_per_pool_the_entry_pool_last_when_the_spec_has_pools(
    pipeline: Any, endpoint: str, tmp_path: Path
) -> None:
    data = yaml.safe_load(pipeline.spec_path.read_text(encoding="utf-8"))
    data["pools"] = [{"name": "cpu"}, {"name": "big", "addresses": ["127.0.0.1:8101"]}]
    data["tiers"][2]["pool"] = "big"
    spec_path = tmp_path / "pools.yaml"
    spec_path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    url = f"s3://{BUCKET}/fleet"
    out = run_cli("deploy", "--spec", str(spec_path), "--out", url, "--s3-endpoint", endpoint).stdout
    spec = pipeline.spec
    big, cpu = keys(endpoint, "fleet/big"), keys(endpoint, "fleet/cpu")
    assert {key.split("/")[0] for key in big} == {"xl", MARKER}
    assert {key.split("/")[0] for key in cpu} == {
        spec.name,
        spec.preprocess_model,
        spec.router_model,
        "lite",
        "standard",
        MARKER,
    }
    assert remote_marker(endpoint, "fleet/big")["pool"] == "big"
    assert remote_marker(endpoint, "fleet/cpu")["entry"] is True
    assert out.index(f"publishing to {url}/big") < out.index(f"publishing to {url}/cpu")
    assert not keys(endpoint, "fleet") - {f"big/{k}" for k in big} - {f"cpu/{k}" for k in cpu}


# --- the engine-build Job's script, on the real server ---


def _image_like_env(folder: Path) -> dict[str, str]:
    """An environment whose ``tritonserver`` runs the bundled server as the NGC image runs its own.

    A shim on ``PATH`` passes the Job's arguments through, adding only what the bundled server needs
    beyond the image's (its backend and cache folders), and the environment the bundled server needs.
    """
    from toolkit.serve.locate import backend_python, prepare_backend_dir
    from toolkit.serve.options import build_env, python_library_dir

    install = find_tritonserver(None)
    extra = [f"--backend-directory={folder}" for folder in [prepare_backend_dir(install)] if folder]
    extra += [f"--cache-directory={install.cache_dir}"] if install.cache_dir else []
    shim = folder / "tritonserver"
    shim.write_text(
        f'#!/bin/sh\nexec {shlex.quote(str(install.binary))} "$@" {" ".join(map(shlex.quote, extra))}\n',
        encoding="utf-8",
    )
    shim.chmod(0o755)
    env = build_env(install, backend_python().parent, python_lib_dir=python_library_dir())
    env["PATH"] = f"{folder}{os.pathsep}{env['PATH']}"
    return env


def _build_job_pool(endpoint: str, prefix: str) -> Any:
    from toolkit.k8s.manifests import PoolDeployment

    return PoolDeployment(
        name="big",
        repository_url=f"s3://{BUCKET}/{prefix}",
        s3_endpoint=endpoint,
        cpu="1",
        memory="1Gi",
        hardware="gpu",
        gpus=1,
        engine_cache="1Gi",
        build_engines=True,
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        startup_timeout_s=240,
    )


def test_build_engines_job_script_loads_every_model_then_stops_the_server(
    pipeline, endpoint: str, published: str, tmp_path: Path
) -> None:
    from toolkit.k8s.manifests import build_engines_script

    pool = _build_job_pool(endpoint, "ranking/prod")
    env = _image_like_env(tmp_path)

    done = subprocess.run(
        ["/bin/sh", "-c", build_engines_script(pool)], env=env, capture_output=True, text=True, timeout=400
    )

    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "every model is loaded" in done.stdout
    with pytest.raises(OSError):
        _NO_PROXY.open(f"http://127.0.0.1:{pool.http_port}/v2/health/live", timeout=2)


def test_build_engines_job_script_fails_when_the_server_cannot_load_the_repository(
    endpoint: str, tmp_path: Path
) -> None:
    from toolkit.k8s.manifests import build_engines_script

    pool = _build_job_pool(endpoint, "nothing/here")
    env = _image_like_env(tmp_path)

    done = subprocess.run(
        ["/bin/sh", "-c", build_engines_script(pool)], env=env, capture_output=True, text=True, timeout=400
    )

    assert done.returncode == 1
    assert "tritonserver exited before its models were ready" in done.stdout
