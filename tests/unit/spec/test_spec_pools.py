"""Unit tests of the spec's tier pools: ``pools``, ``tiers[].pool``, ``kubernetes`` and their helpers."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from helpers import DEFAULT_SPEC, ROOT

from toolkit.errors import SpecError
from toolkit.spec import Spec, load_spec, spec_from_dict
from toolkit.spec.schema import KeyedValueError, check_address

SOURCE = "pools.yaml"
EXAMPLE = ROOT / "examples" / "pools" / "spec.yaml"


@pytest.fixture
def pools_dict(tiny_spec_dict: dict[str, Any]) -> dict[str, Any]:
    """The tiny spec (lite, standard, xl) with pools ``cpu`` (entry) and ``big`` (gpu, runs xl)."""
    data = copy.deepcopy(tiny_spec_dict)
    data["pools"] = [{"name": "cpu"}, {"name": "big", "hardware": "gpu", "addresses": ["10.0.0.9:8001"]}]
    data["tiers"][2]["pool"] = "big"
    return data


def spec_error(data: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        spec_from_dict(data, source=SOURCE)
    message = str(info.value)
    assert "\n" not in message, message
    return message


def assert_key_error(data: dict[str, Any], key: str, *fragments: str) -> str:
    message = spec_error(data)
    assert message.startswith(f"{SOURCE}: key '{key}': "), message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --- the pools and where the tiers run ---


def test_spec_with_pools_places_each_tier_in_its_pool_when_loaded(pools_dict: dict[str, Any]) -> None:
    spec = spec_from_dict(pools_dict, source=SOURCE)

    assert [p.name for p in spec.pools] == ["cpu", "big"]
    assert spec.entry_pool == "cpu"
    assert [spec.tier_pool(t) for t in spec.tier_names] == ["cpu", "cpu", "big"]
    assert spec.pool_tiers("cpu") == ("lite", "standard")
    assert spec.pool_tiers("big") == ("xl",)
    assert spec.remote_tiers == ("xl",)
    assert spec.pool("big").hardware == "gpu" and spec.pool("big").addresses == ("10.0.0.9:8001",)
    with pytest.raises(KeyError):
        spec.pool("huge")


def test_spec_with_pools_keeps_pool_defaults_when_only_names_are_given(pools_dict: dict[str, Any]) -> None:
    pools_dict["pools"] = [{"name": "cpu"}, {"name": "big"}]

    cpu, big = spec_from_dict(pools_dict, source=SOURCE).pools

    assert (cpu.hardware, cpu.gpus, cpu.addresses) == ("cpu", 0, ())
    assert (big.timeout_ms, big.retry_after_ms) == (0.0, 1000.0)
    assert (big.cpu, big.memory, big.min_replicas, big.max_replicas) == ("2", "4Gi", 1, 4)
    assert (big.cpu_target_utilization, big.queue_time_target_us) == (70, 0)


def test_spec_without_pools_has_no_entry_pool_and_no_remote_tiers(tiny_spec: Spec) -> None:
    assert tiny_spec.pools == ()
    assert tiny_spec.entry_pool == ""
    assert tiny_spec.remote_tiers == ()
    assert tiny_spec.tier_pool("xl") == ""
    assert tiny_spec.pool_tiers("") == tiny_spec.tier_names
    with pytest.raises(KeyError):
        tiny_spec.pool("cpu")


def test_spec_places_tiers_by_their_pool_key_and_the_others_in_the_entry_pool(
    pools_dict: dict[str, Any],
) -> None:
    pools_dict["tiers"][0]["pool"] = "cpu"
    pools_dict["tiers"][1]["pool"] = "big"

    spec = spec_from_dict(pools_dict, source=SOURCE)

    assert spec.pool_tiers("cpu") == ("lite",)
    assert spec.pool_tiers("big") == ("standard", "xl")
    assert spec.remote_tiers == ("standard", "xl")


def test_spec_refuses_repeated_pool_names_naming_them(pools_dict: dict[str, Any]) -> None:
    pools_dict["pools"].append({"name": "big"})

    assert_key_error(pools_dict, "pools", "unique", "big")


def test_spec_refuses_a_tier_pool_that_is_not_a_pool_naming_the_tier_key(pools_dict: dict[str, Any]) -> None:
    pools_dict["tiers"][2]["pool"] = "huge"

    assert_key_error(pools_dict, "tiers[2].pool", "expected one of the pools (cpu, big)", "'huge'")


def test_spec_refuses_a_tier_pool_when_the_spec_has_no_pools_section(tiny_spec_dict: dict[str, Any]) -> None:
    tiny_spec_dict["tiers"][1]["pool"] = "big"

    assert_key_error(tiny_spec_dict, "tiers[1].pool", "no pools section")


def test_spec_refuses_a_cheapest_tier_outside_the_entry_pool(pools_dict: dict[str, Any]) -> None:
    pools_dict["tiers"][0]["pool"] = "big"

    assert_key_error(pools_dict, "tiers[0].pool", "cheapest tier 'lite'", "entry pool 'cpu'")


def test_spec_accepts_the_cheapest_tier_naming_the_entry_pool(pools_dict: dict[str, Any]) -> None:
    pools_dict["tiers"][0]["pool"] = "cpu"

    assert spec_from_dict(pools_dict, source=SOURCE).pool_tiers("cpu") == ("lite", "standard")


def test_spec_refuses_a_gpu_triton_target_with_pools(pools_dict: dict[str, Any]) -> None:
    pools_dict["triton"]["target"] = "gpu"

    assert_key_error(pools_dict, "triton.target", "each pool's hardware is its target")


def test_spec_refuses_a_tier_instance_kind_with_pools(pools_dict: dict[str, Any]) -> None:
    pools_dict["tiers"][1]["instance_kind"] = "cpu"

    assert_key_error(pools_dict, "tiers[1].instance_kind", "a pool's hardware sets")


def test_spec_accepts_triton_target_cpu_given_explicitly_with_pools(pools_dict: dict[str, Any]) -> None:
    pools_dict["triton"]["target"] = "cpu"

    assert spec_from_dict(pools_dict, source=SOURCE).triton.target == "cpu"


def test_spec_refuses_a_pool_other_than_the_entry_pool_that_runs_no_tier(pools_dict: dict[str, Any]) -> None:
    pools_dict["pools"].append({"name": "idle"})

    assert_key_error(pools_dict, "pools[2]", "'idle' runs no tier")


def test_spec_accepts_an_entry_pool_that_runs_only_the_cheapest_tier(pools_dict: dict[str, Any]) -> None:
    pools_dict["tiers"][1]["pool"] = "big"

    spec = spec_from_dict(pools_dict, source=SOURCE)

    assert spec.pool_tiers("cpu") == ("lite",)


@pytest.mark.parametrize("name", ["Big", "big_one", "1big", "big-", "-big", "", "b" * 33, "big.pool"])
def test_spec_refuses_a_pool_name_that_is_not_a_dns_label(pools_dict: dict[str, Any], name: str) -> None:
    pools_dict["pools"][1]["name"] = name
    pools_dict["tiers"][2]["pool"] = name

    assert_key_error(pools_dict, "pools[1].name", "not a DNS label")


@pytest.mark.parametrize("name", ["b", "big-2", "gpu-a100", "b" * 32])
def test_spec_accepts_a_pool_name_that_is_a_dns_label(pools_dict: dict[str, Any], name: str) -> None:
    pools_dict["pools"][1]["name"] = name
    pools_dict["tiers"][2]["pool"] = name

    assert spec_from_dict(pools_dict, source=SOURCE).pool_tiers(name) == ("xl",)


def test_spec_refuses_an_unknown_pool_hardware(pools_dict: dict[str, Any]) -> None:
    pools_dict["pools"][1]["hardware"] = "tpu"

    assert_key_error(pools_dict, "pools[1].hardware", "cpu", "gpu", "'tpu'")


def test_spec_refuses_an_unknown_pool_key_naming_it(pools_dict: dict[str, Any]) -> None:
    pools_dict["pools"][1]["replicas"] = 3

    assert_key_error(pools_dict, "pools[1].replicas", "unknown key", "max_replicas")


# --- addresses ---


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1:8001",
        "localhost:1",
        "big:65535",
        "ads-ranking-big-pods.ads-ranking.svc.cluster.local:8001",
        "[::1]:8001",
        "[2001:db8::1]:9000",
        "[::ffff:10.0.0.1]:8001",
    ],
)
def test_spec_accepts_a_host_port_address(pools_dict: dict[str, Any], address: str) -> None:
    pools_dict["pools"][1]["addresses"] = [address]

    assert spec_from_dict(pools_dict, source=SOURCE).pool("big").addresses == (address,)


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "10.0.0.1:",
        ":8001",
        "host:0",
        "host:65536",
        "host:123456",
        "host:http",
        "::1:8001",
        "2001:db8::1:8001",
        "[::1]",
        "[::1]8001",
        "[big]:8001",
        "http://host:8001",
        "host:8001/",
        "-host:8001",
        "host-:8001",
        "host name:8001",
        "",
    ],
)
def test_spec_refuses_an_address_that_is_not_host_port_naming_its_key(
    pools_dict: dict[str, Any], address: str
) -> None:
    pools_dict["pools"][1]["addresses"] = ["10.0.0.9:8001", address]

    message = assert_key_error(pools_dict, "pools[1].addresses[1]", "host:port", "IPv6 in brackets")
    assert repr(address) in message


def test_spec_refuses_an_address_that_is_not_a_string(pools_dict: dict[str, Any]) -> None:
    pools_dict["pools"][1]["addresses"] = [8001]

    assert_key_error(pools_dict, "pools[1].addresses[0]", "expected a string")


def test_spec_refuses_addresses_given_as_one_string(pools_dict: dict[str, Any]) -> None:
    pools_dict["pools"][1]["addresses"] = "10.0.0.9:8001"

    assert_key_error(pools_dict, "pools[1].addresses", "expected a list")


def test_spec_refuses_repeated_addresses(pools_dict: dict[str, Any]) -> None:
    pools_dict["pools"][1]["addresses"] = ["10.0.0.9:8001", "10.0.0.9:8001"]

    assert_key_error(pools_dict, "pools[1].addresses", "must differ")


def test_check_address_raises_keyed_value_error_on_the_given_key() -> None:
    check_address("[::1]:1", "x")
    with pytest.raises(KeyedValueError) as info:
        check_address("nowhere", "addresses[3]")

    assert info.value.key == "addresses[3]" and "'nowhere'" in str(info.value)
    with pytest.raises(KeyedValueError):
        check_address(None, "addresses[0]")  # type: ignore[arg-type]


# --- timeouts, GPUs, replicas, autoscaling ---


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("timeout_ms", -1, ">= 0"),
        ("timeout_ms", float("inf"), ">= 0"),
        ("retry_after_ms", 0, "> 0"),
        ("retry_after_ms", -5, "> 0"),
        ("min_replicas", 0, "at least 1"),
        ("cpu_target_utilization", 0, "1..1000"),
        ("cpu_target_utilization", 1001, "1..1000"),
        ("queue_time_target_us", -1, ">= 0"),
        ("timeout_ms", "fast", "expected a number"),
        ("min_replicas", 1.5, "expected an integer"),
    ],
)
def test_spec_refuses_an_invalid_pool_number_naming_its_key(
    pools_dict: dict[str, Any], key: str, value: Any, fragment: str
) -> None:
    pools_dict["pools"][1][key] = value

    assert_key_error(pools_dict, f"pools[1].{key}", fragment)


def test_spec_keeps_pool_timeouts_as_given(pools_dict: dict[str, Any]) -> None:
    pools_dict["pools"][1].update({"timeout_ms": 250, "retry_after_ms": 300})

    big = spec_from_dict(pools_dict, source=SOURCE).pool("big")

    assert (big.timeout_ms, big.retry_after_ms) == (250.0, 300.0)


@pytest.mark.parametrize(
    ("hardware", "gpus", "expected"),
    [("gpu", None, 1), ("cpu", None, 0), ("gpu", -1, 1), ("cpu", -1, 0), ("gpu", 4, 4), ("cpu", 0, 0)],
)
def test_spec_defaults_gpus_by_hardware(
    pools_dict: dict[str, Any], hardware: str, gpus: Any, expected: int
) -> None:
    pools_dict["pools"][1]["hardware"] = hardware
    if gpus is not None:
        pools_dict["pools"][1]["gpus"] = gpus

    assert spec_from_dict(pools_dict, source=SOURCE).pool("big").gpus == expected


@pytest.mark.parametrize(
    ("hardware", "gpus", "fragment"),
    [("gpu", 0, "at least 1 GPU"), ("cpu", 2, "requests no GPUs"), ("gpu", -2, ">= 0"), ("cpu", -3, ">= 0")],
)
def test_spec_refuses_gpus_that_conflict_with_the_hardware(
    pools_dict: dict[str, Any], hardware: str, gpus: int, fragment: str
) -> None:
    pools_dict["pools"][1].update({"hardware": hardware, "gpus": gpus})

    assert_key_error(pools_dict, "pools[1].gpus", fragment)


def test_spec_refuses_max_replicas_below_min_replicas(pools_dict: dict[str, Any]) -> None:
    pools_dict["pools"][0].update({"min_replicas": 3, "max_replicas": 2})

    assert_key_error(pools_dict, "pools[0].max_replicas", ">= min_replicas (3)", "got 2")


def test_spec_accepts_equal_min_and_max_replicas(pools_dict: dict[str, Any]) -> None:
    pools_dict["pools"][0].update({"min_replicas": 3, "max_replicas": 3})

    cpu = spec_from_dict(pools_dict, source=SOURCE).pool("cpu")

    assert (cpu.min_replicas, cpu.max_replicas) == (3, 3)


# --- kubernetes ---


def test_kubernetes_section_defaults_when_omitted(pools_dict: dict[str, Any]) -> None:
    k8s = spec_from_dict(pools_dict, source=SOURCE).kubernetes

    assert (k8s.namespace, k8s.repository, k8s.cluster_domain) == ("", "", "cluster.local")
    assert (k8s.kubernetes_version, k8s.kserve, k8s.model_control_mode) == ("1.30", False, "explicit")


def test_kubernetes_section_keeps_valid_values(pools_dict: dict[str, Any]) -> None:
    pools_dict["kubernetes"] = {
        "namespace": "ads-ranking",
        "repository": "s3://models/ads",
        "kubernetes_version": "1.31",
        "model_control_mode": "poll",
    }

    k8s = spec_from_dict(pools_dict, source=SOURCE).kubernetes

    assert (k8s.namespace, k8s.repository) == ("ads-ranking", "s3://models/ads")
    assert (k8s.kubernetes_version, k8s.model_control_mode) == ("1.31", "poll")


@pytest.mark.parametrize(
    ("key", "value", "fragment"),
    [
        ("namespace", "Ads", "not a DNS label"),
        ("namespace", "ads_ranking", "not a DNS label"),
        ("namespace", "-ads", "not a DNS label"),
        ("namespace", "a" * 64, "not a DNS label"),
        ("repository", "/models/ads", "s3://bucket/prefix"),
        ("repository", "gs://models/ads", "s3://bucket/prefix"),
        ("kubernetes_version", "1.30.2", "MAJOR.MINOR"),
        ("kubernetes_version", "v1.30", "MAJOR.MINOR"),
        ("kubernetes_version", "1", "MAJOR.MINOR"),
        ("model_control_mode", "none", "explicit, poll"),
        ("kserve", "yes", "true or false"),
        ("cluster", "prod", "unknown key"),
    ],
)
def test_kubernetes_section_refuses_an_invalid_value_naming_its_key(
    pools_dict: dict[str, Any], key: str, value: Any, fragment: str
) -> None:
    pools_dict["kubernetes"] = {key: value}

    message = assert_key_error(pools_dict, f"kubernetes.{key}", fragment)
    if fragment != "unknown key":
        assert repr(value) in message or str(value) in message


def test_kubernetes_section_is_accepted_without_pools(tiny_spec_dict: dict[str, Any]) -> None:
    tiny_spec_dict["kubernetes"] = {"namespace": "tiny", "repository": "s3://b/tiny"}

    spec = spec_from_dict(tiny_spec_dict, source=SOURCE)

    assert spec.kubernetes.namespace == "tiny" and spec.pools == ()


# --- the example spec cannot drift from the default spec ---


def without_pool_keys(data: dict[str, Any]) -> dict[str, Any]:
    """A parsed spec without pools, kubernetes, paths.repository and tiers[].pool."""
    data = copy.deepcopy(data)
    data.pop("pools", None)
    data.pop("kubernetes", None)
    data.get("paths", {}).pop("repository", None)
    for tier in data["tiers"]:
        tier.pop("pool", None)
    return data


def test_pools_example_loads_with_xl_in_the_gpu_pool() -> None:
    spec = load_spec(EXAMPLE)

    assert [(p.name, p.hardware) for p in spec.pools] == [("cpu", "cpu"), ("big", "gpu")]
    assert spec.remote_tiers == ("xl",)
    assert spec.pool_tiers("cpu") == ("lite", "standard")
    assert spec.kubernetes.repository.startswith("s3://")


def test_pools_example_equals_the_default_spec_except_for_its_pool_keys() -> None:
    example = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    default = yaml.safe_load(DEFAULT_SPEC.read_text(encoding="utf-8"))

    assert "pools" in example and "kubernetes" in example
    assert any("pool" in tier for tier in example["tiers"])
    assert without_pool_keys(example) == without_pool_keys(default)
    assert load_spec(EXAMPLE).name == load_spec(DEFAULT_SPEC).name
