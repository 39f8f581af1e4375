"""train -> export -> deploy through the CLI: outputs, manifest, repository, and failures that keep state."""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import json
import shutil
from pathlib import Path

import click
import onnx
import pytest
from google.protobuf import text_format
from helpers import run_cli, tiny_spec_dict, write_spec
from tritonclient.grpc import model_config_pb2 as mc

from toolkit.export import FP32, read_manifest
from toolkit.export.manifest import FORMAT, Status, sha256_file, write_manifest
from toolkit.repository import MARKER
from toolkit.repository.fuse import fuse_preprocess
from toolkit.repository.select import NOISE
from toolkit.spec.variants import VARIANTS

pytestmark = pytest.mark.e2e


def _tree_digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_train_prints_quality_per_tier_when_run(pipeline) -> None:
    out = pipeline.outputs["train"]
    for tier in pipeline.spec.tier_names:
        assert tier in out
        assert (pipeline.checkpoints / f"{tier}.pt").is_file()
    report = json.loads((pipeline.checkpoints / "training.json").read_text())
    for metrics in report["tiers"].values():
        assert 0.0 < metrics["ne"] < 1.5 and 0.0 <= metrics["auc"] <= 1.0


def test_export_writes_manifest_with_checked_variants_when_run(pipeline) -> None:
    manifest = read_manifest(pipeline.artifacts)
    tolerance = pipeline.spec.export.tolerance
    assert manifest.ensemble == pipeline.spec.name and manifest.format == FORMAT
    assert list(manifest.tiers) == list(pipeline.spec.tier_names)
    for name, tier in manifest.tiers.items():
        variant = tier.variant("onnx-fp32")
        assert variant.status is Status.OK
        assert variant.max_abs_error["score"] <= tolerance.atol + tolerance.rtol
        assert abs(variant.quality["ne_delta_rel"]) < 1e-4
        assert set(variant.latency("cpu")) == {8}
        for entry in variant.files:
            path = pipeline.artifacts / entry.path
            assert path.stat().st_size == entry.bytes and sha256_file(path) == entry.sha256
        assert tier.checkpoint["sha256"] == sha256_file(pipeline.checkpoints / f"{name}.pt")


def test_export_status_matrix_covers_every_tier_and_variant_when_run(pipeline) -> None:
    manifest = read_manifest(pipeline.artifacts)
    bounds = pipeline.spec.export.acceptance
    statuses = set()
    for name, tier in manifest.tiers.items():
        assert list(tier.variants) == list(VARIANTS)
        for variant, entry in tier.variants.items():
            statuses.add(entry.status)
            if entry.passed:
                assert abs(entry.quality["ne_delta_rel"]) <= bounds.max_ne_change
                assert entry.quality["auc_ratio"] >= bounds.min_auc_ratio
                assert entry.files and entry.bytes == sum(f.bytes for f in entry.files)
                assert all(ms > 0 for ms in entry.latency("cpu").values())
            else:
                assert entry.reason and not entry.files
                assert not (pipeline.artifacts / name / variant).exists()
            if entry.status is Status.FAILED and entry.quality:
                q = entry.quality
                assert abs(q["ne_delta_rel"]) > bounds.max_ne_change or q["auc_ratio"] < bounds.min_auc_ratio
        for variant in ("onnx-emb-int8", "onnx-emb-int4"):
            emb = tier.variant(variant).details.get("embeddings")
            assert emb and 0 < emb["quantized_bytes"] < emb["fp32_bytes"]
        assert (
            tier.variant("onnx-emb-int4").details["embeddings"]["quantized_bytes"]
            < tier.variant("onnx-emb-int8").details["embeddings"]["quantized_bytes"]
        )
    assert "OK" in statuses
    out = pipeline.outputs["export"]
    assert "status matrix" in out and "onnx-int8-static" in out


@pytest.mark.skipif(importlib.util.find_spec("tensorrt") is not None, reason="tensorrt is installed here")
def test_export_skips_tensorrt_variants_with_the_reason_when_tensorrt_is_missing(pipeline) -> None:
    manifest = read_manifest(pipeline.artifacts)
    for tier in manifest.tiers.values():
        for variant in ("trt-fp16", "trt-int8", "trt-fp8"):
            entry = tier.variant(variant)
            assert entry.status is Status.SKIPPED and "tensorrt" in entry.reason
    assert "tensorrt" in pipeline.outputs["export"]


