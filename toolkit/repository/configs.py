"""Triton model configs built as ``model_config_pb2.ModelConfig`` messages (valid by construction)."""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2 as mc

from toolkit.data.requests import REQUEST_TENSORS, candidate_inputs, request_dims
from toolkit.errors import RepositoryError
from toolkit.export.names import PREPROCESSED, SCORE
from toolkit.export.tensorrt import accelerator_profile_shapes, tensorrt_profile
from toolkit.ngc import ENGINE_CACHE_ROOT
from toolkit.spec.schema import Spec
from toolkit.spec.variants import GPU, ORT_TRT_PRECISION, VARIANTS

TIER_OUTPUT = "tier"
"""Second output of the router and the ensemble: index of the tier that scored each candidate."""

_DTYPES = {"FP32": mc.TYPE_FP32, "INT64": mc.TYPE_INT64, "INT32": mc.TYPE_INT32}


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


def tier_config(spec: Spec, tier: str, backend: str, raw: bool = True) -> mc.ModelConfig:
    """Config of one CPU tier: request tensors in, ``score`` [N] out.

    Args:
        spec: The ensemble spec.
        tier: The tier.
        backend: ``onnxruntime`` or ``python``.
        raw: Whether the tier takes the raw request (the preprocess step fused in front) or the
            preprocessed tensors.
    """
    dims = request_dims(spec.features, raw=raw)
    return onnx_model_config(
        tier, backend, dims, {SCORE: ("FP32", [-1])}, spec.tier_instances(tier), spec.triton.tier_threads
    )


def preprocess_config(spec: Spec, backend: str) -> mc.ModelConfig:
    """Config of the preprocess step: raw request tensors in, preprocessed ones out."""
    raw = request_dims(spec.features, raw=True)
    done = request_dims(spec.features, raw=False)
    outputs = {PREPROCESSED[k]: done[k] for k in REQUEST_TENSORS}
    return onnx_model_config(
        spec.preprocess_model, backend, raw, outputs, spec.triton.tier_instances, spec.triton.tier_threads
    )


def gate_config(spec: Spec, backend: str, cheapest_first: bool) -> mc.ModelConfig:
    """Config of the learned policy's gate: request tensors in, ``gains`` [1, T - 1] out.

    The inputs are the raw request tensors (the preprocess step is fused in front) and, cheapest
    first, the cheapest tier's scores ``cheapest_score`` [N].
    """
    from toolkit.repository.gate import CHEAPEST_SCORE, GATE_OUTPUT

    inputs = dict(request_dims(spec.features, raw=True))
    if cheapest_first:
        inputs[CHEAPEST_SCORE] = ("FP32", [-1])
    return onnx_model_config(
        spec.gate_model,
        backend,
        inputs,
        {GATE_OUTPUT: ("FP32", [1, len(spec.tiers) - 1])},
        spec.triton.tier_instances,
        spec.triton.tier_threads,
    )


def router_config(spec: Spec) -> mc.ModelConfig:
    """Config of the router (python backend), the ensemble's only step and its admission point.

    It takes the raw request, validates it and scores it with a tier: in its own process, through
    BLS, or over gRPC. With ``triton.admission: router`` (the default) there is no dynamic batcher:
    on the 2.51 server it costs a thread hop per request and, when a request arrives while no router
    instance waits for work, leaves it queued until the next arrival or 0.5 s; the router sheds
    requests itself while they wait past ``triton.queue_timeout_ms`` (see
    :mod:`toolkit.router.load`). With ``batcher``, ``max_batch_size`` is 1 only so that the router
    can have Triton's queue policy (kept in the dynamic batcher): Triton adds a leading dimension of
    1 to every tensor, which the router drops, and rejects a request that waited
    ``triton.queue_timeout_ms`` with UNAVAILABLE without running it; a client's request ``timeout``
    may shorten the wait. No ``max_queue_size``: on the 2.51 server a full queue stalls the batcher
    for 0.5 s at a time. The response cache stays off: its key ignores request parameters, so a
    cached answer for one ``tier`` would be returned for another.
    """
    batcher = spec.triton.admission == "batcher"
    config = mc.ModelConfig(name=spec.router_model, backend="python", max_batch_size=int(batcher))
    _inputs(config, request_dims(spec.features, raw=True), {})
    config.output.add(name=SCORE, data_type=mc.TYPE_FP32, dims=[-1])
    config.output.add(name=TIER_OUTPUT, data_type=mc.TYPE_INT32, dims=[-1])
    if batcher:
        batching = config.dynamic_batching
        batching.SetInParent()
        if spec.triton.queue_timeout_ms > 0:
            policy = batching.default_queue_policy
            policy.timeout_action = mc.ModelQueuePolicy.REJECT
            policy.default_timeout_microseconds = int(round(spec.triton.queue_timeout_ms * 1000))
            policy.allow_timeout_override = True
    _cpu_instances(config, spec.triton.router_instances)
    config.response_cache.enable = False
    return config


def ensemble_config(spec: Spec) -> mc.ModelConfig:
    """Config of the entry point: the raw request -> the router -> ``score``, ``tier``.

    One step: the router runs everything after its queue admitted the request, so an overloaded
    server rejects a request before spending anything on it.
    """
    config = mc.ModelConfig(name=spec.name, platform="ensemble", max_batch_size=0)
    _inputs(config, request_dims(spec.features, raw=True), {})
    config.output.add(name=SCORE, data_type=mc.TYPE_FP32, dims=[-1])
    config.output.add(name=TIER_OUTPUT, data_type=mc.TYPE_INT32, dims=[-1])
    route = config.ensemble_scheduling.step.add(model_name=spec.router_model, model_version=-1)
    for key in REQUEST_TENSORS:
        route.input_map[key] = key
    route.output_map[SCORE] = SCORE
    route.output_map[TIER_OUTPUT] = TIER_OUTPUT
    return config


