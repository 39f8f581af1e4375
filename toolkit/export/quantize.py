"""Precision variants of an exported fp32 tier: file-to-file ONNX graph transforms.

Each transform reads an fp32 ``model.onnx``, builds the variant in memory (the ONNX Runtime quantizers
in a temporary folder) and writes ``dst`` only once everything succeeded. Every failure is an
:class:`~toolkit.errors.ExportError` naming the file and the step.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import onnx
import onnx.version_converter
from onnx import TensorProto, helper, numpy_helper

from toolkit.errors import ExportError

__all__ = ["EmbeddingReport", "embeddings_rowwise", "int8_dynamic", "int8_static", "qdq_fp8", "to_fp16"]

log = logging.getLogger(__name__)

_EXTERNAL_DATA_BYTES = 1_500_000_000
_SCALE_DTYPES = {8: np.float32, 4: np.float16}
"""Row-wise bit widths and the dtype of their per-row scale and offset (FBGEMM's conventions)."""
_PARTS = ("rowwise_q", "rowwise_scale", "rowwise_offset")
"""Initializers of a row-wise table (``<table>/<part>``), and tensors each Gather makes from them."""
_T = TypeVar("_T")


@dataclass(frozen=True)
class EmbeddingReport:
    """What :func:`embeddings_rowwise` quantized.

    Attributes:
        tables: Embedding tables quantized (a table shared by several Gathers counts once).
        rows: Rows over all those tables.
        fp32_bytes: Bytes of those tables in fp32.
        quantized_bytes: Bytes after quantization, per-row scales and offsets included.
    """

    tables: int
    rows: int
    fp32_bytes: int
    quantized_bytes: int


def to_fp16(src: Path, dst: Path) -> None:
    """Convert weights and compute to fp16, keeping the graph inputs and outputs fp32.

    ``convert_float_to_float16(keep_io_types=True)`` from ``onnxruntime.transformers`` with its default
    op block list. No op of the lite, standard or xl tiers needs blocking: ONNX Runtime CPU loads the
    result and runs any node its CPU provider has no fp16 kernel for in fp32 behind Casts it inserts
    itself; GPU providers run them in fp16.

    Raises:
        ExportError: ``src`` cannot be loaded or the conversion fails.
    """
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = _load(src)
    fp16 = _step(src, "fp16 conversion", lambda: convert_float_to_float16(model, keep_io_types=True))
    _toposort(src, fp16.graph)  # the converter appends the input Casts after their consumers
    _save(fp16, dst)


def int8_dynamic(src: Path, dst: Path) -> None:
    """Dynamic int8 quantization (``quantize_dynamic``) of the linear layers, per-channel int8 weights.

    Only MatMul and Gemm nodes whose weight (input B) is an initializer are quantized; embedding
    Gathers, MatMuls between activations and the dequantization of :func:`embeddings_rowwise` stay
    float. ONNX Runtime's dynamic mode has no Gemm, so each such Gemm with ``transA=0`` and
    ``alpha=beta=1`` (what ``nn.Linear`` exports) first becomes the equivalent MatMul + Add; the
    MatMuls become ``DynamicQuantizeLinear`` + ``MatMulInteger``.

    Raises:
        ExportError: ``src`` cannot be loaded or ONNX Runtime fails to quantize it.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = _load(src)
    _name_nodes(model)
    _gemm_to_matmul(model)
    nodes = _linear_nodes(model, ("MatMul",))
    _ort_quantize(
        src,
        dst,
        model,
        "int8 dynamic quantization",
        lambda path, out: quantize_dynamic(
            path,
            out,
            op_types_to_quantize=["MatMul"],
            nodes_to_quantize=nodes,
            per_channel=True,
            weight_type=QuantType.QInt8,
        ),
    )


def int8_static(src: Path, dst: Path, calibration: Sequence[dict[str, np.ndarray]]) -> None:
    """Static int8 QDQ quantization (``quantize_static``) of the linear layers.

    Symmetric int8 weights (per-channel) and activations (min/max calibration over ``calibration``),
    the form TensorRT takes for explicit quantization. Only MatMul and Gemm nodes whose weight is an
    initializer are quantized, so embedding Gathers keep their fp32 tables.

    Args:
        src: fp32 model.
        dst: Quantized model to write.
        calibration: Input tensors by name, one dict per request (the candidate count may vary).

    Raises:
        ExportError: No calibration request, ``src`` cannot be loaded, or ONNX Runtime fails.
    """
    _static(src, dst, calibration, fp8=False)


def qdq_fp8(src: Path, dst: Path, calibration: Sequence[dict[str, np.ndarray]]) -> None:
    """Static float8 E4M3FN QDQ quantization of the linear layers, the input of a TensorRT fp8 build.

    As :func:`int8_static` with ``QuantType.QFLOAT8E4M3FN`` for weights (per-tensor) and activations.
    The model is first converted to opset 19 (the first with float8 QuantizeLinear). ONNX Runtime only
    calibrates float8 with its distribution calibrator, which stacks each tensor over the requests:
    every input is therefore tiled along its first axis to its largest size over the requests (tiers
    score each candidate on its own, so a repeated candidate only repeats its activations).

    Raises:
        ExportError: No calibration request, ``src`` cannot be loaded, or ONNX Runtime fails.
    """
    _static(src, dst, calibration, fp8=True)


def embeddings_rowwise(src: Path, dst: Path, bits: int) -> EmbeddingReport:
    """Row-wise quantize every float embedding table read by Gathers (FBGEMM's scheme).

    Per row ``offset = min`` and ``scale = (max - min) / (2**bits - 1)``, stored as float32 for 8 bits
    and float16 for 4 bits, and ``q = round((w - offset) / scale)``: one uint8 per value for 8 bits, two
    per uint8 for 4 bits (D padded to even; the low nibbles hold columns ``[0, D/2)``, the high nibbles
    the rest). Each Gather becomes Gathers of the codes, scales and offsets by the same indices and a
    dequantization of the gathered rows only (BitwiseAnd/BitShift for 4 bits, Cast, Mul, Add) writing
    the original output, same shape and dtype. An all-zero row dequantizes to exact zeros. A table read
    by several Gathers is quantized once; a table with any other consumer, and every other initializer,
    is left as it is. 4 bits need opset >= 18 (BitwiseAnd).

    Args:
        src: fp32 model.
        dst: Model to write.
        bits: 8 or 4.

    Returns:
        The tables quantized and their size before and after.

    Raises:
        ExportError: ``bits`` is not 8 or 4, ``src`` cannot be loaded, or a table does not fit.
    """
    if bits not in _SCALE_DTYPES:
        raise ExportError(f"{src}: row-wise embedding quantization takes 8 or 4 bits, not {bits}")
    model = _load(src)
    if bits == 4 and _opset(model) < 18:
        raise ExportError(f"{src}: 4-bit embeddings need opset >= 18 (BitwiseAnd), not {_opset(model)}")
    _name_nodes(model)
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    replaced: dict[str, list[onnx.NodeProto]] = {}
    sizes = []
    for name, gathers in _embedding_tables(graph, initializers).items():
        weight = numpy_helper.to_array(initializers[name]).astype(np.float32)
        parts = _quantize_rows(src, name, weight, bits)
        graph.initializer.remove(initializers[name])
        graph.initializer.extend(
            numpy_helper.from_array(a, f"{name}/{p}") for a, p in zip(parts, _PARTS, strict=True)
        )
        replaced.update({node.name: _dequantize(node, name, bits, weight.shape[1]) for node in gathers})
        sizes.append((weight.shape[0], weight.size * 4, sum(a.nbytes for a in parts)))
    nodes = [new for node in graph.node for new in replaced.get(node.name, [node])]
    graph.ClearField("node")
    graph.node.extend(nodes)
    _save(model, dst)
    rows, fp32, quantized = (sum(column) for column in zip(*sizes, strict=True)) if sizes else (0, 0, 0)
    return EmbeddingReport(len(sizes), rows, fp32, quantized)


def _static(src: Path, dst: Path, calibration: Sequence[dict[str, np.ndarray]], fp8: bool) -> None:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    what = "fp8 QDQ quantization" if fp8 else "int8 static quantization"
    if not calibration:
        raise ExportError(f"{src}: {what} needs at least one calibration request, got none")
    model = _load(src)
    if fp8 and _opset(model) < 19:
        model = _step(src, "opset 19 conversion", lambda: onnx.version_converter.convert_version(model, 19))
    _name_nodes(model)
    nodes = _linear_nodes(model, ("MatMul", "Gemm"))
    qtype = QuantType.QFLOAT8E4M3FN if fp8 else QuantType.QInt8
    _ort_quantize(
        src,
        dst,
        model,
        what,
        lambda path, out: quantize_static(
            path,
            out,
            _Requests(calibration, same_shapes=fp8),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=["MatMul", "Gemm"],
            nodes_to_quantize=nodes,
            per_channel=not fp8,
            activation_type=qtype,
            weight_type=qtype,
            calibrate_method=CalibrationMethod.Distribution if fp8 else CalibrationMethod.MinMax,
            extra_options={"ActivationSymmetric": True, "WeightSymmetric": True},
        ),
    )


class _Requests:
    """ONNX Runtime calibration data reader: one request's inputs per ``get_next``, then None.

    With ``same_shapes``, each input is tiled cyclically along axis 0 to its largest size over the
    requests (the histogram calibrators stack each tensor over all requests).
    """

    def __init__(self, requests: Sequence[dict[str, np.ndarray]], same_shapes: bool) -> None:
        most = {k: max(r[k].shape[0] for r in requests) for k in requests[0]} if same_shapes else {}
        tile = {k: np.arange(n) for k, n in most.items()}
        self._requests = (
            {
                k: np.ascontiguousarray(v[tile[k] % len(v)] if k in tile and len(v) else v)
                for k, v in r.items()
            }
            for r in requests
        )

    def get_next(self) -> dict[str, np.ndarray] | None:
        """The next request's inputs, or None after the last."""
        return next(self._requests, None)


def _quantize_rows(src: Path, name: str, weight: np.ndarray, bits: int) -> tuple[np.ndarray, ...]:
    """Codes (uint8, nibble-packed for 4 bits), scales [V, 1] and offsets [V, 1] of a table."""
    dtype, levels = _SCALE_DTYPES[bits], (1 << bits) - 1
    offset = weight.min(axis=1, keepdims=True).astype(dtype)
    scale = ((weight.max(axis=1, keepdims=True) - offset.astype(np.float32)) / levels).astype(dtype)
    if not (np.isfinite(offset).all() and np.isfinite(scale).all()):
        raise ExportError(f"{src}: embedding table {name!r} has values beyond {dtype.__name__} scales")
    step = np.where(scale > 0, scale.astype(np.float32), np.float32(1.0))  # constant rows: codes 0
    q = np.clip(np.rint((weight - offset.astype(np.float32)) / step), 0, levels).astype(np.uint8)
    if bits == 4:
        half = (q.shape[1] + 1) // 2
        q = np.pad(q, ((0, 0), (0, 2 * half - q.shape[1])))
        q = q[:, :half] | (q[:, half:] << 4)
    return q, scale, offset


def _dequantize(node: onnx.NodeProto, table: str, bits: int, dim: int) -> list[onnx.NodeProto]:
    """Nodes replacing ``Gather(table, indices)``: gather codes, scales and offsets, then dequantize."""
    nodes: list[onnx.NodeProto] = []

    def add(op: str, inputs: list[str], name: str, **attrs: object) -> str:
        out = f"{node.name}/{name}"
        nodes.append(helper.make_node(op, inputs, [out], out, **attrs))
        return out

    def const(name: str, value: int | list[int]) -> str:
        dtype = np.uint8 if isinstance(value, int) else np.int64
        return add("Constant", [], name, value=numpy_helper.from_array(np.array(value, dtype=dtype)))

    codes, scale, offset = (add("Gather", [f"{table}/{part}", node.input[1]], part) for part in _PARTS)
    if bits == 4:
        low = add("BitwiseAnd", [codes, const("mask", 15)], "low")
        high = add("BitShift", [codes, const("shift", 4)], "high", direction="RIGHT")
        codes = add("Concat", [low, high], "nibbles", axis=-1)
        if dim % 2:  # drop the padding column
            codes = add(
                "Slice", [codes, const("starts", [0]), const("ends", [dim]), const("axes", [-1])], "codes"
            )
        scale = add("Cast", [scale], "scale_float", to=TensorProto.FLOAT)
        offset = add("Cast", [offset], "offset_float", to=TensorProto.FLOAT)
    scaled = add("Mul", [add("Cast", [codes], "codes_float", to=TensorProto.FLOAT), scale], "scaled")
    nodes.append(helper.make_node("Add", [scaled, offset], [node.output[0]], f"{node.name}/dequantized"))
    return nodes


def _embedding_tables(
    graph: onnx.GraphProto, initializers: dict[str, TensorProto]
) -> dict[str, list[onnx.NodeProto]]:
    """Float [V, D] initializers by name whose every consumer is a Gather of rows (axis 0) of them."""
    consumers: dict[str, list[onnx.NodeProto]] = {}
    for node in graph.node:
        for name in set(node.input):
            consumers.setdefault(name, []).append(node)
    inputs = {i.name for i in graph.input}
    return {
        name: consumers[name]
        for name, init in initializers.items()
        if init.data_type == TensorProto.FLOAT
        and len(init.dims) == 2
        and name in consumers
        and name not in inputs
        and all(_gathers_rows(node, name) for node in consumers[name])
    }


def _gathers_rows(node: onnx.NodeProto, table: str) -> bool:
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return (
        node.op_type == "Gather"
        and node.domain in ("", "ai.onnx")
        and axis == 0
        and (node.input[0] == table and node.input[1] != table)
    )


def _gemm_to_matmul(model: onnx.ModelProto) -> None:
    """Rewrite each ``Gemm(A, W[, C])`` with an initializer W, transA=0, alpha=beta=1 as MatMul (+ Add)."""
    graph = model.graph
    initializers = {i.name: i for i in graph.initializer}
    nodes = []
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        plain = attrs.get("transA", 0) == 0 and attrs.get("alpha", 1.0) == attrs.get("beta", 1.0) == 1.0
        if node.op_type != "Gemm" or node.input[1] not in initializers or not plain:
            nodes.append(node)
            continue
        weight = node.input[1]
        if attrs.get("transB", 0):
            weight = f"{node.input[1]}/transposed"
            if weight not in initializers:
                array = np.ascontiguousarray(numpy_helper.to_array(initializers[node.input[1]]).T)
                initializers[weight] = numpy_helper.from_array(array, weight)
                graph.initializer.append(initializers[weight])
        bias = node.input[2] if len(node.input) > 2 else ""
        product = f"{node.output[0]}/matmul" if bias else node.output[0]
        nodes.append(helper.make_node("MatMul", [node.input[0], weight], [product], f"{node.name}/matmul"))
        if bias:
            nodes.append(helper.make_node("Add", [product, bias], [node.output[0]], f"{node.name}/bias"))
    graph.ClearField("node")
    graph.node.extend(nodes)
    used = {name for node in nodes for name in node.input}
    for init in [i for i in graph.initializer if i.name not in used]:
        graph.initializer.remove(init)


def _linear_nodes(model: onnx.ModelProto, op_types: tuple[str, ...]) -> list[str]:
    """Names of the ``op_types`` nodes whose weight (input B) is a float initializer."""
    floats = {i.name for i in model.graph.initializer if i.data_type == TensorProto.FLOAT}
    return [n.name for n in model.graph.node if n.op_type in op_types and n.input[1] in floats]


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give every node a unique name: the quantizers select nodes, and we replace them, by name."""
    seen: set[str] = set()
    for i, node in enumerate(model.graph.node):
        if not node.name or node.name in seen:
            node.name = f"{node.op_type}_{i}_{node.name}".rstrip("_")
        seen.add(node.name)


def _toposort(src: Path, graph: onnx.GraphProto) -> None:
    """Reorder the nodes so that each comes after the producers of its inputs."""
    produced = {name for node in graph.node for name in node.output}
    ready = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for node in pending:
            if all(name in ready or name not in produced for name in node.input):
                ordered.append(node)
                ready.update(node.output)
            else:
                waiting.append(node)
        if len(waiting) == len(pending):
            raise ExportError(f"{src}: the converted graph has a cycle through node {waiting[0].name!r}")
        pending = waiting
    graph.ClearField("node")
    graph.node.extend(ordered)


def _opset(model: onnx.ModelProto) -> int:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)


def _ort_quantize(
    src: Path, dst: Path, model: onnx.ModelProto, what: str, run: Callable[[str, str], object]
) -> None:
    """Run an ONNX Runtime quantizer on ``model`` in a temporary folder, then save its output to ``dst``.

    Its stdout (calibration progress) and its advice to run ``quant_pre_process`` (the dynamo exporter
    already inferred every shape) are dropped.
    """

    def hint(record: logging.LogRecord) -> bool:
        return "pre-processing before quantization" not in record.getMessage()

    root = logging.getLogger()
    with tempfile.TemporaryDirectory(prefix="toolkit-quantize-") as tmp:
        path, out = os.path.join(tmp, "input.onnx"), os.path.join(tmp, "output.onnx")
        _save(model, Path(path))
        root.addFilter(hint)
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                _step(src, what, lambda: run(path, out))
        finally:
            root.removeFilter(hint)
        _save(_load(Path(out)), dst)


def _step(src: Path, what: str, fn: Callable[[], _T]) -> _T:
    try:
        return fn()
    except Exception as exc:
        detail = str(exc).strip().splitlines()
        raise ExportError(
            f"{src}: {what} failed ({type(exc).__name__}: {detail[0] if detail else '-'})"
        ) from exc


def _load(src: Path) -> onnx.ModelProto:
    return _step(src, "loading the ONNX model", lambda: onnx.load(str(src)))


def _save(model: onnx.ModelProto, dst: Path) -> None:
    """Write beside ``dst``, then rename; weights go to ``<dst>.data`` when too big for one protobuf."""
    external = sum(len(i.raw_data) for i in model.graph.initializer) > _EXTERNAL_DATA_BYTES
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        onnx.save(model, str(tmp), save_as_external_data=external, location=f"{dst.name}.data")
        os.replace(tmp, dst)
    except Exception as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"{dst}: cannot write the ONNX model ({type(exc).__name__}: {exc})") from exc
