"""Tiers of both instance kinds in one GPU deployment, on a real tritonserver with a GPU.

The tiny spec is deployed for a GPU target with its cheapest tier on CPU instances
(``tiers[].instance_kind: cpu``): that tier runs its ONNX variant, the preprocess step fused in, on
the server's CPU cores, and the others run on the GPU. It needs a CUDA GPU and a tritonserver with
the onnxruntime backend (an NGC image); elsewhere it skips saying which is missing.
"""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from helpers import serving
from tritonclient.grpc import model_config_pb2 as mc

from toolkit.client import RankingClient
from toolkit.data import REQUEST_TENSORS, demo_holdout_set
from toolkit.errors import ServerError
from toolkit.export import FP32, cpu_session
from toolkit.repository.plan import DeployOptions, plan_deploy
from toolkit.repository.writer import write_repository
from toolkit.serve.backends import available_backends


def _missing() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return "no CUDA GPU here (nvidia-smi is not on PATH)"
    try:
        _, backends = available_backends(None)
    except ServerError as exc:
        return f"no tritonserver here: {exc}"
    if "onnxruntime" not in backends:
        return "the tritonserver here has no onnxruntime backend (GPU tiers need an NGC tritonserver)"
    return None


MISSING = _missing()
pytestmark = [
    pytest.mark.e2e,
    pytest.mark.gpu,
    pytest.mark.skipif(MISSING is not None, reason=f"tiers of both kinds cannot be served here: {MISSING}"),
]


def test_a_cpu_tier_serves_beside_gpu_tiers_in_one_gpu_deployment(pipeline, tmp_path: Path) -> None:
    cheapest, *others = pipeline.spec.tier_names
    tiers = tuple(
        dataclasses.replace(t, instance_kind="cpu") if t.name == cheapest else t for t in pipeline.spec.tiers
    )
    triton = dataclasses.replace(pipeline.spec.triton, target="gpu")
    spec = dataclasses.replace(pipeline.spec, tiers=tiers, triton=triton)
    pins = dict.fromkeys(spec.tier_names, FP32)
    plan = plan_deploy(spec, pipeline.artifacts, DeployOptions("onnxruntime", pins=pins))
    assert {name: t.target for name, t in plan.tiers.items()} == {
        cheapest: "cpu",
        **dict.fromkeys(others, "gpu"),
    }
    repository = tmp_path / "repository"
    write_repository(plan, repository)
    preprocess = cpu_session(str(pipeline.artifacts / spec.preprocess_model / FP32 / "model.onnx"))
    holdout = demo_holdout_set(spec)

    with serving(repository, tmp_path) as server:
        grpc = grpcclient.InferenceServerClient(server.grpc_url)
        kinds = {
            name: [g.kind for g in grpc.get_model_config(name, as_json=False).config.instance_group]
            for name in spec.tier_names
        }
        with RankingClient(server.grpc_url, spec.name, tier_names=spec.tier_names) as client:
            for r in range(4):
                raw = holdout.request(r)
                inputs = dict(zip(REQUEST_TENSORS, preprocess.run(None, raw), strict=True))
                for name in spec.tier_names:
                    reference = cpu_session(str(pipeline.artifacts / name / FP32 / "model.onnx"))
                    served = client.rank(tier=name, **raw)
                    assert served.scores.shape == (raw["ad_dense"].shape[0],)
                    np.testing.assert_allclose(
                        served.scores, reference.run(["score"], inputs)[0], rtol=1e-3, atol=1e-4
                    )

    assert kinds[cheapest] == [mc.ModelInstanceGroup.KIND_CPU]
    assert all(kinds[name] == [mc.ModelInstanceGroup.KIND_GPU] for name in others)
