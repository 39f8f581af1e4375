"""Unit tests of toolkit.evaluate.ranking: NDCG@k, per-request top-k rows and top-k NE/AUC."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.evaluate.ranking import ndcg_at_k, top_k_quality, top_k_rows
from toolkit.metrics import normalized_entropy, roc_auc


def ragged(seed: int, num_requests: int, max_candidates: int = 8, graded: bool = False):
    """Labels, tied scores and offsets of requests with 0..max_candidates candidates (some empty)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, max_candidates + 1, size=num_requests)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    size = int(offsets[-1])
    labels = rng.integers(0, 4, size=size).astype(np.float64) if graded else (rng.random(size) < 0.3) * 1.0
    scores = rng.integers(0, 6, size=size) / 5.0  # few distinct values: many ties
    return labels, scores, offsets


def reference_ndcg(labels, scores, offsets, k: int) -> float:
    """NDCG@k by loops: Python's stable sort on -score keeps equal scores in candidate order."""
    values = []
    for r in range(len(offsets) - 1):
        y = [float(v) for v in labels[offsets[r] : offsets[r + 1]]]
        s = [float(v) for v in scores[offsets[r] : offsets[r + 1]]]
        ranked = sorted(range(len(y)), key=lambda i, s=s: -s[i])
        dcg = sum(y[i] / math.log2(rank + 2) for rank, i in enumerate(ranked[:k]))
        idcg = sum(g / math.log2(rank + 2) for rank, g in enumerate(sorted(y, reverse=True)[:k]))
        if idcg > 0:
            values.append(dcg / idcg)
    return sum(values) / len(values) if values else float("nan")


def reference_top_k(scores, offsets, k: int) -> list[int]:
    rows = []
    for r in range(len(offsets) - 1):
        start = int(offsets[r])
        s = [float(v) for v in scores[start : offsets[r + 1]]]
        rows += [start + i for i in sorted(range(len(s)), key=lambda i, s=s: -s[i])[:k]]
    return rows


def test_ndcg_at_k_is_one_when_the_ranking_is_perfect() -> None:
    labels = np.array([3.0, 2.0, 0.0, 1.0, 0.0, 1.0])
    scores = np.array([0.9, 0.7, 0.1, 0.4, 0.2, 0.8])
    offsets = np.array([0, 4, 6])

    assert ndcg_at_k(labels, scores, offsets, k=3) == pytest.approx(1.0, abs=1e-12)


def test_ndcg_at_k_is_one_over_log2_of_three_when_two_candidates_are_reversed() -> None:
    # DCG = 0 / log2(2) + 1 / log2(3); the ideal DCG puts the click first: 1 / log2(2) = 1.
    value = ndcg_at_k(np.array([1.0, 0.0]), np.array([0.1, 0.9]), np.array([0, 2]), k=2)

    assert value == pytest.approx(1.0 / math.log2(3.0), abs=1e-12)


def test_ndcg_at_k_is_zero_when_the_click_falls_below_k() -> None:
    assert ndcg_at_k(np.array([1.0, 0.0]), np.array([0.1, 0.9]), np.array([0, 2]), k=1) == 0.0


def test_ndcg_at_k_matches_a_hand_computation_when_labels_are_graded() -> None:
    # Ranked gains 1, 3, 2 against the ideal 3, 2, 1.
    dcg = 1.0 + 3.0 / math.log2(3.0) + 2.0 / 2.0
    idcg = 3.0 + 2.0 / math.log2(3.0) + 1.0 / 2.0
    value = ndcg_at_k(np.array([3.0, 2.0, 1.0]), np.array([0.5, 0.2, 0.8]), np.array([0, 3]), k=3)

    assert value == pytest.approx(dcg / idcg, abs=1e-12)


@pytest.mark.parametrize(("labels", "expected"), [([0.0, 1.0], 1.0 / math.log2(3.0)), ([1.0, 0.0], 1.0)])
def test_ndcg_at_k_keeps_candidate_order_when_scores_tie(labels: list[float], expected: float) -> None:
    value = ndcg_at_k(np.array(labels), np.array([0.5, 0.5]), np.array([0, 2]), k=2)

    assert value == pytest.approx(expected, abs=1e-12)


def test_ndcg_at_k_skips_requests_when_their_labels_are_all_zero() -> None:
    labels = np.array([0.0, 0.0, 1.0, 0.0])
    scores = np.array([0.9, 0.1, 0.8, 0.2])
    offsets = np.array([0, 2, 2, 4])  # request 0 has no click, request 1 is empty, request 2 is perfect

    assert ndcg_at_k(labels, scores, offsets, k=2) == 1.0


def test_ndcg_at_k_is_nan_when_no_request_has_a_positive_label() -> None:
    assert math.isnan(ndcg_at_k(np.zeros(4), np.arange(4.0), np.array([0, 1, 4]), k=2))


@pytest.mark.parametrize(("seed", "k", "graded"), [(0, 1, False), (1, 3, False), (2, 5, True), (3, 20, True)])
def test_ndcg_at_k_matches_the_loop_reference_when_requests_are_ragged_and_tied(
    seed: int, k: int, graded: bool
) -> None:
    labels, scores, offsets = ragged(seed, num_requests=120, graded=graded)

    assert ndcg_at_k(labels, scores, offsets, k) == pytest.approx(
        reference_ndcg(labels, scores, offsets, k), abs=1e-12
    )


def test_top_k_rows_lists_each_request_in_rank_order_when_requests_are_tiny() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.3, 0.2, 0.2, 0.8])
    offsets = np.array([0, 3, 4, 4, 7])  # 3 candidates, 1, none, 3 (with a tie)

    rows = top_k_rows(scores, offsets, k=2)

    assert rows.tolist() == [1, 2, 3, 6, 4]
    assert rows.dtype == np.int64


