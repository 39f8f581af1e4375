"""ONNX-file tiers: checking a file against its mapping, wrapping it, its reference, per-pair cost."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from torch import nn

from toolkit.data.generator import generate_requests
from toolkit.data.requests import REQUEST_TENSORS
from toolkit.errors import UserModelError
from toolkit.export.onnx_adapter import (
    OnnxFileTier,
    check_onnx_file,
    wrap_onnx_file,
)
from toolkit.export.onnx_export import SCORE, export_tier
from toolkit.export.parity import cpu_session
from toolkit.export.per_pair import per_pair_cost
from toolkit.flops import FlopsError, count_flops
from toolkit.models.preprocess import Preprocess
from toolkit.models.user import UserTier, check_outputs
from toolkit.spec import Spec, spec_from_dict
from toolkit.spec.schema import TierSpec

# Widths of the tiny spec's preprocessed request tensors (tests/unit/conftest.py).
DU, SU, L, DA, SA = 3, 2, 6, 2, 3
USER_MLP_FLOPS = (2 * DU * 16 + 16) + 16 + (2 * 16 * 8 + 8)
"""FLOPs per row of PairNet's user branch: Linear(3, 16) with bias, ReLU, Linear(16, 8) with bias."""


# ------------------------------------------------------------------------------------ user models


class PairNet(nn.Module):
    """A per-pair model with a user-only MLP branch; returns logits [N, 1]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.user_mlp = nn.Sequential(nn.Linear(DU, 16), nn.ReLU(), nn.Linear(16, 8))
        self.emb = nn.Embedding(512, 4)
        self.head = nn.Linear(8 + DA + 4, 1)

    def forward(self, user: torch.Tensor, ids: torch.Tensor, ad: torch.Tensor) -> torch.Tensor:
        e = self.emb(ids).sum(1)
        return self.head(torch.cat([self.user_mlp(user), ad, e], dim=1))


PAIR_INPUTS = [
    {"name": "user", "tensors": ["user_dense"]},
    {"name": "ids", "tensors": ["user_sparse", "ad_sparse"]},
    {"name": "ad", "tensors": ["ad_dense"]},
]


class RequestNet(nn.Module):
    """A request-centric model: user tower on one row, candidate tower on N; probabilities [N]."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(1)
        self.user = nn.Linear(DU, 8)
        self.emb = nn.Embedding(9, 8)
        self.cand = nn.Sequential(nn.Linear(DA + SA, 8), nn.Tanh())

    def forward(self, ud: torch.Tensor, hist: torch.Tensor, cand: torch.Tensor) -> torch.Tensor:
        u = self.user(ud) + self.emb(hist).sum(1) / L
        return torch.sigmoid((u * self.cand(cand)).sum(1))


REQUEST_INPUTS = [
    {"name": "ud", "tensors": ["user_dense"]},
    {"name": "hist", "tensors": ["user_history"]},
    {"name": "cand", "tensors": ["ad_dense", "ad_sparse"], "dtype": "float32"},
]


def _torch_export(
    module: nn.Module,
    example: tuple[torch.Tensor, ...],
    names: list[str],
    dynamic: list[bool],
    path: Path,
    opset: int,
) -> Path:
    n = torch.export.Dim("n", min=1, max=1 << 16)
    torch.onnx.export(
        module.eval(),
        example,
        input_names=names,
        output_names=["out"],
        dynamic_shapes={name: ({0: n} if dyn else None) for name, dyn in zip(names, dynamic, strict=True)},
        opset_version=opset,
        dynamo=True,
        verbose=False,
    ).save(str(path))
    return path


