"""Unit tests of toolkit.evaluate.bootstrap: request-level bootstrap intervals of APGR and CPT."""

from __future__ import annotations

import math

import numpy as np
import pytest

from toolkit.evaluate.bootstrap import bootstrap_frontier, within_noise_of_random
from toolkit.evaluate.frontier import RequestLosses, apgr, cpt, score_curve

SHARES = np.linspace(0.0, 1.0, 101)


def strong_signal(seed: int = 0, num_requests: int = 1000, num_tiers: int = 3) -> RequestLosses:
    """The strong tier cuts the loss of a third of the requests by a lot and of the rest by nothing."""
    rng = np.random.default_rng(seed)
    weak = rng.gamma(4.0, 1.0, size=num_requests)
    helped = rng.random(num_requests) < 1.0 / 3.0
    strong = np.where(helped, 0.3 * weak, weak) + rng.normal(0.0, 0.05, size=num_requests).clip(0.0, None)
    middle = 0.5 * (weak + strong)
    loss = np.stack([weak, middle, strong][: num_tiers - 1] + [strong], axis=1)
    return RequestLosses(
        loss=loss, candidates=rng.integers(1, 20, size=num_requests), entropy_per_candidate=0.4
    )


def noisy_oracle(losses: RequestLosses, noise: float, seed: int = 1) -> np.ndarray:
    """The oracle's score (the strong tier's loss reduction) plus Gaussian noise."""
    reduction = losses.loss[:, 0] - losses.loss[:, -1]
    return reduction + np.random.default_rng(seed).normal(0.0, noise, size=losses.num_requests)


def point_estimates(losses: RequestLosses, scores: np.ndarray) -> tuple[float, float, float]:
    ne_weak, ne_strong = losses.ne_of_tier(0), losses.ne_of_tier(-1)
    curve = score_curve(losses, scores, SHARES)
    return (
        apgr(curve, ne_weak, ne_strong),
        cpt(curve, 0.5, ne_weak, ne_strong),
        cpt(curve, 0.8, ne_weak, ne_strong),
    )


def test_bootstrap_frontier_intervals_contain_the_point_estimates_when_the_router_is_informative() -> None:
    losses = strong_signal(num_requests=1500)
    scores = noisy_oracle(losses, noise=2.0)

    result = bootstrap_frontier(losses, scores, SHARES, resamples=200, seed=3)

    assert result["resamples"] == 200
    assert result["level"] == 0.95
    for key, point in zip(("apgr", "cpt50", "cpt80"), point_estimates(losses, scores), strict=True):
        lower, median, upper = result[key]
        assert lower < point < upper, key
        assert lower <= median <= upper, key


def test_bootstrap_frontier_interval_narrows_when_there_are_more_requests() -> None:
    widths = []
    for num_requests in (200, 3200):
        losses = strong_signal(seed=5, num_requests=num_requests)
        lower, _, upper = bootstrap_frontier(losses, noisy_oracle(losses, noise=2.0), SHARES, resamples=150)[
            "apgr"
        ]
        widths.append(upper - lower)

    # 16 times the requests: about a quarter of the width.
    assert widths[1] < 0.5 * widths[0]


def test_bootstrap_frontier_interval_narrows_when_the_level_is_lower() -> None:
    losses = strong_signal(num_requests=500)
    scores = noisy_oracle(losses, noise=2.0)

    wide = bootstrap_frontier(losses, scores, SHARES, resamples=100, level=0.95)["apgr"]
    narrow = bootstrap_frontier(losses, scores, SHARES, resamples=100, level=0.5)["apgr"]

    assert wide[1] == narrow[1]  # same seed: same resamples, same median
    assert wide[0] < narrow[0] < narrow[2] < wide[2]


def test_within_noise_of_random_is_true_when_the_router_is_random() -> None:
    losses = strong_signal(num_requests=2000)
    scores = np.random.default_rng(9).random(losses.num_requests)

    result = bootstrap_frontier(losses, scores, SHARES, resamples=200)

    assert result["apgr"][0] < 0.5 < result["apgr"][2]
    assert within_noise_of_random(result["apgr"])


def test_within_noise_of_random_is_false_when_the_router_is_the_oracle() -> None:
    losses = strong_signal(num_requests=2000)
    reduction = losses.loss[:, 0] - losses.loss[:, -1]

    result = bootstrap_frontier(losses, reduction, SHARES, resamples=200)

    assert result["apgr"][0] > 0.7
    assert not within_noise_of_random(result["apgr"])


@pytest.mark.parametrize(
    ("interval", "random_apgr", "expected"),
    [
        ((0.45, 0.55, 0.65), 0.5, True),
        ((0.5, 0.6, 0.7), 0.5, True),  # the bound itself counts as noise
        ((0.51, 0.6, 0.7), 0.5, False),
        ((0.51, 0.6, 0.7), 0.6, True),
    ],
)
def test_within_noise_of_random_compares_the_lower_bound_when_given_an_interval(
    interval: tuple[float, float, float], random_apgr: float, expected: bool
) -> None:
    assert within_noise_of_random(interval, random_apgr) is expected


