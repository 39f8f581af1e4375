"""``toolkit export``: every tier in every precision, checked against PyTorch, accepted or not, timed.

The fp32 ONNX model of a tier is exported from PyTorch and must match it within
``export.tolerance``; every other variant is made from that file, scored on the held-out requests
and kept only when it passes ``export.acceptance``. Results go to a status matrix (tier x variant ->
OK / FAILED / SKIPPED) in ``manifest.json``.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from toolkit import __version__
from toolkit.errors import ExportError, ParityError
from toolkit.export.acceptance import acceptance_dict
from toolkit.export.build import (
    ONNX_FILE,
    BuildContext,
    VariantUnavailableError,
    build_variant,
)
from toolkit.export.manifest import (
    FORMAT,
    FP32,
    Manifest,
    Variant,
    file_entries,
    read_manifest,
    sha256_file,
    write_manifest,
)
from toolkit.export.manifest import verify_files as _verify_files
from toolkit.export.steps import FAILED, OK, SKIPPED, Exporter, StepFn
from toolkit.machine import machine_facts
from toolkit.spec.schema import Spec
from toolkit.spec.variants import VARIANTS
from toolkit.train.checkpoints import PREPROCESS_FILE, tier_path

log = logging.getLogger(__name__)


class RequiredVariantError(ExportError):
    """A variant the spec requires did not pass; nothing was changed.

    Attributes:
        manifest: The status matrix the run would have written, for display.
    """

    def __init__(self, message: str, manifest: Manifest) -> None:
        super().__init__(message)
        self.manifest = manifest


@functools.cache
def code_digest() -> str:
    """Hash of the toolkit's model and export code, so an edited checkout never reuses stale variants."""
    package = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for folder in ("models", "export", "data"):
        for path in sorted((package / folder).glob("*.py")):
            digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()[:16]


