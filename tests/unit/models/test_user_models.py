"""User models as tiers: the factory is imported, the checkpoint loaded and each mismatch named."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import ROOT

from toolkit.data.generator import generate_requests
from toolkit.data.requests import REQUEST_TENSORS
from toolkit.errors import SpecError, UserModelError
from toolkit.models.preprocess import Preprocess
from toolkit.models.user import build_user_model, check_outputs, factory_source_digest
from toolkit.spec import spec_from_dict

MODELS = textwrap.dedent(
    """
    import torch
    from torch import nn


    class Towers(nn.Module):
        '''Request-centric: user tower once, candidate tower per candidate, dot product.'''

        def __init__(self, dim=4, user_dense=3, ad_dense=2, vocab=512, out_width=1, as_logit=True):
            super().__init__()
            self.user = nn.Linear(user_dense, dim)
            self.ad = nn.Linear(ad_dense, dim)
            self.ids = nn.Embedding(vocab, dim)
            self.out = nn.Linear(dim, out_width)
            self.as_logit = as_logit

        def forward(self, user, ads, ad_ids):
            u = torch.tanh(self.user(user))
            a = torch.tanh(self.ad(ads) + self.ids(ad_ids).sum(1))
            logits = self.out(u * a)
            return logits if self.as_logit else 3.0 + logits


    class Pairs(nn.Module):
        '''Per-pair: one row per user-candidate pair.'''

        def __init__(self, width=5, vocab=512):
            super().__init__()
            self.ids = nn.Embedding(vocab, 4)
            self.mlp = nn.Linear(width + 4, 1)

        def forward(self, dense, ids, extra=None):
            return torch.sigmoid(self.mlp(torch.cat([dense, self.ids(ids).mean(1)], 1))).squeeze(1)


    def towers(**kwargs):
        return Towers(**kwargs)


    def not_a_module():
        return 42


    def broken():
        raise RuntimeError("the factory blew up")


    NOT_CALLABLE = 3
    """
)

TOWER_INPUTS = [
    {"name": "user", "tensors": ["user_dense"]},
    {"name": "ads", "tensors": ["ad_dense"]},
    {"name": "ad_ids", "tensors": ["ad_sparse"]},
]
PAIR_INPUTS = [
    {"name": "dense", "tensors": ["user_dense", "ad_dense"]},
    {"name": "ids", "tensors": ["user_sparse", "ad_sparse"], "dtype": "int32"},
]


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "models"
    folder.mkdir()
    module = f"user_models_{tmp_path.name.replace('-', '_')}"
    (folder / f"{module}.py").write_text(MODELS, encoding="utf-8")
    return folder


def _module(models_dir: Path) -> str:
    return next(models_dir.glob("*.py")).stem


def _spec(tiny_spec_dict: dict, models_dir: Path, **model) -> object:
    entry = {"path": str(models_dir), "factory": f"{_module(models_dir)}:towers", "inputs": TOWER_INPUTS}
    entry |= {"output": "logit"}
    entry.update(model)
    tiny_spec_dict["tiers"].append({"name": "mine", "model": entry})
    return spec_from_dict(tiny_spec_dict, source="tiny.yaml")


def _example(spec) -> dict[str, np.ndarray]:
    requests = generate_requests(spec.features, 1, (4, 4), 0.5, seed=1)
    raw = requests.request(0)
    with torch.no_grad():
        out = Preprocess(spec.features)(*(torch.from_numpy(raw[k]) for k in REQUEST_TENSORS))
    return {k: t.numpy() for k, t in zip(REQUEST_TENSORS, out, strict=True)}


def _one_line_naming_mine(exc: pytest.ExceptionInfo) -> str:
    message = str(exc.value)
    assert message.startswith("tier 'mine': ") and "\n" not in message
    return message


def test_factory_model_scores_like_the_users_module_called_directly(tiny_spec_dict, models_dir) -> None:
    spec = _spec(tiny_spec_dict, models_dir)
    tier = build_user_model(spec.tier("mine"))
    example = _example(spec)
    check_outputs(spec.tier("mine"), tier, example)
    with torch.no_grad():
        got = tier(*(torch.from_numpy(example[k]) for k in REQUEST_TENSORS)).numpy()
        logits = tier.model(
            torch.from_numpy(example["user_dense"]),
            torch.from_numpy(example["ad_dense"]),
            torch.from_numpy(example["ad_sparse"]),
        )
    assert got.shape == (4,)
    np.testing.assert_allclose(got, torch.sigmoid(logits).reshape(4).numpy(), rtol=1e-6)


def test_checkpoint_is_loaded_into_the_factory_model(tiny_spec_dict, models_dir, tmp_path) -> None:
    spec = _spec(tiny_spec_dict, models_dir)
    first = build_user_model(spec.tier("mine"))
    path = tmp_path / "weights.pt"
    state = {k: torch.full_like(v, 0.25) for k, v in first.model.state_dict().items()}
    torch.save(state, path)
    tiny_spec_dict["tiers"].pop()
    loaded = build_user_model(_spec(tiny_spec_dict, models_dir, checkpoint=str(path)).tier("mine"))
    for key, value in loaded.model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_per_pair_model_gets_user_tensors_tiled_and_cast(tiny_spec_dict, models_dir) -> None:
    pair = {"factory": f"{_module(models_dir)}:Pairs", "layout": "pair", "inputs": PAIR_INPUTS}
    spec = _spec(tiny_spec_dict, models_dir, output="probability", **pair)
    tier = build_user_model(spec.tier("mine"))
    example = _example(spec)
    check_outputs(spec.tier("mine"), tier, example)
    seen = {}
    tier.model.register_forward_pre_hook(lambda _m, _a, kw: seen.update(kw), with_kwargs=True)
    with torch.no_grad():
        tier(*(torch.from_numpy(example[k]) for k in REQUEST_TENSORS))
    dense = np.concatenate([np.repeat(example["user_dense"], 4, 0), example["ad_dense"]], 1)
    ids = np.concatenate([np.repeat(example["user_sparse"], 4, 0), example["ad_sparse"]], 1)
    np.testing.assert_array_equal(seen["dense"].numpy(), dense)
    assert seen["ids"].dtype == torch.int32
    np.testing.assert_array_equal(seen["ids"].numpy(), ids)


def test_factory_source_digest_changes_when_the_model_file_changes(tiny_spec_dict, models_dir) -> None:
    spec = _spec(tiny_spec_dict, models_dir)
    before = factory_source_digest(spec.tier("mine"))
    path = next(models_dir.glob("*.py"))
    path.write_text(path.read_text() + "\n# edited\n")
    assert len(before) == 64 and factory_source_digest(spec.tier("mine")) != before


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"factory": "no_such_module_here:build"}, "cannot import 'no_such_module_here'"),
        ({"factory": "{module}:missing"}, "has no attribute 'missing'"),
        ({"factory": "{module}:NOT_CALLABLE"}, "is not callable"),
        ({"factory": "{module}:not_a_module"}, "returned int, expected a torch.nn.Module"),
        ({"factory": "{module}:broken"}, "failed (RuntimeError: the factory blew up)"),
        ({"checkpoint": "{dir}/absent.pt"}, "absent.pt' not found"),
        ({"inputs": TOWER_INPUTS[:2]}, "needs input 'ad_ids', which model.inputs does not map"),
        (
            {"inputs": [*TOWER_INPUTS, {"name": "hist", "tensors": ["user_history"]}]},
            "model.inputs maps 'hist', but the model's forward() takes (user, ads, ad_ids)",
        ),
    ],
    ids=[
        "not-importable",
        "no-attribute",
        "not-callable",
        "not-a-module",
        "factory-raises",
        "no-checkpoint",
        "missing-input",
        "unknown-input",
    ],
)
def test_build_mismatch_is_one_line_naming_the_tier(tiny_spec_dict, models_dir, change, expected) -> None:
    model = {
        k: v.format(module=_module(models_dir), dir=models_dir) if isinstance(v, str) else v
        for k, v in change.items()
    }
    spec = _spec(tiny_spec_dict, models_dir, **model)
    with pytest.raises(UserModelError) as exc:
        build_user_model(spec.tier("mine"))
    assert expected in _one_line_naming_mine(exc)


def test_checkpoint_that_does_not_fit_names_the_keys(tiny_spec_dict, models_dir, tmp_path) -> None:
    path = tmp_path / "other.pt"
    torch.save({"layer.weight": torch.zeros(2, 2)}, path)
    spec = _spec(tiny_spec_dict, models_dir, checkpoint=str(path))
    with pytest.raises(UserModelError) as exc:
        build_user_model(spec.tier("mine"))
    message = _one_line_naming_mine(exc)
    assert "does not fit the model" in message and "missing user.weight" in message
    assert "unexpected layer.weight" in message


def test_pickled_module_checkpoint_is_refused_by_weights_only(tiny_spec_dict, models_dir, tmp_path) -> None:
    path = tmp_path / "pickled.pt"
    torch.save(torch.nn.Linear(2, 2), path)
    spec = _spec(tiny_spec_dict, models_dir, checkpoint=str(path))
    with pytest.raises(UserModelError) as exc:
        build_user_model(spec.tier("mine"))
    assert "weights_only=True" in _one_line_naming_mine(exc)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (
            {"inputs": [*TOWER_INPUTS[:2], {"name": "ad_ids", "tensors": ["ad_sparse"], "dtype": "float32"}]},
            "the model fails on its mapped inputs (user: float32, ads: float32, ad_ids: float32)",
        ),
        ({"kwargs": {"out_width": 2}}, "output has shape [4, 2] for 4 candidates; expected [4] or [4, 1]"),
        ({"kwargs": {"as_logit": False}, "output": "probability"}, "set model.output to logit?"),
    ],
    ids=["wrong-dtype", "wrong-output-shape", "logits-declared-as-probabilities"],
)
def test_output_mismatch_is_one_line_naming_the_tier(tiny_spec_dict, models_dir, change, expected) -> None:
    spec = _spec(tiny_spec_dict, models_dir, **change)
    tier = build_user_model(spec.tier("mine"))
    with pytest.raises(UserModelError) as exc:
        check_outputs(spec.tier("mine"), tier, _example(spec))
    assert expected in _one_line_naming_mine(exc)


@pytest.mark.parametrize(
    ("model", "key", "expected"),
    [
        ({}, "tiers[3]", "give exactly one of architecture"),
        ({"factory": "x:y", "onnx": "m.onnx"}, "tiers[3].model", "give exactly one of factory"),
        ({"factory": "not a factory"}, "tiers[3].model.factory", "expected package.module:callable"),
        (
            {"factory": "x:y", "inputs": [{"name": "a", "tensors": ["user_dense", "ad_dense"]}]},
            "tiers[3].model.inputs[0].tensors",
            "only a per-pair model",
        ),
        (
            {"factory": "x:y", "inputs": [{"name": "a", "tensors": ["user_dense"]}]},
            "tiers[3].model.inputs",
            "no input holds candidate tensors",
        ),
        (
            {"factory": "x:y", "inputs": [{"name": "a", "tensors": ["ad_dense"], "dtype": "float64"}]},
            "tiers[3].model.inputs[0].dtype",
            "expected one of float32, int64, int32",
        ),
        (
            {"factory": "x:y", "inputs": [{"name": "a", "tensors": ["ad_sparse"], "values": "raw"}]},
            "tiers[3].model.inputs[0].values",
            "raw applies to dense features",
        ),
    ],
    ids=[
        "both-kinds",
        "factory-and-onnx",
        "bad-factory",
        "mixed-levels",
        "no-candidates",
        "dtype",
        "raw-ids",
    ],
)
def test_spec_refuses_bad_user_model_entries_naming_the_key(tiny_spec_dict, model, key, expected) -> None:
    entry = {"name": "mine", "architecture": "lite"} if not model else {"name": "mine", "model": model}
    if model:
        model.setdefault("inputs", TOWER_INPUTS)
    else:
        entry["model"] = {"factory": "x:y", "inputs": TOWER_INPUTS}
    tiny_spec_dict["tiers"].append(entry)
    with pytest.raises(SpecError) as exc:
        spec_from_dict(tiny_spec_dict, source="tiny.yaml")
    assert f"key '{key}'" in str(exc.value) and expected in str(exc.value)


def test_the_readme_example_model_fits_its_spec_entry(tmp_path) -> None:
    import yaml

    root = ROOT
    data = yaml.safe_load((root / "examples" / "byom" / "spec.yaml").read_text(encoding="utf-8"))
    entry = next(t for t in data["tiers"] if t["name"] == "my_ranker")["model"]
    entry["path"] = str(root / entry["path"])
    assert entry.pop("checkpoint") == "checkpoints/my_ranker.pt"
    spec = spec_from_dict(data, source="examples/byom/spec.yaml")
    untrained = build_user_model(spec.tier("my_ranker"))
    entry["checkpoint"] = str(tmp_path / "my_ranker.pt")
    torch.save(untrained.model.state_dict(), entry["checkpoint"])
    spec = spec_from_dict(data, source="examples/byom/spec.yaml")
    tier = build_user_model(spec.tier("my_ranker"))
    check_outputs(spec.tier("my_ranker"), tier, _example(spec))
    assert spec.tier_names == ("lite", "my_ranker", "standard", "xl")


def test_checkpoint_with_a_wrong_shape_names_the_tensor(tiny_spec_dict, models_dir, tmp_path) -> None:
    spec = _spec(tiny_spec_dict, models_dir)
    state = build_user_model(spec.tier("mine")).model.state_dict()
    state["user.weight"] = torch.zeros(7, 7)
    path = tmp_path / "reshaped.pt"
    torch.save(state, path)
    tiny_spec_dict["tiers"].pop()
    spec = _spec(tiny_spec_dict, models_dir, checkpoint=str(path))
    with pytest.raises(UserModelError) as exc:
        build_user_model(spec.tier("mine"))
    message = _one_line_naming_mine(exc)
    assert "does not fit the model (size mismatch for user.weight" in message and "[7, 7]" in message


def test_raw_inputs_reach_the_model_as_the_client_sent_them(tiny_spec_dict, models_dir) -> None:
    inputs = [{**TOWER_INPUTS[0], "values": "raw"}, {**TOWER_INPUTS[1], "values": "raw"}, TOWER_INPUTS[2]]
    spec = _spec(tiny_spec_dict, models_dir, inputs=inputs)
    raw = generate_requests(spec.features, 3, (4, 4), 0.5, seed=2)
    preprocess = Preprocess.fit(spec.features, raw.user_dense * 5 + 3, raw.ad_dense * 2 - 1)
    tier = build_user_model(spec.tier("mine"), preprocess.statistics())
    seen = {}
    tier.model.register_forward_pre_hook(lambda _m, _a, kw: seen.update(kw), with_kwargs=True)
    request = raw.request(0)
    with torch.no_grad():
        pre = preprocess(*(torch.from_numpy(request[k]) for k in REQUEST_TENSORS))
        tier(*pre)
    np.testing.assert_allclose(seen["user"].numpy(), request["user_dense"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(seen["ads"].numpy(), request["ad_dense"], rtol=1e-5, atol=1e-5)
    assert not np.allclose(pre[0].numpy(), request["user_dense"], rtol=1e-2)
    np.testing.assert_array_equal(seen["ad_ids"].numpy(), pre[4].numpy())
    with pytest.raises(ValueError, match="statistics are needed"):
        build_user_model(spec.tier("mine"))
