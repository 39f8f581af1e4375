"""The offline ensemble (toolkit evaluate's path) against the real server: same choices, same scores."""

from __future__ import annotations

import numpy as np
import pytest

from toolkit.client import RankingClient
from toolkit.data import generate_requests
from toolkit.evaluate.offline import OfflineEnsemble, deployed_variants

pytestmark = pytest.mark.e2e


def test_offline_path_makes_the_servers_choices_and_scores_on_500_requests(pipeline, server) -> None:
    spec = pipeline.spec
    variants = deployed_variants(spec, pipeline.artifacts, pipeline.repository)
    assert variants == {t: pipeline.pins.get(t, variants[t]) for t in spec.tier_names}
    offline = OfflineEnsemble(spec, pipeline.artifacts, variants)
    long = generate_requests(spec.features, 250, (1, 12), 1.0, seed=21, world_seed=spec.seed)
    short = generate_requests(spec.features, 250, (1, 12), 0.0, seed=22, world_seed=spec.seed)
    chosen = set()
    with RankingClient(server.grpc_url, spec.name, tier_names=spec.tier_names) as client:
        for requests in (long, short):
            for r in range(requests.num_requests):
                raw = requests.request(r)
                served = client.rank(**raw)
                decision, scores, tiers = offline.route(raw)
                assert set(served.tier_names) == {decision.tier}, f"request {r}"
                np.testing.assert_array_equal(served.tiers, tiers)
                np.testing.assert_allclose(served.scores, scores, atol=1e-5, rtol=0)
                chosen.add(decision.tier)
    assert len(chosen) >= 2
