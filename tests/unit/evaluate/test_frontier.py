"""Unit tests of toolkit.evaluate.frontier: per-request NE sums, PGR/APGR/CPT and routing curves."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.evaluate.frontier import (
    Curve,
    RequestLosses,
    apgr,
    assignment_at_share,
    cost_saved_at_equal_quality,
    cpt,
    oracle_curve,
    pgr,
    random_curve,
    score_curve,
)
from toolkit.metrics import normalized_entropy


def ragged_requests(seed: int, num_requests: int, num_tiers: int = 3):
    """Labels, per-tier scores and offsets of requests with 0..6 candidates (some empty)."""
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, 7, size=num_requests)
    counts[0] = 3  # never all empty
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    labels = (rng.random(offsets[-1]) < 0.3).astype(np.float64)
    scores = rng.random((num_tiers, offsets[-1]))
    scores[0, :2] = [0.0, 1.0]  # exercises the clipping
    return labels, scores, offsets


def helpful_strong(seed: int = 0, num_requests: int = 400, per_request: int = 8):
    """Two tiers: weak predicts the global CTR; strong knows the true CTR, but only on half the requests."""
    rng = np.random.default_rng(seed)
    ctr = rng.choice([0.02, 0.5], size=num_requests)
    labels = (rng.random((num_requests, per_request)) < ctr[:, None]).astype(np.float64).ravel()
    weak = np.full(labels.size, labels.mean())
    knows = rng.random(num_requests) < 0.5
    strong = np.where(np.repeat(knows, per_request), np.repeat(ctr, per_request), weak)
    offsets = np.arange(num_requests + 1, dtype=np.int64) * per_request
    return RequestLosses.from_scores(labels, np.stack([weak, strong]), offsets)


def test_from_scores_agrees_with_normalized_entropy_when_one_tier_serves_all() -> None:
    labels, scores, offsets = ragged_requests(seed=1, num_requests=50)
    losses = RequestLosses.from_scores(labels, scores, offsets)

    assert losses.loss.shape == (50, 3)
    assert losses.candidates.tolist() == np.diff(offsets).tolist()
    for t in range(3):
        expected = normalized_entropy(labels, scores[t])
        assert losses.ne_of_tier(t) == pytest.approx(expected, rel=1e-12)
        assert losses.ne(np.full(50, t)) == pytest.approx(expected, rel=1e-12)
    assert losses.ne_of_tier(-1) == losses.ne_of_tier(2)


def test_from_scores_agrees_with_normalized_entropy_when_requests_mix_tiers() -> None:
    labels, scores, offsets = ragged_requests(seed=2, num_requests=60)
    losses = RequestLosses.from_scores(labels, scores, offsets)
    assignment = np.random.default_rng(3).integers(0, 3, size=60)
    mixed = np.empty_like(labels)
    for r, t in enumerate(assignment):
        mixed[offsets[r] : offsets[r + 1]] = scores[t, offsets[r] : offsets[r + 1]]

    # The background CTR is that of all labels, as normalized_entropy takes it by default.
    assert losses.ne(assignment) == pytest.approx(normalized_entropy(labels, mixed), rel=1e-12)
    assert losses.ne(assignment) != pytest.approx(losses.ne_of_tier(0), rel=1e-6)


@pytest.mark.parametrize(
    ("labels", "scores", "offsets", "message"),
    [
        (np.zeros(4), np.full((2, 5), 0.5), np.array([0, 4]), "scores must have shape"),
        (np.zeros(4), np.full(4, 0.5), np.array([0, 4]), "scores must have shape"),
        (np.zeros(4), np.full((2, 4), 0.5), np.array([0, 3]), "offsets must rise"),
        (np.zeros(4), np.full((2, 4), 0.5), np.array([0, 3, 2, 4]), "offsets must rise"),
        (np.zeros(4), np.full((2, 4), 0.5), np.array([0.0, 4.0]), "integer"),
        (np.array([0, 2, 1, 0]), np.full((2, 4), 0.5), np.array([0, 4]), "0 or 1"),
    ],
)
def test_from_scores_raises_when_inputs_do_not_fit(labels, scores, offsets, message) -> None:
    with pytest.raises(ValueError, match=message):
        RequestLosses.from_scores(labels, scores, offsets)


def test_request_losses_raise_when_assignment_or_tier_is_bad() -> None:
    losses = RequestLosses(loss=np.ones((3, 2)), candidates=np.array([1, 1, 1]), entropy_per_candidate=0.5)
    with pytest.raises(ValueError, match=r"assignment must be \[3\]"):
        losses.ne(np.zeros(4, dtype=int))
    with pytest.raises(ValueError, match="outside"):
        losses.ne(np.array([0, 2, 1]))
    with pytest.raises(ValueError, match="out of range"):
        losses.ne_of_tier(2)
    with pytest.raises(ValueError, match="candidates must have shape"):
        RequestLosses(loss=np.ones((3, 2)), candidates=np.array([1, 1]), entropy_per_candidate=0.5)


def test_pgr_is_zero_at_weak_one_at_strong_and_linear_between() -> None:
    assert pgr(0.9, ne_weak=0.9, ne_strong=0.7) == 0.0
    assert pgr(0.7, ne_weak=0.9, ne_strong=0.7) == pytest.approx(1.0)
    assert pgr(0.85, ne_weak=0.9, ne_strong=0.7) == pytest.approx(0.25)


@pytest.mark.parametrize("ne_strong", [0.9, 0.95])
def test_pgr_raises_when_strong_is_not_better(ne_strong: float) -> None:
    with pytest.raises(ValueError, match="strong tier is not better"):
        pgr(0.8, ne_weak=0.9, ne_strong=ne_strong)


def test_apgr_is_one_half_when_the_curve_is_linear_from_weak_to_strong() -> None:
    curve = Curve(strong_share=np.array([0.0, 0.3, 1.0]), ne=np.array([1.0, 0.94, 0.8]))
    assert apgr(curve, ne_weak=1.0, ne_strong=0.8) == pytest.approx(0.5)


def test_apgr_integrates_by_trapezoids_when_the_curve_is_concave() -> None:
    # PGR 0 -> 0.8 -> 1 at shares 0, 0.5, 1: area 0.5 * 0.4 + 0.5 * 0.9 = 0.65.
    curve = Curve(strong_share=np.array([0.0, 0.5, 1.0]), ne=np.array([1.0, 0.84, 0.8]))
    assert apgr(curve, ne_weak=1.0, ne_strong=0.8) == pytest.approx(0.65)


@pytest.mark.parametrize("share", [[0.0, 0.5], [0.1, 1.0], [0.0]])
def test_apgr_raises_when_the_curve_does_not_span_zero_to_one(share: list[float]) -> None:
    curve = Curve(strong_share=np.array(share), ne=np.linspace(1.0, 0.9, len(share)))
    with pytest.raises(ValueError, match="spanning strong shares 0 to 1"):
        apgr(curve, ne_weak=1.0, ne_strong=0.8)


def test_apgr_raises_when_the_gap_is_not_positive() -> None:
    curve = Curve(strong_share=np.array([0.0, 1.0]), ne=np.array([0.8, 0.8]))
    with pytest.raises(ValueError, match="strong tier is not better"):
        apgr(curve, ne_weak=0.8, ne_strong=0.8)


def test_cpt_interpolates_between_curve_points_when_the_target_falls_inside_a_segment() -> None:
    # PGR 0, 0.4, 0.8, 1.0 at shares 0, 0.25, 0.5, 1.
    curve = Curve(strong_share=np.array([0.0, 0.25, 0.5, 1.0]), ne=np.array([1.0, 0.6, 0.2, 0.0]))
    assert cpt(curve, 0.5, ne_weak=1.0, ne_strong=0.0) == pytest.approx(0.3125)
    assert cpt(curve, 0.8, ne_weak=1.0, ne_strong=0.0) == pytest.approx(0.5)
    assert cpt(curve, 0.0, ne_weak=1.0, ne_strong=0.0) == 0.0
    assert cpt(curve, 1.01, ne_weak=1.0, ne_strong=0.0) is None


def test_cpt_takes_the_first_crossing_when_pgr_is_not_monotone() -> None:
    # PGR 0, 0.6, 0.3, 1.0: 0.5 is first reached inside the first segment.
    curve = Curve(strong_share=np.array([0.0, 0.2, 0.6, 1.0]), ne=np.array([1.0, 0.4, 0.7, 0.0]))
    assert cpt(curve, 0.5, ne_weak=1.0, ne_strong=0.0) == pytest.approx(0.2 * 0.5 / 0.6)


def test_cpt_raises_when_the_curve_does_not_start_at_zero() -> None:
    curve = Curve(strong_share=np.array([0.2, 1.0]), ne=np.array([0.9, 0.8]))
    with pytest.raises(ValueError, match="starting at strong share 0"):
        cpt(curve, 0.5, ne_weak=1.0, ne_strong=0.8)


def test_random_curve_ends_at_each_tier_ne_and_has_apgr_one_half() -> None:
    losses = helpful_strong()
    ne_weak, ne_strong = losses.ne_of_tier(0), losses.ne_of_tier(1)
    curve = random_curve(losses, np.linspace(0.0, 1.0, 11))

    assert curve.ne[0] == pytest.approx(ne_weak, rel=1e-12)
    assert curve.ne[-1] == pytest.approx(ne_strong, rel=1e-12)
    assert curve.strong_share.tolist() == pytest.approx(np.linspace(0.0, 1.0, 11).tolist())
    assert apgr(curve, ne_weak, ne_strong) == pytest.approx(0.5, abs=1e-12)


def test_oracle_apgr_beats_random_when_strong_helps_only_some_requests() -> None:
    losses = helpful_strong()
    ne_weak, ne_strong = losses.ne_of_tier(0), losses.ne_of_tier(1)
    oracle = oracle_curve(losses)

    assert oracle.strong_share.size == losses.num_requests + 1
    assert oracle.ne[0] == pytest.approx(ne_weak, rel=1e-12)
    assert oracle.ne[-1] == pytest.approx(ne_strong, rel=1e-12)
    # Strong helps about half the requests, so the oracle recovers the whole gap by share ~0.5.
    assert apgr(oracle, ne_weak, ne_strong) > 0.7
    assert cpt(oracle, 1.0, ne_weak, ne_strong) < 0.6
    assert cpt(oracle, 0.5, ne_weak, ne_strong) < cpt(random_curve(losses), 0.5, ne_weak, ne_strong)


def test_score_curve_equals_the_oracle_when_the_score_ranks_requests_by_loss_reduction() -> None:
    losses = helpful_strong(seed=4)
    shares = np.linspace(0.0, 1.0, 21)
    reduction = losses.loss[:, 0] - losses.loss[:, 1]
    perfect = np.tanh(reduction) * 3.0 + 7.0  # a different but order-preserving score

    oracle = oracle_curve(losses, shares)
    learned = score_curve(losses, perfect, shares)

    np.testing.assert_allclose(learned.ne, oracle.ne, rtol=1e-12)
    np.testing.assert_array_equal(learned.strong_share, oracle.strong_share)
    assert np.all(learned.ne <= score_curve(losses, -perfect, shares).ne + 1e-12)


def test_score_curve_matches_the_ne_of_its_assignments_when_scores_are_random() -> None:
    labels, scores, offsets = ragged_requests(seed=5, num_requests=40)
    losses = RequestLosses.from_scores(labels, scores, offsets)
    router = np.random.default_rng(6).integers(0, 5, size=40).astype(float)  # many ties
    shares = np.array([0.0, 0.1, 0.33, 0.5, 0.9, 1.0])

    curve = score_curve(losses, router, shares, weak=1, strong=2)

    for share, ne in zip(curve.strong_share, curve.ne, strict=True):
        strong = assignment_at_share(router, share)
        assert strong.sum() == round(share * 40)
        assert losses.ne(np.where(strong, 2, 1)) == pytest.approx(ne, rel=1e-12)


def test_score_curve_routes_requests_in_index_order_when_the_score_is_constant() -> None:
    losses = helpful_strong(seed=7, num_requests=10)
    constant = np.ones(10)

    curve = score_curve(losses, constant, np.array([0.0, 0.3, 1.0]))

    assert assignment_at_share(constant, 0.3).tolist() == [True] * 3 + [False] * 7
    first_three = np.array([1, 1, 1, 0, 0, 0, 0, 0, 0, 0])
    assert curve.ne[1] == pytest.approx(losses.ne(first_three), rel=1e-12)
    np.testing.assert_array_equal(curve.ne, score_curve(losses, constant, np.array([0.0, 0.3, 1.0])).ne)


def test_score_curve_reports_realized_shares_when_share_times_requests_is_fractional() -> None:
    losses = RequestLosses(loss=np.ones((3, 2)), candidates=np.ones(3, dtype=int), entropy_per_candidate=1.0)
    curve = score_curve(losses, np.arange(3.0), np.array([0.0, 0.4, 0.5, 1.0]))
    assert curve.strong_share.tolist() == pytest.approx([0.0, 1 / 3, 2 / 3, 1.0])


def test_curves_carry_mean_cost_when_tier_costs_are_given() -> None:
    losses = helpful_strong(num_requests=20)
    shares = np.array([0.0, 0.25, 1.0])
    for curve in (
        oracle_curve(losses, shares, tier_cost=np.array([1.0, 5.0])),
        random_curve(losses, shares, tier_cost=np.array([1.0, 5.0])),
    ):
        assert curve.cost.tolist() == pytest.approx([1.0, 2.0, 5.0])
    assert oracle_curve(losses, shares).cost is None


def test_score_curve_raises_when_inputs_do_not_fit() -> None:
    losses = helpful_strong(num_requests=10)
    with pytest.raises(ValueError, match="router_scores has 9 entries"):
        score_curve(losses, np.ones(9))
    with pytest.raises(ValueError, match="strictly increasing"):
        score_curve(losses, np.ones(10), np.array([0.0, 0.5, 0.5, 1.0]))
    with pytest.raises(ValueError, match=r"shares must lie in \[0, 1\]"):
        random_curve(losses, np.array([0.0, 1.5]))
    with pytest.raises(ValueError, match="must differ"):
        oracle_curve(losses, weak=1, strong=-1)
    with pytest.raises(ValueError, match="tier_cost"):
        random_curve(losses, tier_cost=np.array([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="router_scores must be finite"):
        assignment_at_share(np.array([1.0, np.nan]), 0.5)


def test_curve_raises_when_arrays_do_not_fit() -> None:
    with pytest.raises(ValueError, match="ne must have the shape"):
        Curve(strong_share=np.array([0.0, 1.0]), ne=np.array([1.0]))
    with pytest.raises(ValueError, match="non-decreasing"):
        Curve(strong_share=np.array([0.0, 0.6, 0.4, 1.0]), ne=np.ones(4))
    with pytest.raises(ValueError, match="cost must be finite"):
        Curve(strong_share=np.array([0.0, 1.0]), ne=np.ones(2), cost=np.ones(3))


def test_cost_saved_interpolates_when_reference_quality_is_reached_inside_a_segment() -> None:
    costs, ne = np.array([1.0, 2.0, 3.0]), np.array([1.0, 0.8, 0.7])
    # NE 0.75 is reached halfway between cost 2 and 3: 1 - 2.5 / 3.
    assert cost_saved_at_equal_quality(costs, ne, 3.0, 0.75) == pytest.approx(1.0 / 6.0)
    assert cost_saved_at_equal_quality(costs, ne, 3.0, 0.8) == pytest.approx(1.0 / 3.0)
    assert cost_saved_at_equal_quality(costs, ne, 4.0, 1.2) == pytest.approx(0.75)
    assert cost_saved_at_equal_quality(costs, ne, 3.0, 0.69) is None


def test_cost_saved_raises_when_shapes_differ_or_reference_cost_is_not_positive() -> None:
    with pytest.raises(ValueError, match="one non-empty shape"):
        cost_saved_at_equal_quality(np.ones(3), np.ones(2), 1.0, 0.5)
    with pytest.raises(ValueError, match="reference_cost must be finite and positive"):
        cost_saved_at_equal_quality(np.ones(2), np.ones(2), 0.0, 0.5)
