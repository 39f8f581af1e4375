"""FLOPs of one request of an exported tier, as a function of the candidate count N.

A FLOP is one multiply or one add, so a multiply-accumulate (MAC) counts 2. The count is static: the
candidate dimension is fixed to N, ONNX shape inference gives every intermediate shape, and each node
costs what its rule below says. Matrix products dominate; data movement is free. Quantized matrix
products count the MACs of the float product they replace, so the variants of one tier compare.

Two rules apply to every node: a node whose inputs are all constant (initializers, ``Constant``
outputs, or what is computed from them only) costs nothing, since any runtime folds it once at load
time (the transposed or dequantized weights of a QDQ model); and elementwise ops count only when they
compute in floating point, so the int64 index and shape arithmetic of an exported graph is free.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper

from toolkit.errors import ToolkitError

__all__ = ["CANDIDATE_INPUTS", "FlopsError", "FlopsModel", "count_flops", "flops_model"]

log = logging.getLogger(__name__)

CANDIDATE_INPUTS = ("ad_dense", "ad_sparse")
"""Inputs of a tier whose non-static dimensions are the candidate count N."""

LINEARITY_TOLERANCE = 0.01
"""Largest relative gap between the fitted line and the count at the check point."""

_Shape = tuple[int, ...]
_Shapes = dict[str, tuple[int, _Shape | None]]
"""Tensor name -> (ONNX element type, static dims or None when any is unknown)."""


def _ops(names: str) -> frozenset[str]:
    return frozenset(names.split())


_FLOAT_TYPES = frozenset(
    getattr(TensorProto, name)
    for name in _ops("FLOAT FLOAT16 BFLOAT16 DOUBLE FLOAT8E4M3FN FLOAT8E4M3FNUZ FLOAT8E5M2 FLOAT8E5M2FNUZ")
)
_MATMULS = {
    "MatMul": (0, 1, None),
    "FusedMatMul": (0, 1, None),
    "MatMulInteger": (0, 1, None),
    "QLinearMatMul": (0, 3, None),
    "DynamicQuantizeMatMul": (0, 1, 4),
    "MatMulIntegerToFloat": (0, 1, 6),
}
"""Matrix products: input index of A, of B, and of the bias (added once per output element) if any."""
_GEMMS = frozenset({"Gemm", "FusedGemm"})
_ELEMENTWISE = _ops(
    "Add Sub Mul Div Neg Abs Reciprocal Sqrt Pow Exp Log Erf Tanh Sigmoid HardSigmoid HardSwish Relu "
    "LeakyRelu PRelu Elu Selu Celu Softplus Softsign Clip Max Min Sum Mean Mod Floor Ceil Round Sign "
    "Sin Cos Equal Greater GreaterOrEqual Less LessOrEqual IsNaN IsInf "
    "BitShift BitwiseAnd BitwiseOr BitwiseXor BitwiseNot"
)
"""One FLOP per output element when the first input is floating point."""
_PER_OUTPUT = {
    "Softmax": 5,
    "LogSoftmax": 5,
    "LayerNormalization": 8,
    "SkipLayerNormalization": 9,
    "BatchNormalization": 2,
}
"""FLOPs per output element of heavier float ops (max, exp, sum, divide; mean, variance, scale...)."""
_PER_INPUT = {
    **dict.fromkeys(_ops("ReduceSum ReduceMean ReduceMax ReduceMin ReduceProd ArgMax ArgMin"), 1),
    **dict.fromkeys(_ops("ReduceSumSquare ReduceL2"), 2),
}
"""FLOPs per input element of float reductions."""
_QUANTIZE = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
"""One FLOP per element, whatever the element types."""
_FREE = _ops(
    "Gather GatherElements GatherND Reshape Concat Transpose Expand Slice Split Squeeze Unsqueeze "
    "Flatten Tile Pad Cast CastLike Shape Size Constant ConstantOfShape Identity Dropout Where Range "
    "ScatterElements ScatterND OneHot NonZero Not And Or Xor"
)
"""Data movement, type and shape ops."""


class FlopsError(ToolkitError, ValueError):
    """The FLOPs of a model cannot be counted.

    A shape is unknown after inference, an op has no rule, or the count is not linear in N. Also a
    :class:`ValueError`, so callers that only know the counting API can catch that.
    """


@dataclass(frozen=True)
class FlopsModel:
    """FLOPs of one request as a line in the candidate count: ``per_request + per_candidate * N``.

    Attributes:
        per_request: FLOPs independent of N (the user side: history encoder, user tower).
        per_candidate: FLOPs added by each candidate.
    """

    per_request: int
    per_candidate: int

    def __post_init__(self) -> None:
        if self.per_request < 0 or self.per_candidate < 0:
            raise FlopsError(
                f"A FLOPs model needs non-negative terms, got per_request={self.per_request} "
                f"and per_candidate={self.per_candidate}."
            )

    def at(self, num_candidates: int | np.ndarray) -> int | np.ndarray:
        """FLOPs of one request with ``num_candidates`` candidates (an int, or an int64 array of them)."""
        if isinstance(num_candidates, np.ndarray):
            return self.per_request + self.per_candidate * num_candidates.astype(np.int64)
        return self.per_request + self.per_candidate * int(num_candidates)


def count_flops(model: str | Path | onnx.ModelProto, num_candidates: int) -> int:
    """FLOPs of one request with ``num_candidates`` candidates.

    Every non-static dimension of the candidate inputs (:data:`CANDIDATE_INPUTS`) becomes N, and so
    does that symbol wherever else it appears; strict shape inference with data propagation then
    gives every intermediate shape (ONNX Runtime contrib matrix products, which ONNX cannot infer,
    are shaped here). Per node:

    - MatMul, FusedMatMul, MatMulInteger, QLinearMatMul, DynamicQuantizeMatMul,
      MatMulIntegerToFloat: ``2 * prod(broadcast batch dims) * M * K * Ncols``, plus one per output
      element for a fused bias;
    - Gemm, FusedGemm: ``2 * M * K * N``, plus ``M * N`` with a bias;
    - float elementwise arithmetic (Add, Mul, Relu, Sigmoid, Erf, comparisons...): one per output
      element; Softmax 5, LayerNormalization 8 (SkipLayerNormalization 9) per output element;
    - float reductions (ReduceSum, ReduceMean...): one per input element;
    - QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear: one per element;
    - data movement (Gather, Reshape, Concat, Transpose, Cast, Shape...) and constant-foldable nodes: 0.

    Args:
        model: A tier ``model.onnx`` (path) or its loaded proto (left unchanged).
        num_candidates: N, at least 1.

    Returns:
        The FLOPs of one request.

    Raises:
        FlopsError: (a ValueError) N < 1, the model cannot be read or fails shape inference, a shape
            a node's rule needs is unknown after inference (the message names the node), or an op
            has no rule.
    """
    if num_candidates < 1:
        raise FlopsError(f"The candidate count must be at least 1, got {num_candidates}.")
    proto = fix_candidates(_load(model), num_candidates)
    shapes = infer_shapes(proto)
    constants = constant_tensors(proto.graph)
    total = 0
    by_op: Counter[str] = Counter()
    for node in proto.graph.node:
        if node.output and node.output[0] in constants:
            continue
        flops = node_flops(node, shapes)
        by_op[node.op_type] += flops
        total += flops
    log.debug("FLOPs of %s at N=%d: %d %s", _name(model), num_candidates, total, dict(by_op.most_common()))
    return total


def flops_model(model: str | Path | onnx.ModelProto, probe: tuple[int, int] = (8, 64)) -> FlopsModel:
    """Fit ``FLOPs = per_request + per_candidate * N`` from :func:`count_flops` at the two probe N.

    The fit is checked at ``N = 2 * probe[1]``; a gap above 1% (attention between candidates, say)
    means the model is not linear in N.

    Args:
        model: A tier ``model.onnx`` (path) or its loaded proto.
        probe: Two candidate counts, ``1 <= probe[0] < probe[1]``.

    Raises:
        FlopsError: (a ValueError) a bad probe, the fit is off at the check point (the message says
            which N), or :func:`count_flops` failed.
    """
    low, high = probe
    if not 1 <= low < high:
        raise FlopsError(f"The probe candidate counts must satisfy 1 <= low < high, got {probe}.")
    proto = _load(model)
    name = _name(model)
    f_low, f_high = count_flops(proto, low), count_flops(proto, high)
    per_candidate = round((f_high - f_low) / (high - low))
    per_request = f_low - per_candidate * low
    check = 2 * high
    actual = count_flops(proto, check)
    predicted = per_request + per_candidate * check
    gap = abs(actual - predicted) / max(actual, 1)
    if gap > LINEARITY_TOLERANCE or per_request < 0 or per_candidate < 0:
        raise FlopsError(
            f"{name}: the FLOPs are not linear in the candidate count: at N={check} they are {actual}, "
            f"the line through N={low} and N={high} predicts {predicted} ({gap:.2%} off, "
            f"more than {LINEARITY_TOLERANCE:.0%})."
        )
    return FlopsModel(per_request=per_request, per_candidate=per_candidate)


def _load(model: str | Path | onnx.ModelProto) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    try:
        return onnx.load(str(model))
    except (OSError, DecodeError) as exc:
        raise FlopsError(f"Cannot read the ONNX model {model}: {exc}") from exc


def _name(model: str | Path | onnx.ModelProto) -> str:
    return f"graph {model.graph.name!r}" if isinstance(model, onnx.ModelProto) else str(model)


def fix_candidates(model: onnx.ModelProto, n: int) -> onnx.ModelProto:
    """A copy of ``model`` with N in place of the candidate dimension, wherever its symbol appears."""
    fixed = onnx.ModelProto()
    fixed.CopyFrom(model)
    if fixed.functions:
        fixed = onnx.inliner.inline_local_functions(fixed)
    graph = fixed.graph
    symbols = set()
    for value in graph.input:
        if value.name in CANDIDATE_INPUTS:
            for dim in value.type.tensor_type.shape.dim:
                if not dim.HasField("dim_value"):
                    symbols.add(dim.dim_param)
                    dim.dim_value = n
    symbols.discard("")
    for value in (*graph.input, *graph.value_info, *graph.output):
        for dim in value.type.tensor_type.shape.dim:
            if dim.HasField("dim_param") and dim.dim_param in symbols:
                dim.dim_value = n
    return fixed


def infer_shapes(model: onnx.ModelProto) -> _Shapes:
    """Shapes of every tensor: ONNX inference, then the contrib ops' outputs, until nothing changes."""
    while True:
        try:
            model = onnx.shape_inference.infer_shapes(
                model, check_type=True, strict_mode=True, data_prop=True
            )
        except onnx.shape_inference.InferenceError as exc:
            raise FlopsError(f"Shape inference failed on graph {model.graph.name!r}: {exc}") from exc
        shapes = _shapes(model.graph)
        added = [
            helper.make_tensor_value_info(name, elem_type, dims)
            for node in model.graph.node
            if node.op_type in _CONTRIB_SHAPES
            and _unknown(shapes, node.output[:1])
            and not _unknown(shapes, node.input)
            for name, (elem_type, dims) in zip(
                node.output[:1], _CONTRIB_SHAPES[node.op_type](node, shapes), strict=True
            )
        ]
        if not added:
            return shapes
        names = {value.name for value in added}
        kept = [value for value in model.graph.value_info if value.name not in names]
        del model.graph.value_info[:]
        model.graph.value_info.extend([*kept, *added])


