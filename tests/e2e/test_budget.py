"""Latency budgets on the real server: a tiny budget is answered by the cheapest tier."""

from __future__ import annotations

import json

import numpy as np
import pytest

from toolkit.client import RankingClient
from toolkit.data import generate_requests

pytestmark = pytest.mark.e2e


def test_budget_caps_the_tier_and_a_tiny_budget_still_gets_the_cheapest_tier(pipeline, server) -> None:
    spec = pipeline.spec
    settings = json.loads((pipeline.repository / spec.router_model / "1" / "router.json").read_text())
    assert set(settings["latency_prior_ms"]) == set(spec.tier_names)
    rule = spec.routing.rules[0]
    assert (rule.feature, rule.op) == ("history_length", ">=")
    rule_tier = rule.tier
    long = generate_requests(spec.features, 40, (2, 10), 1.0, seed=41, world_seed=spec.seed)
    matching = [
        r for r in range(long.num_requests) if (long.request(r)["user_history"] > 0).sum() >= rule.value
    ]
    assert len(matching) >= 8
    with RankingClient(server.grpc_url, spec.name, tier_names=spec.tier_names) as client:
        for r in matching:
            raw = long.request(r)
            assert set(client.rank(**raw).tier_names) == {rule_tier}
            tiny = client.rank(latency_budget_ms=1e-6, **raw)
            assert set(tiny.tier_names) == {spec.tier_names[0]}
            assert tiny.scores.shape == (raw["ad_dense"].shape[0],) and np.all(np.isfinite(tiny.scores))
            roomy = client.rank(latency_budget_ms=1e6, **raw)
            assert set(roomy.tier_names) == {rule_tier}
