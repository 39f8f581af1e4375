"""``toolkit train``: train the spec's tiers on generated data or on request logs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from toolkit.cli.common import fmt, folder, load, output_console, results_table, spec_option

if TYPE_CHECKING:
    from toolkit.spec.schema import Spec


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
    """Train the spec's tiers on generated data or request logs and save checkpoints.

    Without data.files: generates the spec's training and held-out requests (seeded, so every run
    sees the same data). With data.files: streams data.files.train in chunks of chunk_rows rows (one
    pass for the dense statistics and the request count, then one per epoch) and reads the first
    data.holdout_requests requests of data.files.holdout. Fits the preprocess step (dense
    statistics) on the training requests, trains each tier for training.epochs passes (tiers that
    bring their own model are skipped), and prints held-out NE and AUC per tier: overall, on
    requests from users with long informative histories, and on the rest (logs carry no such flag:
    '-'). NE is the mean log loss divided by the entropy of the held-out CTR (lower is better; 1.0
    is no skill).
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

        console.print(_data_message(spec))
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
    for name, why in report.skipped.items():
        click.echo(f"skipped {name}: {why}")
    click.echo(f"checkpoints written to {out}/")


def _data_message(spec: Spec) -> str:
    files = spec.data.files
    if files is None:
        return (
            f"generating {spec.data.train_requests} training and "
            f"{spec.data.holdout_requests} held-out requests"
        )
    return (
        f"streaming training requests from {files.train} ({files.format}, {files.chunk_rows} rows a "
        f"chunk) and reading up to {spec.data.holdout_requests} held-out requests from {files.holdout}"
    )
