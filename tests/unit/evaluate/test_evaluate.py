"""``toolkit evaluate`` on the session's tiny pipeline: files, consistency with export, the policy."""

from __future__ import annotations

import json

import numpy as np
from helpers import run_cli

from toolkit.export import read_manifest


def test_evaluate_writes_report_whose_tier_quality_matches_export_and_policy_point(
    pipeline, tmp_path
) -> None:
    out = tmp_path / "evaluation"
    proc = run_cli("evaluate", "--spec", str(pipeline.spec_path), "--out", str(out))
    result = json.loads((out / "evaluation.json").read_text())
    assert (out / "evaluation.png").stat().st_size > 10_000
    report = (out / "evaluation.md").read_text()
    assert "| rules policy |" in report and "APGR" in proc.stdout
    rows = [line for line in report.splitlines() if line.startswith("|")]
    assert rows and len({row.count("|") for row in rows}) == 1  # header, delimiter and rows agree
    manifest = read_manifest(pipeline.artifacts)
    spec = pipeline.spec
    assert result["requests"] == spec.data.holdout_requests
    points = {p["policy"]: p for p in result["points"]}
    for tier in spec.tier_names:
        alone = points[f"{tier} alone"]
        exported = manifest.variant(tier, result["variants"][tier]).quality
        assert abs(alone["ne"] - exported["ne"]) < 1e-6 and abs(alone["auc"] - exported["auc"]) < 1e-6
        assert alone["shares"][tier] == 1.0 and alone["flops_per_request"] > 0
    policy = points["rules policy"]
    assert abs(sum(policy["shares"].values()) - 1.0) < 1e-9
    assert 0.0 < policy["strong_share"] < 1.0
    flops = [points[f"{t} alone"]["flops_per_request"] for t in (spec.tier_names[0], spec.tier_names[-1])]
    assert min(flops) < policy["flops_per_request"] < max(flops)
    oracle = next(c for c in result["curves"] if c["label"] == "oracle")
    assert oracle["strong_share"][0] == 0.0 and oracle["strong_share"][-1] == 1.0
    assert np.isclose(oracle["ne"][0], points[f"{spec.tier_names[0]} alone"]["ne"])
    assert np.isclose(oracle["ne"][-1], points[f"{spec.tier_names[-1]} alone"]["ne"])
    assert min(oracle["ne"]) <= min(p["ne"] for p in points.values()) + 1e-12
    assert abs(result["summary"]["random"]["apgr"] - 0.5) < 1e-6
    learned = next(c for c in result["curves"] if c["label"] == "learned gate")
    assert np.isclose(learned["ne"][0], oracle["ne"][0]) and np.isclose(learned["ne"][-1], oracle["ne"][-1])
    assert all(o <= g + 1e-12 for o, g in zip(oracle["ne"], learned["ne"], strict=True))
    assert "learned gate: APGR" in proc.stdout


def test_evaluate_exits_1_naming_the_manifest_when_nothing_was_exported(pipeline, tmp_path) -> None:
    empty = tmp_path / "nothing"
    args = ("--artifacts", str(empty), "--repository", str(tmp_path / "none"), "--out", str(tmp_path / "o"))
    proc = run_cli("evaluate", "--spec", str(pipeline.spec_path), *args, check=False)
    assert proc.returncode == 1 and "manifest" in proc.stderr and str(empty) in proc.stderr
