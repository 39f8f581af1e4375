"""Tiers that are ready ONNX files: check them against their mapping, wrap them, weigh their layout.

A tier with ``model.onnx`` is a file whose graph inputs are the user model's inputs
(``model.inputs``), not the five request tensors. :func:`check_onnx_file` compares the file with
that mapping and reports every mismatch as one :class:`~toolkit.errors.UserModelError` line that
names the tier. :func:`wrap_onnx_file` writes the deployable tier: an adapter graph (the five
request tensors -> the model's inputs, as :class:`~toolkit.models.user.InputAdapter` computes them)
merged in front of the user's graph, and ``score`` FP32 [N] behind it. :class:`OnnxFileTier` is the
reference the wrapped file is checked against: the adapter in PyTorch, the user's original file in
ONNX Runtime. :func:`toolkit.export.per_pair.per_pair_cost` says what a per-pair tier pays for
repeating its user-side work for every candidate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnx.compose
import onnx.version_converter
import torch
from google.protobuf.message import DecodeError
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from toolkit.data.requests import REQUEST_TENSORS
from toolkit.errors import first_line
from toolkit.export.names import SCORE
from toolkit.export.parity import cpu_session
from toolkit.models.user import (
    RAW_STATISTICS,
    InputAdapter,
    Statistics,
    as_probabilities,
    needs_statistics,
    tier_error,
)
from toolkit.spec.schema import CANDIDATE_TENSORS, DENSE_TENSORS, USER_TENSORS, Spec, TierSpec

__all__ = [
    "NUM_CANDIDATES",
    "OnnxFileTier",
    "check_onnx_file",
    "request_widths",
    "wrap_onnx_file",
]

log = logging.getLogger(__name__)

NUM_CANDIDATES = "num_candidates"
"""Symbol of the candidate dimension in a wrapped tier's inputs and output (as ``export_tier``)."""

USER_PREFIX = "user/"
"""Prefix of every name of the user's graph inside a wrapped tier (no clash with the adapter's)."""

MIN_ADAPTER_OPSET = 8
"""Lowest default-domain opset the adapter's ops (Expand, Reshape with a shape input) exist in."""

_ONNX_TYPES = {"float32": TensorProto.FLOAT, "int64": TensorProto.INT64, "int32": TensorProto.INT32}
_FLOAT_OUTPUTS = frozenset({TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16})
_EXTERNAL_DATA_BYTES = 1_500_000_000


def _dtype_name(elem_type: int) -> str:
    try:
        return str(np.dtype(helper.tensor_dtype_to_np_dtype(elem_type)))
    except (KeyError, TypeError, ValueError):
        return TensorProto.DataType.Name(elem_type).lower() if elem_type else "undefined"


def request_widths(spec: Spec) -> dict[str, int]:
    """Feature width (dim 1) of each preprocessed request tensor under ``spec``."""
    f = spec.features
    return {
        "user_dense": f.user_dense,
        "user_sparse": len(f.user_sparse),
        "user_history": f.history.length,
        "ad_dense": f.ad_dense,
        "ad_sparse": len(f.ad_sparse),
    }


def _request_type(name: str) -> int:
    return TensorProto.FLOAT if name in DENSE_TENSORS else TensorProto.INT64


def _dims(value: onnx.ValueInfoProto) -> list[int | str] | None:
    """Dims of a tensor value (int when static, the symbol or '?' when not); None: shape unknown."""
    tensor_type = value.type.tensor_type
    if not tensor_type.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in tensor_type.shape.dim]


def _show(dims: list[int | str]) -> str:
    return "[" + ", ".join(str(d) for d in dims) + "]"


def _load(tier: TierSpec) -> onnx.ModelProto:
    assert tier.model is not None and tier.model.onnx
    path = Path(tier.model.onnx)
    if not path.is_file():
        raise tier_error(tier.name, f"ONNX file {str(path)!r} not found")
    try:
        return onnx.load(str(path))
    except (OSError, DecodeError, ValueError, RuntimeError) as exc:
        raise tier_error(tier.name, f"cannot read ONNX file {str(path)!r} ({first_line(exc)})") from None


def _graph_inputs(graph: onnx.GraphProto) -> list[onnx.ValueInfoProto]:
    """Real graph inputs: those that are not initializers (which old exporters list as inputs)."""
    initializers = {t.name for t in graph.initializer} | {t.values.name for t in graph.sparse_initializer}
    return [value for value in graph.input if value.name not in initializers]


