"""Bring your own model: user models next to the demo tiers, exported, deployed and served over gRPC.

Three models the toolkit has never seen are defined here, outside the package: a request-centric
PyTorch model (factory + checkpoint), a per-pair PyTorch model, and a ready ONNX file. Each is added
as a tier to the session's tiny spec, exported, deployed with the demo tiers, and asked for by name
over gRPC from the real embedded tritonserver. The expected scores are computed here by calling the
user's own module (or ONNX file) on inputs assembled by hand, not through the toolkit's wrappers.
"""

from __future__ import annotations

import importlib
import json
import shutil
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import run_cli, serving, tiny_spec_dict, write_spec

from toolkit.client import RankingClient
from toolkit.data import REQUEST_TENSORS, demo_holdout_set
from toolkit.export import cpu_session, read_manifest
from toolkit.repository import MARKER
from toolkit.serve import TritonServer
from toolkit.spec import load_spec
from toolkit.train.checkpoints import load_preprocess

pytestmark = pytest.mark.e2e

MODULE = "byom_models"
MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Towers(nn.Module):
        '''Request-centric: the user tower runs once per request, the ad tower once per candidate.'''

        def __init__(self, dim=8, user_width=8, ad_width=4):
            super().__init__()
            self.user = nn.Linear(user_width, dim)
            self.history = nn.Embedding(64, dim)
            self.ad = nn.Linear(ad_width, dim)
            self.ad_ids = nn.Embedding(8192, dim)
            self.out = nn.Linear(dim, 1)

        def forward(self, user, history, ads, ad_ids):
            u = torch.tanh(self.user(user) + self.history(history).mean(1))
            a = torch.tanh(self.ad(ads) + self.ad_ids(ad_ids[:, 0]))
            return self.out(u * a)


    class Pairs(nn.Module):
        '''Per-pair, as most public CTR models: one row per (user, candidate), ids as int32.'''

        def __init__(self, user_width=8, ad_width=4, ids=6):
            super().__init__()
            self.ids = nn.Embedding(8192, 4)
            self.user = nn.Sequential(nn.Linear(user_width, 16), nn.ReLU(), nn.Linear(16, 8))
            self.mlp = nn.Sequential(nn.Linear(8 + ad_width + 4 * ids, 16), nn.ReLU(), nn.Linear(16, 1))

        def forward(self, user, ad, ids):
            x = torch.cat([self.user(user), ad, self.ids(ids).flatten(1)], 1)
            return torch.sigmoid(self.mlp(x)).squeeze(1)


    class Scorer(nn.Module):
        '''Becomes a ready ONNX file: user ids once, candidates N times, logits [N, 1].'''

        def __init__(self, ad_width=4):
            super().__init__()
            self.user_ids = nn.Embedding(1024, 6)
            self.items = nn.Linear(ad_width, 6)
            self.item_ids = nn.Embedding(8192, 6)

        def forward(self, user_ids, items, item_ids):
            u = self.user_ids(user_ids).sum(1)
            a = self.items(items) + self.item_ids(item_ids).sum(1)
            return (u * a).sum(1, keepdim=True)


    def towers(dim=8, user_width=8, ad_width=4):
        return Towers(dim, user_width, ad_width)
    """
)

USER_TIERS = {
    "mine": {
        "factory": f"{MODULE}:towers",
        "output": "logit",
        "inputs": [
            {"name": "user", "tensors": ["user_dense"]},
            {"name": "history", "tensors": ["user_history"]},
            {"name": "ads", "tensors": ["ad_dense"]},
            {"name": "ad_ids", "tensors": ["ad_sparse"]},
        ],
    },
    "pairwise": {
        "factory": f"{MODULE}:Pairs",
        "layout": "pair",
        "inputs": [
            {"name": "user", "tensors": ["user_dense"]},
            {"name": "ad", "tensors": ["ad_dense"]},
            {"name": "ids", "tensors": ["user_sparse", "ad_sparse"], "dtype": "int32"},
        ],
    },
    "onnxfile": {
        "output": "logit",
        "inputs": [
            {"name": "user_ids", "tensors": ["user_sparse"]},
            {"name": "items", "tensors": ["ad_dense"]},
            {"name": "item_ids", "tensors": ["ad_sparse"]},
        ],
    },
}


def _widths(features: dict) -> dict[str, int]:
    """The request widths the user models are built for (keyword arguments of their factories)."""
    return {"user_width": features["user_dense"], "ad_width": features["ad_dense"]}


def _user_files(folder: Path, features: dict) -> dict[str, Path]:
    """The user's model file, two checkpoints and an ONNX file, as a user would have them."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{MODULE}.py").write_text(MODELS, encoding="utf-8")
    sys.path.insert(0, str(folder))
    try:
        module = importlib.import_module(MODULE)
    finally:
        sys.path.remove(str(folder))
    torch.manual_seed(5)
    files = {"module": folder / f"{MODULE}.py"}
    widths = _widths(features)
    ids = len(features["user_sparse"]) + len(features["ad_sparse"])
    mine, pairs = module.Towers(8, **widths), module.Pairs(**widths, ids=ids)
    for name, model in (("mine", mine), ("pairwise", pairs)):
        files[name] = folder / f"{name}.pt"
        torch.save(model.state_dict(), files[name])
    scorer = module.Scorer(features["ad_dense"]).eval()
    user_ids = torch.arange(1, len(features["user_sparse"]) + 1)[None, :]
    ad_ids = torch.randint(0, 8192, (5, len(features["ad_sparse"])))
    example = (user_ids, torch.randn(5, features["ad_dense"]), ad_ids)
    n = torch.export.Dim("n", min=1, max=4096)
    files["onnxfile"] = folder / "scorer.onnx"
    torch.onnx.export(
        scorer,
        example,
        input_names=["user_ids", "items", "item_ids"],
        output_names=["logit"],
        dynamic_shapes={"user_ids": None, "items": {0: n}, "item_ids": {0: n}},
        opset_version=17,
        dynamo=True,
    ).save(str(files["onnxfile"]))
    return files