def _int32_model(path: Path) -> Path:
    """Opset 17, per-pair, an int32 ids input, FP16 logits [N, 1]; user features concatenated at once."""
    rng = np.random.default_rng(2)
    inits = [
        numpy_helper.from_array((0.3 * rng.normal(size=(512, 4))).astype(np.float32), "table"),
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array((0.5 * rng.normal(size=(DU + DA + 4, 1))).astype(np.float32), "w"),
        numpy_helper.from_array(np.array([0.1], np.float32), "b"),
    ]
    nodes = [
        helper.make_node("Gather", ["table", "ids"], ["emb"]),
        helper.make_node("ReduceSum", ["emb", "axis1"], ["pooled"], keepdims=0),
        helper.make_node("Concat", ["x", "pooled"], ["h"], axis=1),
        helper.make_node("MatMul", ["h", "w"], ["hw"]),
        helper.make_node("Add", ["hw", "b"], ["logit"]),
        helper.make_node("Cast", ["logit"], ["out"], to=TensorProto.FLOAT16),
    ]
    graph = helper.make_graph(
        nodes,
        "int32_pair",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", DU + DA]),
            helper.make_tensor_value_info("ids", TensorProto.INT32, ["n", SA]),
        ],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT16, ["n", 1])],
        inits,
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


INT32_INPUTS = [
    {"name": "x", "tensors": ["user_dense", "ad_dense"]},
    {"name": "ids", "tensors": ["ad_sparse"], "dtype": "int32"},
]


def _old_style_model(path: Path, opset: int, ir_version: int) -> Path:
    """Request layout, initializers listed as graph inputs, FP64 probabilities [N]; two inputs unused."""
    rng = np.random.default_rng(3)
    wu, wa = rng.normal(size=(DU, 1)).astype(np.float32), rng.normal(size=(DA, 1)).astype(np.float32)
    inits = [
        numpy_helper.from_array(wu, "wu"),
        numpy_helper.from_array(wa, "wa"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
    ]
    nodes = [
        helper.make_node("MatMul", ["u", "wu"], ["su"]),
        helper.make_node("MatMul", ["a", "wa"], ["sa"]),
        helper.make_node("Add", ["su", "sa"], ["s"]),
        helper.make_node("Sigmoid", ["s"], ["p"]),
        helper.make_node("Reshape", ["p", "flat"], ["pf"]),
        helper.make_node("Cast", ["pf"], ["prob"], to=TensorProto.DOUBLE),
    ]
    inputs = [
        helper.make_tensor_value_info("u", TensorProto.FLOAT, [1, DU]),
        helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n", DA]),
        helper.make_tensor_value_info("wu", TensorProto.FLOAT, [DU, 1]),
        helper.make_tensor_value_info("wa", TensorProto.FLOAT, [DA, 1]),
        helper.make_tensor_value_info("flat", TensorProto.INT64, [1]),
    ]
    graph = helper.make_graph(
        nodes, "old_style", inputs, [helper.make_tensor_value_info("prob", TensorProto.DOUBLE, ["n"])], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)
    onnx.save(model, str(path))
    return path


OLD_INPUTS = [{"name": "u", "tensors": ["user_dense"]}, {"name": "a", "tensors": ["ad_dense"]}]


def _generic(
    path: Path,
    inputs: list[tuple[str, int, list[Any]]],
    out_dims: tuple[Any, ...] | list[Any] = ("n",),
    out_type: int = TensorProto.FLOAT,
    outputs: int = 1,
    doubled: bool = False,
) -> Path:
    """Every input summed per row into [N, 1], then shaped to ``out_dims`` ([N*2] when ``doubled``)."""
    nodes, sums = [], []
    inits = [
        numpy_helper.from_array(np.array([1], np.int64), "axis1"),
        numpy_helper.from_array(np.array([-1], np.int64), "flat"),
    ]
    for name, _, _ in inputs:
        nodes.append(helper.make_node("Cast", [name], [f"{name}_f"], to=TensorProto.FLOAT))
        nodes.append(helper.make_node("ReduceSum", [f"{name}_f", "axis1"], [f"{name}_s"], keepdims=1))
        sums.append(f"{name}_s")
    nodes.append(helper.make_node("Sum", sums, ["s"]))
    dims = list(out_dims)
    if doubled:
        nodes.append(helper.make_node("Concat", ["s", "s"], ["t"], axis=0))
        nodes.append(helper.make_node("Reshape", ["t", "flat"], ["shaped"]))
    elif len(dims) == 2 and dims[1] == 2:
        nodes.append(helper.make_node("Concat", ["s", "s"], ["shaped"], axis=1))
    elif len(dims) == 2:
        nodes.append(helper.make_node("Identity", ["s"], ["shaped"]))
    else:
        nodes.append(helper.make_node("Reshape", ["s", "flat"], ["shaped"]))
    nodes.append(helper.make_node("Sigmoid", ["shaped"], ["sig"]))
    nodes.append(helper.make_node("Cast", ["sig"], ["out"], to=out_type))
    outs = [helper.make_tensor_value_info("out", out_type, dims)]
    if outputs == 2:
        nodes.append(helper.make_node("Identity", ["out"], ["out2"]))
        outs.append(helper.make_tensor_value_info("out2", out_type, dims))
    graph = helper.make_graph(
        nodes, "generic", [helper.make_tensor_value_info(n, t, d) for n, t, d in inputs], outs, inits
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), str(path))
    return path


