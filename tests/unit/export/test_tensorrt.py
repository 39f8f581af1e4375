"""Unit tests of toolkit.export.tensorrt.

Without TensorRT and a GPU only the gate can be tested: the reason it gives, and that every entry
point raises ExportError with it. The GPU path itself is covered by one test (markers ``gpu`` and
``tensorrt``) that builds an fp16 engine from a tiny tier and compares it with ONNX Runtime on CPU.
"""

from __future__ import annotations

import copy
import importlib.util
import sys
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from toolkit.data import REQUEST_TENSORS, generate_requests
from toolkit.data.requests import candidate_inputs
from toolkit.errors import ExportError
from toolkit.export import SCORE, cpu_session, export_tier
from toolkit.export import tensorrt as trt_export
from toolkit.export.tensorrt import (
    Profile,
    build_engine,
    check_source,
    engine_recipe,
    profile_shapes,
    run_engine,
    tensorrt_profile,
    time_engine,
)
from toolkit.models import Preprocess, build_tier
from toolkit.spec import Spec, spec_from_dict

REASON = trt_export.unavailable_reason()
NOT_INSTALLED = "the `tensorrt` Python package is not installed"


@pytest.fixture
def unavailable(monkeypatch: pytest.MonkeyPatch) -> str:
    """Make the gate report a missing package, whatever this machine has."""
    monkeypatch.setattr(trt_export, "unavailable_reason", lambda: NOT_INSTALLED)
    return NOT_INSTALLED


def fake_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    """An importable stand-in for the ``tensorrt`` package (no attributes are used before the checks)."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        return object() if name == "tensorrt" else real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))


def test_unavailable_reason_says_the_package_is_missing_when_tensorrt_is_not_installed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorrt" else real_find_spec(name, *a)
    )

    assert trt_export.unavailable_reason() == NOT_INSTALLED


def test_unavailable_reason_says_no_gpu_is_visible_when_cuda_is_unavailable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_tensorrt(monkeypatch)
    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)

    assert trt_export.unavailable_reason() == (
        "no CUDA GPU visible to PyTorch (torch.cuda.is_available() is False)"
    )


def test_unavailable_reason_names_the_cpu_only_torch_build_when_torch_has_no_cuda(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_tensorrt(monkeypatch)
    monkeypatch.setattr(torch.version, "cuda", None)

    reason = trt_export.unavailable_reason()

    assert reason is not None
    assert "CPU-only build" in reason and torch.__version__ in reason


@pytest.mark.skipif(REASON is None, reason="TensorRT and a CUDA GPU are available here")
def test_unavailable_reason_returns_a_clear_sentence_when_this_machine_cannot_build_engines() -> None:
    assert isinstance(REASON, str)
    assert "tensorrt" in REASON.lower() or "GPU" in REASON


@pytest.mark.skipif(REASON is None, reason="TensorRT and a CUDA GPU are available here")
def test_build_engine_raises_export_error_with_the_real_reason_when_unavailable(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as info:
        build_engine(tmp_path / "model.onnx", tmp_path / "model.plan", "fp16", Profile(1, 4, 8), ["x"], 64)

    assert REASON in str(info.value)


def test_build_engine_raises_export_error_naming_file_and_reason_when_unavailable(
    tmp_path: Path, unavailable: str
) -> None:
    onnx = tmp_path / "model.onnx"

    with pytest.raises(ExportError) as info:
        build_engine(onnx, tmp_path / "model.plan", "int8", Profile(1, 4, 8), ["ad_dense"], 64)

    assert unavailable in str(info.value)
    assert str(onnx) in str(info.value)
    assert not (tmp_path / "model.plan").exists()


def test_run_and_time_engine_raise_export_error_with_the_reason_when_unavailable(
    tmp_path: Path, unavailable: str
) -> None:
    plan = tmp_path / "model.plan"

    with pytest.raises(ExportError, match="not installed"):
        run_engine(plan, {})
    with pytest.raises(ExportError, match="not installed"):
        time_engine(plan, lambda n: {}, [1, 4])


def test_build_engine_rejects_an_unknown_precision_when_called_on_any_machine(tmp_path: Path) -> None:
    with pytest.raises(ExportError, match="'int4'.*fp16, int8, fp8"):
        build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", "int4", Profile(1, 4, 8), ["x"], 64)


def test_build_engine_refuses_fp8_with_the_reason_when_the_gpu_is_older_than_ada(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_tensorrt(monkeypatch)
    monkeypatch.setattr(trt_export, "unavailable_reason", lambda: None)
    monkeypatch.setattr(trt_export, "_device", lambda: ("NVIDIA A100-SXM4-80GB", (8, 0)))

    with pytest.raises(ExportError) as info:
        build_engine(tmp_path / "m.onnx", tmp_path / "m.plan", "fp8", Profile(1, 4, 8), ["x"], 64)

    message = str(info.value)
    assert "8.9" in message and "8.0" in message and "A100" in message


def test_unavailable_reason_names_polygraphy_when_tensorrt_is_there_but_the_builder_is_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fake_tensorrt(monkeypatch)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: (
            None if name == "polygraphy" else (object() if name == "tensorrt" else real_find_spec(name, *a))
        ),
    )

    assert trt_export.unavailable_reason() == (
        "the `polygraphy` Python package, which builds the engines, is not installed"
    )


# --- the Polygraphy recipe, on any machine (Polygraphy imports TensorRT only when a loader runs) ---


@pytest.fixture
def tier_onnx(tiny_spec: Spec, tmp_path: Path) -> Path:
    """The tiny spec's standard tier exported to ONNX (preprocessed inputs, N dynamic)."""
    torch.manual_seed(0)
    model = build_tier(tiny_spec, tiny_spec.tier("standard")).eval()
    example = next(r for r in preprocessed_requests(tiny_spec, 6, seed=11) if r["ad_dense"].shape[0] >= 2)
    path = tmp_path / "model.onnx"
    export_tier(model, {k: torch.from_numpy(v) for k, v in example.items()}, path, tiny_spec.export.opset)
    return path


