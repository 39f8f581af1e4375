"""The learned policy's gate on disk: where ``toolkit calibrate`` puts it, and how it is checked."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from toolkit.errors import RepositoryError
from toolkit.export.manifest import FP32, sha256_file
from toolkit.spec.schema import Spec

CALIBRATION = "calibration.json"
CALIBRATION_FORMAT = 2
"""Format of ``calibration.json``; 1 was the gate over request summaries [1, F], refused now."""
CHEAPEST_SCORE = "cheapest_score"
"""Extra gate input in cheapest-first mode: FP32 [N], the cheapest tier's scores."""
GATE_OUTPUT = "gains"
"""Gate output: FP32 [1, T - 1], each bigger tier's predicted gain per candidate.

Its other inputs are the preprocessed request tensors, named as the request tensors."""


def gate_folder(spec: Spec, artifacts: Path) -> Path:
    """Where the gate model (``onnx-fp32/model.onnx``) and ``calibration.json`` live."""
    return artifacts / spec.gate_model


def gate_path(spec: Spec, artifacts: Path) -> Path:
    """The gate's ONNX file."""
    return gate_folder(spec, artifacts) / FP32 / "model.onnx"


def read_calibration(spec: Spec, artifacts: Path) -> dict[str, Any]:
    """Read ``calibration.json`` and check the gate file it names.

    Raises:
        RepositoryError: Missing, unreadable, calibrated for other tiers, or the gate file changed.
    """
    path = gate_folder(spec, artifacts) / CALIBRATION
    if not path.is_file():
        raise RepositoryError(f"{path}: not found; the learned policy needs `toolkit calibrate` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"{path}: not readable ({exc})") from None
    if data.get("format") != CALIBRATION_FORMAT:
        raise RepositoryError(
            f"{path}: written by an older toolkit (format {data.get('format')}, this one reads "
            f"{CALIBRATION_FORMAT}); run `toolkit calibrate` again"
        )
    if data.get("tiers") != list(spec.tier_names):
        raise RepositoryError(
            f"{path}: calibrated for tiers {data.get('tiers')}, not {list(spec.tier_names)}"
        )
    model = gate_path(spec, artifacts)
    if not model.is_file() or sha256_file(model) != data.get("gate_sha256"):
        raise RepositoryError(f"{model}: missing or changed since `toolkit calibrate`; run it again")
    return data
