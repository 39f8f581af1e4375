"""PyTorch -> ONNX with a dynamic candidate dimension, for tiers and for the preprocess step."""

from __future__ import annotations

import contextlib
import io
import logging
import warnings
from pathlib import Path

import torch
from torch import nn

from toolkit.data.requests import REQUEST_TENSORS
from toolkit.errors import ExportError
from toolkit.export.names import PREPROCESSED, SCORE
from toolkit.models.preprocess import Preprocess

log = logging.getLogger(__name__)

_EXTERNAL_DATA_BYTES = 1_500_000_000


def _example(tensors: dict[str, torch.Tensor]) -> tuple[torch.Tensor, ...]:
    return tuple(tensors[name] for name in REQUEST_TENSORS)


def export_module(
    model: torch.nn.Module,
    example: tuple[torch.Tensor, ...],
    path: Path,
    output_names: list[str],
    dynamic_shapes: dict[str, dict[int, torch.export.Dim] | None],
    opset: int,
    input_names: list[str] | None = None,
) -> None:
    """Export ``model`` with the dynamo exporter, its chatter silenced, to ``path``.

    Args:
        model: Module in eval mode.
        example: Example inputs.
        path: ONNX file to write (external data past 1.5 GB).
        output_names: Graph output names.
        dynamic_shapes: Dynamic dims per input, by input name.
        opset: ONNX opset version.
        input_names: Graph input names (default: the request tensors).

    Raises:
        ExportError: The exporter failed; the message carries its first line.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    size += sum(b.numel() * b.element_size() for b in model.buffers())
    sink = io.StringIO()
    noisy = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = noisy.level
    noisy.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(sink):
            warnings.simplefilter("ignore")
            program = torch.onnx.export(
                model,
                example,
                input_names=input_names or list(REQUEST_TENSORS),
                output_names=output_names,
                dynamic_shapes=dynamic_shapes,
                opset_version=opset,
                dynamo=True,
                verbose=False,
            )
            program.save(str(path), external_data=size > _EXTERNAL_DATA_BYTES)
    except Exception as exc:
        detail = str(exc).strip().splitlines()
        raise ExportError(
            f"ONNX export to {path} failed: {type(exc).__name__}: {detail[0] if detail else ''}"
        ) from exc
    finally:
        noisy.setLevel(level)
    log.debug("exporter output for %s:\n%s", path, sink.getvalue())


def export_tier(model: nn.Module, example: dict[str, torch.Tensor], path: Path, opset: int) -> None:
    """Export a tier for one request: user tensors [1, ...], candidate tensors [N, ...], N dynamic.

    Args:
        model: The trained tier, in eval mode.
        example: Preprocessed inputs of one request with N >= 2 (tracing needs a non-trivial N).
        path: ``model.onnx`` to write.
        opset: ONNX opset version.

    Raises:
        ExportError: The exporter failed; the message carries its first line.
    """
    n = torch.export.Dim("num_candidates", min=1, max=1 << 20)
    shapes = {name: None for name in REQUEST_TENSORS}
    shapes.update(ad_dense={0: n}, ad_sparse={0: n})
    export_module(model.eval(), _example(example), path, [SCORE], shapes, opset)


def export_preprocess(
    preprocess: Preprocess, example: dict[str, torch.Tensor], path: Path, opset: int
) -> None:
    """Export the preprocess step: N dynamic and the raw history length dynamic too.

    Args:
        preprocess: The fitted preprocess module.
        example: Raw inputs of one request, N >= 2 and history length >= 2.
        path: ``model.onnx`` to write.
        opset: ONNX opset version.
    """
    n = torch.export.Dim("num_candidates", min=1, max=1 << 20)
    history = torch.export.Dim("history_length", min=1, max=1 << 16)
    shapes = {name: None for name in REQUEST_TENSORS}
    shapes.update(ad_dense={0: n}, ad_sparse={0: n}, user_history={1: history})
    outputs = [PREPROCESSED[name] for name in REQUEST_TENSORS]
    export_module(preprocess.eval(), _example(example), path, outputs, shapes, opset)