def check_onnx_file(tier: TierSpec, spec: Spec) -> onnx.ModelProto:
    """Load an ONNX tier's file and check it against the tier's ``model.inputs`` mapping.

    Checked: every graph input is mapped and every mapped input exists; each input's element type
    is the mapping's ``resolved_dtype``; each input has rank 2, a static feature width (dim 1) equal
    to the summed widths of its request tensors, and a dynamic dim 0 (or 1 for a user-level input
    of a request-layout model); the graph has exactly one output, floating point (FP32, FP16, FP64
    or BF16; the wrapped tier casts to FP32), of rank 1 or rank 2 with dim 1 fixed at 1, with a
    dynamic dim 0. Dims the file leaves unknown are not held against it. Initializers listed as
    graph inputs (older exporters do) are not inputs.

    Args:
        tier: A tier whose ``model.onnx`` names the file (relative paths: to the working directory).
        spec: The spec, for the request tensors' widths.

    Returns:
        The loaded model (external data included).

    Raises:
        UserModelError: The file is missing, unreadable or not valid ONNX, or does not fit the
            mapping; one line naming the tier and the first problem found.
    """
    model = tier.model
    if model is None or not model.onnx:
        raise tier_error(tier.name, "is not an ONNX tier (it has no model.onnx)")
    proto = _load(tier)
    try:
        onnx.checker.check_model(model.onnx)  # by path: files past 2 GB cannot be checked as a proto
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise tier_error(
            tier.name, f"ONNX file {model.onnx!r} is not a valid model ({first_line(exc)})"
        ) from None
    inputs = {value.name: value for value in _graph_inputs(proto.graph)}
    mapped = {item.name: item for item in model.inputs}
    for name in inputs:
        if name not in mapped:
            raise tier_error(
                tier.name,
                f"ONNX input {name!r} is not mapped by model.inputs (it maps {', '.join(mapped)})",
            )
    for name in mapped:
        if name not in inputs:
            raise tier_error(
                tier.name,
                f"model.inputs maps {name!r}, which the ONNX file has no input of; "
                f"its inputs: {', '.join(inputs) or '(none)'}",
            )
    widths = request_widths(spec)
    for item in model.inputs:
        value = inputs[item.name]
        if not value.type.HasField("tensor_type"):
            raise tier_error(tier.name, f"ONNX input {item.name!r} is not a tensor")
        elem_type = value.type.tensor_type.elem_type
        if elem_type != _ONNX_TYPES[item.resolved_dtype]:
            raise tier_error(
                tier.name,
                f"wrong dtype: ONNX input {item.name!r} is {_dtype_name(elem_type)}, model.inputs gives "
                f"{item.resolved_dtype} (set its dtype to match the file)",
            )
        dims = _dims(value)
        if dims is None:
            continue
        if len(dims) != 2:
            raise tier_error(
                tier.name,
                f"ONNX input {item.name!r} has shape {_show(dims)}; expected rank 2 (rows, features)",
            )
        width = sum(widths[t] for t in item.tensors)
        if isinstance(dims[1], int) and dims[1] != width:
            raise tier_error(
                tier.name,
                f"ONNX input {item.name!r} has {dims[1]} features (dim 1), model.inputs gives {width} "
                f"({' + '.join(f'{t} {widths[t]}' for t in item.tensors)})",
            )
        one_row = model.layout == "request" and item.level == "user"
        if isinstance(dims[0], int) and not (one_row and dims[0] == 1):
            want = "dynamic or 1 (one row per request)" if one_row else "dynamic (one row per candidate)"
            raise tier_error(
                tier.name,
                f"ONNX input {item.name!r} has a fixed dim 0 of {dims[0]}; it must be {want}",
            )
    _check_output(tier.name, proto.graph)
    return proto