def _shapes(graph: onnx.GraphProto) -> _Shapes:
    shapes: _Shapes = {}
    for tensor in graph.initializer:
        shapes[tensor.name] = (tensor.data_type, tuple(tensor.dims))
    for value in (*graph.input, *graph.value_info, *graph.output):
        tensor_type = value.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in tensor_type.shape.dim)
        known = tensor_type.HasField("shape") and all(d >= 0 for d in dims)
        shapes[value.name] = (tensor_type.elem_type, dims if known else None)
    return shapes


def _unknown(shapes: _Shapes, names: Iterable[str]) -> bool:
    return any(name and (name not in shapes or shapes[name][1] is None) for name in names)


def constant_tensors(graph: onnx.GraphProto) -> set[str]:
    """Names of the tensors that do not depend on the inputs (initializers and what folds from them)."""
    constants = {tensor.name for tensor in graph.initializer}
    for node in graph.node:
        inputs = [name for name in node.input if name]
        if (inputs and all(name in constants for name in inputs)) or node.op_type == "Constant":
            constants.update(node.output)
    return constants


def _dims(node: onnx.NodeProto, shapes: _Shapes, name: str) -> _Shape:
    shape = shapes.get(name, (0, None))[1]
    if shape is None:
        raise FlopsError(
            f"Node {node.name or '(unnamed)'} ({node.op_type}) needs the shape of {name!r}, "
            "which is unknown after shape inference."
        )
    return shape


