"""Unit tests of toolkit.export.parity: compare_outputs on crafted arrays, check_parity on ONNX."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from toolkit.data import REQUEST_TENSORS, generate_requests
from toolkit.errors import ParityError
from toolkit.export import SCORE, check_parity, cpu_session, export_tier
from toolkit.export.parity import ParityReport, compare_outputs
from toolkit.models import Preprocess, RankingModel, build_tier
from toolkit.spec import Spec, Tolerance

Arrays = dict[str, np.ndarray]
TOL = Tolerance(atol=1e-3, rtol=0.1)


def compare(expected: Arrays, actual: Arrays, tolerance: Tolerance = TOL) -> ParityReport:
    report = ParityReport()
    compare_outputs(expected, actual, tolerance, report, "request 0")
    return report


def f64(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float64)


def test_compare_outputs_passes_when_outputs_are_equal() -> None:
    report = compare({"score": f64(0.1, 0.9)}, {"score": f64(0.1, 0.9)})

    assert report.ok
    assert report.requests == 1
    assert report.max_abs_error == {"score": 0.0}


@pytest.mark.parametrize(
    ("actual", "fragment"),
    [({"scores": f64(0.5)}, "scores"), ({}, "score"), ({"score": f64(0.5), "extra": f64(1)}, "extra")],
    ids=["renamed", "missing", "extra"],
)
def test_compare_outputs_fails_naming_the_outputs_when_names_differ(actual: Arrays, fragment: str) -> None:
    report = compare({"score": f64(0.5)}, actual)

    assert not report.ok
    assert "names differ" in report.failures[0]
    assert fragment in report.failures[0]


def test_compare_outputs_fails_naming_both_shapes_when_shapes_differ() -> None:
    report = compare({"score": f64(0.5, 0.5)}, {"score": f64(0.5, 0.5, 0.5)})

    assert not report.ok
    assert "(3,)" in report.failures[0] and "(2,)" in report.failures[0]


def test_compare_outputs_fails_when_a_value_exceeds_atol_plus_rtol_times_the_reference() -> None:
    want = f64(1.0, 10.0)
    bounds = [TOL.atol + TOL.rtol * abs(x) for x in want]  # 0.101 and 1.001

    inside = compare({"score": want}, {"score": want + [bounds[0] * 0.99, -bounds[1] * 0.99]})
    outside_small = compare({"score": want}, {"score": want + [bounds[0] * 1.01, 0.0]})
    outside_large = compare({"score": want}, {"score": want + [0.0, -bounds[1] * 1.01]})

    assert inside.ok
    assert not outside_small.ok
    assert not outside_large.ok
    assert "'score'" in outside_small.failures[0]


def test_compare_outputs_scales_rtol_by_the_reference_when_the_actual_value_is_larger() -> None:
    tolerance = Tolerance(atol=0.0, rtol=0.19)

    report = compare({"score": f64(1.0)}, {"score": f64(1.2)}, tolerance)  # 0.2 > 0.19 * |1.0|

    assert not report.ok


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_compare_outputs_fails_when_the_output_is_not_finite(bad: float) -> None:
    report = compare({"score": f64(0.5, 0.5)}, {"score": f64(0.5, bad)}, Tolerance(atol=1e9, rtol=1e9))

    assert not report.ok


def test_compare_outputs_fails_when_integer_outputs_differ_by_one_whatever_the_tolerance() -> None:
    want = np.array([0, 1, 2], dtype=np.int32)
    generous = Tolerance(atol=10.0, rtol=10.0)

    assert compare({"tier": want}, {"tier": want.copy()}, generous).ok
    assert not compare({"tier": want}, {"tier": np.array([0, 1, 3], dtype=np.int32)}, generous).ok
    assert compare({"score": want.astype(np.float32)}, {"score": f64(0, 1, 3)}, generous).ok


def test_compare_outputs_keeps_the_worst_error_per_output_when_called_for_several_requests() -> None:
    report = ParityReport()
    errors = [2e-4, 7e-4, 1e-4]
    for i, err in enumerate(errors):
        compare_outputs({"score": f64(0.5)}, {"score": f64(0.5 + err)}, TOL, report, f"request {i}")

    assert report.requests == 3
    assert report.ok
    assert report.max_abs_error["score"] == pytest.approx(max(errors), rel=1e-6)


def test_compare_outputs_fails_when_the_reference_is_nan() -> None:
    report = compare({"score": f64(np.nan, 0.5)}, {"score": f64(0.1, 0.5)})

    assert not report.ok


def test_compare_outputs_records_a_nan_error_when_the_output_is_nan() -> None:
    report = compare({"score": f64(0.1, 0.5)}, {"score": f64(np.nan, 0.5)})

    recorded = report.max_abs_error["score"]
    assert not report.ok
    assert np.isnan(recorded) or recorded > TOL.atol  # the reported error must not look like a pass


@dataclass(frozen=True)
class Exported:
    model: RankingModel
    path: Path
    requests: list[Arrays]


@pytest.fixture(scope="module")
def exported(tiny_spec: Spec, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    torch.manual_seed(0)
    model = build_tier(tiny_spec, tiny_spec.tier("lite")).eval()
    raw = generate_requests(tiny_spec.features, 6, (2, 6), 0.5, seed=31)
    preprocess = Preprocess.fit(tiny_spec.features, raw.user_dense, raw.ad_dense).eval()
    requests = []
    for r in range(raw.num_requests):
        with torch.no_grad():
            out = preprocess(*(torch.from_numpy(raw.request(r)[k]) for k in REQUEST_TENSORS))
        requests.append({k: t.numpy() for k, t in zip(REQUEST_TENSORS, out, strict=True)})
    single = dict(requests[0], ad_dense=requests[0]["ad_dense"][:1], ad_sparse=requests[0]["ad_sparse"][:1])
    requests.append(single)
    example = {k: torch.from_numpy(v) for k, v in requests[1].items()}
    path = tmp_path_factory.mktemp("parity") / "model.onnx"
    export_tier(model, example, path, tiny_spec.export.opset)
    return Exported(model, path, requests)


def pytorch(model: RankingModel, shift: float = 0.0) -> Callable[[Arrays], Arrays]:
    def reference(inputs: Arrays) -> Arrays:
        with torch.no_grad():
            score = model(*(torch.from_numpy(inputs[k]) for k in REQUEST_TENSORS)).numpy()
        return {SCORE: score + np.float32(shift)}

    return reference


def test_check_parity_passes_when_the_reference_is_the_pytorch_model(
    exported: Exported, tiny_spec: Spec
) -> None:
    session = cpu_session(str(exported.path))

    report = check_parity(
        session, pytorch(exported.model), exported.requests, tiny_spec.export.tolerance, "lite"
    )

    assert report.ok
    assert report.requests == len(exported.requests)
    assert (
        0.0
        <= report.max_abs_error[SCORE]
        <= tiny_spec.export.tolerance.atol + tiny_spec.export.tolerance.rtol
    )


def test_check_parity_raises_parity_error_with_the_max_error_when_the_reference_is_shifted(
    exported: Exported, tiny_spec: Spec
) -> None:
    session = cpu_session(str(exported.path))
    reference = pytorch(exported.model, shift=1e-3)
    worst = 0.0
    for inputs in exported.requests:  # brute force: the largest |onnx - shifted torch| over every score
        got = session.run([SCORE], inputs)[0]
        want = reference(inputs)[SCORE]
        worst = max(worst, *(abs(float(g) - float(w)) for g, w in zip(got, want, strict=True)))

    with pytest.raises(ParityError) as info:
        check_parity(session, reference, exported.requests, tiny_spec.export.tolerance, "lite")

    assert set(info.value.max_abs_error) == {SCORE}
    assert info.value.max_abs_error[SCORE] == pytest.approx(worst, rel=1e-9)
    assert 0.9e-3 < info.value.max_abs_error[SCORE] < 1.1e-3
    message = str(info.value)
    assert message.startswith("lite:")
    assert f"on {len(exported.requests)} of {len(exported.requests)} requests" in message


def test_check_parity_raises_parity_error_when_the_reference_names_another_output(
    exported: Exported, tiny_spec: Spec
) -> None:
    session = cpu_session(str(exported.path))

    def renamed(inputs: Arrays) -> Arrays:
        return {"probability": pytorch(exported.model)(inputs)[SCORE]}

    with pytest.raises(ParityError, match="names differ"):
        check_parity(session, renamed, exported.requests[:2], tiny_spec.export.tolerance, "lite")


def test_export_tier_keeps_the_candidate_dimension_dynamic_when_exported(exported: Exported) -> None:
    session = cpu_session(str(exported.path))
    shapes = {i.name: i.shape for i in session.get_inputs()}

    assert list(shapes) == list(REQUEST_TENSORS)
    assert isinstance(shapes["ad_dense"][0], str)  # symbolic N
    assert shapes["user_dense"][0] == 1
    assert [o.name for o in session.get_outputs()] == [SCORE]