def _check_output(tier: str, graph: onnx.GraphProto) -> None:
    outputs = list(graph.output)
    if len(outputs) != 1:
        names = ", ".join(o.name for o in outputs) or "(none)"
        raise tier_error(
            tier, f"the ONNX file has {len(outputs)} outputs ({names}); expected exactly one (scores)"
        )
    value = outputs[0]
    if not value.type.HasField("tensor_type"):
        raise tier_error(tier, f"ONNX output {value.name!r} is not a tensor")
    elem_type = value.type.tensor_type.elem_type
    if elem_type not in _FLOAT_OUTPUTS:
        raise tier_error(
            tier, f"ONNX output {value.name!r} is {_dtype_name(elem_type)}; expected float32 scores"
        )
    dims = _dims(value)
    if dims is None:
        return
    ok_rank = len(dims) == 1 or (len(dims) == 2 and dims[1] == 1)
    if not ok_rank:
        raise tier_error(
            tier,
            f"ONNX output {value.name!r} has shape {_show(dims)}; expected [N] or [N, 1] "
            "(one score per candidate)",
        )
    if isinstance(dims[0], int):
        raise tier_error(
            tier,
            f"ONNX output {value.name!r} has a fixed dim 0 of {dims[0]}; it must be the candidate "
            "count N (dynamic)",
        )


# --------------------------------------------------------------------------------------- wrapping


def _default_opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _reconcile(tier: TierSpec, model: onnx.ModelProto, opset: int) -> onnx.ModelProto:
    """The user's model at a default-domain opset the adapter's ops exist in (kept when >= 8)."""
    version = _default_opset(model)
    if version is None:
        model.opset_import.append(helper.make_opsetid("", opset))
        ir = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
        model.ir_version = max(model.ir_version, ir)
        return model
    if version >= MIN_ADAPTER_OPSET:
        return model
    try:
        converted = onnx.version_converter.convert_version(model, opset)
    except Exception as exc:  # noqa: BLE001 - the converter fails in many ways
        raise tier_error(
            tier.name,
            f"the ONNX file uses opset {version}, and converting it to opset {opset} failed "
            f"({first_line(exc)}); export it with opset 13 or later",
        ) from None
    converted.ir_version = max(
        converted.ir_version, helper.find_min_ir_version_for(list(converted.opset_import))
    )
    return converted


def _sources(tier: TierSpec, raw: dict[str, str]) -> set[str]:
    """Names of the values the adapter's outputs are made from (a request tensor or its raw form)."""
    assert tier.model is not None
    return {raw.get(t, t) if item.values == "raw" else t for item in tier.model.inputs for t in item.tensors}


def _user_sources(raw: dict[str, str]) -> list[str]:
    """The user-level request tensors and their raw forms."""
    return [*USER_TENSORS, *(raw[t] for t in USER_TENSORS if t in raw)]


def _adapter_model(
    tier: TierSpec, spec: Spec, opset: int, ir_version: int, statistics: Statistics | None = None
) -> tuple[onnx.ModelProto, list[str]]:
    """The adapter graph: five request inputs -> one output per model input (``input/<name>``)."""
    assert tier.model is not None
    if needs_statistics(tier.model) and statistics is None:
        raise ValueError("an input takes raw dense values: the preprocess statistics are needed")
    widths = request_widths(spec)
    pair = tier.model.layout == "pair"
    inputs = [
        helper.make_tensor_value_info(
            name, _request_type(name), [NUM_CANDIDATES if name in CANDIDATE_TENSORS else 1, widths[name]]
        )
        for name in REQUEST_TENSORS
    ]
    nodes: list[onnx.NodeProto] = []
    initializers: list[onnx.TensorProto] = []
    outputs: list[onnx.ValueInfoProto] = []
    tiled: dict[str, str] = {}
    used_user = {t for item in tier.model.inputs for t in item.tensors if t in USER_TENSORS}
    raw: dict[str, str] = {}
    for name, (mean, std) in RAW_STATISTICS.items():
        if any(item.values == "raw" and name in item.tensors for item in tier.model.inputs):
            assert statistics is not None
            raw[name] = f"adapter/{name}_raw"
            scaled = f"adapter/{name}_scaled"
            initializers += [
                numpy_helper.from_array(statistics[std].numpy().astype(np.float32), f"adapter/{std}"),
                numpy_helper.from_array(statistics[mean].numpy().astype(np.float32), f"adapter/{mean}"),
            ]
            nodes += [
                helper.make_node("Mul", [name, f"adapter/{std}"], [scaled], name=scaled),
                helper.make_node("Add", [scaled, f"adapter/{mean}"], [raw[name]], name=raw[name]),
            ]
    if pair and used_user:
        initializers += [
            numpy_helper.from_array(np.array([0], np.int64), "adapter/zero"),
            numpy_helper.from_array(np.array([1], np.int64), "adapter/one"),
        ]
        nodes += [
            helper.make_node("Shape", ["ad_dense"], ["adapter/ad_shape"], name="adapter/ad_shape"),
            helper.make_node(
                "Gather", ["adapter/ad_shape", "adapter/zero"], ["adapter/n"], name="adapter/n", axis=0
            ),
            helper.make_node(
                "Concat", ["adapter/n", "adapter/one"], ["adapter/rows"], name="adapter/rows", axis=0
            ),
        ]
        for source in sorted(_sources(tier, raw) & set(_user_sources(raw))):
            tiled[source] = f"adapter/{source}_tiled" if source in USER_TENSORS else f"{source}_tiled"
            nodes.append(
                helper.make_node("Expand", [source, "adapter/rows"], [tiled[source]], name=tiled[source])
            )
    names = []
    for index, item in enumerate(tier.model.inputs):
        want = _ONNX_TYPES[item.resolved_dtype]
        parts = []
        for tensor in item.tensors:
            source = raw.get(tensor, tensor) if item.values == "raw" else tensor
            source = tiled.get(source, source)
            if _request_type(tensor) != want:
                cast = f"adapter/{index}/{tensor}_cast"
                nodes.append(helper.make_node("Cast", [source], [cast], name=cast, to=want))
                source = cast
            parts.append(source)
        out = f"input/{item.name}"
        if len(parts) == 1:
            nodes.append(helper.make_node("Identity", parts, [out], name=out))
        else:
            nodes.append(helper.make_node("Concat", parts, [out], name=out, axis=1))
        rows: int | str = 1 if item.level == "user" and not pair else NUM_CANDIDATES
        width = sum(widths[t] for t in item.tensors)
        outputs.append(helper.make_tensor_value_info(out, want, [rows, width]))
        names.append(out)
    graph = helper.make_graph(nodes, f"{tier.name}_adapter", inputs, outputs, initializers)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    return model, names


