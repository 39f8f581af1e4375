"""Unit tests of ``toolkit.repository.deploy`` for a spec with tier pools (or tiers of both instance
kinds in one repository), on a fake artifacts folder.

The artifacts folder holds a few small dummy files and a ``manifest.json`` that records their
sizes and sha256, as export would: deploy checks them and copies them, so nothing here needs
a trained model, ONNX Runtime or a server.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from helpers import onnx_graph_name, stand_in_onnx
from tritonclient.grpc import model_config_pb2 as mc

from toolkit.errors import RepositoryError
from toolkit.export.manifest import (
    Manifest,
    ModelEntry,
    Status,
    Variant,
    file_entries,
    read_manifest,
    write_manifest,
)
from toolkit.k8s.fleet import default_address
from toolkit.repository import MARKER, configs, deploy
from toolkit.repository import writer as writer_module
from toolkit.repository.gate import CALIBRATION, CALIBRATION_FORMAT, gate_folder, gate_path
from toolkit.repository.plan import DeployOptions, plan_deploy, remote_timeout_ms
from toolkit.repository.writer import write_repository
from toolkit.router import RouterConfig
from toolkit.spec import Spec, spec_from_dict

SPEC_ADDRESS = "10.0.0.9:8001"
VARIANTS: dict[str, dict[str, dict[str, Any]]] = {
    "lite": {"onnx-fp32": {"cpu": {"16": 0.1}}, "onnx-fp16": {"cpu": {"16": 0.5}}},
    "standard": {"onnx-fp32": {"cpu": {"16": 0.2}}},
    "xl": {"onnx-fp32": {"cpu": {"16": 0.9}}, "trt-fp16": {}},
}
"""Variants exported per tier and their cpu timings; xl's trt-fp16 runs only on a GPU (no timing)."""


def model_file(variant: str) -> str:
    return "model.plan" if variant.startswith("trt-") else "model.onnx"


def variant_entry(artifacts: Path, folder: Path, content: bytes, latency: dict[str, Any]) -> Variant:
    folder.mkdir(parents=True, exist_ok=True)
    if model_file(folder.name) == "model.onnx":
        kind = "preprocess" if content == b"preprocess" else "tier"
        content = stand_in_onnx(kind, content.decode())
    (folder / model_file(folder.name)).write_bytes(content)
    return Variant(
        Status.OK,
        files=file_entries(artifacts, folder),
        latency_ms={target: {int(n): ms for n, ms in by_n.items()} for target, by_n in latency.items()},
    )


def fake_artifacts(spec: Spec, artifacts: Path, learned: bool = False) -> Path:
    """Dummy model files and a consistent manifest (and, with ``learned``, a gate and its calibration)."""
    preprocess = variant_entry(
        artifacts, artifacts / spec.preprocess_model / "onnx-fp32", b"preprocess", {"cpu": {"16": 0.01}}
    )
    tiers = {
        tier: ModelEntry(
            {
                variant: variant_entry(
                    artifacts, artifacts / tier / variant, f"{tier} {variant}".encode(), latency
                )
                for variant, latency in variants.items()
            },
            architecture=tier,
        )
        for tier, variants in VARIANTS.items()
    }
    write_manifest(
        artifacts,
        Manifest(spec.name, ModelEntry({"onnx-fp32": preprocess}, name=spec.preprocess_model), tiers),
    )
    if learned:
        gate = gate_path(spec, artifacts)
        gate.parent.mkdir(parents=True)
        gate.write_bytes(stand_in_onnx("gate", "gate"))
        (gate_folder(spec, artifacts) / CALIBRATION).write_text(
            json.dumps(
                {
                    "format": CALIBRATION_FORMAT,
                    "tiers": list(spec.tier_names),
                    "gate_sha256": file_entries(artifacts, gate.parent)[0].sha256,
                    "cheapest_first": False,
                    "lambda": 0.5,
                    "tier_costs_mflop": {t: [1.0 + i, 0.1] for i, t in enumerate(spec.tier_names)},
                }
            ),
            encoding="utf-8",
        )
    return artifacts


