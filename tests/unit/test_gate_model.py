"""The learned routing gate: its label-free target and that it learns a request-level signal."""

from __future__ import annotations

import numpy as np

from toolkit.train.gate import gate_features, gate_targets, predict, train_gate


def test_gate_targets_are_zero_when_tiers_agree_and_equal_the_mean_kl_otherwise() -> None:
    small = np.array([0.1, 0.2, 0.3, 0.4], dtype=np.float32)
    big = np.array([0.1, 0.2, 0.6, 0.1], dtype=np.float32)
    offsets = np.array([0, 2, 4])
    targets = gate_targets(np.stack([small, small, big]), offsets)
    assert targets.shape == (2, 2)
    assert np.allclose(targets[:, 0], 0.0, atol=1e-9)
    assert np.isclose(targets[0, 1], 0.0, atol=1e-9)

    def kl(p: float, q: float) -> float:
        return p * np.log(p / q) + (1 - p) * np.log((1 - p) / (1 - q))

    assert np.isclose(targets[1, 1], (kl(0.6, 0.3) + kl(0.1, 0.4)) / 2, rtol=1e-5)


def test_train_gate_ranks_requests_by_the_gain_hidden_in_their_history_length() -> None:
    rng = np.random.default_rng(0)
    r = 3000
    history = rng.integers(0, 33, r)
    features = gate_features(rng.normal(size=(r, 4)), history, rng.integers(4, 40, r))
    gain = np.where(history >= 12, 0.05, 0.002) * rng.uniform(0.5, 1.5, r)
    targets = np.stack([gain * 0.3, gain], axis=1)

    predicted = predict(train_gate(features, targets, seed=1, epochs=20), features)

    assert predicted.shape == (r, 2) and np.all(predicted >= 0)
    top = np.argsort(-predicted[:, 1])[: int((history >= 12).sum())]
    assert (history[top] >= 12).mean() > 0.95