# --- GPU targets: TensorRT plans, or ONNX Runtime with its TensorRT execution accelerator ---------
# ``tensorrt_profile`` (imported above from toolkit.export.tensorrt) is the one source of the
# (min, opt, max) candidate range for both the engines export builds and these configs.

GPU_VARIANTS = tuple(
    name
    for name, info in VARIANTS.items()
    if GPU in info.targets and (info.engine == "tensorrt" or name in ORT_TRT_PRECISION)
)
"""Variants :func:`gpu_tier_config` can deploy, in catalogue order."""


def _warmup(config: mc.ModelConfig, dims: dict[str, tuple[str, list[int]]], n: int) -> None:
    """One warmup request with N = ``n``: random FP32 features, all-zero ids.

    Random ids would fall outside the embedding tables (tiers see preprocessed ids only); id 0 is
    every table's "missing" row.
    """
    sample = config.model_warmup.add(name=f"candidates_{n}", batch_size=1)  # 1: no batching
    for key, (dtype, shape) in dims.items():
        tensor = sample.inputs[key]
        tensor.data_type = _DTYPES[dtype]
        tensor.dims.extend(n if i == 0 and d == -1 else d for i, d in enumerate(shape))
        if dtype == "FP32":
            tensor.random_data = True
        else:
            tensor.zero_data = True


def _check_gpu(spec: Spec, tier: str, variant: str) -> None:
    if tier not in spec.tier_names:
        raise RepositoryError(f"unknown tier {tier!r}; the spec has {', '.join(spec.tier_names)}.")
    if variant not in GPU_VARIANTS:
        what = "is not a known variant" if variant not in VARIANTS else "cannot run on a GPU"
        raise RepositoryError(
            f"variant {variant!r} of tier {tier!r} {what}; variants that can: {', '.join(GPU_VARIANTS)}."
        )


def gpu_tier_config(
    spec: Spec,
    tier: str,
    variant: str,
    *,
    model_sha256: str = "",
    engine_cache_root: str = ENGINE_CACHE_ROOT,
) -> mc.ModelConfig:
    """Config of one tier on GPU instances: a TensorRT plan, or ONNX Runtime with TensorRT.

    ``trt-*`` variants run ``model.plan`` on the ``tensorrt_plan`` platform. ``onnx-fp32``,
    ``onnx-fp16`` and ``onnx-int8-static`` run ``model.onnx`` on the onnxruntime backend with its
    TensorRT execution accelerator (precision FP32, FP16 or INT8), the workspace limit of
    ``export.tensorrt.workspace_mb``, an engine cache, and the optimization profile of
    :func:`tensorrt_profile` over the candidate inputs (ONNX Runtime requires every dynamic input in
    an explicit profile; the tier's only dynamic inputs are the candidate ones). Both kinds warm up
    with one request at N = the profile's opt.

    Args:
        spec: The ensemble spec.
        tier: Tier name (the Triton model name).
        variant: A variant in :data:`GPU_VARIANTS`.
        model_sha256: sha256 of the deployed ``model.onnx``; when given, its first 16 hex digits name
            the engine cache folder, so a re-exported model never picks up an engine built from the
            old one (ONNX Runtime only rebuilds when the graph, not the weights, changes).
        engine_cache_root: Absolute folder on the server under which engine caches go.

    Raises:
        RepositoryError: The tier is unknown or the variant cannot run on a GPU.
    """
    _check_gpu(spec, tier, variant)
    if not engine_cache_root.startswith("/") or not engine_cache_root.strip("/"):
        raise RepositoryError(
            f"engine_cache_root must be an absolute folder below /, got {engine_cache_root!r}."
        )
    dims = request_dims(spec.features, raw=False)
    low, opt, high = tensorrt_profile(spec)
    if VARIANTS[variant].engine == "tensorrt":
        config = mc.ModelConfig(
            name=tier, platform="tensorrt_plan", max_batch_size=0, default_model_filename="model.plan"
        )
    else:
        config = mc.ModelConfig(
            name=tier, backend="onnxruntime", max_batch_size=0, default_model_filename="model.onnx"
        )
        names = candidate_inputs(spec.features)
        cache = "/".join(p for p in (engine_cache_root.rstrip("/"), tier, variant, model_sha256[:16]) if p)
        accelerators = config.optimization.execution_accelerators
        accelerator = accelerators.gpu_execution_accelerator.add(name="tensorrt")
        for key, value in {
            "precision_mode": ORT_TRT_PRECISION[variant],
            "max_workspace_size_bytes": str(spec.export.tensorrt.workspace_mb << 20),
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": cache,
            "trt_profile_min_shapes": accelerator_profile_shapes(spec.features, names, low),
            "trt_profile_opt_shapes": accelerator_profile_shapes(spec.features, names, opt),
            "trt_profile_max_shapes": accelerator_profile_shapes(spec.features, names, high),
        }.items():
            accelerator.parameters[key] = value
    _inputs(config, dims, {})
    config.output.add(name=SCORE, data_type=mc.TYPE_FP32, dims=[-1])
    config.instance_group.add(count=spec.tier_instances(tier), kind=mc.ModelInstanceGroup.KIND_GPU)
    _warmup(config, dims, opt)
    return config
