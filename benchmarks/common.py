"""What every benchmark script shares: the repository root, the demo pipeline run, the report files."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from toolkit.data import demo_holdout_set
from toolkit.data.requests import RequestSet
from toolkit.spec import Spec
from toolkit.spec.schema import CandidateRange

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def toolkit(*args: str) -> None:
    """Run ``python -m toolkit ARGS`` from the repository root; fail on a non-zero exit."""
    subprocess.run([sys.executable, "-m", "toolkit", *args], check=True, cwd=ROOT)


def prepare(spec_path: Path, spec: Spec, deploy: bool = False) -> None:
    """Train the tiers if their checkpoints are missing, export (reusing unchanged variants), deploy."""
    if not all((ROOT / spec.paths.checkpoints / f"{t}.pt").is_file() for t in spec.tier_names):
        toolkit("train", "--spec", str(spec_path))
    toolkit("export", "--spec", str(spec_path))
    if deploy:
        toolkit("deploy", "--spec", str(spec_path))


def write_report(out: Path, name: str, result: dict[str, Any], markdown: str) -> None:
    """Write ``<name>.json`` and ``<name>.md`` under ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown, encoding="utf-8")


def held_out_requests(spec: Spec, count: int, candidates: tuple[int, int] | None = None) -> RequestSet:
    """``count`` held-out requests, with between ``candidates`` (low, high) candidates each if given.

    The demo data carries 8 to 48 candidates per request; production ads ranking scores hundreds, and
    the benchmarks that compare serving costs say which range they use.
    """
    if candidates is not None:
        data = dataclasses.replace(spec.data, candidates=CandidateRange(*candidates))
        spec = dataclasses.replace(spec, data=data)
    return demo_holdout_set(spec, count)
