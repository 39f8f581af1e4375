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

    The gate (routing.learned.gate) learns each bigger tier's expected log-loss gain per candidate
    over the smallest from the tiers' behaviour on requests they did not train on
    (routing.learned.fit_on): a calibration set scored by every tier as deploy would serve it, or
    the training requests scored by cross-fitted tier copies. With several routing.learned.targets
    a 3-fold validation keeps the one that routes best. A tier's cost, and the gate's, is its FLOPs
    for N candidates counted from its ONNX graph. The price lambda is chosen so that
    routing.learned.target_share of the requests go to the largest tier, or, with
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
    validation = ", ".join(f"{t} {v:.3f}" for t, v in result["validation_apgr"].items())
    click.echo(
        f"gate: {result['gate']}"
        + (", cheapest tier first" if result["cheapest_first"] else "")
        + f", target {result['target']}"
        + (f" (validation APGR {validation})" if validation else "")
        + f"; fitted on {result['source']}"
    )
