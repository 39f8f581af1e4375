"""Unit tests of toolkit.models (the tiers and the preprocess step) and toolkit.train.checkpoints."""

from __future__ import annotations

import dataclasses
import pathlib
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from toolkit.data import REQUEST_TENSORS, RequestSet, generate_requests
from toolkit.errors import CheckpointError
from toolkit.models import Preprocess, RankingModel, architectures, build_tier
from toolkit.spec import Spec, spec_from_dict
from toolkit.train.checkpoints import (
    load_preprocess,
    load_tier,
    save_preprocess,
    save_tier,
    tier_path,
)

TIERS = ("lite", "standard", "xl")
ATOL = 1e-5


@dataclasses.dataclass(frozen=True)
class Batch:
    """Preprocessed requests: user tensors [R, ...], candidate tensors [T, ...], offsets [R + 1]."""

    tensors: dict[str, torch.Tensor]
    offsets: np.ndarray

    def request(self, r: int) -> dict[str, torch.Tensor]:
        lo, hi = int(self.offsets[r]), int(self.offsets[r + 1])
        out = {k: self.tensors[k][r : r + 1] for k in REQUEST_TENSORS[:3]}
        out.update({k: self.tensors[k][lo:hi] for k in REQUEST_TENSORS[3:]})
        return out


def preprocess_all(preprocess: Preprocess, requests: RequestSet) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        out = preprocess(*(torch.from_numpy(getattr(requests, k)) for k in REQUEST_TENSORS))
    return dict(zip(REQUEST_TENSORS, out, strict=True))


@pytest.fixture(scope="module")
def batch(tiny_spec: Spec) -> Batch:
    requests = generate_requests(tiny_spec.features, 8, (3, 7), 0.5, seed=21, world_seed=3)
    preprocess = Preprocess.fit(tiny_spec.features, requests.user_dense, requests.ad_dense)
    return Batch(preprocess_all(preprocess, requests), requests.offsets)