def _elem_type(node: onnx.NodeProto, shapes: _Shapes, name: str) -> int:
    _dims(node, shapes, name)
    return shapes[name][0]


def _attr(node: onnx.NodeProto, name: str, default: int = 0) -> int:
    return next((int(helper.get_attribute_value(a)) for a in node.attribute if a.name == name), default)


def _operand(dims: _Shape, trans_batch: int, trans: int) -> list[int]:
    """An operand as FusedMatMul sees it: the first dim moved behind the batch dims, last two swapped."""
    out = list(dims)
    if trans_batch and len(out) > 2:
        out = [*out[1:-1], out[0], out[-1]]
    if trans and len(out) >= 2:
        out[-2], out[-1] = out[-1], out[-2]
    return out


def _matmul(node: onnx.NodeProto, shapes: _Shapes) -> tuple[_Shape, int, int, int]:
    """Broadcast batch dims, M, K and Ncols of a matrix product."""
    a_index, b_index, _ = _MATMULS[node.op_type]
    a = _operand(_dims(node, shapes, node.input[a_index]), _attr(node, "transBatchA"), _attr(node, "transA"))
    b = _operand(_dims(node, shapes, node.input[b_index]), _attr(node, "transBatchB"), _attr(node, "transB"))
    a, b = ([1, *a] if len(a) == 1 else a), ([*b, 1] if len(b) == 1 else b)
    try:
        batch = tuple(np.broadcast_shapes(tuple(a[:-2]), tuple(b[:-2])))
    except ValueError as exc:
        raise FlopsError(
            f"Node {node.name} ({node.op_type}): batch dims of {a} and {b} do not broadcast."
        ) from exc
    if a[-1] != b[-2]:
        raise FlopsError(f"Node {node.name} ({node.op_type}): operands {a} and {b} do not chain.")
    return batch, a[-2], a[-1], b[-1]


