"""How each variant is made from a tier's fp32 ONNX model, and how it is run for checks and timing.

Builders write one variant folder (``model.onnx`` or ``model.plan``) and return facts for the
manifest. A variant that cannot be built on this machine raises :class:`VariantUnavailableError` with the
reason; any other failure raises :class:`~toolkit.errors.ExportError`.
"""

from __future__ import annotations

import multiprocessing
import shutil
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import ExportError
from toolkit.export.onnx_export import SCORE
from toolkit.spec.schema import Spec
from toolkit.spec.variants import GPU, VARIANTS

ONNX_FILE = "model.onnx"
PLAN_FILE = "model.plan"
CANDIDATE_INPUTS = ("ad_dense", "ad_sparse")
"""Inputs whose first dimension is the candidate count N."""

Inputs = dict[str, np.ndarray]


class VariantUnavailableError(Exception):
    """The variant cannot be built on this machine; the message says why."""


@dataclass
class BuildContext:
    """What a builder may use.

    Attributes:
        spec: The ensemble spec.
        tier: Tier name.
        fp32: The tier's fp32 ``model.onnx``.
        scratch: Folder for intermediate files (removed after the run).
        calibration: Returns the preprocessed calibration requests (computed on first use).
        built: Variant folders built so far in this run, by variant name.
    """

    spec: Spec
    tier: str
    fp32: Path
    scratch: Path
    calibration: Callable[[], Sequence[Inputs]]
    built: dict[str, Path] = field(default_factory=dict)


Builder = Callable[[BuildContext, Path], dict[str, Any]]


def _fp32(ctx: BuildContext, folder: Path) -> dict[str, Any]:
    raise ExportError(f"{ctx.tier}: onnx-fp32 is exported from PyTorch, not built from itself")


def _fp16(ctx: BuildContext, folder: Path) -> dict[str, Any]:
    from toolkit.export.quantize import to_fp16

    to_fp16(ctx.fp32, folder / ONNX_FILE)
    return {}


def _int8_dynamic(ctx: BuildContext, folder: Path) -> dict[str, Any]:
    from toolkit.export.quantize import int8_dynamic

    int8_dynamic(ctx.fp32, folder / ONNX_FILE)
    return {}


def _int8_static(ctx: BuildContext, folder: Path) -> dict[str, Any]:
    from toolkit.export.quantize import int8_static

    calibration = ctx.calibration()
    int8_static(ctx.fp32, folder / ONNX_FILE, calibration)
    return {"calibration_requests": len(calibration)}


def _embeddings(bits: int, dense_int8: bool = False) -> Builder:
    def build(ctx: BuildContext, folder: Path) -> dict[str, Any]:
        from toolkit.export.quantize import embeddings_rowwise, int8_dynamic

        target = folder / ONNX_FILE
        first = ctx.scratch / f"{ctx.tier}-emb{bits}.onnx" if dense_int8 else target
        report = embeddings_rowwise(ctx.fp32, first, bits)
        if dense_int8:
            int8_dynamic(first, target)
        return {"embeddings": {**asdict(report), "ratio": report.quantized_bytes / max(report.fp32_bytes, 1)}}

    return build


def _tensorrt(precision: str) -> Builder:
    def build(ctx: BuildContext, folder: Path) -> dict[str, Any]:
        from toolkit.export import tensorrt
        from toolkit.export.quantize import int8_static, qdq_fp8

        reason = tensorrt.unavailable_reason()
        if reason:
            raise VariantUnavailableError(reason)
        if precision == "fp16":
            source = ctx.fp32
        elif precision == "int8" and "onnx-int8-static" in ctx.built:
            source = ctx.built["onnx-int8-static"] / ONNX_FILE
        else:
            source = ctx.scratch / f"{ctx.tier}-qdq-{precision}.onnx"
            make = int8_static if precision == "int8" else qdq_fp8
            make(ctx.fp32, source, ctx.calibration())
        info = run_isolated(
            tensorrt.build_engine,
            source,
            folder / PLAN_FILE,
            precision,
            tensorrt.Profile.from_spec(ctx.spec),
            CANDIDATE_INPUTS,
            ctx.spec.export.tensorrt.workspace_mb,
        )
        return {"engine": asdict(info)}

    return build


BUILDERS: dict[str, Builder] = {
    "onnx-fp32": _fp32,
    "onnx-fp16": _fp16,
    "onnx-int8-dynamic": _int8_dynamic,
    "onnx-int8-static": _int8_static,
    "onnx-emb-int8": _embeddings(8),
    "onnx-emb-int4": _embeddings(4),
    "onnx-int8-emb-int4": _embeddings(4, dense_int8=True),
    "trt-fp16": _tensorrt("fp16"),
    "trt-int8": _tensorrt("int8"),
    "trt-fp8": _tensorrt("fp8"),
}
"""Builder per variant name; every name in :data:`toolkit.spec.variants.VARIANTS` has one."""


def run_isolated(fn: Callable[..., Any], *args: Any) -> Any:
    """Run ``fn(*args)`` in a fresh child process, so a crash in native code fails one variant only.

    Raises:
        ExportError: The child died (for example a segmentation fault in the TensorRT builder).
    """
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=1, mp_context=context) as pool:
        try:
            return pool.submit(fn, *args).result()
        except BrokenProcessPool:
            raise ExportError(f"{getattr(fn, '__name__', fn)} crashed its process") from None


def build_variant(ctx: BuildContext, variant: str, folder: Path) -> dict[str, Any]:
    """Build ``variant`` of ``ctx.tier`` into ``folder`` (created; removed again on failure)."""
    folder.mkdir(parents=True, exist_ok=True)
    try:
        info = BUILDERS[variant](ctx, folder)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    ctx.built[variant] = folder
    return info


@dataclass
class Runner:
    """Runs one variant on one request, on one kind of hardware.

    Attributes:
        target: ``cpu`` or ``gpu``.
        run: Inputs of one request -> scores [N].
    """

    target: str
    run: Callable[[Inputs], np.ndarray]


def runners(variant: str, folder: Path) -> list[Runner]:
    """Runners for the checks and the timing of a built variant: CPU first, then GPU where present.

    ONNX variants always run on ONNX Runtime's CPU provider (one thread) and also on its CUDA
    provider when this ONNX Runtime has it and the variant can be deployed on GPU; TensorRT
    variants run on the GPU through the TensorRT runtime.

    Raises:
        ExportError: The model cannot be loaded (for example an operator without a kernel).
    """
    info = VARIANTS[variant]
    if info.engine == "tensorrt":
        from toolkit.export import tensorrt

        plan = folder / PLAN_FILE
        return [Runner(GPU, lambda inputs: tensorrt.run_engine(plan, inputs)[SCORE])]
    from toolkit.export.parity import cpu_session

    path = str(folder / ONNX_FILE)
    try:
        cpu = cpu_session(path)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several native exception types
        raise ExportError(f"ONNX Runtime cannot load {path}: {_first_line(exc)}") from None
    out = [Runner("cpu", lambda inputs: cpu.run([SCORE], inputs)[0])]
    gpu = _cuda_session(path) if GPU in info.targets else None
    if gpu is not None:
        out.append(Runner(GPU, lambda inputs: gpu.run([SCORE], inputs)[0]))
    return out


def _cuda_session(path: str) -> Any:
    import onnxruntime as ort

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        return None
    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(path, sess_options=options, providers=["CUDAExecutionProvider"])


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