class Byom:
    """The session's tiny pipeline plus the three user tiers, exported and deployed."""

    def __init__(self, pipeline, folder: Path) -> None:
        data = tiny_spec_dict(folder)
        self.files = _user_files(folder / "user", data["features"])
        widths = _widths(data["features"])
        ids = len(data["features"]["user_sparse"]) + len(data["features"]["ad_sparse"])
        kwargs = {"mine": {"dim": 8, **widths}, "pairwise": {**widths, "ids": ids}}
        data["paths"]["checkpoints"] = str(pipeline.checkpoints)
        shutil.copytree(pipeline.artifacts, data["paths"]["artifacts"])
        for name, model in USER_TIERS.items():
            entry = dict(model)
            if name in kwargs:
                entry["kwargs"] = kwargs[name]
            if name == "onnxfile":
                entry["onnx"] = str(self.files[name])
            else:
                entry |= {"path": str(folder / "user"), "checkpoint": str(self.files[name])}
            data["tiers"].append({"name": name, "model": entry})
        self.spec_path = write_spec(folder / "byom.yaml", data)
        self.spec = load_spec(self.spec_path)
        tiers = [arg for name in USER_TIERS for arg in ("--tier", name)]
        self.export_out = run_cli("export", "--spec", str(self.spec_path), *tiers).stdout
        pins = [arg for name in USER_TIERS for arg in ("--pin", f"{name}=onnx-fp32")]
        self.deploy_out = run_cli("deploy", "--spec", str(self.spec_path), *pins).stdout
        self.repository = Path(self.spec.paths.repository)
        self.widths = (self.spec.features.user_dense, self.spec.features.ad_dense)
        self.preprocess = load_preprocess(pipeline.checkpoints, self.spec)
        sys.path.insert(0, str(folder / "user"))
        try:
            self.module = importlib.import_module(MODULE)
        finally:
            sys.path.remove(str(folder / "user"))

    def preprocessed(self, raw: dict[str, np.ndarray]) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            out = self.preprocess(*(torch.from_numpy(raw[k]) for k in REQUEST_TENSORS))
        return dict(zip(REQUEST_TENSORS, out, strict=True))

    def expected(self, tier: str, raw: dict[str, np.ndarray]) -> np.ndarray:
        """The user's own model on inputs assembled here by hand."""
        pre = self.preprocessed(raw)
        n = pre["ad_dense"].shape[0]
        with torch.no_grad():
            if tier == "mine":
                model = self.module.Towers(8, *self.widths)
                model.load_state_dict(torch.load(self.files["mine"], weights_only=True))
                logits = model.eval()(
                    pre["user_dense"], pre["user_history"], pre["ad_dense"], pre["ad_sparse"]
                )
                return torch.sigmoid(logits).reshape(n).numpy()
            if tier == "pairwise":
                model = self.module.Pairs(
                    *self.widths, ids=pre["user_sparse"].shape[1] + pre["ad_sparse"].shape[1]
                )
                model.load_state_dict(torch.load(self.files["pairwise"], weights_only=True))
                ids = torch.cat([pre["user_sparse"].repeat(n, 1), pre["ad_sparse"]], 1).to(torch.int32)
                return model.eval()(pre["user_dense"].repeat(n, 1), pre["ad_dense"], ids).numpy()
        session = cpu_session(str(self.files["onnxfile"]))
        feeds = {"user_ids": pre["user_sparse"], "items": pre["ad_dense"], "item_ids": pre["ad_sparse"]}
        logits = session.run(None, {k: v.numpy() for k, v in feeds.items()})[0]
        return (1.0 / (1.0 + np.exp(-logits.astype(np.float64)))).reshape(n).astype(np.float32)