def test_export_reuses_unchanged_variants_and_rebuilds_when_inputs_change(pipeline, tmp_path) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(pipeline.artifacts, artifacts)
    before = _tree_digest(artifacts)
    data = tiny_spec_dict(tmp_path)
    data["paths"]["checkpoints"] = str(pipeline.checkpoints)
    data["paths"]["artifacts"] = str(artifacts)
    spec = write_spec(tmp_path / "same.yaml", data)
    run_cli("export", "--spec", str(spec), "--tier", "lite")
    manifest = read_manifest(artifacts)
    lite = manifest.tier("lite").variants
    assert all(e.reused for e in lite.values() if e.status is not Status.SKIPPED)
    after = _tree_digest(artifacts)
    assert {k: v for k, v in after.items() if k != "manifest.json"} == {
        k: v for k, v in before.items() if k != "manifest.json"
    }
    data["export"]["acceptance"] = {"max_ne_change": 0.5, "min_auc_ratio": 0.5}
    spec = write_spec(tmp_path / "loose.yaml", data)
    run_cli("export", "--spec", str(spec), "--tier", "lite", "--precision", "onnx-int8-dynamic")
    lite = read_manifest(artifacts).tier("lite").variants
    assert lite["onnx-int8-dynamic"].reused is False and lite["onnx-int8-dynamic"].passed
    assert lite["onnx-fp32"].reused is False


def test_deploy_serves_the_fastest_passing_variant_or_the_pinned_one(pipeline, tmp_path) -> None:
    manifest = read_manifest(pipeline.artifacts)
    marker = json.loads((pipeline.repository / MARKER).read_text())
    for tier, variant in pipeline.pins.items():
        assert marker["variants"][tier] == variant
        assert f"tier {variant}: pinned" in pipeline.outputs["deploy"]
    repo = tmp_path / "repo"
    run_cli("deploy", "--spec", str(pipeline.spec_path), "--out", str(repo))
    preprocess = onnx.load(str(pipeline.artifacts / pipeline.spec.preprocess_model / FP32 / "model.onnx"))
    chosen = json.loads((repo / MARKER).read_text())["variants"]
    for tier, variant in chosen.items():
        entries = manifest.tier(tier).variants
        assert entries[variant].passed
        passing = [e.mean_latency("cpu") for e in entries.values() if e.passed]
        assert entries[variant].mean_latency("cpu") <= min(passing) * (1 + NOISE)
        deployed = onnx.load(str(repo / tier / "1" / "model.onnx"))
        source = pipeline.artifacts / entries[variant].files[0].path
        assert sha256_file(source) == entries[variant].files[0].sha256
        exported = onnx.load(str(source))
        fused = fuse_preprocess(preprocess, exported)
        assert deployed.SerializeToString() == fused.SerializeToString()


def test_deploy_refuses_a_pinned_variant_that_did_not_pass(pipeline, tmp_path) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(pipeline.artifacts, artifacts)
    manifest = read_manifest(artifacts)
    entry = manifest.variant("xl", "onnx-emb-int8")
    entry.status, entry.reason = Status.FAILED, "NE +0.5% against fp32 PyTorch"
    write_manifest(artifacts, manifest)
    repo = tmp_path / "repo"
    args = ("--artifacts", str(artifacts), "--out", str(repo), "--pin", "xl=onnx-emb-int8")
    proc = run_cli("deploy", "--spec", str(pipeline.spec_path), *args, check=False)
    assert proc.returncode == 1
    assert "xl=onnx-emb-int8" in proc.stderr and "FAILED" in proc.stderr and "not deployed" in proc.stderr
    assert not repo.exists()
    proc = run_cli(
        "deploy", "--spec", str(pipeline.spec_path), *args[:4], "--pin", "xl=trt-fp16", check=False
    )
    assert proc.returncode == 1 and "cannot run on cpu" in proc.stderr


def test_deploy_for_the_gpu_target_writes_gpu_tiers_with_the_tensorrt_accelerator(pipeline, tmp_path) -> None:
    repo = tmp_path / "gpu_repo"
    args = ("--out", str(repo), "--target", "gpu")
    out = run_cli("deploy", "--spec", str(pipeline.spec_path), *args).stdout
    marker = json.loads((repo / MARKER).read_text())
    assert marker["target"] == "gpu" and marker["backend"] == "onnxruntime"
    manifest = read_manifest(pipeline.artifacts)
    for tier in pipeline.spec.tier_names:
        variant = marker["variants"][tier]
        assert manifest.variant(tier, variant).passed
        assert "gpu" in VARIANTS[variant].targets
        config = text_format.Parse((repo / tier / "config.pbtxt").read_text(), mc.ModelConfig())
        assert config.backend == "onnxruntime"
        assert [g.kind for g in config.instance_group] == [mc.ModelInstanceGroup.KIND_GPU]
        accelerators = config.optimization.execution_accelerators.gpu_execution_accelerator
        assert [a.name for a in accelerators] == ["tensorrt"]
        assert config.model_warmup
        assert (repo / tier / "1" / "model.onnx").is_file()
        assert "preference" in out
    pre = text_format.Parse(
        (repo / pipeline.spec.preprocess_model / "config.pbtxt").read_text(), mc.ModelConfig()
    )
    assert [g.kind for g in pre.instance_group] == [mc.ModelInstanceGroup.KIND_CPU]
    proc = run_cli("deploy", "--spec", str(pipeline.spec_path), *args, "--backend", "python", check=False)
    assert proc.returncode == 1 and "--target gpu needs the onnxruntime backend" in proc.stderr