def test_top_k_rows_returns_every_candidate_when_requests_have_fewer_than_k() -> None:
    scores = np.array([0.1, 0.9, 0.5, 0.3])
    offsets = np.array([0, 3, 4])

    assert top_k_rows(scores, offsets, k=10).tolist() == [1, 2, 0, 3]


@pytest.mark.parametrize(("seed", "k"), [(4, 1), (5, 2), (6, 7)])
def test_top_k_rows_matches_the_loop_reference_when_requests_are_ragged_and_tied(seed: int, k: int) -> None:
    _, scores, offsets = ragged(seed, num_requests=150)

    assert top_k_rows(scores, offsets, k).tolist() == reference_top_k(scores, offsets, k)


def test_top_k_quality_scores_the_top_k_rows_when_ctr_is_omitted() -> None:
    labels, _, offsets = ragged(7, num_requests=200)
    scores = np.random.default_rng(7).random(labels.size)

    result = top_k_quality(labels, scores, offsets, k=2)
    rows = np.array(reference_top_k(scores, offsets, 2))

    assert result["k"] == 2
    assert result["rows"] == rows.size
    # The background CTR is that of all labels, not of the top-k rows.
    assert result["ne"] == pytest.approx(
        normalized_entropy(labels[rows], scores[rows], background_ctr=float(labels.mean())), rel=1e-12
    )
    assert result["ne"] != pytest.approx(normalized_entropy(labels[rows], scores[rows]), rel=1e-6)
    assert result["auc"] == pytest.approx(roc_auc(labels[rows], scores[rows]), abs=1e-12)
    assert result["ndcg"] == pytest.approx(reference_ndcg(labels, scores, offsets, 2), abs=1e-12)


def test_top_k_quality_uses_the_given_ctr_when_ctr_is_passed() -> None:
    labels = np.array([1.0, 0.0, 0.0, 1.0, 0.0])
    scores = np.array([0.7, 0.2, 0.4, 0.6, 0.1])
    offsets = np.array([0, 3, 5])

    result = top_k_quality(labels, scores, offsets, k=1, ctr=0.25)

    assert result["rows"] == 2
    assert result["ne"] == pytest.approx(
        normalized_entropy(np.array([1.0, 1.0]), np.array([0.7, 0.6]), background_ctr=0.25), rel=1e-12
    )


def test_top_k_quality_reports_nan_auc_when_the_top_k_rows_hold_one_class() -> None:
    labels = np.array([1.0, 0.0, 1.0, 0.0])
    scores = np.array([0.9, 0.1, 0.8, 0.3])
    offsets = np.array([0, 2, 4])

    result = top_k_quality(labels, scores, offsets, k=1)

    assert math.isnan(result["auc"])
    assert result["ndcg"] == 1.0
    assert math.isfinite(result["ne"])


@pytest.mark.parametrize(
    ("labels", "scores", "offsets", "k", "message"),
    [
        ([1.0, 0.0], [0.5, 0.4], [0, 2], 0, "k must be an integer >= 1"),
        ([1.0, 0.0], [0.5, 0.4], [0, 2], 1.5, "k must be an integer >= 1"),
        ([1.0, 0.0], [0.5, 0.4], [0, 2], True, "k must be an integer >= 1"),
        ([1.0, 0.0], [[0.5, 0.4]], [0, 2], 1, "scores must be a non-empty 1-D array"),
        ([1.0, 0.0], [0.5, np.nan], [0, 2], 1, "scores must be finite"),
        ([1.0, 0.0, 1.0], [0.5, 0.4], [0, 2], 1, "labels must have the shape of scores"),
        ([1.0, -1.0], [0.5, 0.4], [0, 2], 1, "labels must be finite and non-negative"),
        ([1.0, 0.0], [0.5, 0.4], [0.0, 2.0], 1, "offsets must be a 1-D integer array"),
        ([1.0, 0.0], [0.5, 0.4], [2], 1, "offsets must be a 1-D integer array"),
        ([1.0, 0.0], [0.5, 0.4], [0, 3], 1, "offsets must rise from 0 to the number of candidates"),
        ([1.0, 0.0], [0.5, 0.4], [0, 2, 1, 2], 1, "offsets must rise from 0"),
    ],
)
def test_ndcg_at_k_raises_when_inputs_are_invalid(labels, scores, offsets, k, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ndcg_at_k(np.array(labels), np.array(scores), np.array(offsets), k)


def test_top_k_rows_raises_when_offsets_do_not_cover_the_scores() -> None:
    with pytest.raises(ValueError, match="offsets must rise from 0 to the number of candidates"):
        top_k_rows(np.array([0.5, 0.4, 0.3]), np.array([0, 2]), k=1)


@pytest.mark.parametrize(
    ("labels", "scores", "ctr", "message"),
    [
        ([2.0, 0.0], [0.5, 0.4], None, "labels must be 0 or 1"),
        ([1.0, 0.0], [1.5, 0.4], None, r"scores must be click probabilities in \[0, 1\]"),
        ([1.0, 0.0], [0.5, 0.4], 1.5, r"ctr must be a click-through rate in \[0, 1\]"),
        ([1.0, 0.0], [0.5, 0.4], float("nan"), "ctr must be a click-through rate"),
    ],
)
def test_top_k_quality_raises_when_labels_scores_or_ctr_are_invalid(
    labels, scores, ctr, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        top_k_quality(np.array(labels), np.array(scores), np.array([0, 2]), k=1, ctr=ctr)
