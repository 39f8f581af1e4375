"""The steps of one export run: shared request sets, fp32 export with parity, acceptance, timing."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from toolkit.data.demo import demo_holdout_set, demo_quantization_set
from toolkit.data.requests import REQUEST_TENSORS, RequestSet
from toolkit.export.acceptance import AcceptanceResult, Reference, judge
from toolkit.export.build import ONNX_FILE, Runner, runners
from toolkit.export.manifest import FP32
from toolkit.export.onnx_export import PREPROCESSED, SCORE, export_preprocess, export_tier
from toolkit.export.parity import check_parity, cpu_session
from toolkit.export.timing import Timing, measure_counts, measure_interleaved
from toolkit.models.preprocess import Preprocess
from toolkit.spec.schema import Spec
from toolkit.train.checkpoints import load_preprocess

OK, FAILED, SKIPPED = "OK", "FAILED", "SKIPPED"

StepFn = Callable[[str], None]
"""Called with a short description as each export step starts."""


def _torch_inputs(inputs: dict[str, np.ndarray]) -> tuple[torch.Tensor, ...]:
    return tuple(torch.from_numpy(np.ascontiguousarray(inputs[name])) for name in REQUEST_TENSORS)


def _as_torch(inputs: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in inputs.items()}


def _parity_requests(holdout: RequestSet, count: int) -> list[dict[str, np.ndarray]]:
    """Held-out requests to check on, plus edge cases: one candidate, and a truncated history."""
    requests = [holdout.request(r) for r in range(min(count, holdout.num_requests))]
    single = dict(requests[0])
    single["ad_dense"] = single["ad_dense"][:1]
    single["ad_sparse"] = single["ad_sparse"][:1]
    short = dict(requests[-1])
    short["user_history"] = short["user_history"][:, -3:]
    return [*requests, single, short]


def _latency(timings: dict[int, Timing]) -> tuple[dict[str, float], dict[str, Any]]:
    latency = {str(n): round(t.median_ms, 4) for n, t in timings.items()}
    detail = {
        "stable": all(t.stable for t in timings.values()),
        "windows": {str(n): t.windows for n, t in timings.items()},
        "spread": {str(n): t.spread for n, t in timings.items()},
    }
    return latency, detail


class Exporter:
    """One export run: the shared inputs (held-out, parity, calibration requests) and the steps."""

    def __init__(self, spec: Spec, checkpoints: Path, staging: Path, step: StepFn) -> None:
        self.spec = spec
        self.checkpoints = checkpoints
        self.staging = staging
        self.step = step
        self.preprocess: Preprocess = load_preprocess(checkpoints, spec)
        self.holdout = demo_holdout_set(spec)
        self.parity = _parity_requests(self.holdout, spec.export.parity_requests)
        self._cache: dict[str, Any] = {}

    def _cached(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def preprocessed(self, raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """One raw request through the fitted PyTorch preprocess step."""
        with torch.no_grad():
            out = self.preprocess(*_torch_inputs(raw))
        return {name: t.numpy() for name, t in zip(REQUEST_TENSORS, out, strict=True)}

    def parity_preprocessed(self) -> list[dict[str, np.ndarray]]:
        """The parity requests after the preprocess step, computed once for all tiers."""
        return self._cached("parity", lambda: [self.preprocessed(raw) for raw in self.parity])

    def holdout_preprocessed(self) -> list[dict[str, np.ndarray]]:
        """Every held-out request after the preprocess step, computed once for all tiers."""
        return self._cached(
            "holdout",
            lambda: [self.preprocessed(self.holdout.request(r)) for r in range(self.holdout.num_requests)],
        )

    def calibration(self) -> list[dict[str, np.ndarray]]:
        """Calibration requests: fresh traffic from the training distribution, preprocessed."""

        def make() -> list[dict[str, np.ndarray]]:
            spec = self.spec
            requests = demo_quantization_set(spec)
            return [self.preprocessed(requests.request(r)) for r in range(requests.num_requests)]

        return self._cached("calibration", make)

    def timing_inputs(self, n: int, preprocessed: bool = True) -> dict[str, np.ndarray]:
        """The first held-out request widened (by repeating its candidates) to ``n`` candidates."""

        def make() -> dict[str, np.ndarray]:
            base = self.holdout.request(0)
            rows = np.arange(n) % base["ad_dense"].shape[0]
            raw = {**base, "ad_dense": base["ad_dense"][rows], "ad_sparse": base["ad_sparse"][rows]}
            return self.preprocessed(raw) if preprocessed else raw

        return self._cached(f"timing-{n}-{preprocessed}", make)

    def export_preprocess(self) -> dict[str, Any]:
        """Export the preprocess step, check it against PyTorch and time it; its manifest entry."""
        name = self.spec.preprocess_model
        folder = self.staging / name / FP32
        self.step(f"{name}: export to ONNX")
        started = time.perf_counter()
        export_preprocess(
            self.preprocess,
            _as_torch(self.timing_inputs(3, preprocessed=False)),
            folder / ONNX_FILE,
            self.spec.export.opset,
        )
        session = cpu_session(str(folder / ONNX_FILE))

        def reference(raw: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            return {PREPROCESSED[k]: v for k, v in self.preprocessed(raw).items()}

        self.step(f"{name}: check against PyTorch")
        report = check_parity(session, reference, self.parity, self.spec.export.tolerance, name)
        self.step(f"{name}: timing")
        timings = measure_counts(
            lambda inputs: session.run(None, inputs),
            lambda n: self.timing_inputs(n, preprocessed=False),
            self.spec.export.timing_candidates,
        )
        latency, detail = _latency(timings)
        return {
            "status": OK,
            "reason": "",
            "export_seconds": round(time.perf_counter() - started, 3),
            "parity_requests": report.requests,
            "max_abs_error": report.max_abs_error,
            "max_rel_error": report.max_rel_error,
            "latency_ms": {"cpu": latency},
            "timing": {"cpu": detail},
        }

    def reference(self, tier: str, model: nn.Module) -> Reference:
        """fp32 PyTorch scores of ``tier`` on every held-out request."""

        def make() -> Reference:
            self.step(f"{tier}: PyTorch fp32 reference on {self.holdout.num_requests} held-out requests")
            with torch.no_grad():
                scores = [model(*_torch_inputs(pre)).numpy() for pre in self.holdout_preprocessed()]
            return Reference.from_scores(self.holdout.labels, np.concatenate(scores))

        return self._cached(f"reference-{tier}", make)

    def known_per_pair_cost(self, tier: str) -> dict[str, Any] | None:
        """What being per-pair costs ``tier``, if this run exported it."""
        return self._cache.get(f"per-pair-{tier}")

    def known_reference(self, tier: str) -> Reference | None:
        """The reference of ``tier`` if this run computed it."""
        return self._cache.get(f"reference-{tier}")

    def export_fp32(self, tier: str, model: nn.Module) -> dict[str, Any]:
        """Export from PyTorch (or wrap a user's ONNX file) and check parity on the parity requests."""
        folder = self.staging / tier / FP32
        entry = self.spec.tier(tier)
        if entry.kind == "onnx":
            from toolkit.export.onnx_adapter import wrap_onnx_file

            self.step(f"{tier}: wrap {entry.model.onnx} to take the request tensors")
            wrap_onnx_file(
                entry, self.spec, folder / ONNX_FILE, self.spec.export.opset, self.preprocess.statistics()
            )
        else:
            self.step(f"{tier}: export to ONNX")
            export_tier(model, _as_torch(self.timing_inputs(3)), folder / ONNX_FILE, self.spec.export.opset)
        if entry.model is not None and entry.model.layout == "pair":
            from toolkit.export.per_pair import per_pair_cost

            self.step(f"{tier}: per-pair model, counting the user-side work it repeats per candidate")
            self._cache[f"per-pair-{tier}"] = per_pair_cost(
                folder / ONNX_FILE, self.spec, self.spec.export.timing_candidates
            )
        session = cpu_session(str(folder / ONNX_FILE))

        def reference(pre: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            with torch.no_grad():
                return {SCORE: model(*_torch_inputs(pre)).numpy()}

        self.step(f"{tier}: check against PyTorch")
        report = check_parity(
            session, reference, self.parity_preprocessed(), self.spec.export.tolerance, tier
        )
        return {"parity_requests": report.requests}

    def evaluate(self, tier: str, variant: str, folder: Path, model: nn.Module) -> dict[str, Any]:
        """Score the held-out requests with a built variant and apply the acceptance check (no timing)."""
        first: Runner = runners(variant, folder)[0]
        self.step(f"{tier} {variant}: held-out quality ({first.target})")
        scores = np.concatenate([first.run(pre) for pre in self.holdout_preprocessed()])
        result: AcceptanceResult = judge(
            self.reference(tier, model), scores, self.spec.export.acceptance, SCORE
        )
        return {
            "status": OK if result.passed else FAILED,
            "reason": "; ".join(result.failures),
            "max_abs_error": result.max_abs_error,
            "max_rel_error": result.max_rel_error,
            "quality": result.quality,
        }

    def time_variants(self, tier: str, folders: dict[str, Path]) -> dict[str, Any]:
        """Time a tier's variants side by side, so that drift of a shared machine hits all alike.

        At each candidate count, the variants' timing windows are interleaved (see
        :func:`~toolkit.export.timing.measure_interleaved`); this is repeated in
        ``export.timing_rounds`` rounds and a variant's figure is the median over the rounds.

        Returns:
            Per variant: ``latency_ms`` and ``timing`` entries for the manifest, by target.
        """
        rounds = self.spec.export.timing_rounds
        timed_runners = {
            (variant, runner.target): runner
            for variant, folder in folders.items()
            for runner in runners(variant, folder, self.spec)
        }
        calls: dict[tuple[str, str], Callable[[dict[str, np.ndarray]], Any]] = {
            key: runner.run for key, runner in timed_runners.items()
        }
        samples: dict[tuple[str, str, int], list[Timing]] = {}
        for r in range(rounds):
            self.step(f"{tier}: timing {len(folders)} variants side by side, round {r + 1} of {rounds}")
            for n in self.spec.export.timing_candidates:
                inputs = self.timing_inputs(n)
                timed = measure_interleaved(
                    {f"{v}|{t}": (lambda run=run, feed=inputs: run(feed)) for (v, t), run in calls.items()}
                )
                for (variant, target), _ in calls.items():
                    samples.setdefault((variant, target, n), []).append(timed[f"{variant}|{target}"])
        out: dict[str, Any] = {v: {"latency_ms": {}, "timing": {}} for v in folders}
        for (variant, target, n), timings in samples.items():
            entry = out[variant]
            entry["latency_ms"].setdefault(target, {})[str(n)] = round(
                float(np.median([t.median_ms for t in timings])), 4
            )
            detail = entry["timing"].setdefault(
                target,
                {
                    "stable": True,
                    "rounds": rounds,
                    "provider": timed_runners[(variant, target)].provider,
                    "windows": {},
                },
            )
            detail["stable"] = detail["stable"] and all(t.stable for t in timings)
            detail["windows"][str(n)] = [t.windows for t in timings]
        return out
