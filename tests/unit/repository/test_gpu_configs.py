"""Unit tests of the GPU-target tier configs in toolkit.repository.configs.

The expected files ``tests/unit/expected/tier_gpu_*.pbtxt`` were generated once from the code and
then read against the Triton onnxruntime backend's parameter list and the TensorRT EP's profile
format; a change to any generated config must show up here as a failing test.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import text_format
from helpers import CONFIG_FEATURES, CONFIG_TIERS
from tritonclient.grpc import model_config_pb2 as mc

from toolkit.data.requests import candidate_inputs, request_dims
from toolkit.errors import RepositoryError
from toolkit.repository import configs
from toolkit.spec import Spec, spec_from_dict

EXPECTED = Path(__file__).resolve().parent / "expected"

GPU_SPEC: dict[str, Any] = {
    "name": "shop",
    "features": CONFIG_FEATURES,
    "tiers": CONFIG_TIERS,
    "routing": {"policy": "static", "default_tier": "small"},
    "export": {"tensorrt": {"opt_candidates": 8, "workspace_mb": 256}},
    "triton": {"max_candidates": 16, "router_instances": 3, "tier_instances": 2, "target": "gpu"},
}


def make_spec(export_tensorrt: dict[str, int] | None = None, max_candidates: int = 16) -> Spec:
    data = copy.deepcopy(GPU_SPEC)
    if export_tensorrt is not None:
        data["export"]["tensorrt"] = export_tensorrt
    data["triton"]["max_candidates"] = max_candidates
    return spec_from_dict(data, source="shop.yaml")


@pytest.fixture(scope="module")
def spec() -> Spec:
    return make_spec()


BUILDERS: dict[str, Callable[[Spec], mc.ModelConfig]] = {
    "tier_gpu_trt_fp16": lambda s: configs.gpu_tier_config(s, "big", "trt-fp16"),
    "tier_gpu_onnx_fp16": lambda s: configs.gpu_tier_config(s, "big", "onnx-fp16"),
    "tier_gpu_onnx_int8_static": lambda s: configs.gpu_tier_config(s, "big", "onnx-int8-static"),
}
TRT_VARIANTS = ("trt-fp16", "trt-int8", "trt-fp8")
ONNX_PRECISION = {"onnx-fp32": "FP32", "onnx-fp16": "FP16", "onnx-int8-static": "INT8"}


def parsed(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def dims(tensors: object) -> dict[str, list[int]]:
    return {t.name: list(t.dims) for t in tensors}


def trt_parameters(config: mc.ModelConfig) -> dict[str, str]:
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    return dict(accelerator.parameters)


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_gpu_config_text_equals_the_expected_file_when_built_for_the_fixed_spec(
    spec: Spec, name: str
) -> None:
    text = text_format.MessageToString(BUILDERS[name](spec))

    assert text == (EXPECTED / f"{name}.pbtxt").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_expected_gpu_file_parses_back_into_the_same_model_config_when_read(spec: Spec, name: str) -> None:
    message = parsed((EXPECTED / f"{name}.pbtxt").read_text(encoding="utf-8"))

    assert message == BUILDERS[name](spec)


def test_gpu_variants_are_the_catalogue_variants_that_run_on_gpu_when_listed() -> None:
    listed = configs.GPU_VARIANTS

    assert listed == ("onnx-fp32", "onnx-fp16", "onnx-int8-static", *TRT_VARIANTS)


@pytest.mark.parametrize("variant", configs.GPU_VARIANTS)
def test_gpu_tier_config_round_trips_with_preprocessed_tensors_on_gpu_instances_when_built(
    spec: Spec, variant: str
) -> None:
    config = configs.gpu_tier_config(spec, "big", variant)

    message = parsed(text_format.MessageToString(config))

    assert message == config
    assert message.name == "big"
    assert message.max_batch_size == 0
    cpu = configs.tier_config(spec, "big", "onnxruntime")
    expected = request_dims(spec.features, raw=False)
    assert dims(message.input) == {name: shape for name, (_, shape) in expected.items()}
    assert dims(cpu.input)["user_history"] == [1, -1]
    assert list(message.output) == list(cpu.output)
    assert dims(message.output) == {"score": [-1]} and message.output[0].data_type == mc.TYPE_FP32
    assert [(g.count, g.kind) for g in message.instance_group] == [(2, mc.ModelInstanceGroup.KIND_GPU)]


@pytest.mark.parametrize("variant", TRT_VARIANTS)
def test_trt_variant_config_runs_a_plan_on_the_tensorrt_platform_when_built(spec: Spec, variant: str) -> None:
    config = configs.gpu_tier_config(spec, "big", variant)

    assert config.platform == "tensorrt_plan"
    assert config.backend == ""
    assert config.default_model_filename == "model.plan"
    assert not config.HasField("optimization")


@pytest.mark.parametrize(("variant", "precision"), sorted(ONNX_PRECISION.items()))
def test_onnx_variant_config_uses_the_tensorrt_accelerator_at_its_precision_when_built(
    spec: Spec, variant: str, precision: str
) -> None:
    config = configs.gpu_tier_config(spec, "big", variant)

    assert config.backend == "onnxruntime" and config.platform == ""
    assert config.default_model_filename == "model.onnx"
    params = trt_parameters(config)
    assert params["precision_mode"] == precision
    assert params["max_workspace_size_bytes"] == str(256 * 1024 * 1024)
    assert params["trt_engine_cache_enable"] == "1"
    assert params["trt_engine_cache_path"] == f"/tmp/triton_trt_cache/big/{variant}"


@pytest.mark.parametrize("variant", configs.GPU_VARIANTS)
def test_warmup_sends_zero_ids_and_random_features_at_opt_candidates_when_built(
    spec: Spec, variant: str
) -> None:
    config = configs.gpu_tier_config(spec, "big", variant)

    (sample,) = config.model_warmup
    assert sample.batch_size == 1  # Triton: models without batching need batch_size 1
    assert {k: list(v.dims) for k, v in sample.inputs.items()} == {
        "user_dense": [1, 3],
        "user_sparse": [1, 2],
        "user_history": [1, 6],
        "ad_dense": [8, 2],
        "ad_sparse": [8, 3],
    }
    for name, tensor in sample.inputs.items():
        if tensor.data_type == mc.TYPE_INT64:
            assert tensor.WhichOneof("input_data_type") == "zero_data", name
        else:
            assert tensor.data_type == mc.TYPE_FP32
            assert tensor.WhichOneof("input_data_type") == "random_data", name
    assert {t.name: t.data_type for t in config.input} == {k: v.data_type for k, v in sample.inputs.items()}


def test_profile_shapes_cover_only_the_candidate_inputs_when_built(spec: Spec) -> None:
    params = trt_parameters(configs.gpu_tier_config(spec, "big", "onnx-fp32"))

    assert candidate_inputs(spec.features) == ("ad_dense", "ad_sparse")
    assert params["trt_profile_min_shapes"] == "ad_dense:1x2,ad_sparse:1x3"
    assert params["trt_profile_opt_shapes"] == "ad_dense:8x2,ad_sparse:8x3"
    assert params["trt_profile_max_shapes"] == "ad_dense:16x2,ad_sparse:16x3"


@pytest.mark.parametrize(
    ("export_tensorrt", "max_candidates", "bounds"),
    [
        ({"opt_candidates": 32}, 512, (1, 32, 512)),
        ({"opt_candidates": 32, "max_candidates": 96}, 512, (1, 32, 96)),
        ({}, 16, (1, 16, 16)),  # the default opt (64) is capped at the served maximum
    ],
    ids=["triton-max", "export-max", "opt-capped"],
)
def test_profile_bounds_and_warmup_follow_the_spec_when_its_limits_change(
    export_tensorrt: dict[str, int], max_candidates: int, bounds: tuple[int, int, int]
) -> None:
    spec = make_spec(export_tensorrt, max_candidates)
    low, opt, high = bounds

    onnx = configs.gpu_tier_config(spec, "small", "onnx-fp16")
    plan = configs.gpu_tier_config(spec, "small", "trt-fp16")

    assert configs.tensorrt_profile(spec) == bounds
    params = trt_parameters(onnx)
    assert params["trt_profile_min_shapes"] == f"ad_dense:{low}x2,ad_sparse:{low}x3"
    assert params["trt_profile_opt_shapes"] == f"ad_dense:{opt}x2,ad_sparse:{opt}x3"
    assert params["trt_profile_max_shapes"] == f"ad_dense:{high}x2,ad_sparse:{high}x3"
    for config in (onnx, plan):
        assert list(config.model_warmup[0].inputs["ad_sparse"].dims) == [opt, 3]


def test_workspace_follows_the_spec_when_it_changes() -> None:
    spec = make_spec({"opt_candidates": 8, "workspace_mb": 2048})

    params = trt_parameters(configs.gpu_tier_config(spec, "big", "onnx-int8-static"))

    assert params["max_workspace_size_bytes"] == str(2048 << 20)


def test_engine_cache_path_names_tier_variant_and_model_digest_when_a_digest_is_given(spec: Spec) -> None:
    digest = "0123456789abcdef" + "f" * 48

    config = configs.gpu_tier_config(
        spec, "big", "onnx-fp16", model_sha256=digest, engine_cache_root="/var/cache/trt/"
    )

    assert trt_parameters(config)["trt_engine_cache_path"] == "/var/cache/trt/big/onnx-fp16/0123456789abcdef"


@pytest.mark.parametrize("root", ["cache/trt", "", "/"])
def test_gpu_tier_config_raises_repository_error_when_the_cache_root_is_not_absolute(
    spec: Spec, root: str
) -> None:
    with pytest.raises(RepositoryError, match="engine_cache_root"):
        configs.gpu_tier_config(spec, "big", "onnx-fp16", engine_cache_root=root)


@pytest.mark.parametrize(
    "variant", ["onnx-int8-dynamic", "onnx-emb-int8", "onnx-emb-int4", "onnx-int8-emb-int4"]
)
def test_gpu_tier_config_raises_repository_error_naming_the_variant_when_it_is_cpu_only(
    spec: Spec, variant: str
) -> None:
    with pytest.raises(RepositoryError) as info:
        configs.gpu_tier_config(spec, "big", variant)

    message = str(info.value)
    assert repr(variant) in message and "cannot run on a GPU" in message
    for gpu_variant in configs.GPU_VARIANTS:
        assert gpu_variant in message


def test_gpu_tier_config_raises_repository_error_when_the_variant_is_unknown(spec: Spec) -> None:
    with pytest.raises(RepositoryError, match="'trt-int4' of tier 'big' is not a known variant.*trt-fp16"):
        configs.gpu_tier_config(spec, "big", "trt-int4")


def test_gpu_tier_config_raises_repository_error_when_the_tier_is_unknown(spec: Spec) -> None:
    with pytest.raises(RepositoryError, match="unknown tier 'huge'.*small, big"):
        configs.gpu_tier_config(spec, "huge", "trt-fp16")


@pytest.mark.parametrize("variant", ["onnx-fp32", "onnx-fp16", "onnx-int8-static"])
def test_export_times_onnx_variants_on_the_tensorrt_provider_as_the_gpu_config_deploys_them(
    spec: Spec, variant: str, tmp_path
) -> None:
    from toolkit.export.build import tensorrt_provider_options

    deployed = trt_parameters(configs.gpu_tier_config(spec, "big", variant))
    options = tensorrt_provider_options(spec, variant, tmp_path)

    # Triton's onnxruntime backend: precision_mode FP16 -> trt_fp16_enable, INT8 -> trt_int8_enable.
    assert options["trt_fp16_enable"] is (deployed["precision_mode"] == "FP16")
    assert options["trt_int8_enable"] is (deployed["precision_mode"] == "INT8")
    assert str(options["trt_max_workspace_size"]) == deployed["max_workspace_size_bytes"]
    for bound in ("min", "opt", "max"):
        key = f"trt_profile_{bound}_shapes"
        assert options[key] == deployed[key]
    assert options["trt_engine_cache_enable"] is True and options["trt_engine_cache_path"] == str(tmp_path)


def test_a_gpu_tier_with_its_own_instance_count_gets_that_many_gpu_instances() -> None:
    data = copy.deepcopy(GPU_SPEC)
    big = next(t for t in data["tiers"] if t["name"] == "big")
    big["instances"] = 3

    config = configs.gpu_tier_config(spec_from_dict(data), "big", "trt-fp16")

    assert [(g.count, g.kind) for g in config.instance_group] == [(3, mc.ModelInstanceGroup.KIND_GPU)]
