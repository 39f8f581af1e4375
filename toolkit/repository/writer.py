"""``toolkit deploy``: write the Triton model repository atomically from the spec and the manifest."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from toolkit import __version__
from toolkit.errors import ExportError, RepositoryError
from toolkit.export.manifest import FP32, read_manifest, verify_files
from toolkit.export.onnx_export import PREPROCESSED
from toolkit.repository import configs
from toolkit.repository.gate import gate_path, read_calibration
from toolkit.repository.select import Selection, select_variants
from toolkit.router.policy import RouterConfig, RuleConfig
from toolkit.router.validate import InputSchema
from toolkit.spec.schema import Spec
from toolkit.spec.variants import GPU

MARKER = "toolkit-repository.json"
"""File at the repository's top level that says the toolkit wrote it (Triton ignores top-level files)."""

MARKER_FORMAT = 1
BACKENDS = ("onnxruntime", "python")
_PYTHON_MODELS = Path(__file__).resolve().parent / "python_models"
_ROUTER_PACKAGE = Path(__file__).resolve().parent.parent / "router"


@dataclass(frozen=True)
class DeployResult:
    """What ``deploy`` wrote.

    Attributes:
        repository: The repository folder.
        backend: Backend of the tiers and the preprocess step.
        models: Model names written, entry point first.
        selections: Variant deployed per tier, and why.
        replaced: Whether an earlier repository was replaced.
        target: ``cpu`` or ``gpu``.
        replaced_older: When the replaced repository was written in another repository format,
            what wrote it (``toolkit <version>, repository format <n>``); empty otherwise.
    """

    repository: Path
    backend: str
    models: tuple[str, ...]
    selections: dict[str, Selection]
    replaced: bool
    target: str = "cpu"
    replaced_older: str = ""

    @property
    def variants(self) -> dict[str, str]:
        """Variant name deployed per tier."""
        return {tier: s.variant for tier, s in self.selections.items()}


def router_settings(
    spec: Spec,
    latency_prior_ms: dict[str, dict[str, float]] | None = None,
    learned: dict[str, Any] | None = None,
) -> RouterConfig:
    """The router's configuration (``router.json``) derived from the spec.

    Args:
        spec: The ensemble spec.
        latency_prior_ms: Per tier, the deployed variant's measured latency by candidate count.
        learned: With the learned policy, ``toolkit calibrate``'s ``calibration.json``.
    """
    learned = learned or {}
    return RouterConfig(
        tiers=spec.tier_names,
        policy=spec.routing.policy,
        default_tier=spec.default_tier,
        rules=tuple(RuleConfig(r.feature, r.op, r.value, r.tier) for r in spec.routing.rules),
        max_candidates=spec.triton.max_candidates,
        cascade_tier=spec.routing.cascade.tier if spec.routing.policy == "cascade" else "",
        cascade_top_k=spec.routing.cascade.top_k if spec.routing.policy == "cascade" else 0,
        default_budget_ms=spec.routing.budget.default_ms,
        budget_percentile=spec.routing.budget.percentile,
        budget_window=spec.routing.budget.window,
        budget_max_age_s=spec.routing.budget.max_age_s,
        latency_prior_ms=dict(latency_prior_ms or {}),
        gate_model=spec.gate_model if learned else "",
        learned_lambda=float(learned.get("lambda", 0.0)),
        tier_costs={t: list(c) for t, c in learned.get("tier_costs_mflop", {}).items()},
        inputs=input_schema(spec).to_dict(),
        preprocess_model=spec.preprocess_model,
        preprocess_outputs=dict(PREPROCESSED),
        tier_timeout_ms=spec.triton.tier_timeout_ms,
    )


def input_schema(spec: Spec) -> InputSchema:
    """What a valid raw request to ``spec``'s ensemble looks like, for the router's validation."""
    features = spec.features
    return InputSchema(
        user_dense=features.user_dense,
        ad_dense=features.ad_dense,
        user_vocab=tuple((f.name, f.vocab) for f in features.user_sparse),
        ad_vocab=tuple((f.name, f.vocab) for f in features.ad_sparse),
        history_length=features.history.length,
        history_vocab=features.history_vocab,
        history_table=features.history.table,
        max_candidates=spec.triton.max_candidates,
        out_of_range_ids=spec.validation.out_of_range_ids,
        long_history=spec.validation.long_history,
    )