def fingerprint(spec: Spec, tier: str | None, variant: str, checkpoints: dict[str, str]) -> str:
    """Hash of everything a variant's result depends on; an unchanged hash means it can be reused.

    Covers the toolkit and library versions (and a hash of the model and export code), the variant,
    the tier's spec entry, the request schema, the data and export settings (but not which variants
    are listed or required), and the sha256 of the checkpoints used.
    """
    import onnx
    import onnxruntime

    export = dataclasses.asdict(spec.export)
    export.pop("precisions")
    export.pop("required")
    payload = {
        "versions": [__version__, torch.__version__, onnx.__version__, onnxruntime.__version__],
        "code": code_digest(),
        "variant": variant,
        "tier": dataclasses.asdict(spec.tier(tier)) if tier else None,
        "features": dataclasses.asdict(spec.features),
        "data": dataclasses.asdict(spec.data),
        "seed": spec.seed,
        "export": export,
        "max_candidates": spec.triton.max_candidates,
        "checkpoints": checkpoints,
    }
    blob = json.dumps(payload, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def tier_source(spec: Spec, checkpoints: Path, name: str) -> dict[str, str]:
    """What a tier's variants are made from, with hashes: checkpoint, user ONNX file, factory source.

    Raises:
        UserModelError: A user tier's factory cannot be imported.
    """
    from toolkit.models.user import factory_source_digest

    tier = spec.tier(name)
    if tier.model is None:
        path = tier_path(checkpoints, name)
        return {"path": str(path), "sha256": sha256_file(path)}
    if tier.model.onnx:
        return {"path": tier.model.onnx, "sha256": sha256_file(Path(tier.model.onnx))}
    checkpoint = tier.model.checkpoint
    return {
        "path": checkpoint,
        "sha256": sha256_file(Path(checkpoint)) if checkpoint else "",
        "factory": tier.model.factory,
        "factory_sha256": factory_source_digest(tier),
    }


def check_user_tiers(exporter: Exporter, names: tuple[str, ...]) -> dict[str, Any]:
    """Build and check every user tier among ``names`` before any export work.

    Returns:
        The PyTorch (or ONNX Runtime) reference model of each user tier, by name.

    Raises:
        UserModelError: The first tier whose model does not fit its spec entry (one line).
    """
    from toolkit.models.user import build_user_model, check_outputs

    spec = exporter.spec
    statistics = exporter.preprocess.statistics()
    models: dict[str, Any] = {}
    for name in names:
        tier = spec.tier(name)
        if tier.model is None:
            continue
        exporter.step(f"{name}: checking the {tier.kind} model against the spec")
        if tier.kind == "onnx":
            from toolkit.export.onnx_adapter import OnnxFileTier

            model = OnnxFileTier(tier, spec, statistics=statistics)
        else:
            model = build_user_model(tier, statistics)
        check_outputs(tier, model, exporter.timing_inputs(3))
        models[name] = model
    return models


def _files_intact(artifacts: Path, entry: dict[str, Any]) -> bool:
    try:
        _verify_files(artifacts, Variant.from_dict(entry), "variant")
    except ExportError:
        return False
    return True


def _entry_failed(status: str, reason: str) -> dict[str, Any]:
    return {"status": status, "reason": reason}


def _promote(staging: Path, artifacts: Path, model: str, variant: str) -> None:
    """Move ``staging/<model>/<variant>`` over the live folder with one rename."""
    source = staging / model / variant
    live = artifacts / model / variant
    live.parent.mkdir(parents=True, exist_ok=True)
    old = live.with_name(f".{variant}.old-{os.getpid()}")
    if live.exists():
        os.replace(live, old)
    os.replace(source, live)
    shutil.rmtree(old, ignore_errors=True)


def _previous(artifacts: Path, spec: Spec) -> dict[str, Any]:
    """The last run's manifest in its JSON form, which this run's entries are assembled in."""
    try:
        previous = read_manifest(artifacts)
    except ExportError:
        return {}
    return previous.to_dict() if previous.ensemble == spec.name else {}


def _selected_variants(spec: Spec, precisions: tuple[str, ...] | None) -> list[str]:
    if precisions is None:
        return list(spec.export.built_variants)
    unknown = [p for p in precisions if p not in VARIANTS]
    if unknown:
        raise ExportError(
            f"{unknown[0]!r} is not a known variant; known: {', '.join(VARIANTS)}", option="precisions"
        )
    return [v for v in VARIANTS if v == FP32 or v in precisions]


@dataclasses.dataclass(frozen=True)
class ExportOptions:
    """What an export run may choose beyond the spec.

    Attributes:
        tiers: Tiers to export (None: all); the manifest keeps the other tiers' entries.
        precisions: Variants to build (None: the spec's ``export.precisions``); ``onnx-fp32`` is
            always built, the others are made from it.
        force: Rebuild even variants that could be reused.
    """

    tiers: tuple[str, ...] | None = None
    precisions: tuple[str, ...] | None = None
    force: bool = False


def run_export(
    spec: Spec,
    checkpoints: Path,
    artifacts: Path,
    options: ExportOptions | None = None,
    step: StepFn | None = None,
) -> Manifest:
    """Export the preprocess step and every variant of the tiers; write the status matrix.

    A variant whose inputs (checkpoints, spec sections, toolkit and library versions) did not
    change since the last run, and whose files are intact, is reused as it is. Everything new is
    written to a staging folder first and moved into ``artifacts`` only when every required
    variant passed, so a failed run leaves the previous artifacts and manifest as they were.

    Args:
        spec: The ensemble spec.
        checkpoints: Folder with the trained checkpoints.
        artifacts: Output folder (``<model>/<variant>/`` and ``manifest.json``).
        options: Which tiers and variants, and whether to rebuild what could be reused.
        step: Optional callback told about each step.

    Returns:
        The manifest written.

    Raises:
        CheckpointError: A checkpoint is missing or does not match the spec.
        RequiredVariantError: A variant in ``export.required`` is FAILED or SKIPPED.
        ExportError: The preprocess step failed, or an option names an unknown tier or variant
            (``option`` is ``tiers`` or ``precisions``).
    """
    options = options or ExportOptions()
    force = options.force
    step = step or (lambda _msg: None)
    names = options.tiers or spec.tier_names
    unknown = [t for t in names if t not in spec.tier_names]
    if unknown:
        raise ExportError(
            f"{unknown[0]!r} is not a tier of the spec ({', '.join(spec.tier_names)})", option="tiers"
        )
    variants = _selected_variants(spec, options.precisions)
    artifacts.mkdir(parents=True, exist_ok=True)
    previous = _previous(artifacts, spec)
    staging = artifacts / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    promote: list[tuple[str, str]] = []
    remove: list[tuple[str, str]] = []
    try:
        exporter = Exporter(spec, checkpoints, staging, step)
        user_models = check_user_tiers(exporter, names)
        pre_sha = sha256_file(checkpoints / PREPROCESS_FILE)
        pre_fp = fingerprint(spec, None, FP32, {"preprocess": pre_sha})
        pre_prev = previous.get("preprocess", {}).get("variants", {}).get(FP32, {})
        if not force and pre_prev.get("fingerprint") == pre_fp and _files_intact(artifacts, pre_prev):
            pre_entry = {**pre_prev, "reused": True}
        else:
            pre_entry = {**exporter.export_preprocess(), "fingerprint": pre_fp, "reused": False}
            promote.append((spec.preprocess_model, FP32))
        tier_entries = dict(previous.get("tiers", {}))
        for name in names:
            source = tier_source(spec, checkpoints, name)
            hashes = {"tier": source["sha256"], "preprocess": pre_sha}
            hashes.update({k: v for k, v in source.items() if k.startswith("factory")})
            old = tier_entries.get(name, {})
            entries, moves, drops = _export_tier(
                exporter,
                artifacts,
                name,
                variants,
                old.get("variants", {}),
                hashes,
                force,
                step,
                user_models.get(name),
            )
            promote += moves
            remove += drops
            reference = exporter.known_reference(name)
            tier = spec.tier(name)
            tier_entries[name] = {
                "architecture": tier.architecture or tier.kind,
                "layout": tier.model.layout if tier.model else "request",
                "checkpoint": source,
                "reference": (
                    {"ne": reference.ne, "auc": reference.auc} if reference else old.get("reference", {})
                ),
                "variants": entries,
            }
            cost = exporter.known_per_pair_cost(name) or old.get("per_pair")
            if tier.model is not None and tier.model.layout == "pair" and cost:
                tier_entries[name]["per_pair"] = cost
        manifest = {
            "format": FORMAT,
            "toolkit_version": __version__,
            "ensemble": spec.name,
            "spec": spec.source,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "machine": machine_facts(),
            "acceptance": acceptance_dict(spec.export.acceptance),
            "preprocess": {"model": spec.preprocess_model, "variants": {FP32: pre_entry}},
            "tiers": {t: tier_entries[t] for t in spec.tier_names if t in tier_entries},
        }
        missing = [
            f"{name} {v} is {manifest['tiers'][name]['variants'].get(v, {}).get('status', 'missing')}"
            f" ({manifest['tiers'][name]['variants'].get(v, {}).get('reason', '')})"
            for name in names
            for v in spec.export.required
            if manifest["tiers"][name]["variants"].get(v, {}).get("status") != OK
        ]
        if missing:
            raise RequiredVariantError(
                f"required variants did not pass: {'; '.join(missing)}. Nothing in {artifacts} was changed.",
                Manifest.from_dict(manifest),
            )
        for model, variant in promote:
            _promote(staging, artifacts, model, variant)
        for model, variant in remove:
            shutil.rmtree(artifacts / model / variant, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    for model, variant in promote:
        entry = (
            manifest["preprocess"]["variants"][FP32]
            if model == spec.preprocess_model
            else manifest["tiers"][model]["variants"][variant]
        )
        entry["files"] = [dataclasses.asdict(f) for f in file_entries(artifacts, artifacts / model / variant)]
    written = Manifest.from_dict(manifest)
    write_manifest(artifacts, written)
    return written


def _export_tier(
    exporter: Exporter,
    artifacts: Path,
    name: str,
    variants: list[str],
    old: dict[str, dict[str, Any]],
    hashes: dict[str, str],
    force: bool,
    step: StepFn,
    model: Any = None,
) -> tuple[dict[str, dict[str, Any]], list[tuple[str, str]], list[tuple[str, str]]]:
    """Process one tier's variants; returns the entries, folders to promote and folders to remove.

    ``model`` is a user tier's checked reference model (None: load the demo tier's checkpoint).
    """
    from toolkit.train.checkpoints import load_any_tier

    spec = exporter.spec
    entries: dict[str, dict[str, Any]] = {}
    promote: list[tuple[str, str]] = []
    remove: list[tuple[str, str]] = []
    fp32_folder: Path | None = None
    ctx: BuildContext | None = None
    for variant in variants:
        fp = fingerprint(spec, name, variant, hashes)
        prev = old.get(variant, {})
        reusable = prev.get("status") in (OK, FAILED) and prev.get("fingerprint") == fp
        if not force and reusable and _files_intact(artifacts, prev):
            step(f"{name} {variant}: unchanged, reused")
            entries[variant] = {**prev, "reused": True}
            if variant == FP32 and prev["status"] == OK:
                fp32_folder = artifacts / name / FP32
            continue
        if model is None:
            model = load_any_tier(spec, exporter.checkpoints, name)
        started = time.perf_counter()
        folder = exporter.staging / name / variant
        if variant == FP32:
            try:
                entry = exporter.export_fp32(name, model)
                entry |= exporter.evaluate(name, variant, folder, model)
                fp32_folder = folder if entry["status"] == OK else None
            except ParityError as exc:
                entry = _entry_failed(FAILED, str(exc))
                entry["max_abs_error"] = exc.max_abs_error
        elif fp32_folder is None:
            entry = _entry_failed(SKIPPED, "onnx-fp32 did not pass, and every other variant is made from it")
        else:
            if ctx is None:
                ctx = BuildContext(
                    spec, name, fp32_folder / ONNX_FILE, exporter.staging / ".scratch", exporter.calibration
                )
                ctx.scratch.mkdir(parents=True, exist_ok=True)
            step(f"{name} {variant}: build")
            try:
                info = build_variant(ctx, variant, folder)
                entry = exporter.evaluate(name, variant, folder, model) | info
            except VariantUnavailableError as exc:
                entry = _entry_failed(SKIPPED, str(exc))
            except ExportError as exc:
                entry = _entry_failed(FAILED, str(exc))
            except Exception as exc:  # noqa: BLE001 - one variant's crash must not end the run
                log.debug("%s %s failed", name, variant, exc_info=True)
                detail = str(exc).strip().splitlines()
                entry = _entry_failed(FAILED, f"{type(exc).__name__}: {detail[0] if detail else ''}")
        entry["fingerprint"] = fp
        entry["reused"] = False
        entry["targets"] = list(VARIANTS[variant].targets)
        entry["export_seconds"] = round(time.perf_counter() - started, 3)
        entries[variant] = entry
        if entry["status"] == OK:
            promote.append((name, variant))
        else:
            shutil.rmtree(folder, ignore_errors=True)
            remove.append((name, variant))
        log.info("%s %s: %s %s", name, variant, entry["status"], entry.get("reason", ""))
    rebuilt = [v for v, e in entries.items() if not e["reused"] and e["status"] == OK]
    if rebuilt:
        passing = {
            v: (exporter.staging if not e["reused"] else artifacts) / name / v
            for v, e in entries.items()
            if e["status"] == OK
        }
        for variant, timing in exporter.time_variants(name, passing).items():
            entries[variant] = {**entries[variant], **timing}
    for variant, prev in old.items():
        if variant in entries:
            continue
        if variant in VARIANTS and prev.get("fingerprint") == fingerprint(spec, name, variant, hashes):
            entries[variant] = {**prev, "reused": True}
        else:
            remove.append((name, variant))
    ordered = {v: entries[v] for v in VARIANTS if v in entries}
    return ordered, promote, remove
