"""What a per-pair tier pays: the user-side work it repeats for every candidate, counted in its graph.

A per-pair model (``model.layout: pair``) sees the user tensors tiled to N rows, so any work that
depends only on the user side is done N times. :func:`per_pair_cost` counts that work in the ONNX
graph (FLOPs and bytes of the nodes no candidate tensor reaches) at a few candidate counts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.compose
import onnx.version_converter
from google.protobuf.message import DecodeError
from onnx import helper

from toolkit.export.onnx_adapter import request_widths
from toolkit.flops import FlopsError, constant_tensors, fix_candidates, infer_shapes, node_flops
from toolkit.spec.schema import USER_TENSORS, Spec

log = logging.getLogger(__name__)

_SHAPE_OPS = frozenset({"Shape", "Size"})
_NO_REDUNDANCY = 1e-3
"""Redundant shares below this count as "no user-only computation" in the note."""

# Taint classes of per_pair_cost, ordered so that a node's class is the largest of its inputs'.
_CONST, _SHAPE, _USER, _CAND = range(4)


def _pin_request_dims(model: onnx.ModelProto, spec: Spec) -> onnx.ModelProto:
    """A copy with each request input's width (and a user input's single row) fixed from the spec."""
    pinned = onnx.ModelProto()
    pinned.CopyFrom(model)
    widths = request_widths(spec)
    for value in pinned.graph.input:
        if value.name not in widths:
            continue
        dims = value.type.tensor_type.shape.dim
        if len(dims) != 2:
            raise FlopsError(
                f"Input {value.name!r} has rank {len(dims)}; a tier's request inputs have rank 2."
            )
        if dims[1].HasField("dim_value") and dims[1].dim_value != widths[value.name]:
            raise FlopsError(
                f"Input {value.name!r} has {dims[1].dim_value} features; the spec gives {widths[value.name]}."
            )
        dims[1].dim_value = widths[value.name]
        if value.name in USER_TENSORS and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    return pinned


def _taints(graph: onnx.GraphProto) -> tuple[dict[str, int], list[int]]:
    """What each value and node depends on: constants, shapes only, user inputs, or candidates.

    Graph inputs: user tensors are user data, every other input candidate data; initializers are
    constants. A node's class is the largest of its inputs' (const < shape < user < candidate),
    except that Shape and Size yield shape metadata whatever they read, so index and shape
    arithmetic on ``Shape(ad_dense)`` (the Expand target that tiles user tensors to N rows) does not
    make the tiled tensors candidate data.

    Returns:
        The class of every value by name, and of every node in graph order.
    """
    taint: dict[str, int] = {t.name: _CONST for t in graph.initializer}
    taint.update({t.values.name: _CONST for t in graph.sparse_initializer})
    for value in graph.input:
        taint.setdefault(value.name, _USER if value.name in USER_TENSORS else _CAND)
    classes = []
    for node in graph.node:
        level = max((taint.get(name, _CAND) for name in node.input if name), default=_CONST)
        if node.op_type in _SHAPE_OPS and node.domain in ("", "ai.onnx"):
            level = min(level, _SHAPE)
        for name in node.output:
            taint[name] = level
        classes.append(level)
    return taint, classes


def _count(proto: onnx.ModelProto, n: int) -> tuple[int, int, dict[int, tuple[int, int]]]:
    """Total and user-only FLOPs at N, and per user-only node (by index) its output and user-input bytes."""
    fixed = fix_candidates(proto, n)
    shapes = infer_shapes(fixed)
    constants = constant_tensors(fixed.graph)
    taint, classes = _taints(fixed.graph)
    total = user = 0
    sizes: dict[int, tuple[int, int]] = {}
    for index, (node, level) in enumerate(zip(fixed.graph.node, classes, strict=True)):
        if level == _USER and node.output:
            user_inputs = [name for name in node.input if name and taint.get(name) == _USER]
            in_bytes = [_bytes(shapes, name) for name in user_inputs]
            sizes[index] = (_bytes(shapes, node.output[0]), -1 if min(in_bytes) < 0 else sum(in_bytes))
        if node.output and node.output[0] in constants:
            continue
        flops = node_flops(node, shapes)
        total += flops
        if level == _USER:
            user += flops
    return total, user, sizes


def _bytes(shapes: dict[str, tuple[int, tuple[int, ...] | None]], name: str) -> int:
    elem_type, dims = shapes.get(name, (0, None))
    if dims is None or not elem_type:
        return -1
    itemsize = np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)).itemsize
    return int(np.prod(dims, dtype=np.int64)) * itemsize


def per_pair_cost(onnx_path: Path, spec: Spec, counts: Sequence[int]) -> dict[str, Any]:
    """What a per-pair tier costs compared with computing its user side once per request.

    In a deployed per-pair tier (an exported per-pair ``UserTier``, or a file from
    :func:`wrap_onnx_file`), the user tensors are tiled to N rows (Expand, Gather...), and all that
    is computed from them alone is repeated for every candidate. Each node is classed by what its
    value depends on (see :func:`_taints`: Shape/Size outputs are shape metadata, not data); the
    nodes that depend on user inputs and constants only are the user-only work, counted with the
    rules of :mod:`toolkit.flops`. A request-centric model does that work once:
    ``redundant(N) = user_only(N) - user_only(1)``. The tiling points are the user-only nodes whose
    output grows with N while their user-data inputs do not; ``tiled_input_bytes`` is what they add
    (output bytes minus user-input bytes).

    Args:
        onnx_path: A tier ``model.onnx`` taking the five request tensors.
        spec: The spec, whose widths pin the request inputs' feature dims.
        counts: Candidate counts N to report, each at least 1.

    Returns:
        ``user_only_flops``, ``total_flops``, ``redundant_flops``, ``redundant_share`` (redundant /
        total) and ``tiled_input_bytes``, each ``{N: value}`` over ``counts``;
        ``user_flops_per_candidate`` (the redundant FLOPs each extra candidate adds); ``tiled``
        (whether any user tensor is tiled to N rows) and ``note``, a sentence for reports.

    Raises:
        FlopsError: (a ValueError) a count below 1, an unreadable model, an input width that
            differs from the spec, or what :func:`~toolkit.flops.count_flops` raises.
    """
    wanted = list(dict.fromkeys(int(n) for n in counts))
    if not wanted or min(wanted) < 1:
        raise FlopsError(f"per_pair_cost needs candidate counts of at least 1, got {list(counts)}.")
    try:
        base = onnx.load(str(onnx_path))
    except (OSError, DecodeError) as exc:
        raise FlopsError(f"Cannot read the ONNX model {onnx_path}: {exc}") from exc
    proto = _pin_request_dims(base, spec)
    # Tiling points: user-only nodes whose output grows from N=2 to N=3 while their user inputs don't.
    _, _, at2 = _count(proto, 2)
    _, _, at3 = _count(proto, 3)
    tiling = {
        i
        for i, (out2, in2) in at2.items()
        if min(out2, in2, *at3[i]) >= 0 and out2 != at3[i][0] and in2 == at3[i][1]
    }
    _, user_one, _ = _count(proto, 1)
    user_only: dict[int, int] = {}
    total: dict[int, int] = {}
    tiled_bytes: dict[int, int] = {}
    for n in wanted:
        total[n], user_only[n], sizes = _count(proto, n)
        tiled_bytes[n] = sum(max(sizes[i][0] - sizes[i][1], 0) for i in tiling)
    redundant = {n: user_only[n] - user_one for n in wanted}
    share = {n: redundant[n] / total[n] if total[n] else 0.0 for n in wanted}
    top = max(wanted)
    per_candidate = redundant[top] / (top - 1) if top > 1 else 0.0
    result: dict[str, Any] = {
        "user_only_flops": user_only,
        "total_flops": total,
        "redundant_flops": redundant,
        "redundant_share": share,
        "tiled_input_bytes": tiled_bytes,
        "user_flops_per_candidate": per_candidate,
        "tiled": bool(tiling),
    }
    result["note"] = _note(result, top, user_one)
    return result


def _flops_text(flops: float) -> str:
    for unit, scale in (("GFLOP", 1e9), ("MFLOP", 1e6), ("kFLOP", 1e3)):
        if flops >= scale:
            return f"{flops / scale:.3g} {unit}"
    return f"{flops:.0f} FLOP"


def _bytes_text(size: int) -> str:
    return f"{size / 1024:.3g} KiB" if size >= 1024 else f"{size} bytes"


def _note(result: dict[str, Any], top: int, user_one: int) -> str:
    share = result["redundant_share"][top]
    tiled = _bytes_text(result["tiled_input_bytes"][top])
    if not result["tiled"] and share < _NO_REDUNDANCY:
        return (
            f"request-centric graph: no user tensor is tiled to the candidate count, so its user-only "
            f"work ({_flops_text(user_one)}) is computed once per request and nothing is repeated "
            "per candidate."
        )
    if share < _NO_REDUNDANCY:
        return (
            f"per-pair model: its user features are tiled to N rows in the graph, but no node computes "
            f"on them alone (they meet the candidate features right away), so a request-centric "
            f"layout would save no FLOPs ({share:.2%} at N={top}); the cost is then the tiled input "
            f"bytes only ({tiled} at N={top})."
        )
    return (
        f"per-pair model: its user features are tiled to N rows in the graph, so the user-only work "
        f"({_flops_text(result['user_flops_per_candidate'])} per candidate) is repeated for every "
        f"candidate: {share:.1%} of its FLOPs at N={top} would be computed once per request by a "
        f"request-centric model (which would also not copy {tiled} of user inputs to tile them)."
    )