def test_engine_recipe_is_a_strongly_typed_network_with_one_profile_over_n_and_no_precision_flag(
    tiny_spec: Spec, tier_onnx: Path
) -> None:
    from polygraphy.backend.trt import CreateConfig, NetworkFromOnnxPath

    names = candidate_inputs(tiny_spec.features)
    network, config = engine_recipe(tier_onnx, Profile(1, 8, 16), names)

    assert isinstance(network, NetworkFromOnnxPath) and isinstance(config, CreateConfig)
    assert network.path == str(tier_onnx) and network.strongly_typed is True
    assert not (config.fp16 or config.int8 or config.fp8)
    (profile,) = config.profiles
    assert list(profile) == list(names)
    shapes = profile_shapes(tier_onnx, Profile(1, 8, 16), names)
    for name in names:
        rest = shapes[name][0][1:]
        assert (profile[name].min, profile[name].opt, profile[name].max) == (
            (1, *rest),
            (8, *rest),
            (16, *rest),
        )
    user = [name for name in shapes if name not in names]
    assert user and all(shapes[name][0] == shapes[name][2] and shapes[name][0][0] == 1 for name in user)


def test_profile_shapes_refuses_a_dynamic_input_that_is_not_a_candidate_input(tmp_path: Path) -> None:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Add", ["ad_dense", "user_dense"], ["score"])],
        "g",
        [
            helper.make_tensor_value_info("ad_dense", TensorProto.FLOAT, ["N", 2]),
            helper.make_tensor_value_info("user_dense", TensorProto.FLOAT, ["B", 2]),
        ],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, ["N", 2])],
    )
    path = tmp_path / "m.onnx"
    onnx.save(helper.make_model(graph), str(path))

    with pytest.raises(ExportError, match="'user_dense' has dynamic shape .*only candidate inputs may vary"):
        profile_shapes(path, Profile(1, 4, 8), ["ad_dense"])
    with pytest.raises(ExportError, match="has no input named 'ad_sparse'"):
        profile_shapes(path, Profile(1, 4, 8), ["ad_dense", "user_dense", "ad_sparse"])


def test_check_source_wants_the_model_already_in_the_engine_precision(
    tier_onnx: Path, tmp_path: Path
) -> None:
    from toolkit.export.quantize import to_fp16

    with pytest.raises(ExportError, match="no float16 tensors.*onnx-fp16"):
        check_source(tier_onnx, "fp16")
    with pytest.raises(ExportError, match="no float8 tensors.*fp8 QDQ"):
        check_source(tier_onnx, "fp8")
    half = tmp_path / "half.onnx"
    to_fp16(tier_onnx, half)
    check_source(half, "fp16")


@pytest.mark.parametrize(("low", "opt", "high"), [(0, 1, 2), (1, 9, 8), (3, 2, 8)])
def test_profile_raises_value_error_when_the_bounds_are_out_of_order(low: int, opt: int, high: int) -> None:
    with pytest.raises(ValueError, match="min <= opt <= max"):
        Profile(low, opt, high)


