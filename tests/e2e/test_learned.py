"""The learned policy end to end: calibrate, deploy the gate beside the router, same choices offline."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from helpers import free_port_options, run_cli, tiny_spec_dict, write_spec

from toolkit.client import RankingClient
from toolkit.data import generate_requests
from toolkit.evaluate.offline import OfflineEnsemble, deployed_variants
from toolkit.serve import TritonServer
from toolkit.spec import Spec, load_spec

pytestmark = pytest.mark.e2e

TARGET = 0.4


@pytest.fixture(scope="module")
def learned(pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Spec, TritonServer, str]]:
    folder = tmp_path_factory.mktemp("learned")
    artifacts = folder / "artifacts"
    shutil.copytree(pipeline.artifacts, artifacts)
    data = tiny_spec_dict(folder)
    data["paths"].update(checkpoints=str(pipeline.checkpoints), artifacts=str(artifacts))
    data["routing"] = {
        "policy": "learned",
        "default_tier": "lite",
        "learned": {"target_share": TARGET},
        "rules": data["routing"]["rules"],
    }
    spec_path = write_spec(folder / "learned.yaml", data)
    refused = run_cli("deploy", "--spec", str(spec_path), check=False)
    assert refused.returncode == 1 and "toolkit calibrate" in refused.stderr
    calibrated = run_cli("calibrate", "--spec", str(spec_path)).stdout
    run_cli("deploy", "--spec", str(spec_path))
    spec = load_spec(spec_path)
    options = free_port_options(Path(spec.paths.repository), folder / "tritonserver.log")
    with TritonServer(options) as running:
        yield spec, running, calibrated


def test_calibrate_prices_the_tiers_to_the_target_share_on_its_own_requests(learned) -> None:
    spec, _, out = learned
    calibration = json.loads((Path(spec.paths.artifacts) / spec.gate_model / "calibration.json").read_text())
    assert calibration["shares"][spec.tier_names[-1]] == pytest.approx(TARGET, abs=0.02)
    assert calibration["lambda"] > 0 and "lambda" in out
    costs = calibration["tier_costs_mflop"]
    assert all(costs[t][1] > 0 for t in spec.tier_names)
    router = json.loads((Path(spec.paths.repository) / spec.router_model / "1" / "router.json").read_text())
    assert router["policy"] == "learned" and router["gate_model"] == spec.gate_model
    assert router["learned_lambda"] == calibration["lambda"]


def test_learned_policy_makes_the_same_choices_and_scores_on_the_server_and_offline(learned) -> None:
    spec, running, _ = learned
    artifacts, repository = Path(spec.paths.artifacts), Path(spec.paths.repository)
    offline = OfflineEnsemble(spec, artifacts, deployed_variants(spec, artifacts, repository))
    requests = generate_requests(spec.features, 150, (1, 16), 0.5, seed=51, world_seed=spec.seed)
    chosen = []
    with RankingClient(running.grpc_url, spec.name, tier_names=spec.tier_names) as client:
        for r in range(requests.num_requests):
            raw = requests.request(r)
            served = client.rank(**raw)
            decision, scores, tiers = offline.route(raw)
            assert decision.reason == "learned"
            np.testing.assert_array_equal(served.tiers, tiers)
            np.testing.assert_allclose(served.scores, scores, atol=1e-5, rtol=0)
            chosen.append(decision.tier)
        forced = client.rank(tier="standard", **requests.request(0))
    assert set(forced.tier_names) == {"standard"}
    assert len(set(chosen)) >= 2


def test_evaluate_reports_the_deployed_learned_policy_and_the_specs_rules(learned, tmp_path) -> None:
    spec, _, _ = learned
    out = tmp_path / "evaluation"
    run_cli("evaluate", "--spec", spec.source, "--out", str(out))
    result = json.loads((out / "evaluation.json").read_text())
    points = {p["policy"]: p for p in result["points"]}
    policy, rules = points["learned policy"], points["rules (the spec's rules)"]
    assert 0.0 < policy["strong_share"] < 1.0 and 0.0 <= rules["strong_share"] <= 1.0
    assert all("pgr" in p for p in result["points"])
    lite, xl = points["lite alone"], points["xl alone"]
    a, b = result["gate"]["gate_cost_mflop"]
    gate_flops = (a + b * result["candidates"] / result["requests"]) * 1e6
    assert result["gate"]["origin"] == "deployed" and gate_flops > 0
    tiers_only = policy["flops_per_request"] - gate_flops
    assert lite["flops_per_request"] < tiers_only < xl["flops_per_request"]
