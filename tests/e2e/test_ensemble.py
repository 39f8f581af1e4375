"""The deployed ensemble on the real embedded tritonserver, called over gRPC."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from helpers import run_cli
from tritonclient.utils import InferenceServerException

from toolkit.client import InvalidRequestError, RankingClient
from toolkit.data import REQUEST_TENSORS, demo_holdout_set, generate_requests
from toolkit.export import FP32, cpu_session
from toolkit.repository import MARKER, router_settings
from toolkit.router import RequestContext, decide, request_features

pytestmark = pytest.mark.e2e


class LocalModels:
    """The exported ONNX models run here with ONNX Runtime, as the reference for the server."""

    def __init__(self, artifacts: Path, preprocess: str, variants: dict[str, str]) -> None:
        self.preprocess = cpu_session(str(artifacts / preprocess / FP32 / "model.onnx"))
        self.tiers = {
            name: cpu_session(str(artifacts / name / variant / "model.onnx"))
            for name, variant in variants.items()
        }

    def preprocessed(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        outputs = self.preprocess.run(None, raw)
        return dict(zip(REQUEST_TENSORS, outputs, strict=True))

    def score(self, raw: dict[str, np.ndarray], tier: str) -> np.ndarray:
        return self.tiers[tier].run(["score"], self.preprocessed(raw))[0]


@pytest.fixture(scope="module")
def local(pipeline) -> LocalModels:
    deployed = json.loads((pipeline.repository / MARKER).read_text())["variants"]
    return LocalModels(pipeline.artifacts, pipeline.spec.preprocess_model, deployed)


@pytest.fixture(scope="module")
def client(pipeline, server):
    with RankingClient(server.grpc_url, pipeline.spec.name, tier_names=pipeline.spec.tier_names) as c:
        yield c


def _mixed_requests(spec, count: int):
    """Held-out requests plus generated long-history and new-user requests, so both rule outcomes occur."""
    holdout = demo_holdout_set(spec)
    long = generate_requests(spec.features, count // 2, (3, 9), 1.0, seed=11, world_seed=spec.seed)
    short = generate_requests(spec.features, count // 2, (3, 9), 0.0, seed=12, world_seed=spec.seed)
    return [holdout.request(r) for r in range(count)] + [
        s.request(r) for s in (long, short) for r in range(count // 2)
    ]


def test_ensemble_scores_equal_local_onnxruntime_when_routed(pipeline, client, local) -> None:
    spec = pipeline.spec
    settings = router_settings(spec)
    served = set()
    for raw in _mixed_requests(spec, 20):
        ranking = client.rank(**raw)
        n = raw["ad_dense"].shape[0]
        assert ranking.scores.shape == (n,) and ranking.scores.dtype == np.float32
        assert np.all((ranking.scores >= 0.0) & (ranking.scores <= 1.0))
        assert len(set(ranking.tier_names)) == 1
        tier = ranking.tier_names[0]
        history = local.preprocessed(raw)["user_history"]
        expected = decide(settings, RequestContext(features=request_features(history, n)))
        assert tier == expected.tier
        assert np.max(np.abs(ranking.scores - local.score(raw, tier))) <= 1e-5
        served.add(tier)
    assert served == {spec.default_tier, spec.routing.rules[0].tier}


@pytest.mark.parametrize("tier", ["lite", "standard", "xl"])
def test_tier_parameter_forces_that_tier_for_every_candidate_when_given(
    pipeline, client, local, tier
) -> None:
    index = pipeline.spec.tier_names.index(tier)
    for raw in _mixed_requests(pipeline.spec, 6):
        ranking = client.rank(tier=tier, **raw)
        assert np.all(ranking.tiers == index)
        assert np.max(np.abs(ranking.scores - local.score(raw, tier))) <= 1e-5


def test_ensemble_folds_raw_ids_and_pads_a_short_history_when_request_is_unusual(
    pipeline, client, local
) -> None:
    raw = dict(demo_holdout_set(pipeline.spec).request(0))
    raw["ad_dense"], raw["ad_sparse"] = raw["ad_dense"][:1], raw["ad_sparse"][:1]
    raw["user_history"] = raw["user_history"][:, -3:]
    raw["user_sparse"] = raw["user_sparse"] % np.int64(1 << 40) + np.int64(1 << 61)
    ranking = client.rank(tier="xl", **raw)
    assert ranking.scores.shape == (1,)
    assert np.max(np.abs(ranking.scores - local.score(raw, "xl"))) <= 1e-5


def test_unknown_tier_gets_invalid_argument_and_next_request_succeeds_when_sent(pipeline, server) -> None:
    raw = demo_holdout_set(pipeline.spec).request(1)
    grpc = grpcclient.InferenceServerClient(server.grpc_url)
    inputs = []
    for name, value in raw.items():
        tensor = grpcclient.InferInput(
            name, list(value.shape), "FP32" if value.dtype == np.float32 else "INT64"
        )
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    pid = server.pid
    with pytest.raises(InferenceServerException) as caught:
        grpc.infer(pipeline.spec.name, inputs, parameters={"tier": "platinum"})
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert "'tier'" in caught.value.message() and "platinum" in caught.value.message()
    result = grpc.infer(pipeline.spec.name, inputs)
    assert result.as_numpy("score").shape == (raw["ad_dense"].shape[0],)
    assert server.pid == pid and server.running


def test_client_raises_invalid_request_naming_tier_when_tier_unknown(pipeline, client) -> None:
    raw = demo_holdout_set(pipeline.spec).request(2)
    with pytest.raises(InvalidRequestError, match="tier"):
        client.rank(tier="gold", **raw)
    assert client.rank(**raw).scores.shape == (raw["ad_dense"].shape[0],)


def test_infer_command_prints_serving_tier_when_server_runs(pipeline, server) -> None:
    args = ("infer", "--spec", str(pipeline.spec_path), "--url", server.grpc_url)
    long = run_cli(*args, "--history", "long", "--candidates", "5")
    assert "served by xl" in long.stdout
    forced = run_cli(*args, "--tier", "standard")
    assert "served by standard" in forced.stdout
    refused = run_cli(*args, "--tier", "nope", check=False)
    assert refused.returncode == 1
    assert "INVALID_ARGUMENT" in refused.stderr or "unknown tier 'nope'" in refused.stderr


def test_demo_command_serves_and_prints_table_when_repository_deployed(pipeline) -> None:
    proc = run_cli("demo", "--spec", str(pipeline.spec_path), "--requests", "24")
    for label in ("lite (forced)", "standard (forced)", "xl (forced)", "routed", "served by"):
        assert label in proc.stdout
    assert "tritonserver stopped" in proc.stderr
