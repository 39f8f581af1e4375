"""The learned routing gate: its targets, one request against a batch, what it learns, its ONNX export."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from toolkit.evaluate.calibrate import export_gate
from toolkit.export.parity import cpu_session
from toolkit.repository.gate import CHEAPEST_SCORE, GATE_OUTPUT
from toolkit.spec import Spec
from toolkit.train.gate import GateData, RequestGate, SummaryGate, candidate_targets, predict, train_gate

TENSORS = ("user_dense", "user_sparse", "user_history", "ad_dense", "ad_sparse")


def kl(p: float, q: float) -> float:
    return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))


def test_candidate_targets_give_the_kl_the_realised_gain_and_their_mean_per_candidate() -> None:
    small = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    big = np.array([0.1, 0.2, 0.6, 0.1], dtype=np.float32)
    labels = np.array([0, 1, 1, 0], dtype=np.float32)
    scores = np.stack([small, small, big])

    divergence = candidate_targets(scores, labels, "kl")
    gain = candidate_targets(scores, labels, "gain")
    blend = candidate_targets(scores, labels, "blend")

    assert divergence.shape == (4, 2) and np.allclose(divergence[:, 0], 0.0, atol=1e-9)
    assert divergence[2, 1] == pytest.approx(kl(0.6, 0.3), rel=1e-5)
    assert divergence[3, 1] == pytest.approx(kl(0.1, 0.4), rel=1e-5)
    assert gain[2, 1] == pytest.approx(np.log(0.6) - np.log(0.3), rel=1e-5)
    assert gain[3, 1] == pytest.approx(np.log(0.9) - np.log(0.6), rel=1e-5)
    assert np.allclose(blend, (divergence + gain) / 2, atol=1e-7)
    with pytest.raises(ValueError, match="'regret'"):
        candidate_targets(scores, labels, "regret")


def random_requests(spec: Spec, counts: list[int], seed: int = 0) -> dict[str, torch.Tensor]:
    f = spec.features
    rng = np.random.default_rng(seed)
    r, c = len(counts), sum(counts)
    history = rng.integers(0, f.history_vocab, (r, f.history.length))
    history[0, :] = 0
    return {
        "user_dense": torch.from_numpy(rng.normal(size=(r, f.user_dense)).astype(np.float32)),
        "user_sparse": torch.from_numpy(np.stack([rng.integers(0, s.vocab, r) for s in f.user_sparse], 1)),
        "user_history": torch.from_numpy(history),
        "ad_dense": torch.from_numpy(rng.normal(size=(c, f.ad_dense)).astype(np.float32)),
        "ad_sparse": torch.from_numpy(np.stack([rng.integers(0, s.vocab, c) for s in f.ad_sparse], 1)),
    }


@pytest.mark.parametrize("cheapest_first", [False, True])
@pytest.mark.parametrize("design", [RequestGate, SummaryGate])
def test_gate_gives_one_request_the_gains_it_gets_in_a_batch_when_requests_are_mixed(
    tiny_spec: Spec, design: type, cheapest_first: bool
) -> None:
    torch.manual_seed(0)
    gate = design(tiny_spec.features, 2, cheapest_first=cheapest_first).eval()
    counts = [3, 1, 5, 2]
    t = random_requests(tiny_spec, counts)
    cheapest = torch.rand(sum(counts)) if cheapest_first else None
    index = torch.from_numpy(np.repeat(np.arange(len(counts)), counts))
    with torch.no_grad():
        batch = gate.per_candidate(*(t[k] for k in TENSORS), cheapest, index)
        offsets = np.concatenate([[0], np.cumsum(counts)])
        for r, (lo, hi) in enumerate(zip(offsets[:-1], offsets[1:], strict=True)):
            one = gate(
                t["user_dense"][r : r + 1],
                t["user_sparse"][r : r + 1],
                t["user_history"][r : r + 1],
                t["ad_dense"][lo:hi],
                t["ad_sparse"][lo:hi],
                None if cheapest is None else cheapest[lo:hi],
            )
            assert one.shape == (1, 2)
            torch.testing.assert_close(one[0], batch[lo:hi].mean(0), atol=1e-5, rtol=1e-5)


def overlap_data(spec: Spec, requests: int, seed: int) -> tuple[GateData, np.ndarray]:
    """Requests whose bigger tier changes its scores only for candidates in the user's history.

    Half the requests draw their candidates' history-table ids from the history, the others from
    ids it never holds; every history is full, so nothing but the history's content tells them apart.
    """
    f = spec.features
    rng = np.random.default_rng(seed)
    column = f.history_table_index
    vocab = f.history_vocab
    counts = rng.integers(2, 7, requests)
    overlap = rng.random(requests) < 0.5
    inside = np.arange(1, vocab // 2)
    history = rng.choice(inside, (requests, f.history.length))
    t = random_requests(spec, counts.tolist(), seed)
    t["user_history"] = torch.from_numpy(history)
    items, big = [], []
    for r, n in enumerate(counts):
        chosen = rng.choice(history[r], n) if overlap[r] else rng.integers(vocab // 2, vocab, n)
        items.append(chosen)
        big.append(np.where(overlap[r], 0.7, 0.2) * np.ones(n))
    ad_sparse = t["ad_sparse"].numpy().copy()
    ad_sparse[:, column] = np.concatenate(items)
    t["ad_sparse"] = torch.from_numpy(ad_sparse)
    c = int(counts.sum())
    small = np.full(c, 0.2, dtype=np.float32)
    scores = np.stack([small, small, np.concatenate(big).astype(np.float32)])
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    return GateData(t, offsets, scores, np.zeros(c, dtype=np.float32)), overlap


def precision_at_half(gate: torch.nn.Module, data: GateData, overlap: np.ndarray) -> float:
    predicted = predict(gate, data, cheapest_first=False)[:, -1]
    top = np.argsort(-predicted)[: int(overlap.sum())]
    return float(overlap[top].mean())


def test_request_gate_finds_the_gain_hidden_in_the_history_content_where_summaries_cannot(
    tiny_spec: Spec,
) -> None:
    spec = dataclasses.replace(
        tiny_spec,
        features=dataclasses.replace(
            tiny_spec.features, history=dataclasses.replace(tiny_spec.features.history, length=4)
        ),
    )
    train, _ = overlap_data(spec, 1500, seed=1)
    test, overlap = overlap_data(spec, 600, seed=2)

    request = train_gate(train, spec.features, "request", "kl", seed=0, epochs=20)
    summary = train_gate(train, spec.features, "summary", "kl", seed=0, epochs=20)

    assert precision_at_half(request, test, overlap) > 0.9
    assert precision_at_half(summary, test, overlap) < 0.7


def test_summary_gate_ranks_requests_by_the_gain_hidden_in_their_history_length(tiny_spec: Spec) -> None:
    rng = np.random.default_rng(0)
    counts = rng.integers(2, 7, 1500).tolist()
    t = random_requests(tiny_spec, counts, seed=3)
    length = rng.integers(0, tiny_spec.features.history.length + 1, len(counts))
    history = t["user_history"].numpy().copy()
    for r, keep in enumerate(length):
        history[r, : tiny_spec.features.history.length - keep] = 0
        history[r, tiny_spec.features.history.length - keep :] = 1
    t["user_history"] = torch.from_numpy(history)
    long = length >= 4
    big = np.concatenate([np.full(n, 0.6 if lg else 0.25) for n, lg in zip(counts, long, strict=True)])
    small = np.full(len(big), 0.2)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    data = GateData(
        t, offsets, np.stack([small, big, big]).astype(np.float32), np.zeros(len(big), np.float32)
    )

    gate = train_gate(data, tiny_spec.features, "summary", "kl", seed=1, epochs=10)

    assert precision_at_half(gate, data, long) > 0.95
    assert np.all(predict(gate, data, cheapest_first=False)[:, -1][long].mean() > 0)


@pytest.mark.parametrize("cheapest_first", [False, True])
def test_exported_gate_gives_the_torch_gate_gains_when_run_by_onnx_runtime(
    tiny_spec: Spec, tmp_path, cheapest_first: bool
) -> None:
    learned = dataclasses.replace(tiny_spec.routing.learned, cheapest_first=cheapest_first)
    spec = dataclasses.replace(tiny_spec, routing=dataclasses.replace(tiny_spec.routing, learned=learned))
    torch.manual_seed(4)
    gate = RequestGate(spec.features, len(spec.tiers) - 1, cheapest_first=cheapest_first).eval()
    path = tmp_path / "gate.onnx"
    export_gate(spec, gate, path)
    session = cpu_session(str(path))
    for n in (1, 2, 7):
        t = random_requests(spec, [n], seed=n)
        feed = {k: v.numpy() for k, v in t.items()}
        cheapest = torch.rand(n) if cheapest_first else None
        if cheapest is not None:
            feed[CHEAPEST_SCORE] = cheapest.numpy()
        got = session.run([GATE_OUTPUT], feed)[0]
        with torch.no_grad():
            want = gate(*(t[k] for k in TENSORS), cheapest).numpy()
        assert got.shape == (1, len(spec.tiers) - 1)
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)
