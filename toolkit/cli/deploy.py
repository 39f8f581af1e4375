"""``toolkit deploy``: write the Triton model repository."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import click

from toolkit.cli.common import folder, load, parse_pins, shown, spec_option

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
    "--backend onnxruntime). Default: the spec's triton.target; with pools, each pool's hardware "
    "(--target cpu deploys every pool for CPU, to try a GPU pool's split on a machine without one). "
    "A tier's tiers[].instance_kind beats it for that tier.",
)
@click.option(
    "--pin",
    "pins",
    multiple=True,
    metavar="TIER=VARIANT",
    help="Deploy this variant of the tier instead of the fastest passing one; repeat for several. "
    "Beats the spec's triton.pin.",
)
@click.option(
    "--pool-address",
    "pool_addresses",
    multiple=True,
    metavar="POOL=HOST:PORT",
    help="With pools: a gRPC address of the pool's servers for the router to call, instead of the "
    "spec's pools[].addresses (default: the pool's Kubernetes Service); repeat for several servers "
    "or pools.",
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
    pool_addresses: tuple[str, ...],
) -> None:
    """Write the Triton model repository: the ensemble, preprocess, router and one model per tier.

    The ensemble (named after the spec) is the entry point clients call. Its one step is the router
    (python backend): it admits a request (rejecting those that waited past
    triton.queue_timeout_ms), validates it, picks a tier with the spec's routing policy and scores
    with it, stepping down to a cheaper tier when one fails. Every CPU tier (and the gate) is written
    with the preprocess step (the exported feature transforms) fused in front, so it takes the raw
    request; with triton.local_tiers: inprocess (the default) the router runs them in its own
    process, with bls it calls them through BLS. Every config.pbtxt is built as a protobuf message.

    Per tier, the variant deployed is the one pinned (--pin, then the spec's triton.pin) or the
    fastest on the target that passed export's acceptance check (mean latency over the timed candidate
    counts); a FAILED or SKIPPED variant is never deployed.

    The repository is written beside --out and renamed into place, so a failed deploy leaves the
    previous one as it was; a folder that deploy did not write is never replaced.

    With --out s3://BUCKET/PREFIX the repository is written to a temporary folder and published:
    each changed model into a new version folder, its config.pbtxt (pinning that version) last, the
    marker file after every model, and only then are old versions and removed models deleted.

    With pools in the spec, --out holds one repository per pool, OUT/POOL (s3://BUCKET/PREFIX/POOL):
    the entry pool (the first) gets the ensemble, router, preprocess step and its own tiers, every
    other pool only its tiers, deployed for the pool's hardware. The router calls those over gRPC at
    the pool's addresses (--pool-address, the spec's, or the pool's Kubernetes Service). Other pools
    are published before the entry pool, so a router never calls a tier its pool does not have yet.
    """
    from toolkit.repository import deploy
    from toolkit.repository.object_store import is_s3_url, parse_s3_url
    from toolkit.serve.backends import resolve_backend

    spec = load(spec_path)
    out = out if out is not None else spec.paths.repository
    publishing = is_s3_url(out)
    if s3_endpoint is not None and not publishing:
        raise click.UsageError("--s3-endpoint needs --out s3://BUCKET/PREFIX")
    if publishing:
        parse_s3_url(out, "--out", s3_endpoint)
    if not spec.pools:
        target = target or spec.triton.target
    on_gpu = target == "gpu" or any(t.instance_kind == "gpu" for t in spec.tiers)
    chosen = "onnxruntime" if on_gpu and backend is None else None
    chosen = chosen or resolve_backend(backend or spec.triton.backend, tritonserver)
    addresses = _addresses(pool_addresses)
    with (
        tempfile.TemporaryDirectory(prefix="toolkit-deploy-")
        if publishing
        else contextlib.nullcontext() as tmp
    ):
        destination = Path(tmp) / "model_repository" if tmp is not None else Path(out)
        result = deploy(
            spec,
            folder(artifacts, spec.paths.artifacts),
            destination,
            chosen,
            target,
            parse_pins(pins),
            addresses,
        )
        if tmp is not None:
            _publish(spec, result, out, s3_endpoint, chosen)
            return
    if result.pools:
        click.echo(
            f"{'replaced' if result.replaced else 'wrote'} {shown(result.repository)}/ with one repository "
            f"per pool (tier backend on cpu pools: {chosen})"
        )
    else:
        click.echo(
            f"{'replaced' if result.replaced else 'wrote'} {shown(result.repository)}/ "
            f"(target {result.target}, tier backend: {chosen})"
        )
    _describe(spec, result)


def _publish(spec: Spec, result: DeployResult, url: str, endpoint: str | None, backend: str) -> None:
    from toolkit.repository.object_store import publish

    via = f" through {endpoint}" if endpoint else ""
    order = [*spec.tier_names, spec.preprocess_model, spec.gate_model, spec.router_model, spec.name]
    url = url.rstrip("/")
    places = [(result.repository, url, f"target {result.target}, tier backend: {backend}")]
    if result.pools:
        ordered = sorted(result.pools, key=lambda pool: pool.entry)
        places = [
            (pool.repository, f"{url}/{pool.name}", f"pool {pool.name}, {pool.target}, {pool.backend}")
            for pool in ordered
        ]
    for local, where, what in places:
        click.echo(f"publishing to {where}{via} ({what}):")
        published = publish(local, where, endpoint, order=order, progress=click.echo)
        uploaded = [m for m in published.models if not m.unchanged]
        click.echo(
            f"{'replaced' if published.replaced else 'published'} {published.url}/: {len(uploaded)} "
            f"model(s) uploaded, {len(published.models) - len(uploaded)} unchanged, "
            f"{len(published.removed)} stale object(s) removed; Triton reads it as "
            f"--model-repository={published.triton_url}"
        )
    _describe(spec, result)


def _describe(spec: Spec, result: DeployResult) -> None:
    from toolkit.repository.writer import MARKER_FORMAT

    if result.replaced_older:
        click.echo(
            f"note: the repository replaced was written by {result.replaced_older}; it was replaced "
            f"whole (format {MARKER_FORMAT} now), not updated in place"
        )
    for tier, reason in result.unfused.items():
        click.echo(
            f"note: tier {tier!r} is deployed without the preprocess step fused in (it takes preprocessed "
            f"tensors, which the router computes): {reason}"
        )
    for note in result.notes:
        click.echo(f"note: {note}")
    if result.pools:
        _describe_pools(spec, result)
        return
    click.echo(f"  {spec.name:<28} ensemble entry point: the router")
    click.echo(f"  {spec.preprocess_model:<28} feature transforms (ONNX), fused into every CPU tier")
    click.echo(
        f"  {spec.router_model:<28} router: queue timeout {spec.triton.queue_timeout_ms:g} ms "
        f"({'Triton sheds' if spec.triton.admission == 'batcher' else 'the router sheds'}), "
        f"validation, policy {spec.routing.policy!r}; {_local_tiers(spec)}"
    )
    if spec.gate_model in result.models:
        click.echo(f"  {spec.gate_model:<28} learned policy's gate (ONNX, preprocess fused in)")
    for name, selection in result.selections.items():
        click.echo(f"  {name:<28} tier {selection.variant}: {selection.reason}")


def _local_tiers(spec: Spec) -> str:
    if spec.triton.local_tiers == "inprocess":
        return "runs the CPU tiers in its own process"
    return "calls the tiers through BLS"


def _describe_pools(spec: Spec, result: DeployResult) -> None:
    from toolkit.repository.plan import remote_timeout_ms

    for pool in result.pools:
        role = (
            "entry pool: clients call it"
            if pool.entry
            else f"called by the router at {', '.join(pool.addresses)}"
        )
        click.echo(f"  pool {pool.name} ({pool.target}, {pool.backend}) -> {pool.repository.name}/: {role}")
        if pool.entry:
            click.echo(f"    {spec.name:<26} ensemble entry point: the router")
            click.echo(f"    {spec.preprocess_model:<26} feature transforms (ONNX), fused into CPU tiers")
            click.echo(
                f"    {spec.router_model:<26} router: policy {spec.routing.policy!r}; "
                f"{_local_tiers(spec)}; tiers of other pools over gRPC"
            )
            if spec.gate_model in pool.models:
                click.echo(f"    {spec.gate_model:<26} learned policy's gate (ONNX, preprocess fused in)")
        for name in pool.tiers:
            selection = result.selections[name]
            click.echo(f"    {name:<26} tier {selection.variant}: {selection.reason}")
        if not pool.entry:
            click.echo(
                f"    (router deadline {remote_timeout_ms(spec, pool.name):g} ms per call, then the next "
                f"cheaper tier; a failed address rests {spec.pool(pool.name).retry_after_ms:g} ms)"
            )


def _addresses(values: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    from toolkit.spec.schema import KeyedValueError, check_address

    addresses: dict[str, tuple[str, ...]] = {}
    for value in values:
        pool, sep, address = value.partition("=")
        if not sep or not pool.strip():
            raise click.BadParameter(f"{value!r} is not POOL=HOST:PORT", param_hint="--pool-address")
        try:
            check_address(address.strip(), pool)
        except KeyedValueError as exc:
            raise click.BadParameter(f"{value!r}: {exc}", param_hint="--pool-address") from None
        addresses[pool.strip()] = (*addresses.get(pool.strip(), ()), address.strip())
    return addresses
