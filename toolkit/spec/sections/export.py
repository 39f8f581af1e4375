"""How tiers are exported and accepted (``export``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from toolkit.spec.sections.common import KeyedValueError
from toolkit.spec.variants import FP32, VARIANTS, check_variant


@dataclass(frozen=True)
class Tolerance:
    """Largest allowed difference between an exported model and PyTorch.

    Attributes:
        atol: Absolute part: ``|onnx - torch| <= atol + rtol * |torch|``.
        rtol: Relative part of the same bound.
    """

    atol: float = 1e-5
    rtol: float = 1e-4

    def __post_init__(self) -> None:
        for key in ("atol", "rtol"):
            value = getattr(self, key)
            if not math.isfinite(value) or value < 0:
                raise KeyedValueError(key, f"must be a number >= 0, got {value}")


@dataclass(frozen=True)
class AcceptanceSpec:
    """The acceptance check every exported variant must pass on the held-out requests to be deployable.

    Both bounds compare the variant under ONNX Runtime (or TensorRT) with the fp32 PyTorch model on
    the same requests. The NE bound is two-sided, because a variant is meant to be the same model:
    a large change either way means it computes something else (a lucky gain on one held-out set is
    not a reason to serve it). The AUC bound is one-sided, as in MLPerf.

    Attributes:
        max_ne_change: Largest relative change in normalized entropy, either way (0.001 = 0.1%).
        min_auc_ratio: Smallest AUC as a share of fp32's (0.999 = the MLPerf DLRM "99.9%" target).
    """

    max_ne_change: float = 0.001
    min_auc_ratio: float = 0.999

    def __post_init__(self) -> None:
        if not math.isfinite(self.max_ne_change) or self.max_ne_change < 0:
            raise KeyedValueError("max_ne_change", f"must be a number >= 0, got {self.max_ne_change}")
        if not math.isfinite(self.min_auc_ratio) or not 0 < self.min_auc_ratio <= 1:
            raise KeyedValueError("min_auc_ratio", f"must lie in (0, 1], got {self.min_auc_ratio}")


@dataclass(frozen=True)
class TensorRTSpec:
    """How TensorRT engines are built (on machines with a GPU and the ``tensorrt`` package).

    The optimization profile covers the candidate dimension N from 1 to ``max_candidates``, tuned
    for ``opt_candidates``.

    Attributes:
        opt_candidates: N the kernels are tuned for.
        max_candidates: Largest N the engine accepts; 0 means ``triton.max_candidates``.
        workspace_mb: Builder workspace limit in MiB.
    """

    opt_candidates: int = 64
    max_candidates: int = 0
    workspace_mb: int = 1024

    def __post_init__(self) -> None:
        if self.opt_candidates < 1:
            raise KeyedValueError("opt_candidates", f"must be positive, got {self.opt_candidates}")
        if self.max_candidates < 0:
            raise KeyedValueError("max_candidates", f"must be >= 0, got {self.max_candidates}")
        if self.max_candidates and self.max_candidates < self.opt_candidates:
            raise KeyedValueError(
                "max_candidates",
                f"must be at least opt_candidates ({self.opt_candidates}), got {self.max_candidates}",
            )
        if self.workspace_mb < 16:
            raise KeyedValueError("workspace_mb", f"must be at least 16, got {self.workspace_mb}")


@dataclass(frozen=True)
class ExportSpec:
    """Export settings.

    Attributes:
        opset: ONNX opset version.
        parity_requests: Held-out requests each exported model is checked on.
        tolerance: Allowed difference of the fp32 ONNX model against PyTorch
            (|onnx - torch| <= atol + rtol * |torch|).
        timing_candidates: Candidate counts at which each exported variant is timed.
        timing_rounds: Interleaved rounds in which a tier's variants are timed (the median counts),
            so that drift of a shared machine affects every variant alike.
        precisions: Variants to build per tier (``onnx-fp32`` is always built: the others are made
            from it).
        required: Variants that must pass for ``toolkit export`` to succeed; any other variant may
            be FAILED or SKIPPED and the run still exits 0.
        quantization_requests: Generated requests (from the training distribution) that calibrate
            ``onnx-int8-static`` and the TensorRT int8/fp8 engines (read from ``calibration_requests``
            too, the key's old name).
        acceptance: The acceptance check on the held-out requests (read from ``gate`` too, the
            key's old name).
        tensorrt: TensorRT engine settings.
    """

    opset: int = 18
    parity_requests: int = 32
    tolerance: Tolerance = field(default_factory=Tolerance)
    timing_candidates: tuple[int, ...] = (16, 64, 256)
    timing_rounds: int = 3
    precisions: tuple[str, ...] = tuple(VARIANTS)
    required: tuple[str, ...] = (FP32,)
    quantization_requests: int = 256
    acceptance: AcceptanceSpec = field(default_factory=AcceptanceSpec)
    tensorrt: TensorRTSpec = field(default_factory=TensorRTSpec)

    def __post_init__(self) -> None:
        if self.parity_requests < 1:
            raise KeyedValueError("parity_requests", "must be positive")
        if not self.timing_candidates or any(n < 1 for n in self.timing_candidates):
            raise KeyedValueError("timing_candidates", "must be a non-empty list of positive counts")
        if self.timing_rounds < 1:
            raise KeyedValueError("timing_rounds", f"must be positive, got {self.timing_rounds}")
        if self.quantization_requests < 1:
            raise KeyedValueError(
                "quantization_requests", f"must be positive, got {self.quantization_requests}"
            )
        for key in ("precisions", "required"):
            for i, name in enumerate(getattr(self, key)):
                try:
                    check_variant(name)
                except ValueError as exc:
                    raise KeyedValueError(f"{key}[{i}]", str(exc)) from None
        missing = [v for v in self.required if v not in self.built_variants]
        if missing:
            raise KeyedValueError("required", f"{missing[0]!r} is required but not listed in precisions")

    @property
    def built_variants(self) -> tuple[str, ...]:
        """Variants export builds, in catalogue order: ``precisions`` plus ``onnx-fp32``."""
        wanted = {FP32, *self.precisions}
        return tuple(v for v in VARIANTS if v in wanted)