def make_tier(spec: Spec, name: str, seed: int = 0) -> RankingModel:
    torch.manual_seed(seed)
    model = build_tier(spec, spec.tier(name)).eval()
    with torch.no_grad():  # non-zero null slot and biases, so no part of the graph is trivially zero
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def scores(model: RankingModel, request: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        return model(*(request[k] for k in REQUEST_TENSORS))


def test_architectures_registers_the_three_demo_tiers_when_listed() -> None:
    assert {"lite", "standard", "xl"} <= set(architectures())


@pytest.mark.parametrize("tier", TIERS)
def test_tier_gives_one_probability_per_candidate_when_scoring_a_request(
    tiny_spec: Spec, batch: Batch, tier: str
) -> None:
    model = make_tier(tiny_spec, tier)

    for r in range(len(batch.offsets) - 1):
        request = batch.request(r)
        out = scores(model, request)
        assert out.shape == (request["ad_dense"].shape[0],)
        assert out.dtype == torch.float32
        assert bool(((out > 0) & (out < 1)).all())


@pytest.mark.parametrize("tier", TIERS)
def test_tier_logits_equal_per_request_forward_when_requests_are_batched(
    tiny_spec: Spec, batch: Batch, tier: str
) -> None:
    model = make_tier(tiny_spec, tier)
    counts = np.diff(batch.offsets)
    request_index = torch.from_numpy(np.repeat(np.arange(len(counts)), counts))

    with torch.no_grad():
        batched = torch.sigmoid(model.logits(*(batch.tensors[k] for k in REQUEST_TENSORS), request_index))
    one_by_one = torch.cat([scores(model, batch.request(r)) for r in range(len(counts))])

    assert batched.shape == one_by_one.shape == (int(batch.offsets[-1]),)
    torch.testing.assert_close(batched, one_by_one, atol=ATOL, rtol=0)


@pytest.mark.parametrize("tier", TIERS)
def test_tier_scores_each_candidate_alone_when_candidates_are_permuted_or_dropped(
    tiny_spec: Spec, batch: Batch, tier: str
) -> None:
    model = make_tier(tiny_spec, tier)
    request = batch.request(int(np.argmax(np.diff(batch.offsets))))
    n = request["ad_dense"].shape[0]
    full = scores(model, request)

    order = torch.from_numpy(np.random.default_rng(1).permutation(n))
    permuted = dict(request, ad_dense=request["ad_dense"][order], ad_sparse=request["ad_sparse"][order])
    keep = torch.tensor([n - 1, 0])
    dropped = dict(request, ad_dense=request["ad_dense"][keep], ad_sparse=request["ad_sparse"][keep])

    torch.testing.assert_close(scores(model, permuted), full[order], atol=ATOL, rtol=0)
    torch.testing.assert_close(scores(model, dropped), full[keep], atol=ATOL, rtol=0)
    assert len(set(full.tolist())) > 1  # candidates really are scored differently


@pytest.mark.parametrize("tier", TIERS)
def test_tier_gives_the_same_score_when_a_request_has_one_candidate(
    tiny_spec: Spec, batch: Batch, tier: str
) -> None:
    model = make_tier(tiny_spec, tier)
    request = batch.request(0)
    full = scores(model, request)

    for i in range(request["ad_dense"].shape[0]):
        single = dict(
            request, ad_dense=request["ad_dense"][i : i + 1], ad_sparse=request["ad_sparse"][i : i + 1]
        )
        out = scores(model, single)
        assert out.shape == (1,)
        torch.testing.assert_close(out, full[i : i + 1], atol=ATOL, rtol=0)


@pytest.mark.parametrize("tier", TIERS)
def test_tier_gives_finite_scores_when_the_history_is_all_padding(
    tiny_spec: Spec, batch: Batch, tier: str
) -> None:
    model = make_tier(tiny_spec, tier)
    request = dict(batch.request(1))
    request["user_history"] = torch.zeros_like(request["user_history"])

    out = scores(model, request)

    assert bool(torch.isfinite(out).all())
    assert bool(((out > 0) & (out < 1)).all())


@pytest.mark.parametrize(("tier", "uses_history"), [("lite", False), ("standard", True), ("xl", True)])
def test_tier_reads_the_history_only_when_its_architecture_uses_it(
    tiny_spec: Spec, batch: Batch, tier: str, uses_history: bool
) -> None:
    model = make_tier(tiny_spec, tier)
    request = batch.request(2)
    vocab = tiny_spec.features.history_vocab
    other = torch.arange(1, tiny_spec.features.history.length + 1).remainder(vocab - 1).add(1)[None, :]
    changed = dict(request, user_history=other)

    differs = not torch.allclose(scores(model, request), scores(model, changed), atol=1e-6, rtol=0)

    assert differs is uses_history


def fold_one(raw: int, vocab: int) -> int:
    return 0 if raw <= 0 else 1 + (raw - 1) % (vocab - 1)


def raw_request(spec: Spec, history: list[int], n: int = 4) -> dict[str, torch.Tensor]:
    f = spec.features
    rng = np.random.default_rng(2)
    return {
        "user_dense": torch.from_numpy(rng.normal(size=(1, f.user_dense)).astype(np.float32)),
        "user_sparse": torch.full((1, len(f.user_sparse)), 5, dtype=torch.int64),
        "user_history": torch.tensor([history], dtype=torch.int64),
        "ad_dense": torch.from_numpy(rng.normal(size=(n, f.ad_dense)).astype(np.float32)),
        "ad_sparse": torch.ones((n, len(f.ad_sparse)), dtype=torch.int64),
    }


def run_preprocess(pre: Preprocess, request: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    with torch.no_grad():
        return dict(zip(REQUEST_TENSORS, pre(*(request[k] for k in REQUEST_TENSORS)), strict=True))


def test_preprocess_folds_ids_by_the_rule_when_ids_are_raw(tiny_spec: Spec) -> None:
    f = tiny_spec.features
    raw_values = [0, -1, -(1 << 40), 1, 2, 8, 9, 10, 511, 512, 513, 1 << 62, (1 << 63) - 1, -(1 << 63)]
    request = raw_request(tiny_spec, [0, 0, 0])
    request["ad_sparse"] = torch.tensor([[v] * len(f.ad_sparse) for v in raw_values])
    request["ad_dense"] = torch.zeros((len(raw_values), f.ad_dense))
    request["user_sparse"] = torch.tensor([[123456789, -5]])

    out = run_preprocess(Preprocess(f), request)

    for j, feature in enumerate(f.ad_sparse):
        assert out["ad_sparse"][:, j].tolist() == [fold_one(v, feature.vocab) for v in raw_values]
    assert out["user_sparse"].tolist() == [[fold_one(123456789, f.user_sparse[0].vocab), 0]]


def test_preprocess_keeps_the_newest_ids_when_the_history_is_longer_than_l(tiny_spec: Spec) -> None:
    length, vocab = tiny_spec.features.history.length, tiny_spec.features.history_vocab
    raw = [100 + i for i in range(length + 3)]  # oldest first, newest last

    out = run_preprocess(Preprocess(tiny_spec.features), raw_request(tiny_spec, raw))

    assert out["user_history"].tolist() == [[fold_one(v, vocab) for v in raw[-length:]]]


def test_preprocess_left_pads_with_zeros_when_the_history_is_shorter_than_l(tiny_spec: Spec) -> None:
    length, vocab = tiny_spec.features.history.length, tiny_spec.features.history_vocab
    raw = [17, 0, -3, 1 << 50]

    out = run_preprocess(Preprocess(tiny_spec.features), raw_request(tiny_spec, raw))

    expected = [0] * (length - len(raw)) + [fold_one(v, vocab) for v in raw]
    assert out["user_history"].tolist() == [expected]
    assert out["user_history"].dtype == torch.int64


def test_preprocess_normalises_dense_features_with_the_fitted_statistics_when_fitted(tiny_spec: Spec) -> None:
    f = tiny_spec.features
    rng = np.random.default_rng(7)
    user = rng.normal(50.0, 9.0, size=(40, f.user_dense)).astype(np.float32)
    ad = rng.lognormal(0.0, 1.0, size=(90, f.ad_dense)).astype(np.float32)
    pre = Preprocess.fit(f, user, ad)
    request = raw_request(tiny_spec, [1, 2], n=3)

    out = run_preprocess(pre, request)

    for train, name in ((user, "user_dense"), (ad, "ad_dense")):
        x = train.astype(np.float64)
        mean = x.sum(axis=0) / len(x)
        std = np.sqrt(((x - mean) ** 2).sum(axis=0) / len(x))
        expected = (request[name].numpy().astype(np.float64) - mean) / std
        np.testing.assert_allclose(out[name].numpy(), expected, rtol=1e-4, atol=1e-5)


def test_preprocess_gives_finite_values_when_a_training_column_is_constant(tiny_spec: Spec) -> None:
    f = tiny_spec.features
    user = np.ones((10, f.user_dense), np.float32)
    ad = np.random.default_rng(0).normal(size=(10, f.ad_dense)).astype(np.float32)
    request = raw_request(tiny_spec, [1])
    request["user_dense"] = torch.ones((1, f.user_dense))

    out = run_preprocess(Preprocess.fit(f, user, ad), request)

    assert out["user_dense"].tolist() == [[0.0] * f.user_dense]


def test_preprocess_passes_dense_features_through_when_not_fitted(tiny_spec: Spec) -> None:
    request = raw_request(tiny_spec, [1])

    out = run_preprocess(Preprocess(tiny_spec.features), request)

    torch.testing.assert_close(out["user_dense"], request["user_dense"])
    torch.testing.assert_close(out["ad_dense"], request["ad_dense"])


@pytest.mark.parametrize("tier", TIERS)
def test_load_tier_gives_identical_scores_when_a_checkpoint_is_saved_and_loaded(
    tmp_path: Path, tiny_spec: Spec, batch: Batch, tier: str
) -> None:
    model = make_tier(tiny_spec, tier, seed=4)
    path = save_tier(tmp_path, tiny_spec, tier, model)

    loaded = load_tier(tmp_path, tiny_spec, tier)

    assert path == tier_path(tmp_path, tier)
    assert not loaded.training
    for r in range(3):
        assert torch.equal(scores(loaded, batch.request(r)), scores(model, batch.request(r)))


def test_load_preprocess_gives_the_fitted_statistics_when_saved_and_loaded(
    tmp_path: Path, tiny_spec: Spec
) -> None:
    rng = np.random.default_rng(1)
    f = tiny_spec.features
    pre = Preprocess.fit(f, rng.normal(3, 2, (20, f.user_dense)), rng.normal(-1, 5, (30, f.ad_dense)))
    save_preprocess(tmp_path, tiny_spec, pre)

    loaded = load_preprocess(tmp_path, tiny_spec)

    for key, value in pre.statistics().items():
        assert torch.equal(getattr(loaded, key), value), key


def test_load_tier_raises_checkpoint_error_naming_the_file_when_params_changed(
    tmp_path: Path, tiny_spec: Spec, tiny_spec_dict: dict[str, Any]
) -> None:
    save_tier(tmp_path, tiny_spec, "standard", make_tier(tiny_spec, "standard"))
    tiny_spec_dict["tiers"][1]["params"]["embedding_dim"] = 6
    changed = spec_from_dict(tiny_spec_dict, source="changed.yaml")

    with pytest.raises(CheckpointError) as info:
        load_tier(tmp_path, changed, "standard")

    assert str(tier_path(tmp_path, "standard")) in str(info.value)
    assert "params" in str(info.value)


def test_load_tier_raises_checkpoint_error_naming_the_file_when_the_architecture_changed(
    tmp_path: Path, tiny_spec: Spec, tiny_spec_dict: dict[str, Any]
) -> None:
    save_tier(tmp_path, tiny_spec, "lite", make_tier(tiny_spec, "lite"))
    tiny_spec_dict["tiers"][0]["architecture"] = "standard"
    tiny_spec_dict["tiers"][0]["params"] = {"embedding_dim": 4, "hidden": [8, 4]}
    changed = spec_from_dict(tiny_spec_dict, source="changed.yaml")

    with pytest.raises(CheckpointError, match=re.escape(str(tier_path(tmp_path, "lite")))):
        load_tier(tmp_path, changed, "lite")


def test_load_tier_raises_checkpoint_error_naming_the_file_when_features_changed(
    tmp_path: Path, tiny_spec: Spec, tiny_spec_dict: dict[str, Any]
) -> None:
    save_tier(tmp_path, tiny_spec, "xl", make_tier(tiny_spec, "xl"))
    tiny_spec_dict["features"]["ad_sparse"][1]["vocab"] = 14
    changed = spec_from_dict(tiny_spec_dict, source="changed.yaml")

    with pytest.raises(CheckpointError) as info:
        load_tier(tmp_path, changed, "xl")

    assert str(tier_path(tmp_path, "xl")) in str(info.value)
    assert "features" in str(info.value)


def test_load_tier_raises_checkpoint_error_naming_the_file_when_it_is_missing(
    tmp_path: Path, tiny_spec: Spec
) -> None:
    with pytest.raises(CheckpointError) as info:
        load_tier(tmp_path, tiny_spec, "lite")

    assert str(tmp_path / "lite.pt") in str(info.value)
    assert "not found" in str(info.value)


def test_load_tier_raises_checkpoint_error_when_the_file_is_not_a_checkpoint(
    tmp_path: Path, tiny_spec: Spec
) -> None:
    tier_path(tmp_path, "lite").write_bytes(b"\x00not a torch file\xff" * 8)

    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_tier(tmp_path, tiny_spec, "lite")


class Payload:
    """An object whose unpickling creates a file: what an untrusted checkpoint could smuggle in."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (pathlib.Path.touch, (self.marker,))


def test_load_tier_refuses_pickled_objects_when_the_checkpoint_carries_one(
    tmp_path: Path, tiny_spec: Spec
) -> None:
    model = make_tier(tiny_spec, "lite")
    path = save_tier(tmp_path, tiny_spec, "lite", model)
    data = torch.load(path, weights_only=True)
    marker = tmp_path / "payload-ran"
    data["state_dict"]["extra"] = Payload(marker)
    torch.save(data, path)

    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        load_tier(tmp_path, tiny_spec, "lite")

    assert not marker.exists()
    torch.load(path, weights_only=False)  # the payload is live: an unrestricted load runs it
    assert marker.exists()
