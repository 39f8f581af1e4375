"""Request logs instead of generated data: write them, then train, export and evaluate from them.

`toolkit data write` turns generated requests into a Criteo TSV and a Parquet log; a spec reading
them (with a chunk size far below the file size, so every pass streams) goes through `toolkit data
check`, `train`, `export` and `evaluate` on the CLI, as a user would run them.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from helpers import run_cli, tiny_spec_dict, write_spec

from toolkit.data.logs import default_columns
from toolkit.spec import load_spec

pytestmark = pytest.mark.e2e


def _log_spec(folder: Path, fmt: str) -> Path:
    data = tiny_spec_dict(folder)
    data["data"]["train_requests"] = 600
    data["data"]["holdout_requests"] = 120
    data["export"]["precisions"] = ["onnx-fp32"]
    generated = write_spec(folder / "generated.yaml", data)
    suffix = {"criteo": "tsv", "parquet": "parquet"}[fmt]
    files = {split: folder / f"{split}.{suffix}" for split in ("train", "holdout")}
    for split, path in files.items():
        out = run_cli(
            "data", "write", "--spec", str(generated), "--format", fmt, "--split", split, "--out", str(path)
        )
        assert f"to {path}" in out.stdout and "add to the spec" in out.stdout
    columns = default_columns(load_spec(generated), fmt)
    data["data"]["files"] = {
        "format": fmt,
        "train": str(files["train"]),
        "holdout": str(files["holdout"]),
        "chunk_rows": 500,
        "columns": {k: list(v) if isinstance(v, tuple) else v for k, v in vars(columns).items()},
    }
    return write_spec(folder / f"{fmt}.yaml", data)


@pytest.mark.parametrize("fmt", ["criteo", "parquet"])
def test_tiers_train_export_and_evaluate_from_request_logs(fmt, tmp_path) -> None:
    spec_path = _log_spec(tmp_path, fmt)
    spec = load_spec(spec_path)
    check = run_cli("data", "check", "--spec", str(spec_path)).stdout
    assert "train" in check and "holdout" in check and f"{fmt} logs" in check
    train = run_cli("train", "--spec", str(spec_path))
    assert "streaming training requests" in " ".join(train.stderr.split())
    report = json.loads((Path(spec.paths.checkpoints) / "training.json").read_text())
    assert report["holdout_requests"] == 120
    assert report["train_requests"] > spec.data.files.chunk_rows
    for tier in spec.tier_names:
        assert 0.0 < report["tiers"][tier]["ne"] < 1.2
        assert report["tiers"][tier]["ne_informative"] is None
    run_cli("export", "--spec", str(spec_path))
    run_cli("deploy", "--spec", str(spec_path))
    run_cli("evaluate", "--spec", str(spec_path))
    evaluation = json.loads((Path(spec.paths.artifacts) / "evaluation" / "evaluation.json").read_text())
    assert evaluation["requests"] == 120
    alone = {p["policy"]: p["ne"] for p in evaluation["points"]}
    for tier in spec.tier_names:
        assert alone[f"{tier} alone"] == pytest.approx(report["tiers"][tier]["ne"], abs=1e-4)
    assert yaml.safe_load(spec_path.read_text())["data"]["files"]["format"] == fmt