def wrap_onnx_file(
    tier: TierSpec, spec: Spec, out_path: Path, opset: int, statistics: Statistics | None = None
) -> None:
    """Write an ONNX tier as the toolkit deploys every tier: five request inputs, ``score`` FP32 [N].

    The adapter (built with ``onnx.helper``, the same computation as
    :class:`~toolkit.models.user.InputAdapter`: casts, concatenations, and for a per-pair model the
    user tensors expanded to N rows) is merged in front of the user's graph with
    :func:`onnx.compose.merge_models`; every name of the user's graph is prefixed with
    :data:`USER_PREFIX`. The adapter is written in the user's default-domain opset and IR version,
    so the user's graph is never converted, unless its opset predates the adapter's ops (below 8),
    when it is converted to ``opset``. Behind the user's output: Cast to FP32 (if it is FP16, FP64
    or BF16), Reshape to [-1], and Sigmoid when ``model.output`` is ``logit``. All five request
    tensors stay graph inputs, even those the model does not use.

    Args:
        tier: An ONNX tier (``model.onnx``).
        spec: The spec, for the request tensors' widths.
        out_path: ``model.onnx`` to write (external data beside it past 1.5 GB of weights).
        opset: Opset the user's file is converted to when it is older than 8, and the one imported
            when it imports no default domain at all.
        statistics: The preprocess step's dense statistics; needed when an input takes raw dense
            values (``x * std + mean`` in the adapter).

    Raises:
        UserModelError: The file does not pass :func:`check_onnx_file`, cannot be converted, or the
            merged model fails ``onnx.checker``.
    """
    user = _reconcile(tier, check_onnx_file(tier, spec), opset)
    assert tier.model is not None
    version = _default_opset(user)
    assert version is not None
    # Initializers listed as inputs would stay inputs of the merged graph; they are weights.
    real = {value.name for value in _graph_inputs(user.graph)}
    kept = [value for value in user.graph.input if value.name in real]
    del user.graph.input[:]
    user.graph.input.extend(kept)
    user_output = user.graph.output[0]
    out_type = user_output.type.tensor_type.elem_type
    user = onnx.compose.add_prefix(user, USER_PREFIX, rename_functions=False)
    adapter, adapter_outputs = _adapter_model(tier, spec, version, user.ir_version, statistics)
    io_map = [
        (out, USER_PREFIX + item.name) for out, item in zip(adapter_outputs, tier.model.inputs, strict=True)
    ]
    try:
        merged = onnx.compose.merge_models(
            adapter, user, io_map, producer_name="adaptive-ranking-toolkit", doc_string=""
        )
    except (ValueError, onnx.checker.ValidationError) as exc:
        raise tier_error(
            tier.name, f"cannot merge the input adapter with the ONNX file ({first_line(exc)})"
        ) from None
    graph = merged.graph
    source = USER_PREFIX + user_output.name
    if out_type != TensorProto.FLOAT:
        graph.node.append(
            helper.make_node("Cast", [source], ["score/float"], name="score/float", to=TensorProto.FLOAT)
        )
        source = "score/float"
    graph.initializer.append(numpy_helper.from_array(np.array([-1], np.int64), "score/flat_shape"))
    flat = SCORE if tier.model.output == "probability" else "score/logit"
    graph.node.append(helper.make_node("Reshape", [source, "score/flat_shape"], [flat], name="score/flat"))
    if tier.model.output == "logit":
        graph.node.append(helper.make_node("Sigmoid", [flat], [SCORE], name="score/sigmoid"))
    del graph.output[:]
    graph.output.append(helper.make_tensor_value_info(SCORE, TensorProto.FLOAT, [NUM_CANDIDATES]))
    graph.name = tier.name
    try:
        onnx.checker.check_model(merged)
    except (onnx.checker.ValidationError, ValueError) as exc:
        raise tier_error(tier.name, f"the wrapped ONNX model is not valid ({first_line(exc)})") from None
    out_path.parent.mkdir(parents=True, exist_ok=True)
    weights = sum(
        numpy_helper.to_array(t).nbytes if not t.raw_data else len(t.raw_data) for t in graph.initializer
    )
    if weights > _EXTERNAL_DATA_BYTES:
        onnx.save(merged, str(out_path), save_as_external_data=True, location=f"{out_path.name}.data")
    else:
        onnx.save(merged, str(out_path))


