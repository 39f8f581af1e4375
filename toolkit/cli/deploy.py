"""``toolkit deploy``: write the Triton model repository."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from toolkit.cli.common import folder, load, spec_option

if TYPE_CHECKING:
    from toolkit.repository import DeployResult
    from toolkit.spec import Spec


@click.command("deploy")
@spec_option
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    help="Export output with manifest.json (default: the spec's paths.artifacts).",
)
@click.option(
    "--out",
    metavar="PATH|s3://BUCKET/PREFIX",
    help="Repository folder to write; replaced atomically (default: the spec's paths.repository). "
    "An s3://BUCKET/PREFIX URL publishes the repository there with boto3 instead (written to a "
    "temporary folder first), each model's config.pbtxt last; see --s3-endpoint.",
)
@click.option(
    "--s3-endpoint",
    metavar="URL",
    help="With --out s3://...: an S3-compatible endpoint such as http://HOST:9000 (default: AWS S3). "
    "Credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_DEFAULT_REGION.",
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
@click.option(
    "--target",
    type=click.Choice(["cpu", "gpu"]),
    help="Hardware the tiers run on: cpu (ONNX variants on CPU instances) or gpu (TensorRT engines, "
    "or ONNX Runtime with the TensorRT accelerator, on GPU instances of an NGC tritonserver; needs "
    "--backend onnxruntime). Default: the spec's triton.target.",
)
@click.option(
    "--pin",
    "pins",
    multiple=True,
    metavar="TIER=VARIANT",
    help="Deploy this variant of the tier instead of the fastest passing one; repeat for several. "
    "Beats the spec's triton.pin.",
)
def command(
    spec_path: Path,
    artifacts: Path | None,
    out: str | None,
    s3_endpoint: str | None,
    backend: str | None,
    tritonserver: Path | None,
    target: str | None,
    pins: tuple[str, ...],
) -> None:
    """Write the Triton model repository: the ensemble, preprocess, router and one model per tier.

    The ensemble (named after the spec) is the entry point clients call. Its one step is the BLS
    router (python backend): it admits a request (rejecting those that waited past
    triton.queue_timeout_ms), validates it, runs the preprocess model (the exported feature
    transforms), picks a tier with the spec's routing policy and calls it, stepping down to a cheaper
    tier when one fails. Every config.pbtxt is built as a protobuf message.

    Per tier, the variant deployed is the one pinned (--pin, then the spec's triton.pin) or the
    fastest on the target that passed export's accuracy gate (mean latency over the timed candidate
    counts); a FAILED or SKIPPED variant is never deployed.

    The repository is written beside --out and renamed into place, so a failed deploy leaves the
    previous one as it was; a folder that deploy did not write is never replaced.

    With --out s3://BUCKET/PREFIX the repository is written to a temporary folder and published:
    each changed model into a new version folder, its config.pbtxt (pinning that version) last, the
    marker file after every model, and only then are old versions and removed models deleted.
    """
    from toolkit.repository import deploy
    from toolkit.repository.backend import resolve_backend
    from toolkit.repository.object_store import is_s3_url, parse_endpoint, parse_s3_url

    spec = load(spec_path)
    out = out if out is not None else spec.paths.repository
    publishing = is_s3_url(out)
    if s3_endpoint is not None and not publishing:
        raise click.UsageError("--s3-endpoint needs --out s3://BUCKET/PREFIX")
    if publishing:
        parse_s3_url(out, "--out")
        if s3_endpoint is not None:
            parse_endpoint(s3_endpoint)
    target = target or spec.triton.target
    chosen = "onnxruntime" if target == "gpu" and backend is None else None
    chosen = chosen or resolve_backend(backend or spec.triton.backend, tritonserver)
    with (
        tempfile.TemporaryDirectory(prefix="toolkit-deploy-")
        if publishing
        else contextlib.nullcontext() as tmp
    ):
        destination = Path(tmp) / "model_repository" if tmp is not None else Path(out)
        result = deploy(
            spec, folder(artifacts, spec.paths.artifacts), destination, chosen, target, _pins(pins)
        )
        if tmp is not None:
            _publish(spec, result, out, s3_endpoint, chosen)
            return
    click.echo(
        f"{'replaced' if result.replaced else 'wrote'} {result.repository}/ "
        f"(target {result.target}, tier backend: {chosen})"
    )
    _describe(spec, result)


def _publish(spec: Spec, result: DeployResult, url: str, endpoint: str | None, backend: str) -> None:
    from toolkit.repository.object_store import publish

    via = f" through {endpoint}" if endpoint else ""
    click.echo(f"publishing to {url}{via} (target {result.target}, tier backend: {backend}):")
    order = [*spec.tier_names, spec.preprocess_model, spec.gate_model, spec.router_model, spec.name]
    published = publish(result.repository, url, endpoint, order=order, progress=click.echo)
    uploaded = [m for m in published.models if not m.unchanged]
    click.echo(
        f"{'replaced' if published.replaced else 'published'} {published.url}/: {len(uploaded)} model(s) "
        f"uploaded, {len(published.models) - len(uploaded)} unchanged, {len(published.removed)} stale "
        f"object(s) removed; Triton reads it as --model-repository={published.triton_url}"
    )
    _describe(spec, result)


def _describe(spec: Spec, result: DeployResult) -> None:
    from toolkit.repository.writer import MARKER_FORMAT

    if result.replaced_older:
        click.echo(
            f"note: the repository replaced was written by {result.replaced_older}; it was replaced "
            f"whole (format {MARKER_FORMAT} now), not updated in place"
        )
    click.echo(f"  {spec.name:<28} ensemble entry point: the router")
    click.echo(f"  {spec.preprocess_model:<28} feature transforms (ONNX), called by the router")
    click.echo(
        f"  {spec.router_model:<28} BLS router: queue timeout {spec.triton.queue_timeout_ms:g} ms, "
        f"validation, preprocess, policy {spec.routing.policy!r}"
    )
    if spec.gate_model in result.models:
        click.echo(f"  {spec.gate_model:<28} learned policy's gate (ONNX), called by the router")
    for name, selection in result.selections.items():
        click.echo(f"  {name:<28} tier {selection.variant}: {selection.reason}")


def _pins(values: tuple[str, ...]) -> dict[str, str]:
    pins: dict[str, str] = {}
    for value in values:
        tier, sep, variant = value.partition("=")
        if not sep or not tier.strip() or not variant.strip():
            raise click.BadParameter(f"{value!r} is not TIER=VARIANT", param_hint="--pin")
        pins[tier.strip()] = variant.strip()
    return pins