@pytest.fixture(scope="module")
def byom(pipeline, tmp_path_factory: pytest.TempPathFactory) -> Byom:
    return Byom(pipeline, tmp_path_factory.mktemp("byom"))


@pytest.fixture(scope="module")
def byom_server(byom, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with serving(byom.repository, tmp_path_factory.mktemp("byom_server")) as running:
        yield running


def test_user_tiers_export_next_to_the_demo_tiers_and_pass_parity(byom, pipeline) -> None:
    manifest = read_manifest(Path(byom.spec.paths.artifacts))
    assert list(manifest.tiers) == [*pipeline.spec.tier_names, *USER_TIERS]
    tolerance = byom.spec.export.tolerance
    for name in USER_TIERS:
        tier = manifest.tier(name)
        fp32 = tier.variant("onnx-fp32")
        assert fp32.passed and fp32.reused is False
        assert fp32.max_abs_error["score"] <= tolerance.atol + tolerance.rtol
        assert tier.architecture == ("onnx" if name == "onnxfile" else "factory")
    demo = read_manifest(pipeline.artifacts).tiers
    assert {name: manifest.tiers[name] for name in demo} == demo
    assert manifest.tier("mine").checkpoint["factory"] == f"{MODULE}:towers"
    assert len(manifest.tier("mine").checkpoint["factory_sha256"]) == 64


def test_per_pair_tier_says_what_recomputing_the_user_side_costs(byom) -> None:
    manifest = read_manifest(Path(byom.spec.paths.artifacts))
    cost = manifest.tier("pairwise").per_pair
    assert manifest.tier("pairwise").layout == "pair"
    shares = [cost["redundant_share"][str(n)] for n in byom.spec.export.timing_candidates]
    assert all(0.0 < s < 1.0 for s in shares)
    assert "pairwise: per-pair model" in " ".join(byom.export_out.split())
    assert manifest.tier("mine").per_pair is None


def test_user_tiers_serve_their_models_scores_over_grpc(byom, byom_server) -> None:
    marker = json.loads((byom.repository / MARKER).read_text())
    assert {marker["variants"][name] for name in USER_TIERS} == {"onnx-fp32"}
    tolerance = byom.spec.export.tolerance
    holdout = demo_holdout_set(byom.spec, 12)
    with RankingClient(byom_server.grpc_url, byom.spec.name, tier_names=byom.spec.tier_names) as client:
        for name in USER_TIERS:
            for r in range(holdout.num_requests):
                raw = holdout.request(r)
                ranking = client.rank(**raw, tier=name)
                assert ranking.tier_names == (name,) * raw["ad_dense"].shape[0]
                expected = byom.expected(name, raw)
                assert ranking.scores.shape == expected.shape
                np.testing.assert_allclose(ranking.scores, expected, atol=tolerance.atol, rtol=tolerance.rtol)
        routed = client.rank(**holdout.request(0))
        assert set(routed.tier_names) <= set(byom.spec.tier_names[:3])


def test_export_stops_with_one_line_naming_a_user_tier_that_does_not_fit(byom, tmp_path) -> None:
    data = json.loads(json.dumps(load_spec_dict(byom.spec_path)))
    bad = data["tiers"][-3]["model"]
    bad["inputs"] = [i for i in bad["inputs"] if i["name"] != "history"]
    data["paths"]["artifacts"] = str(tmp_path / "artifacts")
    spec = write_spec(tmp_path / "bad.yaml", data)
    proc = run_cli("export", "--spec", str(spec), "--tier", "mine", check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert errors == [proc.stderr.strip().splitlines()[-1]]
    assert errors[0].startswith("error: tier 'mine': ") and "'history'" in errors[0]
    assert not (tmp_path / "artifacts" / "mine").exists()


def load_spec_dict(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text(encoding="utf-8"))
