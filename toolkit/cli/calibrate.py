"""``toolkit calibrate``: fit the learned policy's gate and choose its price ``lambda``."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.common import folder, load, spec_option


@click.command("calibrate")
@spec_option
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    help="Export output with manifest.json; the gate is written to <artifacts>/<ensemble>_gate/ "
    "(default: the spec's paths.artifacts).",
)
def command(spec_path: Path, artifacts: Path | None) -> None:
    """Fit the learned routing gate, export it to ONNX and price the tiers for the learned policy.

    Generated calibration requests (routing.learned.calibration_requests, with a seed of their
    own, never the held-out ones) are scored by every tier as deploy would serve it. A small MLP
    learns, from request-level features only (dense user features, history length, candidate
    count), each bigger tier's expected log-loss gain per candidate over the smallest. A tier's cost
    is its FLOPs for N candidates, counted from its ONNX graph. The price lambda is chosen so that
    routing.learned.target_share of the calibration requests go to the largest tier, or, with
    routing.learned.target_cost_mflop, so that they cost that many MFLOP on average. `toolkit
    deploy` with routing.policy: learned puts the gate beside the router.
    """
    from rich.console import Console

    from toolkit.evaluate.calibrate import calibrate

    spec = load(spec_path)
    arts = folder(artifacts, spec.paths.artifacts)
    console = Console(stderr=True)
    with console.status("calibrating") as status:

        def on_step(message: str) -> None:
            status.update(message)
            console.log(message)

        result = calibrate(spec, arts, on_step)
    shares = ", ".join(f"{t} {s:.1%}" for t, s in result["shares"].items())
    click.echo(f"wrote {arts / spec.gate_model}/ (gate model and calibration.json)")
    target = (
        f"{result['target_cost_mflop']:g} MFLOP per request"
        if result["target_cost_mflop"]
        else f"{result['target_share']:.0%} on {spec.tier_names[-1]}"
    )
    click.echo(
        f"lambda {result['lambda']:.6g} per MFLOP: on {result['calibration_requests']} calibration requests "
        f"the learned policy serves {shares}, {result['mean_mflop']:.3g} MFLOP per request (target {target})"
    )
