"""``toolkit train``: train the demo tiers on generated data."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.common import fmt, folder, load, output_console, results_table, spec_option


@click.command("train")
@spec_option
@click.option(
    "--checkpoints",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for <tier>.pt, preprocess.pt and training.json (default: the spec's paths.checkpoints).",
)
@click.option(
    "--tier",
    "tiers",
    multiple=True,
    metavar="NAME",
    help="Train only this tier; repeat for several (default: every tier of the spec).",
)
def command(spec_path: Path, checkpoints: Path | None, tiers: tuple[str, ...]) -> None:
    """Train the demo tiers on generated request-centric data and save checkpoints.

    Generates the spec's training and held-out requests (seeded, so every run sees the same data),
    fits the preprocess step (dense statistics) on the training requests, trains each tier for
    training.epochs passes, and prints held-out NE and AUC per tier: overall, on requests from users
    with long informative histories, and on the rest. NE is the mean log loss divided by the entropy
    of the held-out CTR (lower is better; 1.0 is no skill).
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from toolkit.errors import SpecError
    from toolkit.train import train

    spec = load(spec_path)
    unknown = [t for t in tiers if t not in spec.tier_names]
    if unknown:
        raise SpecError(f"--tier {unknown[0]!r}: not a tier of {spec_path} ({', '.join(spec.tier_names)})")
    out = folder(checkpoints, spec.paths.checkpoints)
    console = Console(stderr=True)
    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]}"),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        tasks: dict[str, int] = {}

        def on_step(name: str, step: int, total: int, loss: float) -> None:
            if name not in tasks:
                tasks[name] = progress.add_task(f"train {name}", total=total, loss="-")
            if step % 20 == 0 or step == total:
                progress.update(tasks[name], completed=step, loss=f"{loss:.4f}")

        console.print(
            f"generating {spec.data.train_requests} training and "
            f"{spec.data.holdout_requests} held-out requests"
        )
        report = train(spec, out, tiers or None, progress=on_step)
    table = results_table(
        f"held-out quality ({report.holdout_requests} requests, CTR {report.holdout_ctr:.2%})",
        ["tier", "parameters", "NE", "AUC", "NE informative", "NE other", "train s"],
    )
    for name, m in report.tiers.items():
        table.add_row(
            name,
            f"{m.parameters:,}",
            fmt(m.ne),
            fmt(m.auc),
            fmt(m.ne_informative),
            fmt(m.ne_other),
            f"{m.train_seconds:.1f}",
        )
    output_console().print(table)
    click.echo(f"checkpoints written to {out}/")
