"""Check an exported ONNX model against PyTorch: output names, then shapes, then values."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort

from toolkit.errors import ParityError
from toolkit.spec.schema import Tolerance


def cpu_session(path: str, threads: int = 1) -> ort.InferenceSession:
    """An ONNX Runtime CPU session with a fixed thread count (stable timings, no oversubscription)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])


@dataclass
class ParityReport:
    """Largest differences seen per output over all checked requests."""

    requests: int = 0
    max_abs_error: dict[str, float] = field(default_factory=dict)
    max_rel_error: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """No request failed."""
        return not self.failures

    def record(self, name: str, abs_err: float, rel_err: float) -> None:
        """Keep the worst errors of output ``name``; NaN (a non-finite output) is the worst."""
        for store, value in ((self.max_abs_error, abs_err), (self.max_rel_error, rel_err)):
            old = store.get(name, 0.0)
            store[name] = value if np.isnan(value) or np.isnan(old) else max(old, value)


def compare_outputs(
    expected: dict[str, np.ndarray],
    actual: dict[str, np.ndarray],
    tolerance: Tolerance,
    report: ParityReport,
    label: str,
) -> None:
    """Compare one request's outputs by name, then shape, then value; add failures to ``report``.

    Values fail where ``|actual - expected| > atol + rtol * |expected|``; integer outputs must match
    exactly.
    """
    report.requests += 1
    missing = sorted(set(expected) - set(actual))
    extra = sorted(set(actual) - set(expected))
    if missing or extra:
        report.failures.append(f"{label}: output names differ (missing {missing}, unexpected {extra})")
        return
    for name, want in expected.items():
        got = actual[name]
        if got.shape != want.shape:
            report.failures.append(
                f"{label}: output {name!r} has shape {got.shape}, PyTorch gives {want.shape}"
            )
            continue
        if want.size == 0:
            report.record(name, 0.0, 0.0)
            continue
        diff = np.abs(got.astype(np.float64) - want.astype(np.float64))
        rel = diff / np.maximum(np.abs(want.astype(np.float64)), 1e-12)
        finite = bool(np.all(np.isfinite(got)) and np.all(np.isfinite(want)))
        report.record(
            name, float(diff.max()) if finite else float("nan"), float(rel.max()) if finite else float("nan")
        )
        exact = np.issubdtype(want.dtype, np.integer)
        bound = 0.0 if exact else tolerance.atol + tolerance.rtol * np.abs(want.astype(np.float64))
        if not finite:
            report.failures.append(f"{label}: output {name!r} holds NaN or Inf (ONNX Runtime or PyTorch)")
        elif np.any(diff > bound):
            report.failures.append(
                f"{label}: output {name!r} differs from PyTorch by up to {float(diff.max()):.3g} "
                f"(allowed {'0' if exact else f'{tolerance.atol:g} + {tolerance.rtol:g}*|x|'})"
            )


def check_parity(
    session: ort.InferenceSession,
    reference: Callable[[dict[str, np.ndarray]], dict[str, np.ndarray]],
    requests: Iterable[dict[str, np.ndarray]],
    tolerance: Tolerance,
    what: str,
) -> ParityReport:
    """Run ``session`` and ``reference`` on every request and compare.

    Args:
        session: ONNX Runtime session of the exported model.
        reference: The PyTorch computation, numpy in and out, outputs by name.
        requests: Input tensors by name, one dict per request.
        tolerance: Allowed difference.
        what: Model name for messages.

    Raises:
        ParityError: Any request failed; the message lists the max difference per output.
    """
    report = ParityReport()
    names = [o.name for o in session.get_outputs()]
    for i, inputs in enumerate(requests):
        expected = reference(inputs)
        actual = dict(zip(names, session.run(names, inputs), strict=True))
        compare_outputs(expected, actual, tolerance, report, f"request {i} (N={_candidates(inputs)})")
    if not report.ok:
        worst = ", ".join(f"{k}: {v:.3g}" for k, v in report.max_abs_error.items())
        raise ParityError(
            f"{what}: ONNX Runtime disagrees with PyTorch on {len(report.failures)} of {report.requests} "
            f"requests (max abs error per output: {worst}); first: {report.failures[0]}",
            report.max_abs_error,
        )
    return report


def _candidates(inputs: dict[str, np.ndarray]) -> int:
    return int(inputs["ad_dense"].shape[0]) if "ad_dense" in inputs else -1


def time_session(
    session: ort.InferenceSession,
    make_inputs: Callable[[int], dict[str, np.ndarray]],
    candidate_counts: Sequence[int],
    warmup: int = 5,
    windows: int = 3,
    runs_per_window: int = 20,
) -> dict[int, float]:
    """Median latency (ms) of one request per candidate count, over ``windows`` timed windows."""
    import time

    out = {}
    for n in candidate_counts:
        inputs = make_inputs(n)
        for _ in range(warmup):
            session.run(None, inputs)
        samples = []
        for _ in range(windows * runs_per_window):
            started = time.perf_counter()
            session.run(None, inputs)
            samples.append((time.perf_counter() - started) * 1000.0)
        out[int(n)] = float(np.median(samples))
    return out