@pytest.fixture
def pools_dict(tiny_spec_dict: dict[str, Any]) -> dict[str, Any]:
    """The tiny spec with pools ``cpu`` (entry: lite, standard) and ``big`` (gpu: xl)."""
    data = copy.deepcopy(tiny_spec_dict)
    data["pools"] = [
        {"name": "cpu"},
        {
            "name": "big",
            "hardware": "gpu",
            "addresses": [SPEC_ADDRESS],
            "timeout_ms": 250,
            "retry_after_ms": 400,
        },
    ]
    data["tiers"][2]["pool"] = "big"
    data["triton"]["tier_timeout_ms"] = 300
    return data


@pytest.fixture
def spec(pools_dict: dict[str, Any]) -> Spec:
    return spec_from_dict(pools_dict, source="pools.yaml")


@pytest.fixture
def artifacts(tmp_path: Path, spec: Spec) -> Path:
    return fake_artifacts(spec, tmp_path / "artifacts")


def models_in(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if p.is_dir()}


def read_json(path: Path) -> Any:
    return json.loads(path.read_text(encoding="utf-8"))


def read_config(folder: Path) -> mc.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(encoding="utf-8"), mc.ModelConfig())


def router_json(spec: Spec, out: Path, pool: str = "cpu") -> dict[str, Any]:
    return read_json(out / pool / spec.router_model / "1" / "router.json")


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def sha256_of(artifacts: Path, tier: str, variant: str) -> str:
    return file_entries(artifacts, artifacts / tier / variant)[0].sha256


# --- layout and markers ---


