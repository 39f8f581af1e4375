"""How each variant is made from a tier's fp32 ONNX model, and how it is run for checks and timing.

Builders write one variant folder (``model.onnx`` or ``model.plan``) and return facts for the
manifest. A variant that cannot be built on this machine raises :class:`VariantUnavailableError` with the
reason; any other failure raises :class:`~toolkit.errors.ExportError`.
"""

from __future__ import annotations

import multiprocessing
import shutil
import tempfile
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.errors import ExportError, first_line
from toolkit.export.names import SCORE
from toolkit.spec.schema import Spec
from toolkit.spec.variants import GPU, ORT_TRT_PRECISION, VARIANTS

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
    return {"quantization_requests": len(calibration)}


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
        from toolkit.export.quantize import int8_static, qdq_fp8, to_fp16

        reason = tensorrt.unavailable_reason()
        if reason:
            raise VariantUnavailableError(reason)
        # Strongly typed networks: the source model is already in the engine's precision.
        variant = {"fp16": "onnx-fp16", "int8": "onnx-int8-static"}.get(precision)
        if variant in ctx.built:
            source, origin = ctx.built[variant] / ONNX_FILE, variant
        elif precision == "fp16":
            source, origin = ctx.scratch / f"{ctx.tier}-fp16.onnx", "onnx-fp32 converted to fp16"
            to_fp16(ctx.fp32, source)
        else:
            source, origin = ctx.scratch / f"{ctx.tier}-qdq-{precision}.onnx", f"onnx-fp32 {precision} QDQ"
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
        return {"engine": {**asdict(info), "source": origin, "strongly_typed": True}}

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
        provider: What runs it: an ONNX Runtime execution provider, or ``TensorRT`` for plans.
    """

    target: str
    run: Callable[[Inputs], np.ndarray]
    provider: str = "CPUExecutionProvider"


def runners(
    variant: str, folder: Path, spec: Spec | None = None, cache_dir: Path | None = None
) -> list[Runner]:
    """Runners for the checks and the timing of a built variant: CPU first, then GPU where present.

    ONNX variants always run on ONNX Runtime's CPU provider (one thread). On a GPU they run the way a
    GPU server serves them: the variants Triton serves through ONNX Runtime's TensorRT accelerator
    (:data:`~toolkit.spec.variants.ORT_TRT_PRECISION`) on ONNX Runtime's TensorRT execution
    provider, with the same precision and the spec's optimization profile over N, when this ONNX
    Runtime has it (``onnxruntime-gpu``) and ``spec`` is given; otherwise on its CUDA provider.
    TensorRT variants run on the GPU through the TensorRT runtime.

    Args:
        variant: The variant.
        folder: Where it was built.
        spec: The ensemble spec, for the TensorRT provider's profile and workspace.
        cache_dir: Where the TensorRT provider keeps its engines (default: a temporary folder).

    Raises:
        ExportError: The model cannot be loaded (for example an operator without a kernel).
    """
    info = VARIANTS[variant]
    if info.engine == "tensorrt":
        from toolkit.export import tensorrt

        plan = folder / PLAN_FILE
        return [Runner(GPU, lambda inputs: tensorrt.run_engine(plan, inputs)[SCORE], "TensorRT")]
    from toolkit.export.parity import cpu_session

    path = str(folder / ONNX_FILE)
    try:
        cpu = cpu_session(path)
    except Exception as exc:  # noqa: BLE001 - ONNX Runtime raises several native exception types
        raise ExportError(f"ONNX Runtime cannot load {path}: {first_line(exc)}") from None
    out = [Runner("cpu", lambda inputs: cpu.run([SCORE], inputs)[0])]
    if GPU in info.targets:
        gpu = _gpu_session(path, variant, spec, cache_dir)
        if gpu is not None:
            session, provider = gpu
            out.append(Runner(GPU, lambda inputs: session.run([SCORE], inputs)[0], provider))
    return out


def tensorrt_provider_options(spec: Spec, variant: str, cache_dir: Path) -> dict[str, Any]:
    """Options of ONNX Runtime's TensorRT execution provider that match what a GPU server deploys.

    The precision, workspace and optimization profile over N are those of the tier's Triton config
    (:func:`~toolkit.repository.configs.gpu_tier_config`), mapped the way Triton's onnxruntime backend
    maps them (``precision_mode`` FP16 sets ``trt_fp16_enable`` only, INT8 ``trt_int8_enable`` only);
    engines are cached in ``cache_dir``.
    """
    from toolkit.data.requests import candidate_inputs
    from toolkit.export.tensorrt import accelerator_profile_shapes, tensorrt_profile

    precision = ORT_TRT_PRECISION[variant]
    low, opt, high = tensorrt_profile(spec)
    names = candidate_inputs(spec.features)
    return {
        "trt_fp16_enable": precision == "FP16",
        "trt_int8_enable": precision == "INT8",
        "trt_max_workspace_size": spec.export.tensorrt.workspace_mb << 20,
        "trt_engine_cache_enable": True,
        "trt_engine_cache_path": str(cache_dir),
        "trt_profile_min_shapes": accelerator_profile_shapes(spec.features, names, low),
        "trt_profile_opt_shapes": accelerator_profile_shapes(spec.features, names, opt),
        "trt_profile_max_shapes": accelerator_profile_shapes(spec.features, names, high),
    }


def _gpu_session(
    path: str, variant: str, spec: Spec | None, cache_dir: Path | None
) -> tuple[Any, str] | None:
    import onnxruntime as ort

    available = ort.get_available_providers()
    options = ort.SessionOptions()
    options.log_severity_level = 3
    if "TensorrtExecutionProvider" in available and spec is not None and variant in ORT_TRT_PRECISION:
        cache = cache_dir or Path(tempfile.mkdtemp(prefix="ort-trt-cache-"))
        providers: list[Any] = [
            ("TensorrtExecutionProvider", tensorrt_provider_options(spec, variant, cache)),
            "CUDAExecutionProvider",
        ]
    elif "CUDAExecutionProvider" in available:
        providers = ["CUDAExecutionProvider"]
    else:
        return None
    session = ort.InferenceSession(path, sess_options=options, providers=providers)
    # ONNX Runtime falls back to the next provider when one cannot start (a TensorRT it cannot load).
    return session, session.get_providers()[0]
