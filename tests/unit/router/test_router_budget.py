"""Latency budgets: the router's estimates and the cap they put on a policy's wish."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.router import Decision, LatencyTracker, RouterConfig, cap
from toolkit.router.budget import MIN_SAMPLES, bucket

TIERS = ("small", "medium", "large")
CONFIG = RouterConfig(tiers=TIERS, policy="static", default_tier="large")
WISH = Decision("large", 2, "static")


def tracker(small: float, medium: float, large: float, n: int = 16) -> LatencyTracker:
    t = LatencyTracker(TIERS)
    for _ in range(MIN_SAMPLES):
        for tier, ms in zip(TIERS, (small, medium, large), strict=True):
            t.observe(tier, n, ms)
    return t


def test_bucket_groups_candidate_counts_by_powers_of_two() -> None:
    assert [bucket(n) for n in (1, 2, 3, 4, 5, 8, 9, 1024)] == [0, 1, 2, 2, 3, 3, 4, 10]


def test_estimate_uses_the_prior_until_a_bucket_has_enough_calls_then_its_percentile() -> None:
    t = LatencyTracker(TIERS, priors={"large": {"16": 1.0, "64": 3.0}}, percentile=50.0)
    assert t.estimate("large", 40) == pytest.approx(2.0)
    assert t.estimate("small", 40) is None
    for ms in range(MIN_SAMPLES - 1):
        t.observe("large", 40, 10.0 + ms)
    assert t.estimate("large", 40) == pytest.approx(2.0)
    t.observe("large", 40, 10.0 + MIN_SAMPLES - 1)
    assert t.estimate("large", 40) == pytest.approx(np.median(10.0 + np.arange(MIN_SAMPLES)))


def test_estimate_forgets_calls_older_than_the_window() -> None:
    t = LatencyTracker(TIERS, window=MIN_SAMPLES, percentile=100.0)
    for ms in [50.0] * MIN_SAMPLES + [1.0] * MIN_SAMPLES:
        t.observe("small", 8, ms)
    assert t.estimate("small", 8) == pytest.approx(1.0)


@pytest.mark.parametrize("seed", range(5))
def test_cap_never_picks_a_tier_whose_estimate_exceeds_the_budget_unless_it_is_the_cheapest(
    seed: int,
) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(200):
        costs = np.sort(rng.uniform(0.1, 10.0, 3))
        t = tracker(*costs)
        budget = float(rng.uniform(0.01, 12.0))
        decision = cap(CONFIG, WISH, budget, 16, t)
        estimate = t.estimate(decision.tier, 16)
        assert estimate <= budget or (decision.index == 0 and decision.reason == "budget:cheapest")
        if costs[2] <= budget:
            assert decision == WISH
        else:
            assert decision.reason.startswith("budget:")
            better = [i for i in range(decision.index + 1, 3) if costs[i] <= budget]
            assert not better


def test_cap_answers_a_tiny_budget_with_the_cheapest_tier_and_leaves_forced_and_unbudgeted_alone() -> None:
    t = tracker(1.0, 2.0, 3.0)
    assert cap(CONFIG, WISH, 0.001, 16, t) == Decision("small", 0, "budget:cheapest")
    assert cap(CONFIG, WISH, None, 16, t) == WISH
    forced = Decision("large", 2, "forced")
    assert cap(CONFIG, forced, 0.001, 16, t) == forced


def test_cap_drops_the_second_call_of_a_cascade_that_would_miss_the_budget() -> None:
    config = RouterConfig(
        tiers=TIERS, policy="cascade", default_tier="small", cascade_tier="large", cascade_top_k=4
    )
    t = tracker(1.0, 2.0, 3.0, n=16)
    for _ in range(MIN_SAMPLES):
        t.observe("large", 4, 3.0)
    cascade = Decision("small", 0, "cascade", "large", 2, 4)
    assert cap(config, cascade, 5.0, 16, t) == cascade
    assert cap(config, cascade, 3.5, 16, t) == Decision("small", 0, "budget:cascade")


def test_router_config_keeps_budget_settings_and_priors_through_json() -> None:
    config = RouterConfig(
        tiers=TIERS,
        policy="static",
        default_tier="small",
        default_budget_ms=5.0,
        budget_percentile=99.0,
        budget_window=16,
        latency_prior_ms={"large": {"16": 1.5}},
    )
    assert RouterConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="budget"):
        RouterConfig(tiers=TIERS, policy="static", default_tier="small", budget_percentile=0.0)


def test_calls_older_than_max_age_stop_counting_so_a_capped_tier_is_probed_again() -> None:
    now = [0.0]
    t = LatencyTracker(TIERS, priors={"large": {"16": 2.0}}, max_age_s=1.0, clock=lambda: now[0])
    for _ in range(MIN_SAMPLES):
        t.observe("large", 16, 50.0)
    assert cap(CONFIG, WISH, 10.0, 16, t).tier != "large"
    now[0] = 0.9
    assert t.estimate("large", 16) == pytest.approx(50.0)
    now[0] = 1.1
    assert t.estimate("large", 16) == pytest.approx(2.0)
    assert cap(CONFIG, WISH, 10.0, 16, t) == WISH
