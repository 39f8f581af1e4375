"""The learned gate on real traffic (MovieLens-100k logs), served by the real server and run offline.

Builds the request logs from the ratings RecBole's wheel ships, trains small tiers on them,
calibrates the request gate twice (on the calibration log as it is, and cheapest tier first),
deploys each and checks, on 200 held-out requests, that the router makes the decisions and returns
the scores of ``toolkit evaluate``'s offline path; then that the request parameter ``value`` moves
decisions exactly as the offline policy says.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import ROOT, free_port_options, run_cli, write_spec

from toolkit.client import RankingClient
from toolkit.data.demo import demo_holdout_set
from toolkit.errors import DataError
from toolkit.evaluate.offline import OfflineEnsemble, deployed_variants
from toolkit.serve import TritonServer
from toolkit.spec import Spec, load_spec

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REQUESTS = 200


def movielens_spec_dict(folder: Path, logs: Path) -> dict:
    """examples/movielens/spec.yaml with small tiers, one epoch, and outputs under ``folder``."""
    data = yaml.safe_load((ROOT / "examples" / "movielens" / "spec.yaml").read_text(encoding="utf-8"))
    for split in ("train", "calibration", "holdout"):
        data["data"]["files"][split] = str(logs / f"{split}.parquet")
    data["data"]["holdout_requests"] = REQUESTS
    data["tiers"][0]["params"] = {"embedding_dim": 4, "hidden": [16]}
    data["tiers"][1]["params"] = {"embedding_dim": 8, "cross_layers": 1, "hidden": [16]}
    data["tiers"][2]["params"] = {"embedding_dim": 16, "heads": 2, "layers": 1, "hidden": [32]}
    data["training"]["epochs"] = 1
    data["export"] = {
        "parity_requests": 8,
        "timing_candidates": [8],
        "timing_rounds": 1,
        "precisions": ["onnx-fp32"],
    }
    data["routing"]["learned"] = {"target_share": 0.3, "calibration_requests": 1000}
    data["paths"] = {
        "checkpoints": str(folder / "checkpoints"),
        "artifacts": str(folder / "artifacts"),
        "repository": str(folder / "model_repository"),
    }
    return data


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    try:
        from toolkit.data.movielens import dataset_folder

        dataset_folder()
    except DataError as exc:
        pytest.skip(f"MovieLens-100k is not installed here: {exc}")
    folder = tmp_path_factory.mktemp("realdata")
    logs = folder / "logs"
    run_cli("data", "movielens", "--out", str(logs))
    data = movielens_spec_dict(folder, logs)
    spec_path = write_spec(folder / "movielens.yaml", data)
    for command in ("train", "export"):
        run_cli(command, "--spec", str(spec_path))
    return folder, data


def deployed(
    folder: Path, data: dict, name: str, cheapest_first: bool
) -> Iterator[tuple[Spec, TritonServer]]:
    here = folder / name
    here.mkdir()
    shutil.copytree(folder / "artifacts", here / "artifacts")
    data = json.loads(json.dumps(data))
    data["paths"].update(artifacts=str(here / "artifacts"), repository=str(here / "model_repository"))
    data["routing"]["learned"]["cheapest_first"] = cheapest_first
    spec_path = write_spec(here / "spec.yaml", data)
    run_cli("calibrate", "--spec", str(spec_path))
    run_cli("deploy", "--spec", str(spec_path))
    spec = load_spec(spec_path)
    with TritonServer(free_port_options(Path(spec.paths.repository), here / "tritonserver.log")) as running:
        yield spec, running


@pytest.fixture(scope="module")
def request_gate(exported) -> Iterator[tuple[Spec, TritonServer]]:
    yield from deployed(*exported, "request", cheapest_first=False)


@pytest.fixture(scope="module")
def cheapest_first(exported) -> Iterator[tuple[Spec, TritonServer]]:
    yield from deployed(*exported, "cheapest", cheapest_first=True)


def offline_of(spec: Spec) -> OfflineEnsemble:
    artifacts, repository = Path(spec.paths.artifacts), Path(spec.paths.repository)
    return OfflineEnsemble(spec, artifacts, deployed_variants(spec, artifacts, repository))


def same_on_server_and_offline(spec: Spec, running: TritonServer, value: float | None = None) -> list[str]:
    offline = offline_of(spec)
    requests = demo_holdout_set(spec)
    assert requests.num_requests == REQUESTS
    chosen = []
    with RankingClient(running.grpc_url, spec.name, tier_names=spec.tier_names) as client:
        for r in range(requests.num_requests):
            raw = requests.request(r)
            served = client.rank(value=value, **raw)
            decision, scores, tiers = offline.route(raw, value=1.0 if value is None else value)
            assert decision.reason == "learned", f"request {r}: {decision.reason}"
            np.testing.assert_array_equal(served.tiers, tiers, err_msg=f"request {r}")
            np.testing.assert_allclose(served.scores, scores, atol=1e-5, rtol=0, err_msg=f"request {r}")
            chosen.append(decision.tier)
    return chosen


def test_request_gate_makes_the_offline_decisions_and_scores_on_200_real_requests(request_gate) -> None:
    spec, running = request_gate
    calibration = json.loads((Path(spec.paths.artifacts) / spec.gate_model / "calibration.json").read_text())
    assert calibration["gate"] == "request" and not calibration["cheapest_first"]
    assert calibration["fit_on"] == "calibration" and "calibration.parquet" in calibration["source"]
    assert set(calibration["validation_apgr"]) == {"kl", "gain", "blend"}
    chosen = same_on_server_and_offline(spec, running)
    assert len(set(chosen)) >= 2


def test_cheapest_first_gate_makes_the_offline_decisions_and_scores_on_200_real_requests(
    cheapest_first,
) -> None:
    spec, running = cheapest_first
    calibration = json.loads((Path(spec.paths.artifacts) / spec.gate_model / "calibration.json").read_text())
    assert calibration["cheapest_first"]
    lite = calibration["own_costs_mflop"]["lite"]
    for tier in spec.tier_names[1:]:
        own, routed = calibration["own_costs_mflop"][tier], calibration["tier_costs_mflop"][tier]
        assert routed == pytest.approx([own[0] + lite[0], own[1] + lite[1]])
    chosen = same_on_server_and_offline(spec, running)
    assert "lite" in chosen and len(set(chosen)) >= 2


def test_value_moves_decisions_as_the_offline_policy_says(request_gate) -> None:
    spec, running = request_gate
    low = same_on_server_and_offline(spec, running, value=0.05)
    high = same_on_server_and_offline(spec, running, value=20.0)
    order = {tier: i for i, tier in enumerate(spec.tier_names)}
    assert all(order[h] >= order[lo] for lo, h in zip(low, high, strict=True))
    assert high.count("xl") > low.count("xl")


def test_evaluate_reports_the_gate_between_random_and_its_ceilings_on_real_requests(
    request_gate, tmp_path
) -> None:
    spec, _ = request_gate
    out = tmp_path / "evaluation"
    proc = run_cli("evaluate", "--spec", spec.source, "--out", str(out), "--top-k", "3")
    result = json.loads((out / "evaluation.json").read_text())
    summary = result["summary"]
    gate = summary["learned gate"]
    low, mid, high = gate["interval"]["apgr"]
    assert low <= mid <= high and gate["interval"]["resamples"] > 100
    assert summary["oracle"]["apgr"] > summary["gate that knew xl"]["apgr"] > summary["random"]["apgr"] - 0.05
    assert result["gate"]["origin"] == "deployed" and result["gate"]["gate_cost_mflop"][1] > 0
    assert all(0.0 <= p["ndcg"] <= 1.0 for p in result["points"])
    assert "NDCG@3" in proc.stdout and "gate that knew xl: APGR" in proc.stdout
    assert not result["valued"] and "value_weighted" not in summary
