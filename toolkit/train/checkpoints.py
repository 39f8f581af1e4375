"""Checkpoint files: one per tier plus the preprocess statistics, loaded with ``weights_only=True``."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from toolkit.errors import CheckpointError
from toolkit.models.base import RankingModel
from toolkit.models.preprocess import Preprocess
from toolkit.models.registry import build_from_params, config_dict, tier_config
from toolkit.models.user import build_user_model, tier_error
from toolkit.spec.schema import Features, Spec

FORMAT = 1
PREPROCESS_FILE = "preprocess.pt"


def features_dict(features: Features) -> dict[str, Any]:
    """The request schema as plain data, stored in checkpoints to detect a changed spec."""
    return dataclasses.asdict(features)


def tier_path(directory: Path, tier: str) -> Path:
    """Checkpoint file of ``tier``."""
    return directory / f"{tier}.pt"


def _save(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def save_tier(directory: Path, spec: Spec, name: str, model: RankingModel) -> Path:
    """Write ``model``'s checkpoint atomically and return its path."""
    tier = spec.tier(name)
    path = tier_path(directory, name)
    _save(
        {
            "format": FORMAT,
            "tier": name,
            "architecture": tier.architecture,
            "params": config_dict(tier_config(spec, tier)),
            "features": features_dict(spec.features),
            "state_dict": model.state_dict(),
        },
        path,
    )
    return path


def save_preprocess(directory: Path, spec: Spec, preprocess: Preprocess) -> Path:
    """Write the preprocess statistics atomically and return the path."""
    path = directory / PREPROCESS_FILE
    _save({"format": FORMAT, "features": features_dict(spec.features), **preprocess.statistics()}, path)
    return path


def _load(path: Path, spec: Spec) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found; run `toolkit train` first")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unknown checkpoint format (expected format {FORMAT})")
    if data.get("features") != features_dict(spec.features):
        raise CheckpointError(
            f"{path}: was trained for other features than {spec.source or 'the spec'} describes; "
            "retrain with `toolkit train`"
        )
    return data


def load_tier(directory: Path, spec: Spec, name: str) -> RankingModel:
    """Load ``name``'s trained model in eval mode.

    Raises:
        CheckpointError: Missing, unreadable, or trained for another spec (features, architecture
            or size knobs differ).
    """
    tier = spec.tier(name)
    path = tier_path(directory, name)
    data = _load(path, spec)
    wanted = config_dict(tier_config(spec, tier))
    if data.get("architecture") != tier.architecture or data.get("params") != wanted:
        raise CheckpointError(
            f"{path}: holds architecture {data.get('architecture')!r} with params {data.get('params')}, "
            f"but the spec's tier {name!r} is {tier.architecture!r} with {wanted}; "
            "retrain with `toolkit train`"
        )
    model = build_from_params(spec.features, tier.architecture, data["params"])
    try:
        model.load_state_dict(data["state_dict"])
    except RuntimeError as exc:
        raise CheckpointError(f"{path}: weights do not fit the model: {exc}") from None
    return model.eval()


def load_preprocess(directory: Path, spec: Spec) -> Preprocess:
    """Load the fitted preprocess step."""
    data = _load(directory / PREPROCESS_FILE, spec)
    stats = {k: data[k].numpy() for k in ("user_mean", "user_std", "ad_mean", "ad_std")}
    return Preprocess(spec.features, **stats).eval()


def load_any_tier(spec: Spec, checkpoints: Path, name: str) -> nn.Module:
    """The PyTorch reference of a tier: a demo tier's checkpoint or a user's factory model.

    Raises:
        UserModelError: For an ONNX tier (it has no PyTorch model) or a user model that does not fit.
        CheckpointError: A demo tier's checkpoint is missing or does not match the spec.
    """
    tier = spec.tier(name)
    if tier.kind == "onnx":
        raise tier_error(name, "is an ONNX file; it has no PyTorch model")
    if tier.kind == "factory":
        return build_user_model(tier, load_preprocess(checkpoints, spec).statistics())

    return load_tier(checkpoints, spec, name)
