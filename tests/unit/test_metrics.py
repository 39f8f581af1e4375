"""Unit tests of toolkit.evaluate: ROC AUC, log loss and normalized entropy against direct formulas."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.evaluate import log_loss, normalized_entropy, roc_auc


def pairwise_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Share of (positive, negative) pairs ranked right, ties counted 1/2, by brute force."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y == 1]
    neg = [s for s, y in zip(scores, labels, strict=True) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def direct_log_loss(labels: np.ndarray, scores: np.ndarray) -> float:
    total = 0.0
    for y, p in zip(labels, scores, strict=True):
        total += -math.log(p) if y == 1 else -math.log(1.0 - p)
    return total / len(labels)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_roc_auc_equals_the_pairwise_count_when_scores_have_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    labels = (rng.random(300) < 0.3).astype(np.float32)
    scores = rng.integers(0, 12, size=300) / 11.0  # only 12 distinct values: many ties

    assert roc_auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores), abs=1e-12)


def test_roc_auc_equals_the_pairwise_count_when_scores_are_continuous() -> None:
    rng = np.random.default_rng(5)
    labels = (rng.random(200) < 0.5).astype(np.int64)
    scores = rng.random(200) + 0.3 * labels

    assert roc_auc(labels, scores) == pytest.approx(pairwise_auc(labels, scores), abs=1e-12)


def test_roc_auc_gives_one_half_when_every_score_is_equal() -> None:
    labels = np.array([0, 1, 0, 1, 1])

    assert roc_auc(labels, np.full(5, 0.2)) == pytest.approx(0.5)


def test_roc_auc_gives_one_and_zero_when_the_ranking_is_perfect_or_reversed() -> None:
    labels = np.array([0, 0, 1, 1])
    scores = np.array([0.1, 0.2, 0.3, 0.4])

    assert roc_auc(labels, scores) == pytest.approx(1.0)
    assert roc_auc(labels, -scores) == pytest.approx(0.0)


@pytest.mark.parametrize("label", [0.0, 1.0])
def test_roc_auc_gives_nan_when_only_one_class_is_present(label: float) -> None:
    labels = np.full(10, label)

    assert math.isnan(roc_auc(labels, np.linspace(0, 1, 10)))


def test_log_loss_matches_the_direct_formula_when_probabilities_are_inside_0_1() -> None:
    rng = np.random.default_rng(3)
    labels = (rng.random(500) < 0.2).astype(np.float32)
    scores = rng.uniform(0.01, 0.99, size=500)

    assert log_loss(labels, scores) == pytest.approx(direct_log_loss(labels, scores), rel=1e-12)


def test_log_loss_stays_finite_when_a_prediction_is_certain_and_wrong() -> None:
    value = log_loss(np.array([1.0, 0.0]), np.array([0.0, 1.0]))

    assert math.isfinite(value)
    assert value > 10.0


def test_normalized_entropy_is_one_when_predicting_the_background_ctr_everywhere() -> None:
    rng = np.random.default_rng(4)
    labels = (rng.random(5000) < 0.05).astype(np.float64)
    ctr = int(labels.sum()) / labels.size

    assert normalized_entropy(labels, np.full(labels.shape, ctr)) == pytest.approx(1.0, abs=1e-9)


def test_normalized_entropy_is_one_when_float32_labels_are_scored_with_their_exact_ctr() -> None:
    rng = np.random.default_rng(4)
    labels = (rng.random(5000) < 0.05).astype(np.float32)  # the dtype RequestSet.labels has
    ctr = int(labels.sum()) / labels.size

    ne = normalized_entropy(labels, np.full(labels.shape, ctr), background_ctr=ctr)

    assert ne == pytest.approx(1.0, abs=1e-9)


def test_normalized_entropy_divides_by_the_given_ctrs_entropy_when_background_is_passed() -> None:
    rng = np.random.default_rng(6)
    labels = (rng.random(1000) < 0.1).astype(np.float32)
    scores = rng.uniform(0.02, 0.3, size=1000)
    ctr = 0.08
    entropy = -(ctr * math.log(ctr) + (1 - ctr) * math.log(1 - ctr))

    expected = direct_log_loss(labels, scores) / entropy

    assert normalized_entropy(labels, scores, background_ctr=ctr) == pytest.approx(expected, rel=1e-12)


def test_normalized_entropy_is_lower_when_predictions_are_better() -> None:
    rng = np.random.default_rng(8)
    truth = rng.uniform(0.01, 0.3, size=20000)
    labels = (rng.random(truth.size) < truth).astype(np.float32)
    noisy = np.clip(truth + rng.normal(0, 0.05, size=truth.size), 0.005, 0.995)
    flat = np.full(truth.size, labels.mean())

    ne_truth = normalized_entropy(labels, truth)
    ne_noisy = normalized_entropy(labels, noisy)
    ne_flat = normalized_entropy(labels, flat)

    assert ne_truth < ne_noisy
    assert ne_truth < ne_flat
    assert ne_truth < 1.0
