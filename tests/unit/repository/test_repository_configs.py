"""Unit tests of toolkit.repository.configs: generated configs against stored expected .pbtxt files.

The expected files in ``tests/unit/expected`` were generated once from the code and then read
against DESIGN.md; a change to any generated config must show up here as a failing test.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest
from google.protobuf import text_format
from helpers import CONFIG_FEATURES, CONFIG_TIERS
from tritonclient.grpc import model_config_pb2 as mc

from toolkit.errors import SpecError
from toolkit.repository import configs
from toolkit.repository.plan import router_settings
from toolkit.spec import Spec, spec_from_dict

EXPECTED = Path(__file__).resolve().parent / "expected"

CONFIG_SPEC = {
    "name": "shop",
    "features": CONFIG_FEATURES,
    "tiers": CONFIG_TIERS,
    "routing": {
        "policy": "rules",
        "default_tier": "small",
        "rules": [{"feature": "history_length", "op": ">=", "value": 3, "tier": "big"}],
    },
    "triton": {"max_candidates": 16, "router_instances": 3, "tier_instances": 2},
}


@pytest.fixture(scope="module")
def spec() -> Spec:
    return spec_from_dict(CONFIG_SPEC, source="shop.yaml")


BUILDERS: dict[str, Callable[[Spec], mc.ModelConfig]] = {
    "tier_onnxruntime": lambda s: configs.tier_config(s, "big", "onnxruntime"),
    "tier_python": lambda s: configs.tier_config(s, "big", "python"),
    "preprocess_onnxruntime": lambda s: configs.preprocess_config(s, "onnxruntime"),
    "preprocess_python": lambda s: configs.preprocess_config(s, "python"),
    "router": configs.router_config,
    "router_batcher": lambda s: configs.router_config(
        dataclasses.replace(s, triton=dataclasses.replace(s.triton, admission="batcher"))
    ),
    "ensemble": configs.ensemble_config,
}

USER = ("user_dense", "user_sparse", "user_history")
CANDIDATE = ("ad_dense", "ad_sparse")


def parsed(text: str) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def dims(tensors: object) -> dict[str, list[int]]:
    return {t.name: list(t.dims) for t in tensors}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_config_text_equals_the_expected_file_when_built_for_the_fixed_spec(spec: Spec, name: str) -> None:
    text = text_format.MessageToString(BUILDERS[name](spec))

    assert text == (EXPECTED / f"{name}.pbtxt").read_text(encoding="utf-8")


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_expected_file_parses_back_into_the_same_model_config_when_read(spec: Spec, name: str) -> None:
    message = parsed((EXPECTED / f"{name}.pbtxt").read_text(encoding="utf-8"))

    assert message == BUILDERS[name](spec)
    # request-centric shapes pass as they are; the batch of 1 only buys the router Triton's queue policy
    assert message.max_batch_size == (1 if name == "router_batcher" else 0)


@pytest.mark.parametrize("backend", ["onnxruntime", "python"])
def test_tier_config_takes_the_raw_request_tensors_when_built(spec: Spec, backend: str) -> None:
    config = parsed((EXPECTED / f"tier_{backend}.pbtxt").read_text(encoding="utf-8"))

    assert config.name == "big"
    assert config.backend == backend
    assert dims(config.input) == {
        "user_dense": [1, 3],
        "user_sparse": [1, 2],
        "user_history": [1, -1],
        "ad_dense": [-1, 2],
        "ad_sparse": [-1, 3],
    }
    assert dims(config.output) == {"score": [-1]}
    assert config.output[0].data_type == mc.TYPE_FP32
    assert [(g.count, g.kind) for g in config.instance_group] == [(2, mc.ModelInstanceGroup.KIND_CPU)]
    if backend == "onnxruntime":
        assert config.default_model_filename == "model.onnx"
    else:
        assert config.parameters["onnx_file"].string_value == "model.onnx"


@pytest.mark.parametrize("backend", ["onnxruntime", "python"])
def test_preprocess_config_takes_raw_history_of_any_length_when_built(spec: Spec, backend: str) -> None:
    config = parsed((EXPECTED / f"preprocess_{backend}.pbtxt").read_text(encoding="utf-8"))

    assert config.name == "shop_preprocess"
    assert config.backend == backend
    assert dims(config.input)["user_history"] == [1, -1]
    assert dims(config.output) == {
        "user_dense_pre": [1, 3],
        "user_sparse_pre": [1, 2],
        "user_history_pre": [1, 6],
        "ad_dense_pre": [-1, 2],
        "ad_sparse_pre": [-1, 3],
    }


def test_router_config_disables_the_response_cache_when_built() -> None:
    config = parsed((EXPECTED / "router.pbtxt").read_text(encoding="utf-8"))

    assert config.name == "shop_router"
    assert config.backend == "python"
    assert not config.response_cache.enable
    assert sum(g.count for g in config.instance_group) >= 2  # a synchronous BLS call blocks one
    assert [g.count for g in config.instance_group] == [3]
    assert dims(config.input)["user_history"] == [1, -1]  # the raw request, validated by the router
    assert {t.name: t.data_type for t in config.output} == {"score": mc.TYPE_FP32, "tier": mc.TYPE_INT32}


def test_router_config_has_no_dynamic_batcher_and_the_router_sheds_by_default(spec: Spec) -> None:
    config = parsed((EXPECTED / "router.pbtxt").read_text(encoding="utf-8"))
    assert not config.HasField("dynamic_batching")
    assert config.max_batch_size == 0
    assert router_settings(spec).queue_timeout_ms == 100.0
    batcher = dataclasses.replace(spec, triton=dataclasses.replace(spec.triton, admission="batcher"))
    assert router_settings(batcher).queue_timeout_ms == 0.0  # Triton's queue policy rejects instead


def test_router_config_with_the_batcher_rejects_requests_that_waited_past_the_queue_timeout(
    spec: Spec,
) -> None:
    policy = parsed((EXPECTED / "router_batcher.pbtxt").read_text(encoding="utf-8")).dynamic_batching
    assert policy.default_queue_policy.timeout_action == mc.ModelQueuePolicy.REJECT
    assert policy.default_queue_policy.default_timeout_microseconds == 100_000
    assert policy.default_queue_policy.allow_timeout_override
    assert policy.default_queue_policy.max_queue_size == 0  # a full queue stalls the 2.51 batcher
    unbounded = spec_from_dict(
        {**CONFIG_SPEC, "triton": {**CONFIG_SPEC["triton"], "queue_timeout_ms": 0, "admission": "batcher"}}
    )
    assert not configs.router_config(unbounded).dynamic_batching.HasField("default_queue_policy")


def test_spec_refuses_an_unknown_admission_naming_the_key() -> None:
    with pytest.raises(SpecError, match="triton.admission"):
        spec_from_dict({**CONFIG_SPEC, "triton": {**CONFIG_SPEC["triton"], "admission": "nginx"}})


def test_ensemble_config_runs_the_router_alone_on_the_raw_request_when_built() -> None:
    config = parsed((EXPECTED / "ensemble.pbtxt").read_text(encoding="utf-8"))

    assert config.platform == "ensemble"
    assert config.name == "shop"
    (route,) = config.ensemble_scheduling.step
    assert route.model_name == "shop_router"
    assert dict(route.input_map) == {k: k for k in (*USER, *CANDIDATE)}
    assert dict(route.output_map) == {"score": "score", "tier": "tier"}
    assert dims(config.input) == {
        "user_dense": [1, 3],
        "user_sparse": [1, 2],
        "user_history": [1, -1],
        "ad_dense": [-1, 2],
        "ad_sparse": [-1, 3],
    }
    assert dims(config.output) == {"score": [-1], "tier": [-1]}


def test_router_config_follows_the_spec_when_the_instance_count_changes(spec: Spec) -> None:
    data = {**CONFIG_SPEC, "triton": {**CONFIG_SPEC["triton"], "router_instances": 5}}

    config = configs.router_config(spec_from_dict(data))

    assert [g.count for g in config.instance_group] == [5]
    assert config != configs.router_config(spec)


@pytest.mark.parametrize("backend", ["onnxruntime", "python"])
def test_tier_preprocess_and_gate_configs_take_the_spec_thread_count_when_it_is_set(backend: str) -> None:
    data = {**CONFIG_SPEC, "triton": {**CONFIG_SPEC["triton"], "tier_threads": 3}}
    threaded = spec_from_dict(data)

    built = [
        configs.tier_config(threaded, "big", backend),
        configs.preprocess_config(threaded, backend),
        configs.gate_config(threaded, backend, cheapest_first=False),
    ]

    assert [c.parameters["intra_op_thread_count"].string_value for c in built] == ["3", "3", "3"]


def test_a_tier_with_its_own_instance_count_gets_it_and_the_others_the_triton_default() -> None:
    tiers = [dict(t) for t in CONFIG_SPEC["tiers"]]
    tiers[-1]["instances"] = 4
    per_tier = spec_from_dict({**CONFIG_SPEC, "tiers": tiers})
    big, small = tiers[-1]["name"], tiers[0]["name"]

    counts = {
        t: [g.count for g in configs.tier_config(per_tier, t, "python").instance_group] for t in (big, small)
    }

    assert counts == {big: [4], small: [CONFIG_SPEC["triton"]["tier_instances"]]}
    assert per_tier.tier_instances(small) == CONFIG_SPEC["triton"]["tier_instances"]