def _matmul_flops(node: onnx.NodeProto, shapes: _Shapes) -> int:
    batch, m, k, n = _matmul(node, shapes)
    outputs = int(np.prod(batch, dtype=np.int64)) * m * n
    bias = _MATMULS[node.op_type][2]
    has_bias = bias is not None and len(node.input) > bias and node.input[bias]
    return 2 * outputs * k + (outputs if has_bias else 0)


def _gemm_flops(node: onnx.NodeProto, shapes: _Shapes) -> int:
    m, k = _operand(_dims(node, shapes, node.input[0]), 0, _attr(node, "transA"))
    _, n = _operand(_dims(node, shapes, node.input[1]), 0, _attr(node, "transB"))
    has_bias = len(node.input) > 2 and node.input[2]
    return 2 * m * k * n + (m * n if has_bias else 0)


def _elements(node: onnx.NodeProto, shapes: _Shapes, name: str) -> int:
    return int(np.prod(_dims(node, shapes, name), dtype=np.int64))


def _is_float(node: onnx.NodeProto, shapes: _Shapes) -> bool:
    return _elem_type(node, shapes, node.input[0]) in _FLOAT_TYPES


def _per_output(cost: int) -> Callable[[onnx.NodeProto, _Shapes], int]:
    return lambda node, shapes: (
        cost * _elements(node, shapes, node.output[0]) if _is_float(node, shapes) else 0
    )


def _per_input(cost: int) -> Callable[[onnx.NodeProto, _Shapes], int]:
    return lambda node, shapes: (
        cost * _elements(node, shapes, node.input[0]) if _is_float(node, shapes) else 0
    )


def _rules() -> dict[str, Callable[[onnx.NodeProto, _Shapes], int]]:
    rules: dict[str, Callable[[onnx.NodeProto, _Shapes], int]] = {op: _matmul_flops for op in _MATMULS}
    rules.update({op: _gemm_flops for op in _GEMMS})
    rules.update({op: _per_output(1) for op in _ELEMENTWISE})
    rules.update({op: _per_output(cost) for op, cost in _PER_OUTPUT.items()})
    rules.update({op: _per_input(cost) for op, cost in _PER_INPUT.items()})
    rules.update({op: (lambda node, shapes: _elements(node, shapes, node.input[0])) for op in _QUANTIZE})
    rules.update({op: (lambda node, shapes: 0) for op in _FREE})
    return rules


_RULES = _rules()


def node_flops(node: onnx.NodeProto, shapes: _Shapes) -> int:
    """FLOPs of one node given every tensor's shape; :class:`FlopsError` for an op without a rule."""
    rule = _RULES.get(node.op_type)
    if rule is None:
        raise FlopsError(
            f"Node {node.name or '(unnamed)'} has op {node.domain or 'ai.onnx'}:{node.op_type}, "
            "which has no FLOP rule."
        )
    return rule(node, shapes)


def _matmul_shape(node: onnx.NodeProto, shapes: _Shapes) -> list[tuple[int, _Shape]]:
    batch, m, _, n = _matmul(node, shapes)
    elem_type = shapes[node.input[0 if node.op_type == "FusedMatMul" else 2]][0]
    return [(elem_type, (*batch, m, n))]


_CONTRIB_SHAPES: dict[str, Callable[[onnx.NodeProto, _Shapes], list[tuple[int, _Shape]]]] = {
    "FusedMatMul": _matmul_shape,
    "DynamicQuantizeMatMul": _matmul_shape,
    "MatMulIntegerToFloat": _matmul_shape,
    "SkipLayerNormalization": lambda node, shapes: [
        (shapes[node.input[0]][0], _dims(node, shapes, node.input[0]))
    ],
}
"""Output shapes of the ONNX Runtime contrib ops that ONNX's shape inference does not know."""