def spec_with(tiny_spec_dict: dict[str, Any], tensorrt: dict[str, int], max_candidates: int) -> Spec:
    data = copy.deepcopy(tiny_spec_dict)
    data["export"] = {"tensorrt": tensorrt}
    data["triton"]["max_candidates"] = max_candidates
    return spec_from_dict(data)


def test_tensorrt_profile_takes_triton_max_candidates_when_the_export_max_is_zero(
    tiny_spec_dict: dict[str, Any],
) -> None:
    spec = spec_with(tiny_spec_dict, {"opt_candidates": 32}, 512)

    assert tensorrt_profile(spec) == (1, 32, 512)
    assert Profile.from_spec(spec) == Profile(1, 32, 512)


def test_tensorrt_profile_prefers_the_export_max_when_it_is_set(tiny_spec_dict: dict[str, Any]) -> None:
    spec = spec_with(tiny_spec_dict, {"opt_candidates": 32, "max_candidates": 96}, 512)

    assert tensorrt_profile(spec) == (1, 32, 96)


def test_tensorrt_profile_caps_opt_at_max_when_the_default_opt_exceeds_the_served_maximum(
    tiny_spec_dict: dict[str, Any],
) -> None:
    spec = spec_with(tiny_spec_dict, {}, 16)  # default opt_candidates is 64

    assert tensorrt_profile(spec) == (1, 16, 16)


# --- on a GPU with TensorRT ------------------------------------------------------------------------


def preprocessed_requests(spec: Spec, count: int, seed: int) -> list[dict[str, np.ndarray]]:
    raw = generate_requests(spec.features, count, (1, 12), 0.5, seed=seed)
    preprocess = Preprocess.fit(spec.features, raw.user_dense, raw.ad_dense).eval()
    requests = []
    for r in range(raw.num_requests):
        with torch.no_grad():
            out = preprocess(*(torch.from_numpy(raw.request(r)[k]) for k in REQUEST_TENSORS))
        requests.append({k: t.numpy() for k, t in zip(REQUEST_TENSORS, out, strict=True)})
    return requests


@pytest.mark.gpu
@pytest.mark.tensorrt
@pytest.mark.skipif(REASON is not None, reason=f"TensorRT engines cannot be built here: {REASON}")
def test_fp16_engine_matches_onnx_runtime_on_cpu_when_built_from_a_tiny_tier(
    tiny_spec: Spec, tmp_path: Path
) -> None:
    from toolkit.export.quantize import to_fp16

    torch.manual_seed(0)
    model = build_tier(tiny_spec, tiny_spec.tier("standard")).eval()
    requests = preprocessed_requests(tiny_spec, 6, seed=11)
    example = next(r for r in requests if r["ad_dense"].shape[0] >= 2)
    onnx = tmp_path / "model.onnx"
    export_tier(model, {k: torch.from_numpy(v) for k, v in example.items()}, onnx, tiny_spec.export.opset)
    plan = tmp_path / "model.plan"
    single = dict(requests[0], ad_dense=requests[0]["ad_dense"][:1], ad_sparse=requests[0]["ad_sparse"][:1])
    requests.append(single)  # N = 1, the profile's minimum

    half = tmp_path / "half.onnx"
    to_fp16(onnx, half)

    info = build_engine(half, plan, "fp16", Profile(1, 8, 16), candidate_inputs(tiny_spec.features), 256)

    assert plan.stat().st_size > 0
    assert info.precision == "fp16" and info.profile == Profile(1, 8, 16)
    assert info.device and info.compute_capability.count(".") == 1 and info.build_seconds > 0
    session = cpu_session(str(onnx))
    for inputs in requests:
        want = session.run([SCORE], inputs)[0]
        got = run_engine(plan, inputs)
        assert set(got) == {SCORE}
        assert got[SCORE].shape == want.shape == (inputs["ad_dense"].shape[0],)
        np.testing.assert_allclose(got[SCORE], want, atol=1e-2, rtol=0)
    with pytest.raises(ExportError, match="outside the engine's optimization profile"):
        big = {
            **requests[0],
            "ad_dense": np.repeat(requests[0]["ad_dense"][:1], 17, axis=0),
            "ad_sparse": np.repeat(requests[0]["ad_sparse"][:1], 17, axis=0),
        }
        run_engine(plan, big)

    timings = time_engine(
        plan, lambda n: dict(big, ad_dense=big["ad_dense"][:n], ad_sparse=big["ad_sparse"][:n]), [1, 8]
    )
    assert set(timings) == {1, 8}
    assert all(ms > 0 for ms in timings.values())
