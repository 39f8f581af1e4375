"""Triton model configs built as ``model_config_pb2.ModelConfig`` messages (valid by construction)."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from toolkit.data.requests import REQUEST_TENSORS
from toolkit.export.onnx_export import PREPROCESSED, SCORE
from toolkit.spec.schema import Features, Spec

TIER_OUTPUT = "tier"
"""Second output of the router and the ensemble: index of the tier that scored each candidate."""

_DTYPES = {"FP32": mc.TYPE_FP32, "INT64": mc.TYPE_INT64, "INT32": mc.TYPE_INT32}


def request_dims(features: Features, raw: bool) -> dict[str, tuple[str, list[int]]]:
    """Data type and dims of each request tensor (``-1`` = any size).

    Args:
        features: The request schema.
        raw: Whether the tensors are what clients send (history of any length) or what the tiers
            take (history of exactly L).
    """
    history = -1 if raw else features.history.length
    return {
        "user_dense": ("FP32", [1, features.user_dense]),
        "user_sparse": ("INT64", [1, len(features.user_sparse)]),
        "user_history": ("INT64", [1, history]),
        "ad_dense": ("FP32", [-1, features.ad_dense]),
        "ad_sparse": ("INT64", [-1, len(features.ad_sparse)]),
    }


def _inputs(config: mc.ModelConfig, dims: dict[str, tuple[str, list[int]]], names: dict[str, str]) -> None:
    for key in REQUEST_TENSORS:
        dtype, shape = dims[key]
        config.input.add(name=names.get(key, key), data_type=_DTYPES[dtype], dims=shape)


def _cpu_instances(config: mc.ModelConfig, count: int) -> None:
    config.instance_group.add(count=count, kind=mc.ModelInstanceGroup.KIND_CPU)


def _parameters(config: mc.ModelConfig, values: dict[str, str]) -> None:
    for key, value in values.items():
        config.parameters[key].string_value = value


def onnx_model_config(
    name: str,
    backend: str,
    inputs: dict[str, tuple[str, list[int]]],
    outputs: dict[str, tuple[str, list[int]]],
    instances: int,
    threads: int = 1,
) -> mc.ModelConfig:
    """Config of a model that runs ``model.onnx``: a tier or the preprocess step.

    Args:
        name: Model name.
        backend: ``onnxruntime`` (the server's ONNX Runtime backend) or ``python`` (the toolkit's ONNX
            Runtime runner in the python backend).
        inputs: Input name -> (data type, dims).
        outputs: Output name -> (data type, dims).
        instances: CPU instances.
        threads: ONNX Runtime intra-op threads per instance.
    """
    config = mc.ModelConfig(name=name, backend=backend, max_batch_size=0)
    for key, (dtype, shape) in inputs.items():
        config.input.add(name=key, data_type=_DTYPES[dtype], dims=shape)
    for key, (dtype, shape) in outputs.items():
        config.output.add(name=key, data_type=_DTYPES[dtype], dims=shape)
    _cpu_instances(config, instances)
    if backend == "onnxruntime":
        config.default_model_filename = "model.onnx"
        _parameters(config, {"intra_op_thread_count": str(threads), "inter_op_thread_count": "1"})
    else:
        _parameters(config, {"onnx_file": "model.onnx", "intra_op_thread_count": str(threads)})
    return config


def tier_config(spec: Spec, tier: str, backend: str) -> mc.ModelConfig:
    """Config of one tier: preprocessed request tensors in, ``score`` [N] out."""
    dims = request_dims(spec.features, raw=False)
    return onnx_model_config(tier, backend, dims, {SCORE: ("FP32", [-1])}, spec.triton.tier_instances)


def preprocess_config(spec: Spec, backend: str) -> mc.ModelConfig:
    """Config of the preprocess step: raw request tensors in, preprocessed ones out."""
    raw = request_dims(spec.features, raw=True)
    done = request_dims(spec.features, raw=False)
    outputs = {PREPROCESSED[k]: done[k] for k in REQUEST_TENSORS}
    return onnx_model_config(spec.preprocess_model, backend, raw, outputs, spec.triton.tier_instances)


def router_config(spec: Spec) -> mc.ModelConfig:
    """Config of the BLS router (python backend).

    The response cache stays off: its key ignores request parameters, so a cached answer for one
    ``tier`` would be returned for another.
    """
    config = mc.ModelConfig(name=spec.router_model, backend="python", max_batch_size=0)
    _inputs(config, request_dims(spec.features, raw=False), {})
    config.output.add(name=SCORE, data_type=mc.TYPE_FP32, dims=[-1])
    config.output.add(name=TIER_OUTPUT, data_type=mc.TYPE_INT32, dims=[-1])
    _cpu_instances(config, spec.triton.router_instances)
    config.response_cache.enable = False
    return config


def ensemble_config(spec: Spec) -> mc.ModelConfig:
    """Config of the entry point: raw request -> preprocess -> router -> ``score``, ``tier``."""
    config = mc.ModelConfig(name=spec.name, platform="ensemble", max_batch_size=0)
    _inputs(config, request_dims(spec.features, raw=True), {})
    config.output.add(name=SCORE, data_type=mc.TYPE_FP32, dims=[-1])
    config.output.add(name=TIER_OUTPUT, data_type=mc.TYPE_INT32, dims=[-1])
    pre = config.ensemble_scheduling.step.add(model_name=spec.preprocess_model, model_version=-1)
    route = config.ensemble_scheduling.step.add(model_name=spec.router_model, model_version=-1)
    for key in REQUEST_TENSORS:
        pre.input_map[key] = key
        pre.output_map[PREPROCESSED[key]] = f"{key}__preprocessed"
        route.input_map[key] = f"{key}__preprocessed"
    route.output_map[SCORE] = SCORE
    route.output_map[TIER_OUTPUT] = TIER_OUTPUT
    return config
