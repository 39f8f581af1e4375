"""``toolkit evaluate``: routing policies on held-out requests, quality against cost."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.common import folder, load, spec_option


@click.command("evaluate")
@spec_option
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    help="Export output with manifest.json (default: the spec's paths.artifacts).",
)
@click.option(
    "--repository",
    type=click.Path(file_okay=False, path_type=Path),
    help="Deployed repository whose tier variants to evaluate (default: the spec's paths.repository; "
    "without one, the variants `toolkit deploy` would choose).",
)
@click.option(
    "--requests",
    "num_requests",
    type=click.IntRange(min=1),
    help="Held-out requests to use (default: all of the spec's data.holdout_requests).",
)
@click.option(
    "--top-k",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="K of the ranking metrics: NDCG@K and NE/AUC of each request's K best candidates by the "
    "served scores (the ads a page shows).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for evaluation.json, evaluation.md and evaluation.png (default: <artifacts>/evaluation).",
)
def command(
    spec_path: Path,
    artifacts: Path | None,
    repository: Path | None,
    num_requests: int | None,
    top_k: int,
    out: Path | None,
) -> None:
    """Evaluate each tier alone, the spec's routing policy and the learned gate offline.

    Every tier scores every held-out request with the variant the repository serves (the same
    ONNX files and the same routing code as the server, run with ONNX Runtime here), so the
    quality of any routing is exact. Reports NE and AUC against cost, counted as FLOPs per request
    from the ONNX graphs and as milliseconds per request from export's timing at each request's
    candidate count, with NDCG@K and top-K NE/AUC beside them. Between the smallest and the
    largest tier it draws the learned gate's curve (the deployed gate with routing.policy: learned,
    else one fitted here from requests that are not held out), with APGR and CPT(50%)/CPT(80%) as
    RouteLLM defines them (NE in place of accuracy) and bootstrap intervals over requests, against
    the random line and two ceilings: the oracle and a gate that knew the largest tier's
    predictions. It warns when the gate is within noise of random. With values in the logs, NE and
    the curves are value-weighted too.
    """
    from rich.console import Console

    from toolkit.evaluate.report import evaluate

    spec = load(spec_path)
    arts = folder(artifacts, spec.paths.artifacts)
    repo = folder(repository, spec.paths.repository)
    target = out or arts / "evaluation"
    console = Console(stderr=True)
    with console.status("evaluating") as status:

        def on_step(message: str) -> None:
            status.update(message)
            console.log(message)

        evaluate(spec, arts, repo if repo.exists() else None, target, num_requests, on_step, top_k)
    click.echo((target / "evaluation.md").read_text(encoding="utf-8"))
    click.echo(f"wrote {target}/evaluation.json, evaluation.md, evaluation.png")
