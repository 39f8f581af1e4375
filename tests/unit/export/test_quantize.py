"""Unit tests of toolkit.export.quantize: precision variants of the exported lite, standard and xl tiers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from toolkit.data import REQUEST_TENSORS, generate_requests
from toolkit.errors import ExportError
from toolkit.export import SCORE, cpu_session, export_tier
from toolkit.export.quantize import (
    EmbeddingReport,
    embeddings_rowwise,
    int8_dynamic,
    int8_static,
    qdq_fp8,
    to_fp16,
)
from toolkit.models import Preprocess, build_tier
from toolkit.spec import Spec

Arrays = dict[str, np.ndarray]
TIERS = ("lite", "standard", "xl")
QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass(frozen=True)
class Tier:
    name: str
    path: Path
    calibration: list[Arrays]
    requests: list[Arrays]
    scores: np.ndarray  # fp32 ONNX Runtime scores of ``requests``, concatenated


def preprocessed(spec: Spec, count: int, seed: int) -> list[Arrays]:
    raw = generate_requests(spec.features, count, (2, 6), 0.5, seed=seed, world_seed=3)
    preprocess = Preprocess.fit(spec.features, raw.user_dense, raw.ad_dense).eval()
    out = []
    for r in range(raw.num_requests):
        with torch.no_grad():
            tensors = preprocess(*(torch.from_numpy(raw.request(r)[k]) for k in REQUEST_TENSORS))
        out.append({k: t.numpy() for k, t in zip(REQUEST_TENSORS, tensors, strict=True)})
    return out


def run(path: Path, requests: list[Arrays]) -> np.ndarray:
    session = cpu_session(str(path))
    return np.concatenate([session.run([SCORE], inputs)[0] for inputs in requests])


def run_unoptimized(path: Path, requests: list[Arrays]) -> np.ndarray:
    """The graph as written: ONNX Runtime's optimizer would move float8 Q/DQ around Transposes,
    which its CPU kernels cannot run (TensorRT, the fp8 model's consumer, does its own fusion)."""
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run([SCORE], inputs)[0] for inputs in requests])


def max_diff(path: Path, tier: Tier, runner: Callable[[Path, list[Arrays]], np.ndarray] = run) -> float:
    got = runner(path, tier.requests)
    assert got.shape == tier.scores.shape and got.dtype == np.float32
    assert np.isfinite(got).all()
    return float(np.abs(got - tier.scores).max())


def gather_model(table: np.ndarray, folder: Path) -> Path:
    ids = helper.make_tensor_value_info("ids", TensorProto.INT64, [2, None])
    rows = helper.make_tensor_value_info("rows", TensorProto.FLOAT, [2, None, table.shape[1]])
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], "lookup")],
        "lookup",
        [ids],
        [rows],
        [numpy_helper.from_array(table, "table")],
    )
    path = folder / "gather.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return path


def lookup(path: Path, ids: np.ndarray) -> np.ndarray:
    return cpu_session(str(path)).run(["rows"], {"ids": ids})[0]


@pytest.fixture(scope="module", params=TIERS)
def tier(request: pytest.FixtureRequest, tiny_spec: Spec, tmp_path_factory: pytest.TempPathFactory) -> Tier:
    torch.manual_seed(0)
    model = build_tier(tiny_spec, tiny_spec.tier(request.param)).eval()
    with torch.no_grad():  # weights away from their init, so no part of the graph is trivially small
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for m in model.modules():
            if isinstance(m, torch.nn.Embedding):
                m.weight[0].zero_()  # padding row, as training keeps it
    calibration = preprocessed(tiny_spec, 16, seed=31)
    requests = preprocessed(tiny_spec, 8, seed=32)
    requests.append(
        dict(requests[0], ad_dense=requests[0]["ad_dense"][:1], ad_sparse=requests[0]["ad_sparse"][:1])
    )
    path = tmp_path_factory.mktemp(request.param) / "model.onnx"
    export_tier(
        model, {k: torch.from_numpy(v) for k, v in calibration[0].items()}, path, tiny_spec.export.opset
    )
    return Tier(request.param, path, calibration, requests, run(path, requests))


def ops(model: onnx.ModelProto) -> Counter[str]:
    return Counter(n.op_type for n in model.graph.node)


def initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in model.graph.initializer}


