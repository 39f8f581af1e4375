"""The cascade policy on the real server: the cheap tier scores all, the big tier exactly the top K."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port_options, run_cli, tiny_spec_dict, write_spec

from toolkit.client import RankingClient
from toolkit.data import generate_requests
from toolkit.evaluate.offline import OfflineEnsemble, deployed_variants
from toolkit.router import top_candidates
from toolkit.serve import TritonServer
from toolkit.spec import Spec, load_spec

pytestmark = pytest.mark.e2e

TOP_K = 3


@pytest.fixture(scope="module")
def cascade(
    pipeline, server, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Spec, TritonServer]]:
    folder = tmp_path_factory.mktemp("cascade")
    data = tiny_spec_dict(folder)
    data["paths"].update(checkpoints=str(pipeline.checkpoints), artifacts=str(pipeline.artifacts))
    data["routing"] = {"policy": "cascade", "default_tier": "lite", "cascade": {"tier": "xl", "top_k": TOP_K}}
    spec_path = write_spec(folder / "cascade.yaml", data)
    run_cli("deploy", "--spec", str(spec_path))
    spec = load_spec(spec_path)
    options = free_port_options(Path(spec.paths.repository), folder / "tritonserver.log")
    with TritonServer(options) as running:
        yield spec, running


def test_cascade_rescores_exactly_the_top_k_candidates_with_the_bigger_tier(cascade) -> None:
    spec, running = cascade
    offline = OfflineEnsemble(
        spec,
        Path(spec.paths.artifacts),
        deployed_variants(spec, Path(spec.paths.artifacts), Path(spec.paths.repository)),
    )
    lite, xl = spec.tier_names.index("lite"), spec.tier_names.index("xl")
    requests = generate_requests(spec.features, 40, (1, 12), 0.5, seed=31, world_seed=spec.seed)
    rescored = 0
    with RankingClient(running.grpc_url, spec.name, tier_names=spec.tier_names) as client:
        for r in range(requests.num_requests):
            raw = requests.request(r)
            served = client.rank(**raw)
            pre = offline.preprocessed(raw)
            first = offline.score(pre, "lite")
            top = top_candidates(first, TOP_K)
            expected_tiers = np.full(first.shape, lite, dtype=np.int32)
            expected_tiers[top] = xl
            np.testing.assert_array_equal(served.tiers, expected_tiers)
            subset = {**pre, "ad_dense": pre["ad_dense"][top], "ad_sparse": pre["ad_sparse"][top]}
            np.testing.assert_allclose(served.scores[top], offline.score(subset, "xl"), atol=1e-5, rtol=0)
            rest = np.setdiff1d(np.arange(len(first)), top)
            np.testing.assert_allclose(served.scores[rest], first[rest], atol=1e-5, rtol=0)
            decision, scores, tiers = offline.route(raw)
            np.testing.assert_array_equal(tiers, served.tiers)
            np.testing.assert_allclose(scores, served.scores, atol=1e-5, rtol=0)
            rescored += len(top)
    assert rescored == sum(min(TOP_K, n) for n in np.diff(requests.offsets))
    with RankingClient(running.grpc_url, spec.name, tier_names=spec.tier_names) as client:
        forced = client.rank(tier="standard", **requests.request(0))
    assert set(forced.tier_names) == {"standard"}


def test_evaluate_reports_the_cascade_point_from_every_tiers_scores(cascade, tmp_path) -> None:
    import json

    spec, _ = cascade
    out = tmp_path / "evaluation"
    run_cli("evaluate", "--spec", spec.source, "--out", str(out))
    points = {p["policy"]: p for p in json.loads((out / "evaluation.json").read_text())["points"]}
    point = points[f"cascade policy (top {TOP_K} re-scored by xl)"]
    assert point["shares"]["lite"] + point["shares"]["xl"] == pytest.approx(1.0)
    assert 0 < point["shares"]["xl"] < 1 and point["shares"]["standard"] == 0
    lite, xl = points["lite alone"], points["xl alone"]
    assert (
        lite["flops_per_request"]
        < point["flops_per_request"]
        < lite["flops_per_request"] + xl["flops_per_request"]
    )