@pytest.mark.parametrize(
    ("flag", "value"), [("--precision", "onnx-int3"), ("--tier", "gold")], ids=["precision", "tier"]
)
def test_export_exits_1_naming_the_flag_when_a_tier_or_variant_is_unknown(pipeline, flag, value) -> None:
    proc = run_cli("export", "--spec", str(pipeline.spec_path), flag, value, check=False)
    assert proc.returncode == 1
    assert f"{flag} {value!r}" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_deploy_writes_every_model_with_parseable_configs_when_run(pipeline) -> None:
    spec = pipeline.spec
    repo = pipeline.repository
    for model in (spec.name, spec.preprocess_model, spec.router_model, *spec.tier_names):
        config = text_format.Parse((repo / model / "config.pbtxt").read_text(), mc.ModelConfig())
        assert config.name == model
        assert (repo / model / "1").is_dir()
    assert json.loads((repo / MARKER).read_text())["ensemble"] == spec.name
    router = json.loads((repo / spec.router_model / "1" / "router.json").read_text())
    assert router["tiers"] == list(spec.tier_names) and router["policy"] == spec.routing.policy
    assert (repo / spec.router_model / "1" / "toolkit_router" / "policy.py").is_file()


def test_export_fails_and_keeps_previous_artifacts_when_over_tolerance(pipeline, tmp_path) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(pipeline.artifacts, artifacts)
    before = _tree_digest(artifacts)
    data = tiny_spec_dict(tmp_path)
    data["paths"]["checkpoints"] = str(pipeline.checkpoints)
    data["paths"]["artifacts"] = str(artifacts)
    data["export"]["tolerance"] = {"atol": 0.0, "rtol": 0.0}
    spec = write_spec(tmp_path / "strict.yaml", data)
    proc = run_cli("export", "--spec", str(spec), "--tier", "xl", check=False)
    assert proc.returncode == 1
    assert "max abs error per output" in proc.stderr and "Nothing in" in proc.stderr
    assert _tree_digest(artifacts) == before


def test_deploy_fails_and_keeps_previous_repository_when_artifact_changed(pipeline, tmp_path) -> None:
    artifacts = tmp_path / "artifacts"
    shutil.copytree(pipeline.artifacts, artifacts)
    repo = tmp_path / "repo"
    shutil.copytree(pipeline.repository, repo)
    before = _tree_digest(repo)
    tampered = artifacts / pipeline.spec.preprocess_model / "onnx-fp32" / "model.onnx"
    tampered.write_bytes(tampered.read_bytes() + b"\0")
    args = ("deploy", "--spec", str(pipeline.spec_path), "--artifacts", str(artifacts), "--out", str(repo))
    proc = run_cli(*args, check=False)
    assert proc.returncode == 1
    assert str(tampered) in proc.stderr and "sha256" in proc.stderr
    assert _tree_digest(repo) == before


def test_deploy_refuses_to_replace_folder_it_did_not_write_when_pointed_at_one(pipeline, tmp_path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    proc = run_cli("deploy", "--spec", str(pipeline.spec_path), "--out", str(foreign), check=False)
    assert proc.returncode == 1 and "refusing to replace" in proc.stderr
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_cli_exits_1_with_one_line_naming_file_and_key_when_spec_invalid(tmp_path) -> None:
    data = tiny_spec_dict(tmp_path)
    data["routing"]["rules"][0]["tier"] = "gold"
    spec = write_spec(tmp_path / "bad.yaml", data)
    proc = run_cli("train", "--spec", str(spec), check=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1
    assert str(spec) in lines[0] and "routing.rules[0].tier" in lines[0] and "gold" in lines[0]


@pytest.mark.parametrize(
    "command", ["train", "export", "deploy", "serve", "infer", "demo", "evaluate", "calibrate"]
)
def test_every_command_help_explains_its_options_when_asked(command) -> None:
    proc = run_cli(command, "--help")
    module = importlib.import_module(f"toolkit.cli.{command}")
    options = [p for p in module.command.params if isinstance(p, click.Option)]
    assert options and module.command.help
    for option in options:
        assert option.help, f"toolkit {command} {option.opts[0]} has no help text"
        assert option.opts[0] in proc.stdout


def test_deploy_reports_a_repository_of_another_format_and_refuses_an_unreadable_marker(
    pipeline, tmp_path
) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(pipeline.repository, repo)
    marker = json.loads((repo / MARKER).read_text())
    (repo / MARKER).write_text(json.dumps({**marker, "format": 0, "toolkit_version": "0.0.1"}))

    out = run_cli("deploy", "--spec", str(pipeline.spec_path), "--out", str(repo)).stdout

    assert "written by toolkit 0.0.1, repository format 0" in out
    assert json.loads((repo / MARKER).read_text())["format"] == marker["format"]
    (repo / MARKER).write_text("{not json")
    before = _tree_digest(repo)
    refused = run_cli("deploy", "--spec", str(pipeline.spec_path), "--out", str(repo), check=False)
    assert refused.returncode != 0 and MARKER in refused.stderr and "unreadable" in refused.stderr
    assert _tree_digest(repo) == before
