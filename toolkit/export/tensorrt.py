"""TensorRT engines built from the exported ONNX models, run and timed one request at a time.

Engines are built with Polygraphy on strongly typed networks (:func:`engine_recipe`): the ONNX model's
own types choose each layer's precision, so the fp16 engine is built from the float16 model and the
int8 and fp8 engines from QDQ models. Building and running need the ``gpu`` extra (``tensorrt`` and
``polygraphy``) and a CUDA GPU visible to PyTorch (PyTorch allocates the device buffers and the
stream). Where one is missing, :func:`unavailable_reason` says why, and :func:`build_engine`,
:func:`run_engine` and :func:`time_engine` raise :class:`~toolkit.errors.ExportError` with that reason,
so export can record the TensorRT variants as skipped instead of failing. ``tensorrt``, ``polygraphy``
and ``torch`` are imported lazily.

A plan loads only in the TensorRT version that built it: the manifest records that version, the GPU
and its compute capability, and ``toolkit deploy`` refuses a plan the serving image cannot load
(:mod:`toolkit.ngc`).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from toolkit.errors import ExportError, first_line

if TYPE_CHECKING:
    from toolkit.spec.schema import Features, Spec

log = logging.getLogger(__name__)

PRECISIONS = ("fp16", "int8", "fp8")
"""Engine precisions: fp16 from the fp32 ONNX; int8 and fp8 from explicitly quantized (QDQ) ONNX."""

FP8_MIN_COMPUTE_CAPABILITY = (8, 9)
"""FP8 kernels need Ada (8.9) or Hopper (9.0) and later."""

_ENGINE_CACHE_SIZE = 4
"""Deserialized engines (runtime, engine, context, stream) kept per process, least recently used out."""


def tensorrt_profile(spec: Spec) -> tuple[int, int, int]:
    """(min, opt, max) of the candidate dimension N for engines and for Triton's TensorRT profiles.

    ``min`` is 1, ``max`` is ``export.tensorrt.max_candidates`` or, when that is 0,
    ``triton.max_candidates``, and ``opt`` is ``export.tensorrt.opt_candidates`` capped at ``max``
    (a profile needs ``min <= opt <= max``; the default ``opt_candidates`` of 64 would otherwise break
    every spec that serves fewer candidates).
    """
    trt_spec = spec.export.tensorrt
    largest = trt_spec.max_candidates or spec.triton.max_candidates
    return 1, min(trt_spec.opt_candidates, largest), largest


@dataclass(frozen=True)
class Profile:
    """Optimization profile over the candidate dimension N.

    Attributes:
        min: Smallest N the engine accepts.
        opt: N the kernels are tuned for.
        max: Largest N the engine accepts.
    """

    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 1 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"need 1 <= min <= opt <= max, got min={self.min}, opt={self.opt}, max={self.max}"
            )

    @classmethod
    def from_spec(cls, spec: Spec) -> Profile:
        """The profile :func:`tensorrt_profile` gives for ``spec``."""
        return cls(*tensorrt_profile(spec))


@dataclass(frozen=True)
class EngineInfo:
    """What an engine was built with and on, for the manifest.

    Attributes:
        precision: ``fp16``, ``int8`` or ``fp8``.
        tensorrt_version: ``tensorrt.__version__`` of the builder.
        device: Name of the GPU it was built on (engines only run on that GPU model).
        compute_capability: Compute capability of that GPU, for example ``9.0``.
        profile: The optimization profile over N.
        build_seconds: Wall time of the build (parse + build + write).
    """

    precision: str
    tensorrt_version: str
    device: str
    compute_capability: str
    profile: Profile
    build_seconds: float


def unavailable_reason() -> str | None:
    """None when engines can be built and run here; else one sentence saying why not."""
    if importlib.util.find_spec("tensorrt") is None:
        return "the `tensorrt` Python package is not installed"
    try:
        import tensorrt  # noqa: F401
    except (ImportError, OSError) as exc:
        return f"the `tensorrt` Python package is installed but cannot be imported ({exc})"
    if importlib.util.find_spec("polygraphy") is None:
        return "the `polygraphy` Python package, which builds the engines, is not installed"
    import torch

    if torch.version.cuda is None:
        return f"PyTorch {torch.__version__} is a CPU-only build, so no CUDA GPU is visible to it"
    if not torch.cuda.is_available():
        return "no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False)"
    return None


def _require(what: str) -> None:
    reason = unavailable_reason()
    if reason is not None:
        raise ExportError(f"cannot {what}: {reason}.")


def _device() -> tuple[str, tuple[int, int]]:
    import torch

    index = torch.cuda.current_device()
    return torch.cuda.get_device_name(index), tuple(torch.cuda.get_device_capability(index))


_LOGGER: Any = None


def _logger(trt: Any) -> Any:
    """The process's TensorRT logger: forwards to Python logging and keeps errors for our messages.

    TensorRT keeps one logger per process (a different one passed later is ignored, with a warning),
    so every builder and runtime here shares this one. Call ``take_errors()`` before an operation to
    clear what earlier ones left.
    """
    global _LOGGER
    if _LOGGER is not None:
        return _LOGGER
    severity = trt.ILogger.Severity

    class Logger(trt.ILogger):
        def __init__(self) -> None:
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, level: Any, msg: str) -> None:
            if level in (severity.INTERNAL_ERROR, severity.ERROR):
                self.errors.append(msg)
                log.error("TensorRT: %s", msg)
            elif level == severity.WARNING:
                log.warning("TensorRT: %s", msg)
            else:
                log.debug("TensorRT: %s", msg)

        def take_errors(self) -> list[str]:
            errors, self.errors = self.errors, []
            return errors

    _LOGGER = Logger()
    return _LOGGER


_NUMPY_TYPES = {
    "FLOAT": np.float32,
    "HALF": np.float16,
    "INT8": np.int8,
    "UINT8": np.uint8,
    "INT32": np.int32,
    "INT64": np.int64,
    "BOOL": np.bool_,
}
"""numpy type of each ``trt.DataType`` an engine's inputs and outputs may have here (``trt.nptype`` lacks
INT64 in some releases)."""


def _numpy_type(trt: Any, engine_path: Path, name: str, dtype: Any) -> np.dtype:
    for key, numpy_type in _NUMPY_TYPES.items():
        if dtype == getattr(trt.DataType, key, None):
            return np.dtype(numpy_type)
    raise ExportError(f"{engine_path}: tensor {name!r} has TensorRT type {dtype}, which has no numpy type.")


_ONNX_FLOAT16 = 10
_ONNX_INT8 = 3
_ONNX_FLOAT8E4M3FN = 17
_SOURCE_TYPE = {
    "fp16": (_ONNX_FLOAT16, "float16"),
    "int8": (_ONNX_INT8, "int8"),
    "fp8": (_ONNX_FLOAT8E4M3FN, "float8"),
}
"""ONNX element type (and its name) the source model of each precision must hold: on a strongly typed
network the model's own types decide every layer's precision, so an fp32 model builds an fp32 engine."""


def profile_shapes(
    onnx_path: Path, profile: Profile, candidate_inputs: Sequence[str]
) -> dict[str, tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]]:
    """(min, opt, max) shape of every input of the ONNX model, read from its graph.

    Each input named in ``candidate_inputs`` has a dynamic first dimension N in ``profile`` and static
    other dimensions; every other input must be static (user tensors are [1, D]).

    Raises:
        ExportError: The file cannot be read, a candidate input is missing or has another dynamic
            dimension, or another input is dynamic.
    """
    import onnx

    try:
        model = onnx.load(str(onnx_path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises OSError, DecodeError and its own errors
        raise ExportError(f"cannot read {onnx_path}: {exc}") from None
    wanted = list(candidate_inputs)
    shapes = {}
    initializers = {init.name for init in model.graph.initializer}
    for tensor in model.graph.input:
        if tensor.name in initializers:
            continue
        shape = tuple(
            d.dim_value if d.HasField("dim_value") else -1 for d in tensor.type.tensor_type.shape.dim
        )
        if tensor.name in wanted:
            rest = shape[1:]
            if not shape or any(d < 0 for d in rest):
                raise ExportError(
                    f"{onnx_path}: candidate input {tensor.name!r} has shape {shape}; only its first "
                    "dimension (N) may be dynamic."
                )
            shapes[tensor.name] = ((profile.min, *rest), (profile.opt, *rest), (profile.max, *rest))
        elif any(d < 0 for d in shape):
            raise ExportError(
                f"{onnx_path}: input {tensor.name!r} has dynamic shape {shape} but is not one of the "
                f"candidate inputs ({', '.join(wanted)}); only candidate inputs may vary in size."
            )
        else:
            shapes[tensor.name] = (shape, shape, shape)
    missing = [name for name in wanted if name not in shapes]
    if missing:
        raise ExportError(f"{onnx_path} has no input named {', '.join(map(repr, missing))}.")
    return shapes


def check_source(onnx_path: Path, precision: str) -> None:
    """Raise :class:`ExportError` unless the ONNX model holds the element type ``precision`` builds from.

    ``fp16`` needs float16 tensors (the ``onnx-fp16`` variant), ``int8`` and ``fp8`` need int8 or float8
    quantize/dequantize pairs (QDQ).
    """
    import onnx

    element, name = _SOURCE_TYPE[precision]
    model = onnx.load(str(onnx_path), load_external_data=False)
    types = {init.data_type for init in model.graph.initializer}
    types |= {v.type.tensor_type.elem_type for v in (*model.graph.value_info, *model.graph.output)}
    types |= {attr.t.data_type for node in model.graph.node for attr in node.attribute if attr.HasField("t")}
    if element not in types:
        raise ExportError(
            f"{onnx_path} holds no {name} tensors, so a strongly typed TensorRT network built from it "
            f"would not run in {precision}; build {precision} from the model converted to it "
            f"({'onnx-fp16' if precision == 'fp16' else f'a {precision} QDQ model'})."
        )


def engine_recipe(
    onnx_path: Path,
    profile: Profile,
    candidate_inputs: Sequence[str],
    workspace_bytes: int | None = None,
) -> tuple[Any, Any]:
    """Polygraphy loaders of the engine: a strongly typed network and a config with one profile over N.

    The network is parsed from the ONNX model. No precision flag is set: on a strongly typed network
    the model's own types (float16 weights, int8 or float8 QDQ pairs) decide each layer's precision,
    the way TensorRT 11 requires.

    Args:
        onnx_path: The source model.
        profile: Range of N.
        candidate_inputs: Inputs whose first dimension is N.
        workspace_bytes: Builder workspace limit, or None for TensorRT's default (setting it needs
            the ``tensorrt`` package, which the rest of the recipe does not).

    Returns:
        ``(network, config)``: Polygraphy's ``NetworkFromOnnxPath`` and ``CreateConfig``.
    """
    from polygraphy.backend.trt import CreateConfig, NetworkFromOnnxPath
    from polygraphy.backend.trt import Profile as PolygraphyProfile

    shapes = profile_shapes(onnx_path, profile, candidate_inputs)
    trt_profile = PolygraphyProfile()
    for name in candidate_inputs:
        trt_profile.add(name, *shapes[name])
    limits = None
    if workspace_bytes is not None:
        import tensorrt as trt

        limits = {trt.MemoryPoolType.WORKSPACE: workspace_bytes}
    network = NetworkFromOnnxPath(str(onnx_path), strongly_typed=True)
    config = CreateConfig(profiles=[trt_profile], memory_pool_limits=limits)
    return network, config


def build_engine(
    onnx_path: Path,
    engine_path: Path,
    precision: str,
    profile: Profile,
    candidate_inputs: Sequence[str],
    workspace_mb: int,
) -> EngineInfo:
    """Build a TensorRT engine from an ONNX model with Polygraphy and write it to ``engine_path``.

    The network is strongly typed (:func:`engine_recipe`): the model must already be in the precision
    (:func:`check_source`). It has one optimization profile: each input named in ``candidate_inputs``
    has a dynamic first dimension N in ``profile``; every other input must have a static shape in the
    ONNX (user tensors are [1, D]).

    Args:
        onnx_path: The model: float16 (the ``onnx-fp16`` variant) for ``fp16``, int8 QDQ for ``int8``,
            float8 QDQ for ``fp8``.
        engine_path: Serialized engine to write (atomically: written beside, then renamed).
        precision: ``fp16``, ``int8`` or ``fp8``. ``fp8`` needs compute capability 8.9 or higher.
        profile: Range of N.
        candidate_inputs: Inputs whose first dimension is N.
        workspace_mb: Builder workspace limit in MiB.

    Raises:
        ExportError: TensorRT, Polygraphy or a GPU is unavailable, the precision is unknown or
            unsupported on this GPU, the model is not in that precision, the ONNX cannot be parsed or
            the build fails (TensorRT's errors are in the message).
    """
    if precision not in PRECISIONS:
        raise ExportError(
            f"unknown TensorRT precision {precision!r}; expected one of {', '.join(PRECISIONS)}."
        )
    _require(f"build a TensorRT {precision} engine from {onnx_path}")
    import tensorrt as trt

    device, capability = _device()
    if precision == "fp8" and capability < FP8_MIN_COMPUTE_CAPABILITY:
        need = ".".join(map(str, FP8_MIN_COMPUTE_CAPABILITY))
        raise ExportError(
            f"cannot build a TensorRT fp8 engine from {onnx_path}: FP8 needs compute capability {need} "
            f"or higher, and {device} has {capability[0]}.{capability[1]}."
        )
    if not onnx_path.is_file():
        raise ExportError(f"cannot build a TensorRT engine: {onnx_path} does not exist.")
    check_source(onnx_path, precision)

    from polygraphy.backend.trt import EngineBytesFromNetwork

    started = time.perf_counter()
    logger = _logger(trt)
    logger.take_errors()
    network, config = engine_recipe(onnx_path, profile, candidate_inputs, workspace_mb << 20)
    try:
        serialized = EngineBytesFromNetwork(network, config=config)()
    except Exception as exc:  # noqa: BLE001 - Polygraphy raises PolygraphyException and TensorRT errors
        detail = "; ".join(logger.take_errors()) or first_line(exc)
        raise ExportError(
            f"TensorRT failed to build a {precision} engine from {onnx_path}: {detail}"
        ) from None
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    partial = engine_path.with_name(engine_path.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(memoryview(serialized))
    os.replace(partial, engine_path)
    _forget(engine_path)
    seconds = time.perf_counter() - started
    log.info("built TensorRT %s engine %s in %.1f s on %s", precision, engine_path, seconds, device)
    return EngineInfo(
        precision=precision,
        tensorrt_version=str(trt.__version__),
        device=device,
        compute_capability=f"{capability[0]}.{capability[1]}",
        profile=profile,
        build_seconds=round(seconds, 3),
    )


@dataclass
class _Loaded:
    """A deserialized engine ready to run; the runtime must outlive the engine, so it is kept too."""

    stamp: tuple[int, int]
    runtime: Any
    engine: Any
    context: Any
    stream: Any
    inputs: dict[str, np.dtype]
    outputs: dict[str, np.dtype]
    lock: threading.Lock  # one execution context: one request at a time


_ENGINES: OrderedDict[Path, _Loaded] = OrderedDict()
_ENGINES_LOCK = threading.Lock()


def _forget(engine_path: Path) -> None:
    with _ENGINES_LOCK:
        _ENGINES.pop(engine_path.resolve(), None)


def _load(engine_path: Path) -> _Loaded:
    """The cached engine of ``engine_path``; reloaded when the file changed since it was cached."""
    import tensorrt as trt
    import torch

    key = engine_path.resolve()
    try:
        stat = key.stat()
    except OSError as exc:
        raise ExportError(f"cannot read TensorRT engine {engine_path}: {exc.strerror or exc}.") from exc
    stamp = (stat.st_mtime_ns, stat.st_size)
    with _ENGINES_LOCK:
        hit = _ENGINES.get(key)
        if hit is not None and hit.stamp == stamp:
            _ENGINES.move_to_end(key)
            return hit

    torch.cuda.init()  # TensorRT and PyTorch share the device's primary CUDA context
    logger = _logger(trt)
    logger.take_errors()
    runtime = trt.Runtime(logger)
    engine = runtime.deserialize_cuda_engine(key.read_bytes())
    if engine is None:
        detail = (
            "; ".join(logger.take_errors()) or "not a TensorRT engine, or built by another TensorRT version"
        )
        raise ExportError(f"cannot load TensorRT engine {engine_path}: {detail}.")
    context = engine.create_execution_context()
    if context is None:
        raise ExportError(f"cannot create an execution context for TensorRT engine {engine_path}.")
    inputs, outputs = {}, {}
    for i in range(engine.num_io_tensors):
        name = engine.get_tensor_name(i)
        dtype = _numpy_type(trt, engine_path, name, engine.get_tensor_dtype(name))
        (inputs if engine.get_tensor_mode(name) == trt.TensorIOMode.INPUT else outputs)[name] = dtype
    loaded = _Loaded(stamp, runtime, engine, context, torch.cuda.Stream(), inputs, outputs, threading.Lock())
    with _ENGINES_LOCK:
        _ENGINES[key] = loaded
        while len(_ENGINES) > _ENGINE_CACHE_SIZE:
            _ENGINES.popitem(last=False)
    return loaded


def _torch_dtype(dtype: np.dtype) -> Any:
    import torch

    return torch.from_numpy(np.zeros(0, dtype=dtype)).dtype


def run_engine(engine_path: Path, inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Run one request through a TensorRT engine and return its outputs by name, as numpy arrays.

    The runtime, engine, execution context and CUDA stream are cached per engine file (a few engines
    per process). Inputs must have exactly the engine's input names and dtypes (INT64 ids included:
    TensorRT 10 takes them as they are).

    Raises:
        ExportError: TensorRT or a GPU is unavailable, the engine cannot be loaded, an input is
            missing, extra or of the wrong dtype, a shape is outside the engine's profile, or the
            execution fails.
    """
    _require(f"run TensorRT engine {engine_path}")
    import torch

    loaded = _load(engine_path)
    missing = sorted(set(loaded.inputs) - set(inputs))
    extra = sorted(set(inputs) - set(loaded.inputs))
    if missing or extra:
        raise ExportError(
            f"{engine_path}: inputs do not match the engine (missing: {', '.join(missing) or 'none'}; "
            f"unexpected: {', '.join(extra) or 'none'})."
        )
    context = loaded.context
    held = []  # device tensors must outlive the asynchronous execution
    with loaded.lock, torch.cuda.stream(loaded.stream):
        for name, dtype in loaded.inputs.items():
            array = inputs[name]
            if array.dtype != dtype:
                raise ExportError(
                    f"{engine_path}: input {name!r} is {array.dtype}, the engine takes {dtype}."
                )
            tensor = torch.from_numpy(np.ascontiguousarray(array)).to("cuda", non_blocking=False)
            if not context.set_input_shape(name, tuple(array.shape)):
                raise ExportError(
                    f"{engine_path}: input {name!r} has shape {tuple(array.shape)}, outside the engine's "
                    "optimization profile."
                )
            context.set_tensor_address(name, tensor.data_ptr())
            held.append(tensor)
        outputs = {}
        for name, dtype in loaded.outputs.items():
            shape = tuple(int(d) for d in context.get_tensor_shape(name))
            if any(d < 0 for d in shape):
                raise ExportError(f"{engine_path}: output {name!r} has unresolved shape {shape}.")
            outputs[name] = torch.empty(shape, dtype=_torch_dtype(dtype), device="cuda")
            context.set_tensor_address(name, outputs[name].data_ptr())
        if not context.execute_async_v3(loaded.stream.cuda_stream):
            raise ExportError(f"TensorRT failed to execute engine {engine_path}.")
        loaded.stream.synchronize()
    del held
    return {name: tensor.cpu().numpy() for name, tensor in outputs.items()}


def time_engine(
    engine_path: Path,
    make_inputs: Callable[[int], dict[str, np.ndarray]],
    candidate_counts: Sequence[int],
    warmup: int = 5,
    runs: int = 60,
) -> dict[int, float]:
    """Median latency (ms) of one request per candidate count N.

    Each sample is a whole :func:`run_engine` call (host-to-device copies, execution, device
    synchronisation, device-to-host copies): the same span that ONNX Runtime timings of the other
    variants cover. ``warmup`` untimed requests precede the ``runs`` timed ones at each N.
    """
    _require(f"time TensorRT engine {engine_path}")
    import torch

    out = {}
    for n in candidate_counts:
        inputs = make_inputs(int(n))
        for _ in range(warmup):
            run_engine(engine_path, inputs)
        torch.cuda.synchronize()
        samples = []
        for _ in range(runs):
            started = time.perf_counter()
            run_engine(engine_path, inputs)
            samples.append((time.perf_counter() - started) * 1000.0)
        out[int(n)] = float(np.median(samples))
    return out


def accelerator_profile_shapes(features: Features, names: tuple[str, ...], n: int) -> str:
    """The TensorRT accelerator's profile shapes at N = ``n``: ``name:NxD,...`` for the inputs ``names``."""
    from toolkit.data.requests import request_dims

    dims = request_dims(features, raw=False)
    return ",".join(f"{k}:{'x'.join(str(d) for d in [n, *dims[k][1][1:]])}" for k in names)
