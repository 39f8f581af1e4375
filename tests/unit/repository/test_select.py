"""Variant selection for deploy: fastest passing on the target, pins, and clear refusals."""

from __future__ import annotations

import pytest

from toolkit.errors import RepositoryError
from toolkit.export.manifest import Manifest, ModelEntry, Status, Variant
from toolkit.repository.select import NOISE, select_variant, select_variants
from toolkit.spec import spec_from_dict


def _entry(status: str = "OK", cpu: list[float] | None = None, gpu: list[float] | None = None) -> Variant:
    latency = {}
    if cpu is not None:
        latency["cpu"] = {16 * 4**i: v for i, v in enumerate(cpu)}
    if gpu is not None:
        latency["gpu"] = {16 * 4**i: v for i, v in enumerate(gpu)}
    return Variant(Status(status), "" if status == "OK" else "NE +0.4%", latency_ms=latency)


def test_select_picks_the_fastest_passing_cpu_variant_when_nothing_is_pinned() -> None:
    variants = {
        "onnx-fp32": _entry(cpu=[1.0, 2.0, 3.0]),
        "onnx-int8-dynamic": _entry(cpu=[0.5, 1.0, 1.5]),
        "onnx-emb-int4": _entry(cpu=[0.7, 1.2, 1.9]),
    }
    chosen = select_variant("xl", variants, "cpu")
    assert chosen.variant == "onnx-int8-dynamic"
    assert chosen.latency_ms == pytest.approx(1.0)
    assert "fastest" in chosen.reason and "onnx-emb-int4" in chosen.reason


def test_select_never_picks_a_failed_or_skipped_variant_even_when_fastest() -> None:
    variants = {
        "onnx-fp32": _entry(cpu=[1.0]),
        "onnx-int8-static": _entry("FAILED", cpu=[0.1]),
        "onnx-fp16": Variant(Status.SKIPPED, "no kernel"),
    }
    assert select_variant("xl", variants, "cpu").variant == "onnx-fp32"


def test_select_prefers_the_more_precise_variant_when_speeds_are_within_noise() -> None:
    variants = {
        "onnx-fp32": _entry(cpu=[1.0 + NOISE / 2]),
        "onnx-int8-dynamic": _entry(cpu=[1.0]),
    }
    chosen = select_variant("lite", variants, "cpu")
    assert chosen.variant == "onnx-fp32" and "more precise" in chosen.reason


def test_select_uses_gpu_timings_for_the_gpu_target_and_ignores_cpu_only_variants() -> None:
    variants = {
        "onnx-fp32": _entry(cpu=[1.0], gpu=[0.3]),
        "onnx-int8-dynamic": _entry(cpu=[0.2]),
        "trt-fp16": _entry(gpu=[0.1]),
    }
    assert select_variant("xl", variants, "gpu").variant == "trt-fp16"
    assert select_variant("xl", variants, "cpu").variant == "onnx-int8-dynamic"


def test_select_falls_back_to_the_gpu_preference_order_when_no_gpu_timings_exist() -> None:
    variants = {"onnx-fp32": _entry(cpu=[1.0]), "onnx-fp16": _entry(cpu=[2.0])}
    chosen = select_variant("xl", variants, "gpu")
    assert chosen.variant == "onnx-fp16" and "preference" in chosen.reason and chosen.latency_ms is None


def test_select_uses_a_passing_pin_even_when_slower() -> None:
    variants = {"onnx-fp32": _entry(cpu=[1.0]), "onnx-emb-int4": _entry(cpu=[3.0])}
    chosen = select_variant("xl", variants, "cpu", pin="onnx-emb-int4")
    assert chosen.variant == "onnx-emb-int4" and chosen.reason == "pinned"
    from_spec = select_variant("xl", variants, "cpu", pin="onnx-emb-int4", how="spec key triton.pin.xl")
    assert from_spec.reason == "pinned (spec key triton.pin.xl)"


@pytest.mark.parametrize(
    ("pin", "fragment"),
    [
        ("onnx-int8-static", "FAILED"),
        ("onnx-fp16", "no onnx-fp16"),
        ("trt-fp16", "cannot run on cpu"),
        ("onnx-int3", "unknown variant"),
    ],
)
def test_select_refuses_a_pin_naming_tier_and_variant_when_it_cannot_be_served(pin, fragment) -> None:
    variants = {"onnx-fp32": _entry(cpu=[1.0]), "onnx-int8-static": _entry("FAILED", cpu=[0.5])}
    with pytest.raises(RepositoryError, match=fragment) as info:
        select_variant("xl", variants, "cpu", pin=pin)
    assert str(info.value).startswith(f"pins xl={pin}: ") and info.value.option == "pins"
    with pytest.raises(RepositoryError, match=f"^spec key triton.pin.xl: xl={pin}: ") as info:
        select_variant("xl", variants, "cpu", pin=pin, how="spec key triton.pin.xl")
    assert info.value.option == ""


def test_select_fails_listing_statuses_when_no_variant_passed() -> None:
    variants = {"onnx-fp32": _entry("FAILED", cpu=[1.0])}
    with pytest.raises(RepositoryError, match="no variant that passed.*onnx-fp32 FAILED"):
        select_variant("xl", variants, "cpu")


def test_select_variants_lets_cli_pins_beat_spec_pins_and_rejects_unknown_tiers(tmp_path) -> None:
    from helpers import tiny_spec_dict

    data = tiny_spec_dict(tmp_path)
    data.setdefault("triton", {})["pin"] = {"lite": "onnx-fp16"}
    spec = spec_from_dict(data)
    entries = {
        "onnx-fp32": _entry(cpu=[1.0]),
        "onnx-fp16": _entry(cpu=[2.0]),
        "onnx-emb-int8": _entry(cpu=[3.0]),
    }
    manifest = Manifest(
        spec.name, ModelEntry({}), {t: ModelEntry(dict(entries), architecture=t) for t in spec.tier_names}
    )
    chosen = select_variants(spec, manifest, "cpu")
    assert chosen["lite"].variant == "onnx-fp16" and "triton.pin.lite" in chosen["lite"].reason
    assert chosen["xl"].variant == "onnx-fp32"
    assert (
        select_variants(spec, manifest, "cpu", {"lite": "onnx-emb-int8"})["lite"].variant == "onnx-emb-int8"
    )
    with pytest.raises(RepositoryError, match="^pins gold=...: not a tier"):
        select_variants(spec, manifest, "cpu", {"gold": "onnx-fp32"})


def test_mean_latency_is_none_without_timings_on_the_target() -> None:
    assert _entry(cpu=[1.0, 3.0]).mean_latency("cpu") == pytest.approx(2.0)
    assert _entry(cpu=[1.0]).mean_latency("gpu") is None