def test_deploy_writes_one_repository_per_pool_with_the_entry_models_in_the_entry_pool(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    out = tmp_path / "repos"

    result = deploy(spec, artifacts, out, "onnxruntime")

    assert models_in(out) == {"cpu", "big"}
    assert models_in(out / "cpu") == {spec.name, spec.preprocess_model, spec.router_model, "lite", "standard"}
    assert models_in(out / "big") == {"xl"}
    for model in ("lite", "standard", spec.preprocess_model):
        assert (out / "cpu" / model / "1" / "model.onnx").is_file()
        assert not (out / "cpu" / model / "1" / "model.py").exists()
    assert onnx_graph_name(out / "cpu" / "lite" / "1" / "model.onnx") == "lite onnx-fp32"
    assert (out / "big" / "xl" / "1" / "model.plan").read_bytes() == b"xl trt-fp16"
    assert list((out / "cpu" / spec.name / "1").iterdir()) == []
    assert result.repository == out.resolve() and result.target == ""
    assert [(p.name, p.entry, p.target, p.backend, p.tiers) for p in result.pools] == [
        ("cpu", True, "cpu", "onnxruntime", ("lite", "standard")),
        ("big", False, "gpu", "onnxruntime", ("xl",)),
    ]
    assert [p.repository for p in result.pools] == [out.resolve() / "cpu", out.resolve() / "big"]
    assert result.pools[0].models == (spec.name, spec.preprocess_model, spec.router_model, "lite", "standard")
    assert result.pools[1].models == ("xl",)
    assert result.variants == {"lite": "onnx-fp32", "standard": "onnx-fp32", "xl": "trt-fp16"}
    assert not result.replaced


def test_deploy_writes_a_marker_per_pool_and_one_at_the_top(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    out = tmp_path / "repos"

    deploy(spec, artifacts, out, "python")

    top = read_json(out / MARKER)
    assert top["ensemble"] == spec.name and top["backend"] == "python"
    assert top["pools"] == {
        "cpu": {"tiers": ["lite", "standard"], "target": "cpu", "entry": True},
        "big": {"tiers": ["xl"], "target": "gpu", "entry": False},
    }
    assert top["variants"] == {"lite": "onnx-fp32", "standard": "onnx-fp32", "xl": "trt-fp16"}
    cpu, big = read_json(out / "cpu" / MARKER), read_json(out / "big" / MARKER)
    assert (cpu["pool"], cpu["entry"], cpu["target"], cpu["backend"]) == ("cpu", True, "cpu", "python")
    assert (big["pool"], big["entry"], big["target"], big["backend"]) == ("big", False, "gpu", "onnxruntime")
    assert cpu["variants"] == {"lite": "onnx-fp32", "standard": "onnx-fp32"}
    assert big["variants"] == {"xl": "trt-fp16"}
    assert set(big["selection"]) == {"xl"}
    for marker in (top, cpu, big):
        assert marker["format"] == writer_module.MARKER_FORMAT and marker["spec"] == "pools.yaml"


def test_deploy_without_pools_still_writes_one_flat_repository_without_remote_tiers(
    tmp_path: Path, tiny_spec: Spec
) -> None:
    artifacts = fake_artifacts(tiny_spec, tmp_path / "artifacts")
    out = tmp_path / "repo"

    result = deploy(tiny_spec, artifacts, out, "onnxruntime")

    assert result.pools == () and result.target == "cpu"
    assert models_in(out) == {
        tiny_spec.name,
        tiny_spec.preprocess_model,
        tiny_spec.router_model,
        "lite",
        "standard",
        "xl",
    }
    assert read_json(out / tiny_spec.router_model / "1" / "router.json")["remote_tiers"] == {}
    assert "pools" not in read_json(out / MARKER)
    assert read_config(out / "xl") == configs.tier_config(tiny_spec, "xl", "onnxruntime")


def test_deploy_puts_the_gate_of_the_learned_policy_in_the_entry_pool_only(
    tmp_path: Path, pools_dict: dict[str, Any]
) -> None:
    pools_dict["routing"] = {"policy": "learned", "default_tier": "lite"}
    spec = spec_from_dict(pools_dict, source="pools.yaml")
    artifacts = fake_artifacts(spec, tmp_path / "artifacts", learned=True)
    out = tmp_path / "repos"

    result = deploy(spec, artifacts, out, "onnxruntime")

    assert spec.gate_model in models_in(out / "cpu") and models_in(out / "big") == {"xl"}
    assert onnx_graph_name(out / "cpu" / spec.gate_model / "1" / "model.onnx") == "gate"
    assert result.pools[0].models == (
        spec.name,
        spec.preprocess_model,
        spec.router_model,
        spec.gate_model,
        "lite",
        "standard",
    )
    assert result.pools[1].models == ("xl",)
    config = router_json(spec, out)
    assert config["gate_model"] == spec.gate_model and set(config["remote_tiers"]) == {"xl"}


# --- router.json: where and how the router calls the other pools ---


def test_router_json_names_the_remote_tier_with_the_spec_addresses_and_timeouts(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    out = tmp_path / "repos"

    result = deploy(spec, artifacts, out, "onnxruntime")

    config = router_json(spec, out)
    assert config["remote_tiers"] == {
        "xl": {"pool": "big", "addresses": [SPEC_ADDRESS], "timeout_ms": 250.0, "retry_after_ms": 400.0}
    }
    assert RouterConfig.from_json(
        (out / "cpu" / spec.router_model / "1" / "router.json").read_text()
    ).tiers == (
        "lite",
        "standard",
        "xl",
    )
    assert result.pools[1].addresses == (SPEC_ADDRESS,) and result.pools[0].addresses == ()
    assert not (out / "big" / spec.router_model).exists()


def test_router_json_takes_pool_addresses_before_the_spec_addresses(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    out = tmp_path / "repos"
    given = ("127.0.0.1:9001", "[::1]:9002")

    result = deploy(spec, artifacts, out, "onnxruntime", pool_addresses={"big": given})

    assert router_json(spec, out)["remote_tiers"]["xl"]["addresses"] == list(given)
    assert result.pools[1].addresses == given


def test_router_json_falls_back_to_the_pools_service_address_without_addresses(
    tmp_path: Path, pools_dict: dict[str, Any]
) -> None:
    del pools_dict["pools"][1]["addresses"]
    pools_dict["kubernetes"] = {"namespace": "ranking", "cluster_domain": "corp.local"}
    spec = spec_from_dict(pools_dict, source="pools.yaml")
    artifacts = fake_artifacts(spec, tmp_path / "artifacts")
    out = tmp_path / "repos"

    result = deploy(spec, artifacts, out, "onnxruntime")

    expected = default_address(spec, "big")
    assert ".ranking.svc.corp.local:" in expected
    assert router_json(spec, out)["remote_tiers"]["xl"]["addresses"] == [expected]
    assert result.pools[1].addresses == (expected,)


@pytest.mark.parametrize(
    ("pool_timeout", "tier_timeout", "expected"),
    [(250, 300, 250.0), (0, 300, 300.0), (0, 0, 1000.0)],
    ids=["pool", "tier-timeout", "one-second"],
)
def test_router_json_timeout_falls_back_to_the_tier_timeout_then_one_second(
    tmp_path: Path, pools_dict: dict[str, Any], pool_timeout: float, tier_timeout: float, expected: float
) -> None:
    pools_dict["pools"][1]["timeout_ms"] = pool_timeout
    pools_dict["triton"]["tier_timeout_ms"] = tier_timeout
    spec = spec_from_dict(pools_dict, source="pools.yaml")
    artifacts = fake_artifacts(spec, tmp_path / "artifacts")
    out = tmp_path / "repos"

    deploy(spec, artifacts, out, "onnxruntime")

    assert remote_timeout_ms(spec, "big") == expected
    remote = router_json(spec, out)["remote_tiers"]["xl"]
    assert remote["timeout_ms"] == expected and remote["retry_after_ms"] == 400.0


# --- hardware: gpu pools and --target ---


def test_gpu_pool_gets_the_gpu_tier_config_and_the_onnxruntime_backend(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    out = tmp_path / "repos"

    deploy(spec, artifacts, out, "python")

    written = read_config(out / "big" / "xl")
    digest = sha256_of(artifacts, "xl", "trt-fp16")
    assert written == configs.gpu_tier_config(spec, "xl", "trt-fp16", model_sha256=digest)
    assert written.platform == "tensorrt_plan"
    assert [g.kind for g in written.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
    assert sorted(p.name for p in (out / "big" / "xl" / "1").iterdir()) == ["model.plan"]  # no python runner
    for tier in ("lite", "standard"):
        assert read_config(out / "cpu" / tier) == configs.tier_config(spec, tier, "python")
        assert (out / "cpu" / tier / "1" / "model.py").is_file()


def test_gpu_pool_with_an_onnx_variant_names_the_model_digest_in_its_engine_cache(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    out = tmp_path / "repos"

    result = deploy(spec, artifacts, out, "onnxruntime", pins={"xl": "onnx-fp32"})

    written = read_config(out / "big" / "xl")
    digest = sha256_of(artifacts, "xl", "onnx-fp32")
    assert written == configs.gpu_tier_config(spec, "xl", "onnx-fp32", model_sha256=digest)
    (accelerator,) = written.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.parameters["trt_engine_cache_path"].endswith(f"/xl/onnx-fp32/{digest[:16]}")
    assert result.variants["xl"] == "onnx-fp32"


def test_target_cpu_deploys_the_gpu_pool_for_the_cpu(tmp_path: Path, spec: Spec, artifacts: Path) -> None:
    out = tmp_path / "repos"

    result = deploy(spec, artifacts, out, "python", target="cpu")

    assert [(p.name, p.target, p.backend) for p in result.pools] == [
        ("cpu", "cpu", "python"),
        ("big", "cpu", "python"),
    ]
    assert result.variants["xl"] == "onnx-fp32"
    assert read_config(out / "big" / "xl") == configs.tier_config(spec, "xl", "python")
    assert (out / "big" / "xl" / "1" / "model.py").is_file()
    assert onnx_graph_name(out / "big" / "xl" / "1" / "model.onnx") == "xl onnx-fp32"
    assert read_json(out / "big" / MARKER)["target"] == "cpu"
    assert read_json(out / MARKER)["pools"]["big"]["target"] == "cpu"
    assert set(router_json(spec, out)["remote_tiers"]) == {"xl"}  # still called in its own pool


def test_target_gpu_needs_the_onnxruntime_backend_with_pools_too(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    with pytest.raises(RepositoryError, match="^target gpu needs the onnxruntime backend") as info:
        deploy(spec, artifacts, tmp_path / "repos", "python", target="gpu")
    assert info.value.option == "target"

    assert not (tmp_path / "repos").exists()


def test_latency_priors_follow_each_tiers_pool_target(tmp_path: Path, spec: Spec, artifacts: Path) -> None:
    out = tmp_path / "repos"

    deploy(spec, artifacts, out, "onnxruntime")
    priors = router_json(spec, out)["latency_prior_ms"]
    deploy(spec, artifacts, out, "onnxruntime", target="cpu")

    assert priors == {"lite": {"16": 0.1}, "standard": {"16": 0.2}}  # xl has no gpu timing
    assert router_json(spec, out)["latency_prior_ms"]["xl"] == {"16": 0.9}


# --- refusals, and a failed deploy leaves the previous repository alone ---


@pytest.mark.parametrize("pool", ["cpu", "nowhere"])
def test_deploy_refuses_pool_addresses_for_a_pool_the_router_does_not_call(
    tmp_path: Path, spec: Spec, artifacts: Path, pool: str
) -> None:
    with pytest.raises(RepositoryError) as info:
        deploy(spec, artifacts, tmp_path / "repos", "onnxruntime", pool_addresses={pool: ("127.0.0.1:9001",)})

    message = str(info.value)
    assert message.startswith(f"pool_addresses {pool}=...") and "(big)" in message
    assert info.value.option == "pool_addresses"
    assert not (tmp_path / "repos").exists()


def test_deploy_refuses_pool_addresses_for_a_spec_without_pools(tmp_path: Path, tiny_spec: Spec) -> None:
    artifacts = fake_artifacts(tiny_spec, tmp_path / "artifacts")

    with pytest.raises(RepositoryError, match="^pool_addresses given, but the spec has no pools"):
        deploy(tiny_spec, artifacts, tmp_path / "repo", "onnxruntime", pool_addresses={"big": ("h:1",)})

    assert not (tmp_path / "repo").exists()


def test_failed_deploy_leaves_the_previous_pool_repositories_untouched_when_an_artifact_changed(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    out = tmp_path / "repos"
    deploy(spec, artifacts, out, "onnxruntime")
    before = snapshot(out)
    (artifacts / "xl" / "trt-fp16" / "model.plan").write_bytes(b"xl trt-fp16, rebuilt")

    with pytest.raises(RepositoryError, match="changed since export"):
        deploy(spec, artifacts, out, "onnxruntime", pool_addresses={"big": ("127.0.0.1:9001",)})

    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


def test_failed_deploy_leaves_the_previous_pool_repositories_untouched_when_writing_fails_midway(
    tmp_path: Path, spec: Spec, artifacts: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "repos"
    deploy(spec, artifacts, out, "onnxruntime")
    before = snapshot(out)

    def broken(*args: Any, **kwargs: Any) -> mc.ModelConfig:
        raise RepositoryError("ensemble config broke")

    monkeypatch.setattr(writer_module.configs, "ensemble_config", broken)
    with pytest.raises(RepositoryError, match="ensemble config broke"):
        deploy(spec, artifacts, out, "onnxruntime", pool_addresses={"big": ("127.0.0.1:9001",)})

    assert snapshot(out) == before
    assert [p.name for p in tmp_path.iterdir() if "staging" in p.name] == []


def test_deploy_replaces_a_previous_pool_repository_when_it_succeeds(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    out = tmp_path / "repos"
    deploy(spec, artifacts, out, "onnxruntime")
    (out / "big" / "stale").mkdir()

    result = deploy(spec, artifacts, out, "onnxruntime", pool_addresses={"big": ("127.0.0.1:9001",)})

    assert result.replaced
    assert models_in(out / "big") == {"xl"}
    assert router_json(spec, out)["remote_tiers"]["xl"]["addresses"] == ["127.0.0.1:9001"]


def test_deploy_refuses_to_replace_a_folder_it_did_not_write(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    out = tmp_path / "repos"
    (out / "cpu").mkdir(parents=True)
    (out / "cpu" / "notes.txt").write_text("mine", encoding="utf-8")

    with pytest.raises(RepositoryError, match="was not written by `toolkit deploy`"):
        deploy(spec, artifacts, out, "onnxruntime")

    assert (out / "cpu" / "notes.txt").read_text(encoding="utf-8") == "mine"


# --- TensorRT plans against the serving image ---


def record_engine(artifacts: Path, tier: str, variant: str, tensorrt_version: str) -> None:
    """Write into the manifest what export records for a plan it built."""
    manifest = read_manifest(artifacts)
    manifest.variant(tier, variant).details["engine"] = {
        "precision": "fp16",
        "tensorrt_version": tensorrt_version,
        "device": "NVIDIA H100 80GB HBM3",
        "compute_capability": "9.0",
    }
    write_manifest(artifacts, manifest)


def test_deploy_refuses_a_plan_built_by_another_tensorrt_than_the_image_and_writes_nothing(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    record_engine(artifacts, "xl", "trt-fp16", "10.16.1.11")

    with pytest.raises(RepositoryError) as info:
        deploy(spec, artifacts, tmp_path / "repos", "onnxruntime")

    message = str(info.value)
    assert "tier xl (trt-fp16)" in message and "10.16.1.11" in message and "10.5.0.18" in message
    assert "nvcr.io/nvidia/tritonserver:24.10-py3" in message
    assert not (tmp_path / "repos").exists()


def test_deploy_records_the_plan_engine_when_its_tensorrt_is_the_image_one(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    record_engine(artifacts, "xl", "trt-fp16", "10.5.0")

    result = deploy(spec, artifacts, tmp_path / "repos", "onnxruntime")

    assert result.notes == ()
    marker = json.loads((tmp_path / "repos" / "big" / MARKER).read_text(encoding="utf-8"))
    assert marker["engines"] == {
        "xl": {"tensorrt_version": "10.5.0", "device": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    }
    assert "engines" not in json.loads((tmp_path / "repos" / "cpu" / MARKER).read_text(encoding="utf-8"))


def test_deploy_takes_the_image_and_its_tensorrt_from_the_spec(
    tmp_path: Path, pools_dict: dict[str, Any], artifacts: Path
) -> None:
    record_engine(artifacts, "xl", "trt-fp16", "10.16.1.11")
    custom = {**pools_dict, "kubernetes": {"image": "example.com/triton:26.05"}}

    unchecked = deploy(spec_from_dict(custom, "custom.yaml"), artifacts, tmp_path / "a", "onnxruntime")
    stated = {
        **pools_dict,
        "kubernetes": {"image": "example.com/triton:26.05", "image_tensorrt": "10.16.1.11"},
    }
    checked = deploy(spec_from_dict(stated, "stated.yaml"), artifacts, tmp_path / "b", "onnxruntime")

    assert len(unchecked.notes) == 1 and "kubernetes.image_tensorrt" in unchecked.notes[0]
    assert checked.notes == ()


def test_deploy_notes_a_plan_whose_tensorrt_the_manifest_does_not_record(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    result = deploy(spec, artifacts, tmp_path / "repos", "onnxruntime")

    assert len(result.notes) == 1
    assert "tier xl (trt-fp16)" in result.notes[0] and "not checked" in result.notes[0]


# --- deploy is a plan, then a writer ---


def test_the_plan_decides_every_placement_and_writes_nothing(
    tmp_path: Path, spec: Spec, artifacts: Path
) -> None:
    before = sorted(tmp_path.rglob("*"))

    plan = plan_deploy(spec, artifacts, DeployOptions("onnxruntime"))

    assert sorted(tmp_path.rglob("*")) == before
    xl = plan.tiers["xl"]
    assert (xl.pool, xl.target, xl.selection.variant) == ("big", "gpu", "trt-fp16") and xl.is_plan
    assert xl.remote is not None and xl.remote.addresses == (SPEC_ADDRESS,)
    assert plan.tiers["lite"].remote is None and plan.preprocessed_tiers == ("xl",)
    assert [(p.name, p.entry, p.target) for p in plan.pools] == [("cpu", True, "cpu"), ("big", False, "gpu")]
    assert plan.router().remote_tiers.keys() == {"xl"}

    result = write_repository(plan, tmp_path / "repos")

    assert result.variants == {tier: s.variant for tier, s in plan.selections.items()}
    assert models_in(tmp_path / "repos" / "big") == {"xl"}
    assert set(router_json(spec, tmp_path / "repos")["remote_tiers"]) == {"xl"}


# --- instance kind: one repository whose tiers run on both kinds ---


@pytest.fixture
def mixed(tiny_spec_dict: dict[str, Any]) -> Spec:
    """The tiny spec on a GPU target, its cheapest tier on CPU instances (no pools)."""
    data = copy.deepcopy(tiny_spec_dict)
    data["triton"]["target"] = "gpu"
    data["tiers"][0]["instance_kind"] = "cpu"
    return spec_from_dict(data, source="mixed.yaml")


def test_a_cpu_tier_on_a_gpu_target_is_fused_on_cpu_instances_beside_the_gpu_tiers(
    tmp_path: Path, mixed: Spec
) -> None:
    artifacts = fake_artifacts(mixed, tmp_path / "artifacts")
    out = tmp_path / "repo"

    result = deploy(mixed, artifacts, out, "onnxruntime")

    assert result.target == "gpu" and not result.pools
    assert result.variants == {"lite": "onnx-fp32", "standard": "onnx-fp32", "xl": "trt-fp16"}
    lite = read_config(out / "lite")
    assert lite == configs.tier_config(mixed, "lite", "onnxruntime")
    assert [g.kind for g in lite.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    assert result.unfused == {}  # the preprocess step fused in front: lite takes the raw request
    for tier, variant in (("standard", "onnx-fp32"), ("xl", "trt-fp16")):
        digest = sha256_of(artifacts, tier, variant)
        assert read_config(out / tier) == configs.gpu_tier_config(mixed, tier, variant, model_sha256=digest)
    router = read_json(out / mixed.router_model / "1" / "router.json")
    assert router["preprocessed_tiers"] == ["standard", "xl"]


def test_a_gpu_tier_on_a_cpu_target_needs_the_onnxruntime_backend(
    tmp_path: Path, tiny_spec_dict: dict[str, Any]
) -> None:
    data = copy.deepcopy(tiny_spec_dict)
    data["tiers"][2]["instance_kind"] = "gpu"
    spec = spec_from_dict(data, source="xl-on-gpu.yaml")
    artifacts = fake_artifacts(spec, tmp_path / "artifacts")

    with pytest.raises(RepositoryError, match="gpu needs the onnxruntime backend") as caught:
        plan_deploy(spec, artifacts, DeployOptions("python"))
    assert caught.value.option == "target"
    plan = plan_deploy(spec, artifacts, DeployOptions("onnxruntime"))
    assert {name: (t.target, t.selection.variant) for name, t in plan.tiers.items()} == {
        "lite": ("cpu", "onnx-fp32"),
        "standard": ("cpu", "onnx-fp32"),
        "xl": ("gpu", "trt-fp16"),
    }
    assert plan.target == "cpu" and plan.preprocessed_tiers == ("xl",)


def test_a_cpu_tier_pinned_to_a_tensorrt_plan_is_refused_naming_the_tier(
    tmp_path: Path, tiny_spec_dict: dict[str, Any]
) -> None:
    data = copy.deepcopy(tiny_spec_dict)
    data["triton"]["target"] = "gpu"
    data["tiers"][2]["instance_kind"] = "cpu"
    spec = spec_from_dict(data, source="xl-on-cpu.yaml")
    artifacts = fake_artifacts(spec, tmp_path / "artifacts")

    with pytest.raises(RepositoryError, match="xl") as caught:
        plan_deploy(spec, artifacts, DeployOptions("onnxruntime", pins={"xl": "trt-fp16"}))
    assert "trt-fp16" in str(caught.value)
    assert (
        plan_deploy(spec, artifacts, DeployOptions("onnxruntime")).tiers["xl"].selection.variant
        == "onnx-fp32"
    )