GENERIC_INPUTS = [{"name": "x", "tensors": ["user_dense"]}, {"name": "c", "tensors": ["ad_sparse"]}]
GOOD_GENERIC = [("x", TensorProto.FLOAT, [1, DU]), ("c", TensorProto.INT64, ["n", SA])]


# --------------------------------------------------------------------------------------- fixtures


def _example(n: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(n)
    return {
        "user_dense": torch.randn(1, DU, generator=g),
        "user_sparse": torch.randint(1, 7, (1, SU), generator=g),
        "user_history": torch.randint(0, 9, (1, L), generator=g),
        "ad_dense": torch.randn(n, DA, generator=g),
        "ad_sparse": torch.randint(1, 9, (n, SA), generator=g),
    }


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """User ONNX files: two exported from PyTorch (opsets 18 and 17), three built with onnx.helper."""
    root = tmp_path_factory.mktemp("user_onnx")
    n = 4
    pair_example = (torch.randn(n, DU), torch.randint(1, 9, (n, SU + SA)), torch.randn(n, DA))
    request_example = (torch.randn(1, DU), torch.randint(0, 9, (1, L)), torch.randn(n, DA + SA))
    return {
        "pair18": _torch_export(
            PairNet(), pair_example, ["user", "ids", "ad"], [True] * 3, root / "p18.onnx", 18
        ),
        "request17": _torch_export(
            RequestNet(), request_example, ["ud", "hist", "cand"], [False, False, True], root / "r17.onnx", 17
        ),
        "int32": _int32_model(root / "int32.onnx"),
        "old13": _old_style_model(root / "old13.onnx", 13, 7),
        "old21": _old_style_model(root / "old21.onnx", 21, 10),
    }


@pytest.fixture(scope="module")
def requests(tiny_spec: Spec) -> list[dict[str, np.ndarray]]:
    """Preprocessed requests of the tiny spec, N from 2 to 6, plus one with a single candidate."""
    raw = generate_requests(tiny_spec.features, 5, (2, 6), 0.5, seed=11)
    preprocess = Preprocess.fit(tiny_spec.features, raw.user_dense, raw.ad_dense)
    out = []
    for r in range(raw.num_requests):
        request = raw.request(r)
        with torch.no_grad():
            tensors = preprocess(*(torch.from_numpy(request[k]) for k in REQUEST_TENSORS))
        out.append({k: t.numpy() for k, t in zip(REQUEST_TENSORS, tensors, strict=True)})
    out.append({**out[0], "ad_dense": out[0]["ad_dense"][:1], "ad_sparse": out[0]["ad_sparse"][:1]})
    return out


def _with_tier(spec_dict: dict[str, Any], model: dict[str, Any], name: str = "mine") -> tuple[Spec, TierSpec]:
    spec_dict = copy.deepcopy(spec_dict)
    spec_dict["tiers"].append({"name": name, "model": model})
    spec = spec_from_dict(spec_dict, source="tiny.yaml")
    return spec, spec.tier(name)


def _onnx_tier(
    spec_dict: dict[str, Any],
    path: Path,
    inputs: list[dict[str, Any]],
    layout: str = "request",
    output: str = "probability",
) -> tuple[Spec, TierSpec]:
    return _with_tier(spec_dict, {"onnx": str(path), "layout": layout, "output": output, "inputs": inputs})


CASES = {
    "pair18": (PAIR_INPUTS, "pair", "logit", 18),
    "request17": (REQUEST_INPUTS, "request", "probability", 17),
    "int32": (INT32_INPUTS, "pair", "logit", 17),
    "old13": (OLD_INPUTS, "request", "probability", 13),
    "old21": (OLD_INPUTS, "request", "probability", 21),
}
"""Per user file: its mapping, layout, output kind and default-domain opset."""


# ------------------------------------------------------------------------------------ wrap/parity


@pytest.mark.parametrize("case", sorted(CASES))
def test_wrapped_file_matches_the_reference(
    case: str,
    files: dict[str, Path],
    requests: list[dict[str, np.ndarray]],
    tiny_spec_dict: dict[str, Any],
    tmp_path: Path,
) -> None:
    inputs, layout, output, opset = CASES[case]
    spec, tier = _onnx_tier(tiny_spec_dict, files[case], inputs, layout, output)
    out = tmp_path / "model.onnx"
    wrap_onnx_file(tier, spec, out, opset=18)

    wrapped = onnx.load(str(out))
    assert [i.name for i in wrapped.graph.input] == list(REQUEST_TENSORS)
    assert [o.name for o in wrapped.graph.output] == [SCORE]
    assert wrapped.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    user_opset = next(o.version for o in onnx.load(str(files[case])).opset_import if o.domain == "")
    assert user_opset == opset
    assert next(o.version for o in wrapped.opset_import if o.domain == "") == user_opset

    session = cpu_session(str(out))
    reference = OnnxFileTier(tier, spec)
    scores = []
    counts = {len(r["ad_dense"]) for r in requests}
    assert 1 in counts and max(counts) > 1
    for request in requests:
        (got,) = session.run([SCORE], request)
        want = reference(*(torch.from_numpy(request[k]) for k in REQUEST_TENSORS)).numpy()
        assert got.dtype == np.float32 and got.shape == (len(request["ad_dense"]),)
        assert want.shape == got.shape
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
        scores.append(got)
    # Scores away from 0 and 1, so the comparison is not between saturated sigmoids.
    middle = np.concatenate(scores)
    assert np.mean((middle > 0.02) & (middle < 0.98)) > 0.5, middle
    check_outputs(tier, reference, requests[0])


def test_reference_applies_the_sigmoid_to_logits(
    files: dict[str, Path], requests: list[dict[str, np.ndarray]], tiny_spec_dict: dict[str, Any]
) -> None:
    spec, tier = _onnx_tier(tiny_spec_dict, files["pair18"], PAIR_INPUTS, "pair", "logit")
    request = requests[1]
    tensors = {k: torch.from_numpy(v) for k, v in request.items()}
    n = tensors["ad_dense"].shape[0]
    with torch.no_grad():
        logits = PairNet()(
            tensors["user_dense"].expand(n, DU),
            torch.cat([tensors["user_sparse"].expand(n, SU), tensors["ad_sparse"]], 1),
            tensors["ad_dense"],
        ).reshape(n)
    got = OnnxFileTier(tier, spec)(*(tensors[k] for k in REQUEST_TENSORS))
    np.testing.assert_allclose(got.numpy(), torch.sigmoid(logits).numpy(), atol=1e-6)


def test_wrapped_file_keeps_unused_request_inputs(
    files: dict[str, Path], tiny_spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    spec, tier = _onnx_tier(tiny_spec_dict, files["old13"], OLD_INPUTS)
    out = tmp_path / "model.onnx"
    wrap_onnx_file(tier, spec, out, opset=18)
    session = cpu_session(str(out))
    assert [i.name for i in session.get_inputs()] == list(REQUEST_TENSORS)
    shapes = {i.name: i.shape for i in session.get_inputs()}
    assert shapes["user_history"] == [1, L] and shapes["ad_sparse"] == ["num_candidates", SA]
    # The weights listed as inputs in the old-style file are not inputs of the wrapped tier.
    assert not {"wu", "wa", "flat"} & {i.name for i in session.get_inputs()}


def test_wrap_converts_a_file_older_than_the_adapter_ops(
    tiny_spec_dict: dict[str, Any], tmp_path: Path, requests: list[dict[str, np.ndarray]]
) -> None:
    path = _old_style_model(tmp_path / "old7.onnx", 7, 3)
    spec, tier = _onnx_tier(tiny_spec_dict, path, OLD_INPUTS)
    out = tmp_path / "model.onnx"
    wrap_onnx_file(tier, spec, out, opset=13)
    assert next(o.version for o in onnx.load(str(out)).opset_import if o.domain == "") == 13
    (got,) = cpu_session(str(out)).run([SCORE], requests[0])
    want = OnnxFileTier(tier, spec)(*(torch.from_numpy(requests[0][k]) for k in REQUEST_TENSORS))
    np.testing.assert_allclose(got, want.numpy(), atol=1e-6)


# ----------------------------------------------------------------------------------- mismatches


def _assert_one_line(exc: pytest.ExceptionInfo[UserModelError], *phrases: str) -> None:
    message = str(exc.value)
    assert message.startswith("tier 'mine': "), message
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message, message


MISMATCHES: dict[str, tuple[dict[str, Any], tuple[str, ...]]] = {
    "missing input": (
        {"inputs": [GOOD_GENERIC[1]]},
        ("model.inputs maps 'x', which the ONNX file has no input of; its inputs: c",),
    ),
    "extra input": (
        {"inputs": [*GOOD_GENERIC, ("z", TensorProto.FLOAT, ["n", 1])]},
        ("ONNX input 'z' is not mapped by model.inputs",),
    ),
    "wrong dtype": (
        {"inputs": [GOOD_GENERIC[0], ("c", TensorProto.INT32, ["n", SA])]},
        ("wrong dtype", "'c'", "int32", "int64"),
    ),
    "wrong width": (
        {"inputs": [GOOD_GENERIC[0], ("c", TensorProto.INT64, ["n", SA + 1])]},
        ("'c' has 4 features", "gives 3"),
    ),
    "wrong rank": (
        {"inputs": [("x", TensorProto.FLOAT, [1, DU, 1]), GOOD_GENERIC[1]]},
        ("'x' has shape [1, 3, 1]", "rank 2"),
    ),
    "fixed candidate dim": (
        {"inputs": [GOOD_GENERIC[0], ("c", TensorProto.INT64, [4, SA])]},
        ("'c' has a fixed dim 0 of 4", "dynamic"),
    ),
    "output [N, 2]": (
        {"inputs": GOOD_GENERIC, "out_dims": ["n", 2]},
        ("shape [n, 2]", "expected [N] or [N, 1]"),
    ),
    "two outputs": ({"inputs": GOOD_GENERIC, "outputs": 2}, ("2 outputs (out, out2)", "exactly one")),
    "integer output": ({"inputs": GOOD_GENERIC, "out_type": TensorProto.INT64}, ("'out' is int64",)),
}


@pytest.mark.parametrize("case", sorted(MISMATCHES))
def test_each_mismatch_is_one_line_naming_the_tier(
    case: str, tiny_spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    kwargs, phrases = MISMATCHES[case]
    path = _generic(tmp_path / "m.onnx", **kwargs)
    spec, tier = _onnx_tier(tiny_spec_dict, path, GENERIC_INPUTS)
    with pytest.raises(UserModelError) as exc:
        check_onnx_file(tier, spec)
    _assert_one_line(exc, *phrases)
    with pytest.raises(UserModelError) as exc:
        wrap_onnx_file(tier, spec, tmp_path / "out.onnx", 18)
    _assert_one_line(exc, *phrases)
    assert not (tmp_path / "out.onnx").exists()


def test_the_matching_generic_file_passes(tiny_spec_dict: dict[str, Any], tmp_path: Path) -> None:
    # The baseline of the mismatch cases: only the mismatch makes them fail.
    path = _generic(tmp_path / "m.onnx", GOOD_GENERIC)
    spec, tier = _onnx_tier(tiny_spec_dict, path, GENERIC_INPUTS)
    assert [i.name for i in check_onnx_file(tier, spec).graph.input] == ["x", "c"]


def test_a_user_input_with_one_row_is_refused_for_a_pair_model(
    tiny_spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    path = _generic(tmp_path / "m.onnx", GOOD_GENERIC)
    spec, tier = _onnx_tier(tiny_spec_dict, path, GENERIC_INPUTS, layout="pair")
    with pytest.raises(UserModelError) as exc:
        check_onnx_file(tier, spec)
    _assert_one_line(exc, "'x' has a fixed dim 0 of 1", "one row per candidate")


def test_missing_and_unreadable_files(tiny_spec_dict: dict[str, Any], tmp_path: Path) -> None:
    spec, tier = _onnx_tier(tiny_spec_dict, tmp_path / "nope.onnx", GENERIC_INPUTS)
    with pytest.raises(UserModelError) as exc:
        check_onnx_file(tier, spec)
    _assert_one_line(exc, "nope.onnx", "not found")
    with pytest.raises(UserModelError) as exc:
        OnnxFileTier(tier, spec)
    _assert_one_line(exc, "not found")

    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"\xff\x00 this is not a protobuf \x13\x37" * 10)
    spec, tier = _onnx_tier(tiny_spec_dict, garbage, GENERIC_INPUTS)
    with pytest.raises(UserModelError) as exc:
        check_onnx_file(tier, spec)
    _assert_one_line(exc, "garbage.onnx")


def test_a_wrong_output_length_at_run_time_is_reported_like_a_torch_model(
    tiny_spec_dict: dict[str, Any], tmp_path: Path, requests: list[dict[str, np.ndarray]]
) -> None:
    # The file declares its output [m], so only running it shows that m is 2N.
    path = _generic(tmp_path / "m.onnx", GOOD_GENERIC, out_dims=["m"], doubled=True)
    spec, tier = _onnx_tier(tiny_spec_dict, path, GENERIC_INPUTS)
    reference = OnnxFileTier(tier, spec)
    n = len(requests[0]["ad_dense"])
    with pytest.raises(UserModelError) as exc:
        check_outputs(tier, reference, requests[0])
    _assert_one_line(exc, f"shape [{2 * n}] for {n} candidates", f"expected [{n}] or [{n}, 1]")


# ---------------------------------------------------------------------------------- per-pair cost


def test_per_pair_cost_of_a_wrapped_pair_model_with_a_user_branch(
    files: dict[str, Path], tiny_spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    spec, tier = _onnx_tier(tiny_spec_dict, files["pair18"], PAIR_INPUTS, "pair", "logit")
    out = tmp_path / "model.onnx"
    wrap_onnx_file(tier, spec, out, 18)
    cost = per_pair_cost(out, spec, [1, 8, 64])
    assert cost["tiled"] is True
    for n in (1, 8, 64):
        # The user MLP runs on N tiled rows; a request-centric model runs it on one.
        assert cost["redundant_flops"][n] == USER_MLP_FLOPS * (n - 1)
        assert cost["total_flops"][n] == count_flops(out, n)
        # user_dense (3 x FP32) and user_sparse (2 x INT64) are copied to N - 1 more rows.
        assert cost["tiled_input_bytes"][n] == (n - 1) * (DU * 4 + SU * 8)
    share = cost["redundant_share"]
    assert share[1] == 0 and 0 < share[8] < share[64] < 1
    assert cost["user_flops_per_candidate"] == USER_MLP_FLOPS
    assert "repeated for every candidate" in cost["note"] and "N=64" in cost["note"]
    assert f"{share[64]:.1%}" in cost["note"]


def test_per_pair_cost_without_user_only_work_is_the_tiled_bytes(
    files: dict[str, Path], tiny_spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    spec, tier = _onnx_tier(tiny_spec_dict, files["int32"], INT32_INPUTS, "pair", "logit")
    out = tmp_path / "model.onnx"
    wrap_onnx_file(tier, spec, out, 18)
    cost = per_pair_cost(out, spec, [4, 32])
    assert cost["tiled"] is True
    assert cost["redundant_flops"] == {4: 0, 32: 0} and cost["redundant_share"] == {4: 0.0, 32: 0.0}
    assert cost["tiled_input_bytes"] == {4: 3 * DU * 4, 32: 31 * DU * 4}
    assert "no node computes on them alone" in cost["note"] and "tiled input bytes only" in cost["note"]


def _user_tier(
    spec_dict: dict[str, Any], inputs: list[dict[str, Any]], layout: str, module: nn.Module
) -> UserTier:
    model = {"factory": "tests.unit.nothing:factory", "layout": layout, "inputs": inputs}
    if isinstance(module, PairNet):
        model["output"] = "logit"
    _, tier = _with_tier(spec_dict, model, name="torchtier")
    return UserTier(tier, module.eval()).eval()


def test_per_pair_cost_of_exported_user_tiers(
    tiny_spec_dict: dict[str, Any], tiny_spec: Spec, tmp_path: Path
) -> None:
    request_tier = _user_tier(tiny_spec_dict, REQUEST_INPUTS, "request", RequestNet())
    export_tier(request_tier, _example(4), tmp_path / "request.onnx", 18)
    cost = per_pair_cost(tmp_path / "request.onnx", tiny_spec, [1, 16, 256])
    assert cost["tiled"] is False
    assert cost["redundant_flops"] == {1: 0, 16: 0, 256: 0}
    assert cost["tiled_input_bytes"] == {1: 0, 16: 0, 256: 0}
    assert cost["user_only_flops"][1] == cost["user_only_flops"][256] > 0
    assert cost["note"].startswith("request-centric graph")

    pair_tier = _user_tier(tiny_spec_dict, PAIR_INPUTS, "pair", PairNet())
    export_tier(pair_tier, _example(4), tmp_path / "pair.onnx", 18)
    cost = per_pair_cost(tmp_path / "pair.onnx", tiny_spec, [1, 16, 256])
    assert cost["tiled"] is True
    assert cost["redundant_flops"] == {n: USER_MLP_FLOPS * (n - 1) for n in (1, 16, 256)}
    assert 0 < cost["redundant_share"][16] < cost["redundant_share"][256]


def test_per_pair_cost_refuses_bad_counts(files: dict[str, Path], tiny_spec: Spec) -> None:
    with pytest.raises(FlopsError, match="at least 1"):
        per_pair_cost(files["old13"], tiny_spec, [0, 4])


def test_raw_inputs_get_the_values_the_client_sent(
    files: dict[str, Path], tiny_spec: Spec, tiny_spec_dict: dict[str, Any], tmp_path: Path
) -> None:
    raw_inputs = [
        {**item, "values": "raw"} if item["name"] in ("user", "ad") else item for item in PAIR_INPUTS
    ]
    spec, tier = _onnx_tier(tiny_spec_dict, files["pair18"], raw_inputs, "pair", "logit")
    generated = generate_requests(tiny_spec.features, 3, (2, 6), 0.5, seed=12)
    preprocess = Preprocess.fit(tiny_spec.features, generated.user_dense * 3 + 1, generated.ad_dense - 2)
    statistics = preprocess.statistics()
    out = tmp_path / "raw.onnx"
    wrap_onnx_file(tier, spec, out, opset=18, statistics=statistics)
    session, original = cpu_session(str(out)), cpu_session(str(files["pair18"]))
    reference = OnnxFileTier(tier, spec, statistics=statistics)
    for r in range(generated.num_requests):
        request = generated.request(r)
        with torch.no_grad():
            tensors = preprocess(*(torch.from_numpy(request[k]) for k in REQUEST_TENSORS))
        pre = {k: t.numpy() for k, t in zip(REQUEST_TENSORS, tensors, strict=True)}
        n = len(request["ad_dense"])
        feeds = {
            "user": np.repeat(request["user_dense"], n, 0),
            "ids": np.concatenate([np.repeat(pre["user_sparse"], n, 0), pre["ad_sparse"]], 1),
            "ad": request["ad_dense"],
        }
        (logits,) = original.run(None, feeds)
        want = 1.0 / (1.0 + np.exp(-logits.reshape(n).astype(np.float64)))
        (got,) = session.run([SCORE], pre)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        ref = reference(*(torch.from_numpy(pre[k]) for k in REQUEST_TENSORS)).numpy()
        np.testing.assert_allclose(got, ref, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="statistics are needed"):
        wrap_onnx_file(tier, spec, tmp_path / "none.onnx", opset=18)
