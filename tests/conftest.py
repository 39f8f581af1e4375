"""Shared fixtures: the whole pipeline (train -> export -> deploy) run once per session on a tiny spec."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import run_cli, tiny_spec_dict, write_spec

from toolkit.spec import Spec, load_spec


@dataclass(frozen=True)
class Pipeline:
    """A spec that went through train, export and deploy through the CLI."""

    spec_path: Path
    spec: Spec
    checkpoints: Path
    artifacts: Path
    repository: Path
    outputs: dict[str, str]


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    folder = tmp_path_factory.mktemp("pipeline")
    spec_path = write_spec(folder / "tiny.yaml", tiny_spec_dict(folder))
    outputs = {}
    for command in ("train", "export", "deploy"):
        outputs[command] = run_cli(command, "--spec", str(spec_path)).stdout
    spec = load_spec(spec_path)
    return Pipeline(
        spec_path=spec_path,
        spec=spec,
        checkpoints=Path(spec.paths.checkpoints),
        artifacts=Path(spec.paths.artifacts),
        repository=Path(spec.paths.repository),
        outputs=outputs,
    )
