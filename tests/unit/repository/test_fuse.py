"""Unit tests of ``toolkit.repository.fuse`` and of deploy's fused tiers, on small stand-in graphs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from helpers import stand_in_onnx
from onnx import TensorProto, helper
from test_deploy_pools import fake_artifacts

from toolkit.data.requests import REQUEST_TENSORS
from toolkit.errors import RepositoryError
from toolkit.export.manifest import file_entries, read_manifest, write_manifest
from toolkit.export.parity import cpu_session
from toolkit.repository import deploy
from toolkit.repository.fuse import fuse_preprocess
from toolkit.spec import Spec

RAW = {
    "user_dense": np.array([[0.5, -1.0, 2.0]], np.float32),
    "user_sparse": np.array([[1, 7]], np.int64),
    "user_history": np.array([[3, 0, 9, 4]], np.int64),
    "ad_dense": np.array([[1.0, 2.0], [-3.0, 0.25], [0.0, 0.0]], np.float32),
    "ad_sparse": np.array([[1, 2, 3], [4, 5, 6], [7, 8, 9]], np.int64),
}


def scaling_preprocess(opset: int = 18, with_shape: bool = False) -> onnx.ModelProto:
    """A preprocess graph that doubles ``ad_dense`` and passes the rest through (optionally a Shape op)."""
    base = onnx.load_from_string(stand_in_onnx("preprocess", "pre", opset))
    nodes = [n for n in base.graph.node if n.output[0] != "ad_dense_pre"]
    nodes.append(helper.make_node("Add", ["ad_dense", "ad_dense"], ["ad_dense_pre"]))
    if with_shape:
        nodes.append(helper.make_node("Shape", ["ad_dense"], ["unused_shape"]))
    del base.graph.node[:]
    base.graph.node.extend(nodes)
    return base


def two_step(pre: onnx.ModelProto, model: onnx.ModelProto, raw: dict[str, np.ndarray]) -> np.ndarray:
    done = cpu_session(pre.SerializeToString()).run([f"{n}_pre" for n in REQUEST_TENSORS], raw)
    return cpu_session(model.SerializeToString()).run(
        ["score"], dict(zip(REQUEST_TENSORS, done, strict=True))
    )[0]


def test_fused_model_takes_the_raw_request_and_scores_as_the_two_steps() -> None:
    pre = scaling_preprocess()
    tier = onnx.load_from_string(stand_in_onnx("tier", "lite onnx-fp32"))

    fused = fuse_preprocess(pre, tier)

    assert [i.name for i in fused.graph.input] == list(REQUEST_TENSORS)
    assert [o.name for o in fused.graph.output] == ["score"] and fused.graph.name == "lite onnx-fp32"
    got = cpu_session(fused.SerializeToString()).run(["score"], RAW)[0]
    np.testing.assert_allclose(got, two_step(pre, tier, RAW), atol=1e-6, rtol=0)
    np.testing.assert_allclose(got, 2 * RAW["ad_dense"].sum(axis=1), atol=1e-6, rtol=0)


def test_gate_keeps_its_extra_input_after_the_request_tensors_when_fused() -> None:
    gate = onnx.load_from_string(stand_in_onnx("gate", "gate"))
    gate.graph.input.insert(0, helper.make_tensor_value_info("cheapest_score", TensorProto.FLOAT, ["rows"]))

    fused = fuse_preprocess(scaling_preprocess(), gate)

    assert [i.name for i in fused.graph.input] == [*REQUEST_TENSORS, "cheapest_score"]


def test_preprocess_is_converted_to_a_model_of_an_older_opset_with_duplicate_imports() -> None:
    tier = onnx.load_from_string(stand_in_onnx("tier", "byom", opset=17))
    tier.opset_import.append(helper.make_opsetid("", 17))

    fused = fuse_preprocess(scaling_preprocess(), tier)

    assert [(o.domain, o.version) for o in fused.opset_import] == [("", 17)]
    got = cpu_session(fused.SerializeToString()).run(["score"], RAW)[0]
    np.testing.assert_allclose(got, 2 * RAW["ad_dense"].sum(axis=1), atol=1e-6, rtol=0)


def test_fusion_names_both_opsets_when_the_preprocess_graph_cannot_be_converted() -> None:
    tier = onnx.load_from_string(stand_in_onnx("tier", "old", opset=13))

    with pytest.raises(RepositoryError, match="opset 18.*opset 13"):
        fuse_preprocess(scaling_preprocess(with_shape=True), tier)


def test_fusion_names_the_request_input_a_model_lacks() -> None:
    tier = onnx.load_from_string(stand_in_onnx("tier", "partial"))
    del tier.graph.input[2]

    with pytest.raises(RepositoryError, match="no input 'user_history'"):
        fuse_preprocess(scaling_preprocess(), tier)


def test_deploy_writes_a_tier_that_cannot_be_fused_unfused_and_tells_the_router(
    tmp_path: Path, tiny_spec: Spec
) -> None:
    artifacts = fake_artifacts(tiny_spec, tmp_path / "artifacts")
    (artifacts / tiny_spec.preprocess_model / "onnx-fp32" / "model.onnx").write_bytes(
        scaling_preprocess(with_shape=True).SerializeToString()
    )
    (artifacts / "xl" / "onnx-fp32" / "model.onnx").write_bytes(stand_in_onnx("tier", "xl", opset=13))
    manifest = read_manifest(artifacts)
    manifest.variant("xl", "onnx-fp32").files = file_entries(artifacts, artifacts / "xl" / "onnx-fp32")
    pre = manifest.preprocess.variant("onnx-fp32")
    pre.files = file_entries(artifacts, artifacts / tiny_spec.preprocess_model / "onnx-fp32")
    write_manifest(artifacts, manifest)
    out = tmp_path / "repo"

    result = deploy(tiny_spec, artifacts, out, "python", pins={"xl": "onnx-fp32"})

    assert set(result.unfused) == {"xl"} and "opset 13" in result.unfused["xl"]
    router = json.loads((out / tiny_spec.router_model / "1" / "router.json").read_text())
    assert router["preprocessed_tiers"] == ["xl"]
    assert onnx.load(str(out / "xl" / "1" / "model.onnx")).graph.name == "xl"
    assert onnx.load(str(out / "lite" / "1" / "model.onnx")).graph.input[2].name == "user_history"
    lite = cpu_session(str(out / "lite" / "1" / "model.onnx"))
    np.testing.assert_allclose(lite.run(["score"], RAW)[0], 2 * RAW["ad_dense"].sum(axis=1), atol=1e-6)
