"""training.json describes every checkpoint in the folder: training some tiers keeps the others'."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from toolkit.spec import Spec
from toolkit.train import train


def _saved(folder: Path) -> dict:
    return json.loads((folder / "training.json").read_text(encoding="utf-8"))


def test_training_one_tier_keeps_the_other_tiers_entries_measured_on_the_same_data(
    tiny_spec: Spec, tmp_path: Path
) -> None:
    first = train(tiny_spec, tmp_path, ("lite", "xl"))
    lite_before = _saved(tmp_path)["tiers"]["lite"]

    again = train(tiny_spec, tmp_path, ("xl",))

    saved = _saved(tmp_path)
    assert list(again.tiers) == ["xl"]
    assert list(saved["tiers"]) == ["lite", "xl"]
    assert saved["tiers"]["lite"] == lite_before
    assert saved["tiers"]["lite"]["ne"] == first.tiers["lite"].ne
    assert saved["tiers"]["xl"]["train_seconds"] == again.tiers["xl"].train_seconds


def test_entries_of_other_data_or_of_missing_checkpoints_are_dropped(tiny_spec: Spec, tmp_path: Path) -> None:
    train(tiny_spec, tmp_path, ("lite", "xl"))
    (tmp_path / "xl.pt").unlink()
    train(tiny_spec, tmp_path, ("standard",))
    assert list(_saved(tmp_path)["tiers"]) == ["lite", "standard"]

    data = dataclasses.replace(tiny_spec.data, holdout_requests=tiny_spec.data.holdout_requests - 1)
    fewer = dataclasses.replace(tiny_spec, data=data)
    train(fewer, tmp_path, ("xl",))
    assert list(_saved(tmp_path)["tiers"]) == ["xl"]