# ------------------------------------------------------------------------------------- reference


class OnnxFileTier(nn.Module):
    """The reference of an ONNX tier: the adapter in PyTorch, the user's original file in ONNX Runtime.

    It takes the five preprocessed request tensors of one request (user tensors [1, ...]) and
    returns click probabilities [N], through :func:`~toolkit.models.user.as_probabilities`, so a
    wrong output shape is reported as for a PyTorch user model. Works with
    :func:`~toolkit.models.user.check_outputs`.

    Attributes:
        tier_name: The tier's name.
        adapter: Builds the model's inputs from the request tensors.
        session: ONNX Runtime CPU session of the user's file.
    """

    def __init__(
        self, tier: TierSpec, spec: Spec, threads: int = 1, statistics: Statistics | None = None
    ) -> None:
        """Check the tier's file (:func:`check_onnx_file`) and open it in ONNX Runtime.

        Raises:
            UserModelError: The file does not fit the mapping, or ONNX Runtime cannot load it.
        """
        super().__init__()
        check_onnx_file(tier, spec)
        assert tier.model is not None
        self.tier_name = tier.name
        self.spec = tier.model
        self.adapter = InputAdapter(tier.model, statistics)
        try:
            self.session = cpu_session(tier.model.onnx, threads)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime fails in many ways
            raise tier_error(
                tier.name, f"ONNX Runtime cannot load {tier.model.onnx!r} ({first_line(exc)})"
            ) from None
        self.output_names = [o.name for o in self.session.get_outputs()]

    def forward(
        self,
        user_dense: torch.Tensor,
        user_sparse: torch.Tensor,
        user_history: torch.Tensor,
        ad_dense: torch.Tensor,
        ad_sparse: torch.Tensor,
    ) -> torch.Tensor:
        """Click probabilities [N] for one request (user tensors with leading dim 1).

        Raises:
            UserModelError: ONNX Runtime fails on the inputs, or the output is not [N] or [N, 1].
        """
        with torch.no_grad():
            inputs = self.adapter(user_dense, user_sparse, user_history, ad_dense, ad_sparse)
        feeds = {name: t.contiguous().numpy() for name, t in zip(self.adapter.names, inputs, strict=True)}
        try:
            outputs = self.session.run(self.output_names, feeds)
        except Exception as exc:  # noqa: BLE001 - ONNX Runtime fails in many ways
            raise tier_error(
                self.tier_name, f"ONNX Runtime fails on the mapped inputs ({first_line(exc)})"
            ) from None
        result: Any = [torch.from_numpy(np.asarray(o)) for o in outputs]
        return as_probabilities(self.tier_name, result, ad_dense.shape[0], self.spec.output)


# ------------------------------------------------------------------------------------ per-pair cost
