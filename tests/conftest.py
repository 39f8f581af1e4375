"""Shared fixtures: the whole pipeline (train -> export -> deploy) run once per session on a tiny spec."""

from __future__ import annotations

import signal
from dataclasses import dataclass
from pathlib import Path

import pytest
from helpers import run_cli, tiny_spec_dict, write_spec

from toolkit.export import FP32, read_manifest
from toolkit.export.manifest import Manifest
from toolkit.spec import Spec, load_spec
from toolkit.spec.variants import VARIANTS


def pytest_configure(config: pytest.Config) -> None:
    """Let SIGINT reach the processes the tests start, however the suite itself was started.

    A shell that runs a command in the background without job control (``make test &`` in a
    script) starts it with SIGINT ignored, and an ignored signal stays ignored across ``exec``: the
    tests that press Ctrl-C on ``toolkit tune`` or stop a server with SIGINT would then see nothing
    happen. A handled signal is reset to its default in the child, so handling it here is enough.
    """
    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


@dataclass(frozen=True)
class Pipeline:
    """A spec that went through train, export and deploy through the CLI."""

    spec_path: Path
    spec: Spec
    checkpoints: Path
    artifacts: Path
    repository: Path
    outputs: dict[str, str]
    pins: dict[str, str]


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    folder = tmp_path_factory.mktemp("pipeline")
    spec_path = write_spec(folder / "tiny.yaml", tiny_spec_dict(folder))
    outputs = {}
    for command in ("train", "export"):
        outputs[command] = run_cli(command, "--spec", str(spec_path)).stdout
    spec = load_spec(spec_path)
    pins = quantized_pins(read_manifest(Path(spec.paths.artifacts)))
    pin_args = [arg for tier, variant in pins.items() for arg in ("--pin", f"{tier}={variant}")]
    outputs["deploy"] = run_cli("deploy", "--spec", str(spec_path), *pin_args).stdout
    return Pipeline(
        spec_path=spec_path,
        spec=spec,
        checkpoints=Path(spec.paths.checkpoints),
        artifacts=Path(spec.paths.artifacts),
        repository=Path(spec.paths.repository),
        outputs=outputs,
        pins=pins,
    )


def quantized_pins(manifest: Manifest) -> dict[str, str]:
    """Per tier, a variant other than onnx-fp32 that passed acceptance on the CPU, a different one per tier.

    The session deploys these, so the end-to-end tests serve quantized and fp16 models, not only
    the fp32 export.
    """
    order = [v for v, info in VARIANTS.items() if v != FP32 and "cpu" in info.targets]
    pins = {}
    for i, (tier, entry) in enumerate(manifest.tiers.items()):
        rotated = order[2 * i :] + order[: 2 * i]
        passed = [v for v in rotated if v in entry.variants and entry.variants[v].passed]
        if passed:
            pins[tier] = passed[0]
    return pins
