"""The manifest is typed: round trips through its JSON form, migrates older formats, refuses unknown ones."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from toolkit.errors import ExportError
from toolkit.export.manifest import (
    FORMAT,
    MANIFEST,
    FileEntry,
    Manifest,
    ModelEntry,
    Status,
    Variant,
    read_manifest,
    verify_files,
    write_manifest,
)


def _manifest() -> Manifest:
    fp32 = Variant(
        Status.OK,
        fingerprint="abc",
        targets=("cpu", "gpu"),
        files=(FileEntry("xl/onnx-fp32/model.onnx", 3, "00"),),
        latency_ms={"cpu": {16: 0.1, 64: 0.3}},
        quality={"ne_delta_rel": 0.0, "auc_ratio": 1.0},
        details={"parity_requests": 34},
    )
    failed = Variant(Status.FAILED, "NE +0.5% against fp32 PyTorch", details={"embeddings": {"ratio": 0.25}})
    return Manifest(
        "ads",
        ModelEntry({"onnx-fp32": fp32}, name="ads_preprocess"),
        {
            "xl": ModelEntry(
                {"onnx-fp32": fp32, "onnx-emb-int4": failed}, architecture="xl", reference={"ne": 0.9}
            )
        },
        acceptance={"max_ne_change": 0.001, "min_auc_ratio": 0.999},
    )


def test_the_json_form_round_trips(tmp_path: Path) -> None:
    manifest = _manifest()
    write_manifest(tmp_path, manifest)
    data = json.loads((tmp_path / MANIFEST).read_text())
    assert data["format"] == FORMAT
    assert data["tiers"]["xl"]["variants"]["onnx-fp32"]["latency_ms"] == {"cpu": {"16": 0.1, "64": 0.3}}
    assert data["tiers"]["xl"]["variants"]["onnx-fp32"]["bytes"] == 3
    assert read_manifest(tmp_path) == manifest


def test_typed_access_answers_what_deploy_asks() -> None:
    manifest = _manifest()
    fp32 = manifest.variant("xl", "onnx-fp32")
    assert fp32.passed and fp32.mean_latency("cpu") == pytest.approx(0.2) and fp32.mean_latency("gpu") is None
    assert fp32.file(".onnx") == "xl/onnx-fp32/model.onnx" and fp32.engine == {}
    assert not manifest.variant("xl", "onnx-emb-int4").passed
    assert [(m, v) for m, v, _ in manifest.rows()] == [
        ("ads_preprocess", "onnx-fp32"),
        ("xl", "onnx-fp32"),
        ("xl", "onnx-emb-int4"),
    ]
    with pytest.raises(ExportError, match="no onnx-fp16 for tier 'xl'.*--precision onnx-fp16"):
        manifest.variant("xl", "onnx-fp16")
    with pytest.raises(ExportError, match="tier 'gold' is not in the manifest"):
        manifest.tier("gold")


def test_a_format_2_manifest_is_migrated_with_its_gate_as_acceptance(tmp_path: Path) -> None:
    data = _manifest().to_dict()
    data["format"] = 2
    data["gate"] = data.pop("acceptance")
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    migrated = read_manifest(tmp_path)
    assert migrated.format == FORMAT
    assert migrated.acceptance == {"max_ne_change": 0.001, "min_auc_ratio": 0.999}
    assert migrated.tiers == _manifest().tiers


@pytest.mark.parametrize(
    ("found", "message"),
    [(1, "format 1 is not supported.*run `toolkit export` again"), (99, "format 99.*upgrade the toolkit")],
)
def test_an_unknown_format_is_refused_naming_the_file(tmp_path: Path, found: int, message: str) -> None:
    data = _manifest().to_dict() | {"format": found}
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ExportError, match=f"^{tmp_path / MANIFEST}: manifest {message}"):
        read_manifest(tmp_path)


def test_a_damaged_manifest_is_one_line_naming_the_file(tmp_path: Path) -> None:
    data = _manifest().to_dict()
    data["tiers"]["xl"]["variants"]["onnx-fp32"]["status"] = "MAYBE"
    (tmp_path / MANIFEST).write_text(json.dumps(data))
    with pytest.raises(ExportError, match="manifest is damaged.*MAYBE") as info:
        read_manifest(tmp_path)
    assert "\n" not in str(info.value)


def test_verify_files_notices_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "m.onnx"
    path.write_bytes(b"abc")
    variant = Variant(Status.OK, files=(FileEntry("m.onnx", 3, "0" * 64),))
    with pytest.raises(ExportError, match="changed since export"):
        verify_files(tmp_path, variant, "tier 'xl'")
