"""Unit tests of toolkit.spec (load_spec, spec_from_dict) and toolkit.models.tier_config."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import ROOT

from toolkit.errors import SpecError
from toolkit.models import tier_config
from toolkit.spec import DEFAULT_SPEC, Spec, load_spec, spec_from_dict

REPO = ROOT
DEFAULT_PATH = REPO / DEFAULT_SPEC


def default_data() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_PATH.read_text(encoding="utf-8"))


def write_spec(directory: Path, data: Any, name: str = "spec.yaml") -> Path:
    path = directory / name
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def load_error(path: Path) -> str:
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert "\n" not in message, f"message is not one line: {message!r}"
    assert message.startswith(f"{path}:"), f"message does not name the file: {message!r}"
    return message


def test_load_spec_gives_three_tiers_when_reading_the_default_spec() -> None:
    spec = load_spec(DEFAULT_PATH)

    assert isinstance(spec, Spec)
    assert spec.tier_names == ("lite", "standard", "xl")
    assert [t.architecture for t in spec.tiers] == ["lite", "standard", "xl"]
    assert spec.source == str(DEFAULT_PATH)
    assert spec.default_tier == "lite"
    assert spec.routing.rules[0].tier == "xl"


def test_load_spec_reads_the_default_file_when_called_without_a_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)

    spec = load_spec()

    assert spec.name == "ads_ranking"
    assert spec.source == str(DEFAULT_SPEC)


def test_load_spec_matches_the_yaml_when_values_are_read() -> None:
    data = default_data()

    spec = load_spec(DEFAULT_PATH)

    assert spec.features.user_dense == data["features"]["user_dense"]
    assert spec.features.history.length == data["features"]["history"]["length"]
    assert [f.vocab for f in spec.features.ad_sparse] == [f["vocab"] for f in data["features"]["ad_sparse"]]
    assert spec.triton.router_instances == data["triton"]["router_instances"]
    assert spec.export.timing_candidates == tuple(data["export"]["timing_candidates"])


def test_spec_from_dict_fills_defaults_when_optional_sections_are_omitted(
    tiny_spec_dict: dict[str, Any],
) -> None:
    for key in ("data", "routing", "triton", "seed"):
        tiny_spec_dict.pop(key)

    spec = spec_from_dict(tiny_spec_dict)

    assert spec.default_tier == "lite"  # the cheapest tier when routing.default_tier is not given
    assert spec.routing.policy == "rules"
    assert spec.triton.host == "127.0.0.1"
    assert spec.source == "<dict>"


def test_load_spec_raises_spec_error_naming_the_file_when_it_is_missing(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"

    message = load_error(path)

    assert "not found" in message


def test_load_spec_raises_spec_error_with_the_line_when_yaml_is_invalid(tmp_path: Path) -> None:
    lines = DEFAULT_PATH.read_text(encoding="utf-8").splitlines()
    broken = next(i for i, line in enumerate(lines) if line.strip().startswith("user_dense:"))
    lines[broken] = "  user_dense: 8: 9"
    path = tmp_path / "broken.yaml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    message = load_error(path)

    assert "not valid YAML" in message
    assert f"line {broken + 1}," in message


@pytest.mark.parametrize(
    ("text", "kind"), [("- lite\n- xl\n", "list"), ("", "nothing"), ("just a string\n", "str")]
)
def test_load_spec_raises_spec_error_when_the_top_level_is_not_a_mapping(
    tmp_path: Path, text: str, kind: str
) -> None:
    path = tmp_path / "flat.yaml"
    path.write_text(text, encoding="utf-8")

    message = load_error(path)

    assert "top level" in message
    assert kind in message


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    """A mutation that sets ``a.b[0].c``-style ``path`` in the parsed spec."""

    def mutate(data: dict[str, Any]) -> None:
        parts = path.replace("]", "").replace("[", ".").split(".")
        node: Any = data
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        if last.isdigit():
            node[int(last)] = value
        else:
            node[last] = value

    return mutate


def _drop(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda data: data.pop(key)


# (mutation of the default spec, key path the message must name, further text it must carry)
INVALID = {
    "missing_features": (_drop("features"), "features", "missing"),
    "missing_tiers": (_drop("tiers"), "tiers", "missing"),
    "missing_name": (_drop("name"), "name", "missing"),
    "unknown_tier_key": (_set("tiers[0].colour", "red"), "tiers[0].colour", "unknown key"),
    "unknown_top_key": (_set("colour", "red"), "colour", "unknown key"),
    "string_for_int": (_set("features.user_dense", "eight"), "features.user_dense", "integer"),
    "bool_for_int": (_set("features.user_dense", True), "features.user_dense", "integer"),
    "bool_for_float": (_set("routing.rules[0].value", True), "routing.rules[0].value", "number"),
    "float_for_int": (_set("triton.max_candidates", 1.5), "triton.max_candidates", "integer"),
    "string_for_list": (_set("tiers[0].params", "big"), "tiers[0].params", "mapping"),
    "bad_policy": (_set("routing.policy", "magic"), "routing.policy", "magic"),
    "bad_backend": (_set("triton.backend", "tensorflow"), "triton.backend", "tensorflow"),
    "bad_rule_op": (_set("routing.rules[0].op", "=~"), "routing.rules[0].op", "=~"),
    "rule_unknown_tier": (_set("routing.rules[0].tier", "huge"), "routing.rules[0].tier", "huge"),
    "default_unknown_tier": (_set("routing.default_tier", "huge"), "routing.default_tier", "huge"),
    "tier_name_with_slash": (_set("tiers[1].name", "a/b"), "tiers[1].name", "a/b"),
    "tier_name_with_dotdot": (_set("tiers[1].name", ".."), "tiers[1].name", "'..'"),
    "history_table_not_ad": (
        _set("features.history.table", "user_geo"),
        "features.history.table",
        "ad_sparse",
    ),
    "history_table_unknown": (_set("features.history.table", "nope"), "features.history.table", "'nope'"),
    "one_router_instance": (_set("triton.router_instances", 1), "triton.router_instances", "at least 2"),
    "no_tier_threads": (_set("triton.tier_threads", 0), "triton.tier_threads", "positive"),
    "negative_tier_instances": (_set("tiers[1].instances", -1), "tiers[1].instances", ">= 0"),
    "bad_instance_kind": (_set("tiers[2].instance_kind", "tpu"), "tiers[2].instance_kind", "'tpu'"),
    "vocab_too_small": (_set("features.ad_sparse[2].vocab", 1), "features.ad_sparse[2].vocab", "at least 2"),
    "tier_not_mapping": (_set("tiers[0]", "lite"), "tiers[0]", "mapping"),
    "learning_rate_nan": (_set("training.learning_rate", float("nan")), "training.learning_rate", "positive"),
    "tolerance_negative": (_set("export.tolerance", {"atol": -1.0}), "export.tolerance.atol", ">= 0"),
    "unknown_precision": (
        _set("export.precisions", ["onnx-fp32", "onnx-int3"]),
        "export.precisions[1]",
        "int3",
    ),
    "required_not_built": (
        lambda data: data["export"].update(precisions=["onnx-fp32"], required=["onnx-fp16"]),
        "export.required",
        "not listed in precisions",
    ),
    "unknown_required": (_set("export.required", ["trt-int2"]), "export.required[0]", "trt-int2"),
    "gate_auc_above_one": (
        _set("export.acceptance", {"min_auc_ratio": 1.5}),
        "export.acceptance.min_auc_ratio",
        "(0, 1]",
    ),
    "acceptance_negative_ne": (
        _set("export.acceptance", {"max_ne_change": -0.1}),
        "export.acceptance.max_ne_change",
        ">= 0",
    ),
    "quantization_zero": (
        _set("export.quantization_requests", 0),
        "export.quantization_requests",
        "positive",
    ),
    "trt_max_below_opt": (
        _set("export.tensorrt", {"opt_candidates": 64, "max_candidates": 8}),
        "export.tensorrt.max_candidates",
        "opt_candidates",
    ),
    "bad_target": (_set("triton.target", "tpu"), "triton.target", "tpu"),
    "pin_unknown_variant": (_set("triton.pin", {"xl": "onnx-int3"}), "triton.pin.xl", "onnx-int3"),
    "pin_unknown_tier": (_set("triton.pin", {"gold": "onnx-fp32"}), "triton.pin.gold", "tiers"),
    "cascade_tier_is_default": (
        _set("routing", {"policy": "cascade", "default_tier": "lite", "cascade": {"tier": "lite"}}),
        "routing.cascade.tier",
        "other than the default",
    ),
    "learned_share_above_one": (
        _set("routing", {"policy": "learned", "learned": {"target_share": 1.5}}),
        "routing.learned.target_share",
        "[0, 1]",
    ),
    "budget_percentile_zero": (
        _set("routing", {"policy": "rules", "budget": {"percentile": 0}}),
        "routing.budget.percentile",
        "(0, 100]",
    ),
    "cascade_top_k_zero": (
        _set("routing", {"policy": "cascade", "cascade": {"tier": "xl", "top_k": 0}}),
        "routing.cascade.top_k",
        "positive",
    ),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_load_spec_raises_spec_error_naming_the_key_when_a_value_is_invalid(
    tmp_path: Path, case: str
) -> None:
    mutate, key, detail = INVALID[case]
    data = default_data()
    mutate(data)
    path = write_spec(tmp_path, data)

    message = load_error(path)

    assert f"key '{key}'" in message
    assert detail in message


@pytest.mark.parametrize(
    ("mutate", "detail"),
    [
        (_set("tiers[1].name", "lite"), "unique"),
        (_set("tiers[1].name", "ads_ranking_router"), "ads_ranking_router"),
        (_set("tiers[1].name", "ads_ranking_preprocess"), "ads_ranking_preprocess"),
        (_set("tiers[1].name", "ads_ranking"), "clash"),
    ],
    ids=["duplicate", "router", "preprocess", "ensemble"],
)
def test_load_spec_raises_spec_error_naming_the_tier_when_tier_names_collide(
    tmp_path: Path, mutate: Callable[[dict[str, Any]], None], detail: str
) -> None:
    data = default_data()
    mutate(data)
    path = write_spec(tmp_path, data)

    message = load_error(path)

    assert "tier names" in message
    assert detail in message


@pytest.mark.parametrize("name", ["lite", "ads_ranking_router"], ids=["duplicate", "router"])
def test_load_spec_names_the_tiers_key_when_tier_names_collide(tmp_path: Path, name: str) -> None:
    data = default_data()
    data["tiers"][1]["name"] = name
    path = write_spec(tmp_path, data)

    message = load_error(path)

    assert "key 'tiers" in message


def test_spec_from_dict_names_the_source_when_given_one(tiny_spec_dict: dict[str, Any]) -> None:
    tiny_spec_dict["routing"]["default_tier"] = "giant"

    with pytest.raises(SpecError) as info:
        spec_from_dict(tiny_spec_dict, source="from-test.yaml")

    assert str(info.value).startswith("from-test.yaml: key 'routing.default_tier'")


def test_spec_from_dict_raises_spec_error_when_given_a_list() -> None:
    with pytest.raises(SpecError, match="top level"):
        spec_from_dict(["not", "a", "mapping"], source="list.yaml")


def test_tier_config_raises_spec_error_naming_the_param_when_a_param_is_unknown(
    tiny_spec_dict: dict[str, Any],
) -> None:
    tiny_spec_dict["tiers"][1]["params"]["depth"] = 3
    spec = spec_from_dict(tiny_spec_dict, source="tiny.yaml")

    with pytest.raises(SpecError) as info:
        tier_config(spec, spec.tiers[1])

    message = str(info.value)
    assert message.startswith("tiny.yaml: key 'tiers[1].params.depth'")
    assert "unknown key" in message


def test_tier_config_raises_spec_error_naming_the_param_when_a_param_has_the_wrong_type(
    tiny_spec_dict: dict[str, Any],
) -> None:
    tiny_spec_dict["tiers"][2]["params"]["heads"] = "two"
    spec = spec_from_dict(tiny_spec_dict, source="tiny.yaml")

    with pytest.raises(SpecError, match=r"^tiny\.yaml: key 'tiers\[2\]\.params\.heads'"):
        tier_config(spec, spec.tiers[2])


def test_tier_config_raises_spec_error_naming_the_tier_when_the_architecture_is_unknown(
    tiny_spec_dict: dict[str, Any],
) -> None:
    tiny_spec_dict["tiers"][2]["architecture"] = "gpt"
    spec = spec_from_dict(tiny_spec_dict, source="tiny.yaml")

    with pytest.raises(SpecError) as info:
        tier_config(spec, spec.tiers[2])

    message = str(info.value)
    assert message.startswith("tiny.yaml: key 'tiers[2].architecture'")
    assert "'gpt'" in message


def test_tier_config_gives_the_params_when_they_are_valid(tiny_spec: Spec) -> None:
    config = tier_config(tiny_spec, tiny_spec.tier("standard"))

    expected = copy.deepcopy(tiny_spec.tier("standard").params)
    assert config.embedding_dim == expected["embedding_dim"]
    assert config.cross_layers == expected["cross_layers"]
    assert config.hidden == tuple(expected["hidden"])


def test_renamed_export_keys_are_still_read_with_a_warning_naming_the_new_key(tiny_spec_dict: dict) -> None:
    import warnings

    data = copy.deepcopy(tiny_spec_dict)
    data.setdefault("export", {})
    data["export"]["gate"] = {"max_ne_change": 0.02, "min_auc_ratio": 0.9}
    data["export"]["calibration_requests"] = 17
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        spec = spec_from_dict(data, source="old.yaml")

    assert spec.export.acceptance.max_ne_change == 0.02 and spec.export.acceptance.min_auc_ratio == 0.9
    assert spec.export.quantization_requests == 17
    messages = sorted(str(w.message) for w in caught if issubclass(w.category, FutureWarning))
    assert len(messages) == 2
    assert "old.yaml: key 'export.calibration_requests' is now 'export.quantization_requests'" in messages[0]
    assert "old.yaml: key 'export.gate' is now 'export.acceptance'" in messages[1]
    both = copy.deepcopy(tiny_spec_dict)
    both["export"] = {"gate": {}}
    both["export"]["acceptance"] = {}
    with pytest.raises(SpecError, match="'export.gate' is the old name of 'export.acceptance'"):
        spec_from_dict(both, source="both.yaml")
