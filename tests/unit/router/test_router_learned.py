"""The learned policy's decision rule: gain per candidate times N against lambda times extra FLOPs."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.router import (
    RequestContext,
    RouterConfig,
    calibrate_lambda,
    calibrate_lambda_to_cost,
    choose_tier,
    choose_tiers,
    decide,
)

TIERS = ("small", "medium", "large")
COSTS = [[0.01, 0.001], [0.1, 0.01], [1.0, 0.05]]


def test_choose_tier_picks_the_tier_whose_gain_beats_its_extra_cost() -> None:
    assert choose_tier([0.0, 0.0], 10, COSTS, 1.0) == 0
    assert choose_tier([0.5, 0.0], 10, COSTS, 1.0) == 1
    assert choose_tier([0.5, 1.0], 10, COSTS, 1.0) == 2
    assert choose_tier([0.5, 1.0], 10, COSTS, 1e6) == 0
    assert choose_tier([0.5, 1.0], 10, COSTS, 0.0) == 2


def test_choose_tiers_agrees_with_choose_tier_request_by_request() -> None:
    rng = np.random.default_rng(0)
    gains = rng.uniform(0, 0.05, (300, 2))
    n = rng.integers(1, 64, 300)
    for lam in (0.0, 0.01, 0.1, 1.0):
        batch = choose_tiers(gains, n, COSTS, lam)
        assert batch.tolist() == [choose_tier(g, int(k), COSTS, lam) for g, k in zip(gains, n, strict=True)]


@pytest.mark.parametrize("target", [0.1, 0.3, 0.7])
def test_calibrate_lambda_hits_the_target_share_of_the_largest_tier(target: float) -> None:
    rng = np.random.default_rng(1)
    gains = np.stack([rng.uniform(0, 0.01, 2000), rng.exponential(0.02, 2000)], axis=1)
    n = rng.integers(4, 48, 2000)
    lam = calibrate_lambda(gains, n, COSTS, target)
    share = (choose_tiers(gains, n, COSTS, lam) == 2).mean()
    assert share == pytest.approx(target, abs=0.01)


def learned_config() -> RouterConfig:
    return RouterConfig(
        tiers=TIERS,
        policy="learned",
        default_tier="small",
        gate_model="shop_gate",
        learned_lambda=1.0,
        tier_costs=dict(zip(TIERS, COSTS, strict=True)),
    )


def test_decide_uses_the_gains_and_falls_back_to_the_default_tier_without_them() -> None:
    config = learned_config()
    features = {"history_length": 3.0, "num_candidates": 10.0}
    assert decide(config, RequestContext(features=features, gains=(0.5, 1.0))).tier == "large"
    assert decide(config, RequestContext(features=features)).reason == "learned:no-gains"
    assert (
        decide(config, RequestContext(features=features, forced_tier="medium", gains=(0, 1))).tier == "medium"
    )
    assert RouterConfig.from_json(config.to_json()) == config
    with pytest.raises(ValueError, match="learned"):
        RouterConfig(tiers=TIERS, policy="learned", default_tier="small")


def test_choose_tier_sends_a_request_worth_more_to_a_bigger_tier_when_its_value_is_higher() -> None:
    gains, n, lam = [0.01, 0.05], 10, 1.0
    assert choose_tier(gains, n, COSTS, lam) == 0
    assert choose_tier(gains, n, COSTS, lam, value=4.0) == 2
    assert choose_tier(gains, n, COSTS, lam, value=1e-6) == 0


def test_choose_tiers_agrees_with_choose_tier_when_requests_carry_values() -> None:
    rng = np.random.default_rng(3)
    gains = rng.uniform(0, 0.05, (300, 2))
    n = rng.integers(1, 64, 300)
    values = rng.lognormal(0.0, 1.0, 300)
    batch = choose_tiers(gains, n, COSTS, 0.05, values)
    expected = [choose_tier(g, int(k), COSTS, 0.05, v) for g, k, v in zip(gains, n, values, strict=True)]
    assert batch.tolist() == expected


def test_decide_weighs_the_gains_by_the_request_value_when_the_policy_is_learned() -> None:
    config = learned_config()
    features = {"history_length": 3.0, "num_candidates": 10.0}
    cheap = RequestContext(features=features, gains=(0.01, 0.05))
    assert decide(config, cheap).tier == "small"
    assert decide(config, RequestContext(features=features, gains=(0.01, 0.05), value=4.0)).tier == "large"


@pytest.mark.parametrize("target", [0.2, 0.5, 1.5])
def test_calibrate_lambda_to_cost_spends_about_the_target_mflop_per_request(target: float) -> None:
    rng = np.random.default_rng(2)
    gains = np.stack([rng.uniform(0, 0.01, 2000), rng.exponential(0.02, 2000)], axis=1)
    n = rng.integers(4, 48, 2000)
    lam = calibrate_lambda_to_cost(gains, n, COSTS, target)
    chosen = choose_tiers(gains, n, COSTS, lam)
    cost = np.array(COSTS)
    spent = (cost[chosen, 0] + cost[chosen, 1] * n).mean()
    assert spent <= target + 1e-9
    assert spent == pytest.approx(target, rel=0.05)