@pytest.mark.parametrize(
    ("interval", "message"),
    [((float("nan"),) * 3, "lower bound is NaN"), ((0.4, 0.5), r"must be \(lower, median, upper\)")],
)
def test_within_noise_of_random_raises_when_the_interval_is_unusable(interval, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        within_noise_of_random(interval)


def test_bootstrap_frontier_is_reproducible_when_the_seed_is_fixed() -> None:
    losses = strong_signal(num_requests=300)
    scores = noisy_oracle(losses, noise=1.0)

    first = bootstrap_frontier(losses, scores, SHARES, resamples=50, seed=11)
    again = bootstrap_frontier(losses, scores, SHARES, resamples=50, seed=11)
    other = bootstrap_frontier(losses, scores, SHARES, resamples=50, seed=12)

    assert first == again
    assert first["apgr"] != other["apgr"]


def test_bootstrap_frontier_skips_resamples_when_the_weak_tier_is_not_worse() -> None:
    # Request 0: the strong tier helps by 1; request 1: it hurts by 2. Only resamples with request 0
    # twice have a positive gap: a quarter of them.
    losses = RequestLosses(
        loss=np.array([[2.0, 1.0], [1.0, 3.0]]), candidates=np.array([1, 1]), entropy_per_candidate=1.0
    )
    shares = np.array([0.0, 0.5, 1.0])

    result = bootstrap_frontier(losses, np.array([1.0, 0.0]), shares, resamples=400, seed=0)

    assert 60 < result["resamples"] < 140
    # On [0, 0] both requests tie and go in resampled order: PGR 0, 1/2, 1 gives APGR 1/2.
    assert result["apgr"] == pytest.approx((0.5, 0.5, 0.5), abs=1e-12)
    assert result["cpt50"] == pytest.approx((0.5, 0.5, 0.5), abs=1e-12)


def test_bootstrap_frontier_returns_nan_intervals_when_no_resample_is_kept() -> None:
    losses = RequestLosses(
        loss=np.array([[1.0, 2.0], [1.0, 3.0]]), candidates=np.array([1, 2]), entropy_per_candidate=1.0
    )

    result = bootstrap_frontier(losses, np.array([0.0, 1.0]), np.array([0.0, 1.0]), resamples=20)

    assert result["resamples"] == 0
    assert all(math.isnan(value) for key in ("apgr", "cpt50", "cpt80") for value in result[key])
    with pytest.raises(ValueError, match="lower bound is NaN"):
        within_noise_of_random(result["apgr"])


def test_bootstrap_frontier_skips_resamples_when_they_draw_only_empty_requests() -> None:
    losses = RequestLosses(
        loss=np.array([[2.0, 1.0], [0.0, 0.0]]), candidates=np.array([1, 0]), entropy_per_candidate=1.0
    )

    result = bootstrap_frontier(
        losses, np.array([1.0, 0.0]), np.array([0.0, 0.5, 1.0]), resamples=400, seed=1
    )

    # A quarter of the resamples draw request 1 twice: no candidates, so they are skipped.
    assert 240 < result["resamples"] < 360


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"router_scores": np.zeros(5)}, r"router_scores must have shape \[40\]"),
        ({"router_scores": np.full(40, np.inf)}, "router_scores must be finite"),
        ({"shares": np.linspace(0.0, 0.5, 11)}, "shares must reach strong shares 0 and 1"),
        ({"shares": np.array([0.05, 1.0])}, "shares must reach strong shares 0 and 1"),
        ({"shares": np.array([0.0, 0.5, 0.5, 1.0])}, "shares must be strictly increasing"),
        ({"resamples": 0}, "resamples must be an integer >= 1"),
        ({"resamples": 2.5}, "resamples must be an integer >= 1"),
        ({"level": 1.0}, "level must lie strictly between 0 and 1"),
        ({"level": 0.0}, "level must lie strictly between 0 and 1"),
    ],
)
def test_bootstrap_frontier_raises_when_arguments_are_invalid(kwargs: dict, message: str) -> None:
    losses = strong_signal(num_requests=40)
    arguments = {"router_scores": np.zeros(40), "shares": SHARES, "resamples": 5, "level": 0.9} | kwargs

    with pytest.raises(ValueError, match=message):
        bootstrap_frontier(losses, **arguments)


def test_bootstrap_frontier_accepts_shares_when_they_round_to_zero_and_one_request_shares() -> None:
    losses = strong_signal(num_requests=40)
    scores = noisy_oracle(losses, noise=1.0)

    # 0.01 * 40 rounds to 0 requests and 0.99 * 40 to all 40: the curves still span 0 to 1.
    rounded = bootstrap_frontier(losses, scores, np.array([0.01, 0.5, 0.99]), resamples=30)
    exact = bootstrap_frontier(losses, scores, np.array([0.0, 0.5, 1.0]), resamples=30)

    assert rounded == exact


def test_bootstrap_frontier_raises_when_there_is_one_tier() -> None:
    losses = RequestLosses(
        loss=np.ones((3, 1)), candidates=np.ones(3, dtype=np.int64), entropy_per_candidate=1.0
    )

    with pytest.raises(ValueError, match="at least two tiers"):
        bootstrap_frontier(losses, np.zeros(3), SHARES)
