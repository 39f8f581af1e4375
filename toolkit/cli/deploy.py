"""``toolkit deploy``: write the Triton model repository."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.common import folder, load, spec_option


@click.command("deploy")
@spec_option
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    help="Export output with manifest.json (default: the spec's paths.artifacts).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Repository folder to write; replaced atomically (default: the spec's paths.repository).",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "onnxruntime", "python"]),
    help="Backend of the tier and preprocess models: onnxruntime (servers with the ONNX Runtime "
    "backend, such as NGC tritonserver images), python (an ONNX Runtime runner in the python "
    "backend, for servers without it, such as the embedded one), or auto: pick by the server "
    "`toolkit serve` would run (see --tritonserver). Default: the spec's triton.backend.",
)
@click.option(
    "--tritonserver",
    type=click.Path(dir_okay=False, path_type=Path),
    help="With --backend auto: the tritonserver binary the repository is for (default: the one "
    "`toolkit serve` would find).",
)
def command(
    spec_path: Path, artifacts: Path | None, out: Path | None, backend: str | None, tritonserver: Path | None
) -> None:
    """Write the Triton model repository: the ensemble, preprocess, router and one model per tier.

    The ensemble (named after the spec) is the entry point clients call. Its two steps are the
    preprocess model (the exported feature transforms) and the BLS router (python backend), which
    picks a tier per request with the spec's routing policy and calls it. Every config.pbtxt is built
    as a protobuf message. The repository is written beside --out and renamed into place, so a
    failed deploy leaves the previous one as it was; a folder that deploy did not write is never
    replaced.
    """
    from toolkit.repository import deploy
    from toolkit.repository.backend import resolve_backend

    spec = load(spec_path)
    chosen = resolve_backend(backend or spec.triton.backend, tritonserver)
    result = deploy(spec, folder(artifacts, spec.paths.artifacts), folder(out, spec.paths.repository), chosen)
    click.echo(f"{'replaced' if result.replaced else 'wrote'} {result.repository}/ (tier backend: {chosen})")
    click.echo(f"  {spec.name:<28} ensemble entry point: preprocess -> router")
    click.echo(f"  {spec.preprocess_model:<28} feature transforms (ONNX)")
    click.echo(f"  {spec.router_model:<28} BLS router, policy {spec.routing.policy!r}")
    for name, variant in result.variants.items():
        click.echo(f"  {name:<28} tier ({variant})")
