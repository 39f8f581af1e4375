"""``toolkit export``: every tier and the preprocess step to ONNX, checked against PyTorch and timed."""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolkit import __version__
from toolkit.data.demo import demo_holdout_set
from toolkit.data.requests import REQUEST_TENSORS, RequestSet
from toolkit.errors import ExportError, ParityError
from toolkit.evaluate.metrics import normalized_entropy, roc_auc
from toolkit.export.manifest import FORMAT, FP32, file_entries, read_manifest, sha256_file, write_manifest
from toolkit.export.onnx_export import PREPROCESSED, SCORE, export_preprocess, export_tier
from toolkit.export.parity import ParityReport, check_parity, cpu_session, time_session
from toolkit.models.base import RankingModel
from toolkit.models.preprocess import Preprocess
from toolkit.spec.schema import Spec
from toolkit.train.checkpoints import load_preprocess, load_tier, tier_path

log = logging.getLogger(__name__)

StepFn = Callable[[str], None]
"""Called with a short description as each export step starts."""


def _torch_inputs(inputs: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in REQUEST_TENSORS)


def _parity_requests(holdout: RequestSet, count: int) -> list[dict[str, np.ndarray]]:
    """Held-out requests to check on, plus edge cases: one candidate, and a truncated history."""
    requests = [holdout.request(r) for r in range(min(count, holdout.num_requests))]
    single = dict(requests[0])
    single["ad_dense"] = single["ad_dense"][:1]
    single["ad_sparse"] = single["ad_sparse"][:1]
    short = dict(requests[-1])
    short["user_history"] = short["user_history"][:, -3:]
    return [*requests, single, short]


