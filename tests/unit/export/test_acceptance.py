"""The acceptance check: judge() on crafted scores, and a damaged variant through the real export."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import tiny_spec_dict
from onnx import numpy_helper

from toolkit.errors import RepositoryError
from toolkit.export import build, run_export
from toolkit.export.acceptance import Reference, judge
from toolkit.export.pipeline import ExportOptions
from toolkit.repository import deploy
from toolkit.repository.select import select_variant
from toolkit.spec import AcceptanceSpec, spec_from_dict
from toolkit.spec.variants import CPU, VARIANTS, VariantInfo

GATE = AcceptanceSpec()


def _reference(seed: int = 0, n: int = 4000) -> Reference:
    rng = np.random.default_rng(seed)
    scores = rng.uniform(0.01, 0.3, n)
    labels = (rng.uniform(size=n) < scores).astype(np.float32)
    return Reference.from_scores(labels, scores.astype(np.float32))


def test_judge_passes_with_zero_deltas_when_scores_equal_the_reference() -> None:
    ref = _reference()
    result = judge(ref, ref.scores.copy(), GATE, "score")
    assert result.passed
    assert result.quality["ne_delta_rel"] == 0.0 and result.quality["auc_ratio"] == 1.0
    assert result.max_abs_error == {"score": 0.0}


def test_judge_fails_with_the_numbers_when_noise_raises_ne() -> None:
    ref = _reference()
    noisy = np.clip(ref.scores + np.random.default_rng(1).normal(0, 0.08, ref.scores.shape), 0.001, 0.999)
    result = judge(ref, noisy, GATE, "score")
    assert not result.passed
    assert result.quality["ne_delta_rel"] > GATE.max_ne_change
    assert "NE" in result.failures[0] and "acceptance" in result.failures[0]
    assert result.max_abs_error["score"] == pytest.approx(float(np.max(np.abs(noisy - ref.scores))))


def test_judge_fails_a_variant_whose_ne_drops_far_because_the_ne_bound_is_two_sided() -> None:
    ref = _reference()
    sharper = np.where(ref.labels > 0, np.minimum(ref.scores * 1.5, 0.99), ref.scores * 0.8)
    result = judge(ref, sharper, GATE, "score")
    assert result.quality["ne_delta_rel"] < -GATE.max_ne_change
    assert result.quality["auc_ratio"] > 1.0
    assert not result.passed and "within ±" in result.failures[0]


def test_judge_fails_naming_the_problem_when_scores_hold_nan_or_the_wrong_shape() -> None:
    ref = _reference()
    broken = ref.scores.copy()
    broken[3] = np.nan
    assert "NaN" in judge(ref, broken, GATE, "score").failures[0]
    assert "shape" in judge(ref, ref.scores[:-1], GATE, "score").failures[0]


def _one_bit_everywhere(ctx: build.BuildContext, folder: Path) -> dict:
    """Every float initializer (weights and embeddings) cut to one bit: sign times mean magnitude."""
    model = onnx.load(str(ctx.fp32))
    for init in model.graph.initializer:
        values = numpy_helper.to_array(init)
        if values.dtype != np.float32 or values.size < 16:
            continue
        damaged = (np.sign(values) * np.abs(values).mean()).astype(np.float32)
        init.CopyFrom(numpy_helper.from_array(damaged, init.name))
    onnx.save(model, str(folder / build.ONNX_FILE))
    return {}


def test_acceptance_fails_a_damaged_variant_and_deploy_never_selects_it(
    pipeline, tmp_path, monkeypatch
) -> None:
    name = "onnx-1bit-everything"
    monkeypatch.setitem(VARIANTS, name, VariantInfo(name, "onnx", (CPU,), "test: one bit per weight"))
    monkeypatch.setitem(build.BUILDERS, name, _one_bit_everywhere)
    artifacts = tmp_path / "artifacts"
    shutil.copytree(pipeline.artifacts, artifacts)
    data = tiny_spec_dict(tmp_path)
    data["paths"]["checkpoints"] = str(pipeline.checkpoints)
    data["paths"]["artifacts"] = str(artifacts)
    data["export"]["precisions"] = ["onnx-fp32", name]
    spec = spec_from_dict(data)

    manifest = run_export(spec, pipeline.checkpoints, artifacts, ExportOptions(tiers=("xl",)))

    entry = manifest.variant("xl", name)
    assert entry.status == "FAILED"
    assert abs(entry.quality["ne_delta_rel"]) > spec.export.acceptance.max_ne_change
    assert "NE" in entry.reason and "against fp32 PyTorch" in entry.reason
    assert not entry.files and not (artifacts / "xl" / name).exists()
    variants = manifest.tier("xl").variants
    assert select_variant("xl", variants, CPU).variant != name
    with pytest.raises(RepositoryError, match=f"xl={name}.*FAILED"):
        deploy(spec, artifacts, tmp_path / "repo", "python", pins={"xl": name})
    assert not (tmp_path / "repo").exists()


def test_export_records_a_crashing_variant_as_failed_and_carries_on(pipeline, tmp_path, monkeypatch) -> None:
    name = "onnx-crashes"

    def crash(ctx: build.BuildContext, folder: Path) -> dict:
        raise RuntimeError("kernel exploded\nsecond line")

    monkeypatch.setitem(VARIANTS, name, VariantInfo(name, "onnx", (CPU,), "test: always crashes"))
    monkeypatch.setitem(build.BUILDERS, name, crash)
    artifacts = tmp_path / "artifacts"
    shutil.copytree(pipeline.artifacts, artifacts)
    data = tiny_spec_dict(tmp_path)
    data["paths"]["checkpoints"] = str(pipeline.checkpoints)
    data["paths"]["artifacts"] = str(artifacts)
    data["export"]["precisions"] = ["onnx-fp32", name, "onnx-emb-int8"]
    spec = spec_from_dict(data)

    manifest = run_export(spec, pipeline.checkpoints, artifacts, ExportOptions(tiers=("lite",)))

    variants = manifest.tier("lite").variants
    assert variants[name].status == "FAILED"
    assert variants[name].reason == "RuntimeError: kernel exploded"
    assert variants["onnx-emb-int8"].status == "OK"
