"""Preprocess fused into a model: one ONNX graph from the raw request tensors to the model's outputs.

``toolkit deploy`` writes every CPU tier (and the learned policy's gate) this way, so a routed
request runs no separate preprocess step and a tier can be called directly with what a client
sends. The fitted preprocess graph is composed in front with ``onnx.compose``: its outputs feed the
model's request inputs, and any other input of the model (the gate's ``cheapest_score``) stays an
input of the fused graph.
"""

from __future__ import annotations

from pathlib import Path

import onnx
from onnx import compose, version_converter

from toolkit.data.requests import REQUEST_TENSORS
from toolkit.errors import RepositoryError
from toolkit.export.names import PREPROCESSED

PREFIX = "pre_"
"""Prefix of the preprocess graph's node and value names inside a fused model."""

_EXTERNAL_DATA_BYTES = 1_500_000_000


def fuse_preprocess(preprocess: onnx.ModelProto, model: onnx.ModelProto) -> onnx.ModelProto:
    """``model`` with ``preprocess`` composed in front of its request inputs.

    The fused graph's inputs are the raw request tensors (named as the request's), then ``model``'s
    other inputs; its outputs are ``model``'s. When the two use different versions of the default
    operator set, the preprocess graph is converted to the model's (``onnx.version_converter``).

    Raises:
        RepositoryError: A request input of ``model`` is missing, or the two graphs cannot be composed
            (an operator set the preprocess graph cannot be converted to, say).
    """
    inputs = {i.name for i in model.graph.input}
    missing = [name for name in REQUEST_TENSORS if name not in inputs]
    if missing:
        raise RepositoryError(f"cannot fuse the preprocess step: the model has no input {missing[0]!r}")
    back = onnx.ModelProto()
    back.CopyFrom(model)
    _dedupe_opsets(back)
    front = _at_opset(preprocess, _opset(back))
    front = compose.add_prefix(front, PREFIX, rename_inputs=False, rename_outputs=True)
    ir_version = max(front.ir_version, back.ir_version)
    front.ir_version = back.ir_version = ir_version
    io_map = [(PREFIX + PREPROCESSED[name], name) for name in REQUEST_TENSORS]
    try:
        fused = compose.merge_models(front, back, io_map=io_map, outputs=[o.name for o in model.graph.output])
    except (ValueError, onnx.checker.ValidationError) as exc:
        raise RepositoryError(f"cannot fuse the preprocess step into the model: {exc}") from None
    _dedupe_opsets(fused)
    fused.graph.name = model.graph.name or "fused"
    _order_inputs(fused, [name for name in REQUEST_TENSORS] + [i.name for i in model.graph.input])
    return fused


def _opset(model: onnx.ModelProto) -> int | None:
    return next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)


def _dedupe_opsets(model: onnx.ModelProto) -> None:
    """One import per operator-set domain (the highest version), as ``onnx.compose`` needs."""
    versions: dict[str, int] = {}
    for o in model.opset_import:
        versions[o.domain] = max(versions.get(o.domain, 0), o.version)
    del model.opset_import[:]
    model.opset_import.extend(onnx.helper.make_opsetid(d, v) for d, v in versions.items())


def _at_opset(model: onnx.ModelProto, version: int | None) -> onnx.ModelProto:
    """``model`` converted to ``version`` of the default operator set (itself when it already is)."""
    copy = onnx.ModelProto()
    copy.CopyFrom(model)
    _dedupe_opsets(copy)
    if version is None or _opset(copy) in (None, version):
        return copy
    try:
        return version_converter.convert_version(copy, version)
    except Exception as exc:
        raise RepositoryError(
            f"cannot fuse the preprocess step: its graph (opset {_opset(copy)}) cannot be converted to "
            f"the model's opset {version}: {str(exc).strip().splitlines()[-1]}"
        ) from None


def _order_inputs(model: onnx.ModelProto, order: list[str]) -> None:
    rank = {name: i for i, name in enumerate(dict.fromkeys(order))}
    inputs = sorted(model.graph.input, key=lambda i: rank.get(i.name, len(rank)))
    del model.graph.input[:]
    model.graph.input.extend(inputs)


def fuse_files(preprocess: Path, model: Path, out: Path) -> None:
    """Write ``model`` fused with ``preprocess`` (see :func:`fuse_preprocess`) to ``out``.

    A fused model larger than protobuf's limit keeps its weights in ``<out>.data`` beside it.

    Raises:
        RepositoryError: A file is unreadable or the graphs cannot be composed.
    """
    try:
        front, back = onnx.load(str(preprocess)), onnx.load(str(model))
    except (OSError, ValueError) as exc:
        raise RepositoryError(f"{model}: cannot read it to fuse the preprocess step: {exc}") from None
    fused = fuse_preprocess(front, back)
    out.parent.mkdir(parents=True, exist_ok=True)
    if fused.ByteSize() > _EXTERNAL_DATA_BYTES:
        onnx.save_model(
            fused,
            str(out),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=out.name + ".data",
        )
    else:
        onnx.save_model(fused, str(out))