class _Exporter:
    def __init__(self, spec: Spec, checkpoints: Path, staging: Path, step: StepFn) -> None:
        self.spec = spec
        self.checkpoints = checkpoints
        self.staging = staging
        self.step = step
        self.preprocess: Preprocess = load_preprocess(checkpoints, spec)
        self.holdout = demo_holdout_set(spec)
        self.parity = _parity_requests(self.holdout, spec.export.parity_requests)
        self._parity_pre: list[dict[str, np.ndarray]] | None = None
        self._holdout_pre: list[dict[str, np.ndarray]] | None = None

    def parity_preprocessed(self) -> list[dict[str, np.ndarray]]:
        """The parity requests after the preprocess step, computed once for all tiers."""
        if self._parity_pre is None:
            self._parity_pre = [self.preprocessed(raw) for raw in self.parity]
        return self._parity_pre

    def holdout_preprocessed(self) -> list[dict[str, np.ndarray]]:
        """Every held-out request after the preprocess step, computed once for all tiers."""
        if self._holdout_pre is None:
            self._holdout_pre = [
                self.preprocessed(self.holdout.request(r)) for r in range(self.holdout.num_requests)
            ]
        return self._holdout_pre

    def preprocessed(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        with torch.no_grad():
            out = self.preprocess(*_torch_inputs(raw))
        return {name: t.numpy() for name, t in zip(REQUEST_TENSORS, out, strict=True)}

    def timing_inputs(self, n: int) -> dict[str, np.ndarray]:
        base = self.holdout.request(0)
        rows = np.arange(n) % base["ad_dense"].shape[0]
        return {**base, "ad_dense": base["ad_dense"][rows], "ad_sparse": base["ad_sparse"][rows]}

    def export_preprocess(self) -> dict[str, Any]:
        name = self.spec.preprocess_model
        folder = self.staging / name / FP32
        self.step(f"{name}: export to ONNX")
        started = time.perf_counter()
        export_preprocess(
            self.preprocess, _as_torch(self.parity[0]), folder / "model.onnx", self.spec.export.opset
        )
        session = cpu_session(str(folder / "model.onnx"))

        def reference(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {PREPROCESSED[k]: v for k, v in self.preprocessed(raw).items()}

        self.step(f"{name}: check against PyTorch")
        report = check_parity(session, reference, self.parity, self.spec.export.tolerance, name)
        latency = time_session(session, self.timing_inputs, self.spec.export.timing_candidates)
        return _entry(started, report, latency)

    def export_tier(self, name: str) -> dict[str, Any]:
        model: RankingModel = load_tier(self.checkpoints, self.spec, name)
        folder = self.staging / name / FP32
        self.step(f"{name}: export to ONNX")
        started = time.perf_counter()
        export_tier(
            model, _as_torch(self.parity_preprocessed()[0]), folder / "model.onnx", self.spec.export.opset
        )
        session = cpu_session(str(folder / "model.onnx"))

        def reference(pre: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            with torch.no_grad():
                return {SCORE: model(*_torch_inputs(pre)).numpy()}

        self.step(f"{name}: check against PyTorch")
        report = check_parity(
            session, reference, self.parity_preprocessed(), self.spec.export.tolerance, name
        )
        self.step(f"{name}: held-out quality")
        quality = self.quality(model, session)
        self.step(f"{name}: timing")
        latency = time_session(
            session, lambda n: self.preprocessed(self.timing_inputs(n)), self.spec.export.timing_candidates
        )
        return _entry(started, report, latency, quality)

    def quality(self, model: RankingModel, session: Any) -> dict[str, float]:
        """NE and AUC of the ONNX model and of PyTorch on every held-out request."""
        onnx_scores, torch_scores = [], []
        for pre in self.holdout_preprocessed():
            onnx_scores.append(session.run([SCORE], pre)[0])
            with torch.no_grad():
                torch_scores.append(model(*_torch_inputs(pre)).numpy())
        labels = self.holdout.labels
        ctr = float(labels.mean())
        ox, tx = np.concatenate(onnx_scores), np.concatenate(torch_scores)
        ne, auc = normalized_entropy(labels, ox, ctr), roc_auc(labels, ox)
        tne, tauc = normalized_entropy(labels, tx, ctr), roc_auc(labels, tx)
        return {
            "requests": self.holdout.num_requests,
            "ne": ne,
            "auc": auc,
            "torch_ne": tne,
            "torch_auc": tauc,
            "ne_delta_rel": (ne - tne) / tne,
            "auc_ratio": auc / tauc,
        }


def _entry(
    started: float, report: ParityReport, latency: dict[int, float], quality: dict[str, float] | None = None
) -> dict[str, Any]:
    """A passed variant's manifest entry (files are added once the folder is in place)."""
    entry: dict[str, Any] = {
        "status": "OK",
        "reason": "",
        "export_seconds": round(time.perf_counter() - started, 3),
        "parity_requests": report.requests,
        "max_abs_error": report.max_abs_error,
        "max_rel_error": report.max_rel_error,
    }
    if quality is not None:
        entry["quality"] = quality
    entry["latency_ms"] = {str(k): round(v, 4) for k, v in latency.items()}
    return entry


def _as_torch(inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}


def _promote(staging: Path, artifacts: Path, model: str) -> None:
    """Move ``staging/<model>/<variant>`` folders over the live ones, one rename each."""
    for variant in sorted((staging / model).iterdir()):
        live = artifacts / model / variant.name
        live.parent.mkdir(parents=True, exist_ok=True)
        old = live.with_name(f".{variant.name}.old-{os.getpid()}")
        if live.exists():
            os.replace(live, old)
        os.replace(variant, live)
        shutil.rmtree(old, ignore_errors=True)


def run_export(
    spec: Spec,
    checkpoints: Path,
    artifacts: Path,
    tiers: tuple[str, ...] | None = None,
    step: StepFn | None = None,
) -> dict[str, Any]:
    """Export the preprocess step and the tiers, verify and time each, write the manifest.

    Everything is written to a staging folder first; only when every model passed its checks are the
    new variant folders moved into ``artifacts`` and the manifest replaced. A failed export leaves
    the previous artifacts as they were.

    Args:
        spec: The ensemble spec.
        checkpoints: Folder with the trained checkpoints.
        artifacts: Output folder (``<model>/<variant>/`` and ``manifest.json``).
        tiers: Tiers to export (default: all); the manifest keeps earlier entries of the others.
        step: Optional callback told about each step.

    Returns:
        The manifest written.

    Raises:
        CheckpointError: A checkpoint is missing or does not match the spec.
        ExportError: Export failed; a :class:`ParityError` when a model disagrees with PyTorch.
    """
    step = step or (lambda _msg: None)
    names = tiers or spec.tier_names
    unknown = [t for t in names if t not in spec.tier_names]
    if unknown:
        raise ExportError(f"unknown tier {unknown[0]!r}; the spec's tiers are {', '.join(spec.tier_names)}")
    artifacts.mkdir(parents=True, exist_ok=True)
    try:
        previous = read_manifest(artifacts)
        if previous.get("ensemble") != spec.name:
            previous = {}
    except ExportError:
        previous = {}
    staging = artifacts / f".staging-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        exporter = _Exporter(spec, checkpoints, staging, step)
        pre_entry = exporter.export_preprocess()
        entries: dict[str, dict[str, Any]] = {}
        failures: list[str] = []
        for name in names:
            try:
                entries[name] = exporter.export_tier(name)
            except ParityError as exc:
                failures.append(str(exc))
        if failures:
            raise ExportError("; ".join(failures) + f". Nothing in {artifacts} was changed.")
        for model in [spec.preprocess_model, *names]:
            _promote(staging, artifacts, model)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    pre_entry["files"] = file_entries(artifacts, artifacts / spec.preprocess_model / FP32)
    manifest = {
        "format": FORMAT,
        "toolkit_version": __version__,
        "ensemble": spec.name,
        "spec": spec.source,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "preprocess": {"model": spec.preprocess_model, "variants": {FP32: pre_entry}},
        "tiers": dict(previous.get("tiers", {})),
    }
    for name in names:
        ckpt = tier_path(checkpoints, name)
        entries[name]["files"] = file_entries(artifacts, artifacts / name / FP32)
        manifest["tiers"][name] = {
            "architecture": spec.tier(name).architecture,
            "checkpoint": {"path": str(ckpt), "sha256": sha256_file(ckpt)},
            "variants": {FP32: entries[name]},
        }
    manifest["tiers"] = {t: manifest["tiers"][t] for t in spec.tier_names if t in manifest["tiers"]}
    write_manifest(artifacts, manifest)
    return manifest