def write_config(folder: Path, config: mc.ModelConfig) -> None:
    """Write ``config.pbtxt`` with protobuf text format."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")


def _copy_files(artifacts: Path, variant: dict[str, Any], dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for entry in variant["files"]:
        shutil.copy2(artifacts / entry["path"], dest / Path(entry["path"]).name)


def _write_onnx_model(
    staging: Path, artifacts: Path, variant: dict[str, Any], config: mc.ModelConfig, backend: str
) -> None:
    folder = staging / config.name
    write_config(folder, config)
    _copy_files(artifacts, variant, folder / "1")
    if backend == "python":
        shutil.copy2(_PYTHON_MODELS / "onnx_runner.py", folder / "1" / "model.py")


def _write_router(
    staging: Path,
    spec: Spec,
    latency_prior_ms: dict[str, dict[str, float]] | None = None,
    learned: dict[str, Any] | None = None,
) -> None:
    folder = staging / spec.router_model
    write_config(folder, configs.router_config(spec))
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copy2(_PYTHON_MODELS / "router.py", version / "model.py")
    shutil.copytree(_ROUTER_PACKAGE, version / "toolkit_router", ignore=shutil.ignore_patterns("__pycache__"))
    settings = router_settings(spec, latency_prior_ms, learned)
    (version / "router.json").write_text(settings.to_json(), encoding="utf-8")


def _check_replaceable(out: Path) -> tuple[bool, str]:
    """Whether ``out`` holds a repository to replace, and what wrote it when that was not this format."""
    if not out.exists():
        return False, ""
    if not out.is_dir():
        raise RepositoryError(f"{out}: exists and is not a folder; refusing to replace it")
    entries = [p for p in out.iterdir() if p.name not in (".gitkeep",)]
    if not entries:
        return False, ""
    if not (out / MARKER).is_file():
        raise RepositoryError(
            f"{out}: is not empty and was not written by `toolkit deploy` (no {MARKER}); "
            "refusing to replace it: choose another --out or remove it"
        )
    try:
        marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
        fmt, version = marker.get("format"), marker.get("toolkit_version", "unknown")
    except (OSError, ValueError, AttributeError) as exc:
        raise RepositoryError(
            f"{out / MARKER}: unreadable ({exc}); refusing to replace a repository that may not be "
            "the toolkit's: choose another --out or remove it"
        ) from None
    if fmt != MARKER_FORMAT:
        return True, f"toolkit {version}, repository format {fmt}"
    return True, ""


def deploy(
    spec: Spec,
    artifacts: Path,
    out: Path,
    backend: str,
    target: str | None = None,
    pins: dict[str, str] | None = None,
) -> DeployResult:
    """Write the model repository for ``spec`` from the exported artifacts.

    Per tier, the variant deployed is the one pinned (``pins``, then the spec's ``triton.pin``) or
    the fastest on ``target`` that passed the accuracy gate (see
    :func:`~toolkit.repository.select.select_variant`). The repository is written beside ``out``
    and renamed into place, so a failed deploy leaves the previous repository as it was.

    Args:
        spec: The ensemble spec.
        artifacts: Export output (with ``manifest.json``).
        out: Repository folder to (re)place.
        backend: ``onnxruntime`` or ``python`` for the tiers and the preprocess step (the GPU
            target needs ``onnxruntime``).
        target: ``cpu`` or ``gpu`` (default: the spec's ``triton.target``).
        pins: Variant per tier that overrides the choice.

    Raises:
        RepositoryError: The manifest lacks a tier or a passing variant, a pin is invalid, a file
            changed since export, or ``out`` holds something the toolkit did not write.
    """
    target = target or spec.triton.target
    if backend not in BACKENDS:
        raise RepositoryError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    if target == GPU and backend != "onnxruntime":
        raise RepositoryError(
            f"--target gpu needs --backend onnxruntime (an NGC tritonserver with TensorRT), not {backend!r}"
        )
    try:
        manifest = read_manifest(artifacts)
        if manifest.get("ensemble") != spec.name:
            raise RepositoryError(
                f"{artifacts}: manifest is for ensemble {manifest.get('ensemble')!r}, not {spec.name!r}"
            )
        pre_variant = manifest["preprocess"]["variants"][FP32]
        verify_files(artifacts, pre_variant, spec.preprocess_model)
        selections = select_variants(spec, manifest, target, pins)
        entries = {name: manifest["tiers"][name]["variants"][s.variant] for name, s in selections.items()}
        for name, entry in entries.items():
            verify_files(artifacts, entry, f"tier {name!r} ({selections[name].variant})")
    except ExportError as exc:
        raise RepositoryError(str(exc)) from None
    learned = read_calibration(spec, artifacts) if spec.routing.policy == "learned" else None
    out = out.resolve()
    replacing, older = _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        for name, entry in entries.items():
            if target == GPU:
                digest = entry["files"][0]["sha256"] if entry.get("files") else ""
                config = configs.gpu_tier_config(spec, name, selections[name].variant, model_sha256=digest)
                write_config(staging / name, config)
                _copy_files(artifacts, entry, staging / name / "1")
            else:
                config = configs.tier_config(spec, name, backend)
                _write_onnx_model(staging, artifacts, entry, config, backend)
        _write_onnx_model(staging, artifacts, pre_variant, configs.preprocess_config(spec, backend), backend)
        priors = {
            name: {str(n): float(ms) for n, ms in entry.get("latency_ms", {}).get(target, {}).items()}
            for name, entry in entries.items()
        }
        _write_router(staging, spec, {name: p for name, p in priors.items() if p}, learned)
        if learned is not None:
            config = configs.gate_config(spec, backend, learned["features"])
            write_config(staging / spec.gate_model, config)
            (staging / spec.gate_model / "1").mkdir()
            shutil.copy2(gate_path(spec, artifacts), staging / spec.gate_model / "1" / "model.onnx")
            if backend == "python":
                shutil.copy2(_PYTHON_MODELS / "onnx_runner.py", staging / spec.gate_model / "1" / "model.py")
        write_config(staging / spec.name, configs.ensemble_config(spec))
        (staging / spec.name / "1").mkdir()
        marker = {
            "format": MARKER_FORMAT,
            "toolkit_version": __version__,
            "ensemble": spec.name,
            "spec": spec.source,
            "backend": backend,
            "target": target,
            "variants": {name: s.variant for name, s in selections.items()},
            "selection": {name: s.reason for name, s in selections.items()},
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        (staging / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise RepositoryError(f"{out}: writing the repository failed: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    models = (spec.name, spec.preprocess_model, spec.router_model, *spec.tier_names)
    if learned is not None:
        models = (*models, spec.gate_model)
    return DeployResult(out, backend, models, selections, replacing, target, older)
