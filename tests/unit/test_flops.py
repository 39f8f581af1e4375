"""Unit tests of toolkit.flops: hand-built graphs with known counts, then exported tiny tiers."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic

from toolkit.export import export_tier
from toolkit.flops import FlopsModel, count_flops, flops_model
from toolkit.models import build_tier
from toolkit.spec import Spec

CANDIDATES = (1, 16, 64, 256)


def weight(*shape: int, name: str = "w", dtype: type = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array(np.ones(shape, dtype=dtype), name)


def graph_model(
    nodes: list[onnx.NodeProto],
    inputs: list[onnx.ValueInfoProto],
    initializers: list[onnx.TensorProto] | None = None,
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes,
        "hand",
        inputs,
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializers or [],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def candidates(*dims: int | str) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("ad_dense", TensorProto.FLOAT, list(dims))


def matmul_add_relu(k: int, m: int) -> onnx.ModelProto:
    return graph_model(
        [
            helper.make_node("MatMul", ["ad_dense", "w"], ["mm"], "mm"),
            helper.make_node("Add", ["mm", "b"], ["sum"], "bias"),
            helper.make_node("Relu", ["sum"], ["y"], "act"),
        ],
        [candidates("N", k)],
        [weight(k, m), weight(m, name="b")],
    )


def test_count_flops_gives_two_nkm_plus_two_nm_when_the_graph_is_matmul_add_relu() -> None:
    k, m = 5, 3
    model = matmul_add_relu(k, m)

    got = [count_flops(model, n) for n in CANDIDATES]

    assert got == [2 * n * k * m + n * m + n * m for n in CANDIDATES]
    assert flops_model(model) == FlopsModel(per_request=0, per_candidate=2 * k * m + 2 * m)


def test_count_flops_reads_the_model_from_a_path_when_given_one(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    onnx.save(matmul_add_relu(5, 3), path)

    assert count_flops(path, 16) == count_flops(str(path), 16) == count_flops(matmul_add_relu(5, 3), 16)


@pytest.mark.parametrize(("bias", "extra"), [(True, 1), (False, 0)], ids=["bias", "no-bias"])
def test_count_flops_gives_two_mkn_plus_the_bias_when_the_graph_is_a_gemm(bias: bool, extra: int) -> None:
    k, m = 6, 4
    inputs = ["ad_dense", "w", "c"] if bias else ["ad_dense", "w"]
    model = graph_model(
        [helper.make_node("Gemm", inputs, ["y"], "gemm", transB=1)],
        [candidates("N", k)],
        [weight(m, k), weight(m, name="c")],
    )

    assert [count_flops(model, n) for n in CANDIDATES] == [2 * n * k * m + extra * n * m for n in CANDIDATES]


def test_count_flops_multiplies_by_the_broadcast_batch_when_a_matmul_is_batched() -> None:
    heads, m, k, cols = 4, 3, 5, 2
    model = graph_model(
        [helper.make_node("MatMul", ["ad_dense", "w"], ["y"], "bmm")],
        [candidates("N", 1, m, k)],  # [N, 1, M, K] x [heads, K, cols] -> [N, heads, M, cols]
        [weight(heads, k, cols)],
    )

    assert [count_flops(model, n) for n in CANDIDATES] == [2 * n * heads * m * k * cols for n in CANDIDATES]


def test_count_flops_fixes_every_input_dim_named_like_the_candidate_dim_when_it_appears_elsewhere() -> None:
    model = graph_model(
        [
            helper.make_node("Relu", ["extra"], ["act"], "act"),  # reads only the other input
            helper.make_node("MatMul", ["act", "w"], ["y"], "mm"),
        ],
        [candidates("N", 4), helper.make_tensor_value_info("extra", TensorProto.FLOAT, ["N", 4])],
        [weight(4, 2)],
    )

    assert count_flops(model, 16) == 16 * 4 + 2 * 16 * 4 * 2


def test_count_flops_skips_nodes_on_constants_when_weights_are_dequantized() -> None:
    model = graph_model(
        [
            helper.make_node("DequantizeLinear", ["wq", "scale"], ["w"], "dq_weight"),
            helper.make_node("Transpose", ["w"], ["wt"], "t_weight"),
            helper.make_node("MatMul", ["ad_dense", "wt"], ["y"], "mm"),
        ],
        [candidates("N", 5)],
        [weight(3, 5, name="wq", dtype=np.int8), numpy_helper.from_array(np.float32(0.1), "scale")],
    )

    assert count_flops(model, 16) == 2 * 16 * 5 * 3


def test_count_flops_counts_no_integer_arithmetic_when_ids_are_offset_before_a_lookup() -> None:
    model = graph_model(
        [
            helper.make_node("Add", ["ad_sparse", "offset"], ["ids"], "offset_ids"),
            helper.make_node("Gather", ["table", "ids"], ["rows"], "lookup"),
            helper.make_node("Relu", ["rows"], ["y"], "act"),
        ],
        [helper.make_tensor_value_info("ad_sparse", TensorProto.INT64, ["N", 3])],
        [weight(10, 4, name="table"), weight(3, name="offset", dtype=np.int64)],
    )

    assert [count_flops(model, n) for n in CANDIDATES] == [n * 3 * 4 for n in CANDIDATES]


def test_count_flops_raises_value_error_naming_the_node_when_a_shape_is_unknown() -> None:
    model = graph_model(
        [
            helper.make_node("Reshape", ["ad_dense", "target"], ["flat"], "reshape"),
            helper.make_node("Relu", ["flat"], ["y"], "act_of_unknown"),
        ],
        [candidates("N", 4), helper.make_tensor_value_info("target", TensorProto.INT64, [2])],
    )

    with pytest.raises(ValueError, match="act_of_unknown"):
        count_flops(model, 16)


def test_count_flops_raises_value_error_naming_the_node_when_an_op_has_no_rule() -> None:
    model = graph_model([helper.make_node("Hardmax", ["ad_dense"], ["y"], "odd_op")], [candidates("N", 4)])

    with pytest.raises(ValueError, match="odd_op.*Hardmax"):
        count_flops(model, 16)


def test_count_flops_raises_value_error_when_there_is_no_candidate() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        count_flops(matmul_add_relu(5, 3), 0)


def test_flops_model_raises_value_error_naming_the_check_n_when_flops_grow_quadratically() -> None:
    model = graph_model(  # [N, K] x [K, N]: every candidate against every other
        [
            helper.make_node("Transpose", ["ad_dense"], ["t"], "t"),
            helper.make_node("MatMul", ["ad_dense", "t"], ["y"], "pairs"),
        ],
        [candidates("N", 4)],
    )

    with pytest.raises(ValueError, match="N=128"):
        flops_model(model, probe=(8, 64))


def test_flops_model_at_evaluates_the_line_when_given_an_int_or_an_array() -> None:
    line = FlopsModel(per_request=100, per_candidate=7)

    assert line.at(3) == 121
    np.testing.assert_array_equal(line.at(np.array([1, 10])), np.array([107, 170]))


def test_flops_model_raises_value_error_when_a_term_is_negative() -> None:
    with pytest.raises(ValueError, match="per_candidate=-1"):
        FlopsModel(per_request=0, per_candidate=-1)


# Exported tiny tiers ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tier(tiny_spec: Spec, tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """Exports a tiny tier on first use; later calls return the same file."""
    folder = tmp_path_factory.mktemp("flops")
    paths: dict[str, Path] = {}

    def export(name: str) -> Path:
        if name not in paths:
            torch.manual_seed(0)
            model = build_tier(tiny_spec, tiny_spec.tier(name)).eval()
            f = tiny_spec.features
            n = 3
            example = {
                "user_dense": torch.randn(1, f.user_dense),
                "user_sparse": torch.ones(1, len(f.user_sparse), dtype=torch.int64),
                "user_history": torch.ones(1, f.history.length, dtype=torch.int64),
                "ad_dense": torch.randn(n, f.ad_dense),
                "ad_sparse": torch.ones(n, len(f.ad_sparse), dtype=torch.int64),
            }
            paths[name] = folder / f"{name}.onnx"
            export_tier(model, example, paths[name], tiny_spec.export.opset)
        return paths[name]

    return export


def ops(path: Path) -> Counter[str]:
    return Counter(node.op_type for node in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("name", ["lite", "standard", "xl"])
def test_flops_model_fits_every_count_exactly_when_the_tier_is_exported(
    tier: Callable[[str], Path], name: str
) -> None:
    line = flops_model(tier(name))

    assert line.per_request > 0
    assert line.per_candidate > 0
    assert [count_flops(tier(name), n) for n in CANDIDATES] == [line.at(n) for n in CANDIDATES]


def test_flops_model_gives_xl_more_flops_per_candidate_than_lite_when_the_spec_is_the_same(
    tier: Callable[[str], Path],
) -> None:
    assert flops_model(tier("xl")).per_candidate > flops_model(tier("lite")).per_candidate


def quantized(src: Path) -> Path:
    dst = src.with_name(f"{src.stem}-int8.onnx")
    quantize_dynamic(src, dst, weight_type=QuantType.QInt8)
    assert ops(dst)["MatMulInteger"] > 0  # the test means something only if products were quantized
    return dst


def ort_optimized(src: Path) -> Path:
    """The graph ONNX Runtime runs: contrib ops (DynamicQuantizeMatMul, FusedMatMul...) replace chains."""
    dst = src.with_name(f"{src.stem}-optimized.onnx")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(dst)
    options.log_severity_level = 3
    ort.InferenceSession(str(src), options, providers=["CPUExecutionProvider"])
    return dst


# lite's layers are 4 to 8 wide, so per-element quantization work (DynamicQuantizeLinear, the rescale
# Mul) is 15% of its MACs there; standard and xl stay within 10%.
@pytest.mark.parametrize("name", ["standard", "xl"])
def test_count_flops_gives_about_the_fp32_count_when_the_tier_is_dynamically_quantized(
    tier: Callable[[str], Path], name: str
) -> None:
    fp32 = tier(name)
    int8 = quantized(fp32)

    for n in (16, 256):
        assert count_flops(int8, n) == pytest.approx(count_flops(fp32, n), rel=0.10)


def test_count_flops_shapes_contrib_ops_itself_when_onnx_runtime_fused_the_quantized_graph(
    tier: Callable[[str], Path],
) -> None:
    fp32 = tier("xl")
    fused = ort_optimized(quantized(fp32))
    contrib = ops(fused)
    bare = onnx.load(str(fused))
    del bare.graph.value_info[:]  # no shapes recorded by ONNX Runtime: our own rules must give them

    assert {"DynamicQuantizeMatMul", "MatMulIntegerToFloat", "FusedMatMul"} <= set(contrib)
    assert count_flops(bare, 64) == count_flops(fused, 64)
    assert count_flops(fused, 64) == pytest.approx(count_flops(fp32, 64), rel=0.10)


@pytest.mark.parametrize("bits", [8, 4])
def test_count_flops_counts_row_wise_embedding_variants_with_integer_unpacking_as_free(
    tier: Callable[[str], Path], bits: int
) -> None:
    from toolkit.export.quantize import embeddings_rowwise

    fp32 = tier("xl")
    dst = fp32.with_name(f"{fp32.stem}-emb{bits}.onnx")
    embeddings_rowwise(fp32, dst, bits)
    if bits == 4:
        assert ops(dst)["BitwiseAnd"] > 0
    for n in (16, 256):
        assert count_flops(dst, n) == pytest.approx(count_flops(fp32, n), rel=0.10)