def embedding_tables(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Float initializers read as the data of a Gather, by name."""
    inits = initializers(model)
    names = {n.input[0] for n in model.graph.node if n.op_type == "Gather" and n.input[0] in inits}
    return {k: numpy_helper.to_array(inits[k]) for k in names if inits[k].data_type == TensorProto.FLOAT}


def weighted_linear(model: onnx.ModelProto) -> int:
    inits = initializers(model)
    return sum(n.op_type in ("MatMul", "Gemm") and n.input[1] in inits for n in model.graph.node)


def assert_tables_untouched(fp32: onnx.ModelProto, out: onnx.ModelProto) -> None:
    tables = embedding_tables(fp32)
    kept = embedding_tables(out)
    assert len(tables) == 5
    assert set(kept) == set(tables)
    for name, table in tables.items():
        assert kept[name].dtype == np.float32
        np.testing.assert_array_equal(kept[name], table)


# fp16


def test_to_fp16_keeps_fp32_io_and_scores_within_1e_2_when_converted(tier: Tier, tmp_path: Path) -> None:
    out = tmp_path / "fp16.onnx"

    to_fp16(tier.path, out)

    fp32, fp16 = onnx.load(tier.path), onnx.load(out)
    onnx.checker.check_model(fp16, full_check=True)
    io_types = [(v.name, v.type.tensor_type.elem_type) for v in (*fp32.graph.input, *fp32.graph.output)]
    assert [
        (v.name, v.type.tensor_type.elem_type) for v in (*fp16.graph.input, *fp16.graph.output)
    ] == io_types
    floats = {k for k, v in initializers(fp32).items() if v.data_type == TensorProto.FLOAT}
    converted = {k for k, v in initializers(fp16).items() if v.data_type == TensorProto.FLOAT16}
    assert converted == floats
    assert set(embedding_tables(fp32)) < converted
    assert max_diff(out, tier) < 1e-2


# int8 dynamic


def test_int8_dynamic_quantizes_only_weighted_matmuls_and_keeps_tables_when_quantized(
    tier: Tier, tmp_path: Path
) -> None:
    out = tmp_path / "int8_dynamic.onnx"

    int8_dynamic(tier.path, out)

    fp32, int8 = onnx.load(tier.path), onnx.load(out)
    onnx.checker.check_model(int8)
    assert ops(int8)["MatMulInteger"] == weighted_linear(fp32) > 0
    assert ops(int8)["DynamicQuantizeLinear"] > 0
    assert ops(int8)["Gemm"] == 0
    assert ops(int8)["MatMul"] == ops(fp32)["MatMul"] + ops(fp32)["Gemm"] - weighted_linear(fp32)
    assert ops(int8)["Gather"] == ops(fp32)["Gather"]
    assert_tables_untouched(fp32, int8)
    assert max_diff(out, tier) < 0.05


# int8 static and fp8


def test_int8_static_adds_int8_qdq_and_keeps_tables_when_calibrated(tier: Tier, tmp_path: Path) -> None:
    out = tmp_path / "int8_static.onnx"

    int8_static(tier.path, out, tier.calibration)

    fp32, int8 = onnx.load(tier.path), onnx.load(out)
    onnx.checker.check_model(int8)
    inits = initializers(int8)
    quantize = [n for n in int8.graph.node if n.op_type == "QuantizeLinear"]
    assert len(quantize) >= weighted_linear(fp32) and ops(int8)["DequantizeLinear"] > len(quantize)
    assert {inits[n.input[2]].data_type for n in quantize} == {TensorProto.INT8}
    assert not any(numpy_helper.to_array(inits[n.input[2]]).any() for n in quantize)  # symmetric
    assert_tables_untouched(fp32, int8)
    assert max_diff(out, tier) < 0.05


def test_qdq_fp8_writes_a_valid_model_with_float8_qdq_when_calibrated(tier: Tier, tmp_path: Path) -> None:
    out = tmp_path / "fp8.onnx"

    qdq_fp8(tier.path, out, tier.calibration)

    fp8 = onnx.load(out)
    onnx.checker.check_model(fp8, full_check=True)
    inits = initializers(fp8)
    qdq = [n for n in fp8.graph.node if n.op_type in QDQ]
    assert len(qdq) >= 2 * weighted_linear(onnx.load(tier.path))
    assert {inits[n.input[2]].data_type for n in qdq} == {TensorProto.FLOAT8E4M3FN}
    assert_tables_untouched(onnx.load(tier.path), fp8)
    assert max_diff(out, tier, run_unoptimized) < 0.15  # E4M3 steps are ~6% of the value


@pytest.mark.parametrize("transform", [int8_static, qdq_fp8])
def test_static_quantization_raises_export_error_when_calibration_is_empty(
    tmp_path: Path, transform: Callable[..., None]
) -> None:
    src = gather_model(np.ones((3, 2), np.float32), tmp_path)

    with pytest.raises(ExportError, match="calibration"):
        transform(src, tmp_path / "out.onnx", [])

    assert not (tmp_path / "out.onnx").exists()


# row-wise embeddings


def expected_report(tables: dict[str, np.ndarray], bits: int) -> EmbeddingReport:
    rows = sum(t.shape[0] for t in tables.values())
    codes = sum(t.shape[0] * (t.shape[1] if bits == 8 else (t.shape[1] + 1) // 2) for t in tables.values())
    return EmbeddingReport(
        len(tables),
        rows,
        4 * sum(t.size for t in tables.values()),
        codes + rows * 2 * (4 if bits == 8 else 2),
    )


@pytest.fixture(scope="module")
def rowwise(tier: Tier, tmp_path_factory: pytest.TempPathFactory) -> dict[int, tuple[Path, EmbeddingReport]]:
    folder = tmp_path_factory.mktemp(f"{tier.name}-rowwise")
    return {
        bits: (folder / f"int{bits}.onnx", embeddings_rowwise(tier.path, folder / f"int{bits}.onnx", bits))
        for bits in (8, 4)
    }


def test_embeddings_rowwise_reports_bytes_by_the_formula_when_quantized(
    tier: Tier, rowwise: dict[int, tuple[Path, EmbeddingReport]]
) -> None:
    tables = embedding_tables(onnx.load(tier.path))

    for bits in (8, 4):
        assert rowwise[bits][1] == expected_report(tables, bits)
    ratio = {bits: report.quantized_bytes / report.fp32_bytes for bits, (_, report) in rowwise.items()}
    assert ratio[4] < ratio[8] < 1


def test_embeddings_rowwise_replaces_each_table_once_and_nothing_else_when_quantized(
    tier: Tier, rowwise: dict[int, tuple[Path, EmbeddingReport]]
) -> None:
    fp32 = onnx.load(tier.path)
    tables = embedding_tables(fp32)
    readers = Counter(n.input[0] for n in fp32.graph.node if n.input and n.input[0] in tables)

    for bits, (path, _) in rowwise.items():
        model = onnx.load(path)
        onnx.checker.check_model(model, full_check=True)
        inits = initializers(model)
        assert not set(tables) & set(inits)
        for name, table in tables.items():
            codes = inits[f"{name}/rowwise_q"]
            assert codes.data_type == TensorProto.UINT8
            assert list(codes.dims) == [
                table.shape[0],
                table.shape[1] if bits == 8 else (table.shape[1] + 1) // 2,
            ]
            scale_type = TensorProto.FLOAT if bits == 8 else TensorProto.FLOAT16
            assert (
                inits[f"{name}/rowwise_scale"].data_type
                == inits[f"{name}/rowwise_offset"].data_type
                == scale_type
            )
            for part in ("q", "scale", "offset"):  # padding row 0 dequantizes to 0 * 0 + 0
                assert not numpy_helper.to_array(inits[f"{name}/rowwise_{part}"])[0].any()
            gathers = [n for n in model.graph.node if n.op_type == "Gather" and n.input[0] == codes.name]
            assert len(gathers) == readers[name]
        others = {k: v for k, v in initializers(fp32).items() if k not in tables}
        assert {k: inits[k] for k in others} == others
        assert len(inits) == len(others) + 3 * len(tables)
    if tier.name != "lite":  # the history reads the ad_category table too
        assert max(readers.values()) == 2


def test_embeddings_rowwise_keeps_scores_close_and_int8_tighter_than_int4_when_quantized(
    tier: Tier, rowwise: dict[int, tuple[Path, EmbeddingReport]]
) -> None:
    diff = {bits: max_diff(path, tier) for bits, (path, _) in rowwise.items()}

    assert diff[8] < 5e-3
    assert diff[4] < 5e-2
    assert diff[8] < diff[4]


@pytest.mark.parametrize("bits", [8, 4])
def test_embeddings_rowwise_round_trips_exactly_when_rows_are_on_the_grid(tmp_path: Path, bits: int) -> None:
    levels, dim = (1 << bits) - 1, 5  # odd D: 4 bits pads a column
    rng = np.random.default_rng(bits)
    codes = rng.integers(0, levels + 1, size=(6, dim))
    codes[:, 0], codes[:, 1] = 0, levels  # each row spans the whole grid, so min and max are as chosen
    offsets = np.array([0, -0.5, 0.25, -1.125, 0.75, 2.0], np.float32)[:, None]
    scales = np.array([0, 2**-7, 2**-6, 2**-8, 0, 2**-5], np.float32)[:, None]
    table = (offsets + codes * scales).astype(np.float32)  # row 0: padding zeros; row 4: constant 0.75
    src = gather_model(table, tmp_path)
    ids = np.array([[0, 1, 2, 3, 4, 5], [5, 4, 0, 3, 0, 1]], np.int64)

    embeddings_rowwise(src, tmp_path / "q.onnx", bits)

    got = lookup(tmp_path / "q.onnx", ids)
    assert got.dtype == np.float32 and got.shape == (2, 6, dim)
    np.testing.assert_array_equal(got, table[ids])
    assert not np.signbit(got[ids == 0]).any()  # padding gives +0.0 exactly


@pytest.mark.parametrize("bits", [8, 4])
def test_embeddings_rowwise_errs_by_at_most_half_a_step_when_rows_are_off_the_grid(
    tmp_path: Path, bits: int
) -> None:
    rng = np.random.default_rng(7)
    table = rng.normal(0.0, 0.3, size=(40, 6)).astype(np.float32)
    table[0] = 0.0
    src = gather_model(table, tmp_path)
    ids = np.arange(40, dtype=np.int64).reshape(2, 20)

    embeddings_rowwise(src, tmp_path / "q.onnx", bits)

    got = lookup(tmp_path / "q.onnx", ids).reshape(40, 6)
    step = (table.max(axis=1) - table.min(axis=1)) / ((1 << bits) - 1)
    error = np.abs(got - table).max(axis=1)
    slack = 1e-6 if bits == 8 else 2e-3 * np.abs(table).max(axis=1)  # float16 scale and offset
    assert (error <= step / 2 + slack).all()
    assert error.max() > 0  # the table really was quantized
    assert (got[0] == 0).all()


@pytest.mark.parametrize("bits", [2, 16])
def test_embeddings_rowwise_raises_export_error_when_bits_are_unsupported(tmp_path: Path, bits: int) -> None:
    src = gather_model(np.ones((3, 2), np.float32), tmp_path)

    with pytest.raises(ExportError, match="8 or 4 bits"):
        embeddings_rowwise(src, tmp_path / "q.onnx", bits)

    assert not (tmp_path / "q.onnx").exists()


# composition


def signature(node: onnx.NodeProto) -> tuple[str, str, tuple[str, ...]]:
    return node.name, node.op_type, tuple(node.input)


def signatures(model: onnx.ModelProto) -> set[tuple[str, str, tuple[str, ...]]]:
    return {signature(n) for n in model.graph.node}


def test_int8_dynamic_leaves_the_int4_dequantization_alone_when_run_after_embeddings_rowwise(
    tier: Tier, rowwise: dict[int, tuple[Path, EmbeddingReport]], tmp_path: Path
) -> None:
    path4 = rowwise[4][0]
    out = tmp_path / "int4_int8.onnx"

    int8_dynamic(path4, out)

    fp32, before, after = onnx.load(tier.path), onnx.load(path4), onnx.load(out)
    chain = signatures(before) - signatures(fp32)  # what embeddings_rowwise added
    assert len(chain) >= 10 * len(embedding_tables(fp32))
    assert chain <= signatures(after)
    replaced = {o for n in fp32.graph.node for o in n.output}  # each chain ends in its Gather's output
    internal = {o for n in before.graph.node if signature(n) in chain for o in n.output} - replaced
    quantizers = [n for n in after.graph.node if n.op_type in ("DynamicQuantizeLinear", "MatMulInteger")]
    assert internal and not internal & {i for n in quantizers for i in n.input}
    assert ops(after)["MatMulInteger"] == weighted_linear(fp32)
    kept = initializers(after)
    for name, init in initializers(before).items():
        if "/rowwise_" in name:
            assert kept[name].data_type == init.data_type
            np.testing.assert_array_equal(numpy_helper.to_array(kept[name]), numpy_helper.to_array(init))
    assert max_diff(out, tier) < 0.05


# errors


TRANSFORMS: dict[str, Callable[[Path, Path], object]] = {
    "fp16": to_fp16,
    "int8_dynamic": int8_dynamic,
    "int8_static": lambda src, dst: int8_static(src, dst, [{}]),
    "fp8": lambda src, dst: qdq_fp8(src, dst, [{}]),
    "rowwise": lambda src, dst: embeddings_rowwise(src, dst, 8),
}


@pytest.mark.parametrize("name", sorted(TRANSFORMS))
@pytest.mark.parametrize("content", [None, b"\x00not an onnx model\xff" * 8], ids=["missing", "garbage"])
def test_transforms_raise_export_error_naming_the_file_when_src_is_unreadable(
    tmp_path: Path, name: str, content: bytes | None
) -> None:
    src, dst = tmp_path / "model.onnx", tmp_path / "out" / "model.onnx"
    if content is not None:
        src.write_bytes(content)

    with pytest.raises(ExportError) as info:
        TRANSFORMS[name](src, dst)

    assert str(src) in str(info.value)
    assert "load" in str(info.value)
    assert not dst.exists()
