"""``toolkit k8s``: write validated Kubernetes manifests for the spec's pools."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

import click

from toolkit.cli.common import load, spec_option

if TYPE_CHECKING:
    from toolkit.k8s.fleet import FleetFiles
    from toolkit.k8s.manifests import PoolDeployment
    from toolkit.spec import Spec


def _version(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None and not re.match(r"^\d+\.\d+$", value):
        raise click.BadParameter(f"expected MAJOR.MINOR such as 1.30, got {value!r}")
    return value


@click.command("k8s")
@spec_option
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("k8s"),
    show_default=True,
    help="Folder to write the manifests to (created; files it holds besides those written are kept).",
)
@click.option(
    "--kserve/--no-kserve",
    default=None,
    help="Write KServe InferenceServices (RawDeployment) instead of Deployments and Services; only for "
    "specs without remote pools (KServe names its own Services, so the router could not reach them). "
    "Default: the spec's kubernetes.kserve.",
)
@click.option(
    "--kubernetes-version",
    metavar="X.Y",
    callback=_version,
    help="Kubernetes version whose bundled schemas the manifests are validated against (offline). "
    "Default: the spec's kubernetes.kubernetes_version.",
)
def command(spec_path: Path, out: Path, kserve: bool | None, kubernetes_version: str | None) -> None:
    """Write validated Kubernetes manifests for the spec's pools: one Triton deployment per pool.

    Per pool, OUT/<pool>.yaml holds a Deployment of the Triton image serving the pool's model
    repository from object storage (kubernetes.repository/<pool>; a spec without pools is one pool,
    "triton", reading kubernetes.repository itself), a Service for clients, a headless Service
    <ensemble>-<pool>-pods that resolves to the pool's ready pods, a HorizontalPodAutoscaler and a
    PodDisruptionBudget. The entry pool (the first of pools) runs the ensemble, router and preprocess
    step with its tiers; its router calls the other pools' tiers over gRPC at their -pods Service,
    the address `toolkit deploy` writes into the router's config unless pools[].addresses or
    `toolkit deploy --pool-address` give another. GPU pools request nvidia.com/gpu and tolerate the
    GPU taint. OUT/README.md sums it all up.

    With remote pools the entry pool's router needs tritonclient in the image: OUT/Dockerfile.entry
    builds that image; push it and set kubernetes.entry_image.

    Every manifest is validated strictly against the Kubernetes schemas bundled with
    kubernetes-validate (no cluster needed) before anything is written. Publish the repositories
    first with `toolkit deploy --out s3://BUCKET/PREFIX` (the kubernetes.repository URL), then apply
    the files with kubectl as printed, the pools the router calls before the entry pool.
    """
    from toolkit.k8s.fleet import write_fleet

    spec = load(spec_path)
    written = write_fleet(spec, out, kserve=kserve, kubernetes_version=kubernetes_version)
    _report(spec, written)
    for note in written.notes:
        click.echo(f"note: {note}", err=True)


def _report(spec: Spec, written: FleetFiles) -> None:
    from toolkit.k8s.fleet import (
        ENTRY_DOCKERFILE,
        cluster_image,
        pool_models,
        pool_tiers,
        tritonclient_version,
    )
    from toolkit.k8s.manifests import apply_order

    form = "KServe InferenceServices" if written.kserve else "Deployments and Services"
    click.echo(
        f"wrote {written.out_dir}/ for {spec.name} (namespace {written.cluster.namespace}, {form}, "
        f"validated against Kubernetes {written.kubernetes_version}):"
    )
    width = max(len(path.name) for path in written.paths)
    pad = " " * (width + 4)
    for index, pool in enumerate(written.pools):
        role = "entry pool" if spec.pools and index == 0 else "pool"
        gpus = f", {pool.gpus} GPU" if pool.gpus else ""
        click.echo(
            f"  {pool.name + '.yaml':<{width}}  {role} {pool.name}: {pool.hardware} pods "
            f"({pool.cpu} CPU, {pool.memory}{gpus} each)"
        )
        tiers = pool_tiers(spec, pool.name)
        runs = [f"tier{'s' if len(tiers) > 1 else ''} {', '.join(tiers)}"]
        if pool_models(spec, pool.name):
            steps = "router, preprocess, gate" if spec.routing.policy == "learned" else "router, preprocess"
            runs.insert(0, f"ensemble {spec.name} ({steps})")
        click.echo(f"{pad}runs {'; '.join(runs)}")
        click.echo(f"{pad}replicas {_replicas(pool)}")
        click.echo(f"{pad}repository {pool.triton_repository_url}")
        click.echo(f"{pad}gRPC {_address(spec, written, index)}")
    click.echo(f"  {'README.md':<{width}}  summary: pools, addresses, apply steps")
    if written.dockerfile is not None:
        click.echo(
            f"  {ENTRY_DOCKERFILE:<{width}}  entry pool image: FROM {cluster_image(spec)} "
            f"+ tritonclient[grpc]=={tritonclient_version()}"
        )
    namespace = written.cluster.namespace
    click.echo("apply:")
    click.echo(f"  kubectl create namespace {namespace}  # once")
    for secret in sorted({pool.s3_secret for pool in written.pools if pool.s3_secret}):
        click.echo(
            f"  kubectl -n {namespace} create secret generic {secret} --from-literal=AWS_ACCESS_KEY_ID=... "
            "--from-literal=AWS_SECRET_ACCESS_KEY=...  # once"
        )
    for pool in apply_order(written.pools, written.pools[0].name):
        click.echo(f"  kubectl apply -f {written.out_dir / (pool.name + '.yaml')}")
    if written.dockerfile is not None and not spec.kubernetes.entry_image:
        click.echo(
            f"warning: kubernetes.entry_image is not set, so the entry pool {written.pools[0].name} runs "
            f"{cluster_image(spec)}, whose python backend cannot import tritonclient, so its router (which "
            f"calls the pools {', '.join(p.name for p in written.pools[1:])} with it) fails to load and the "
            f"pods never become ready; build and push {written.dockerfile}, set kubernetes.entry_image in "
            f"{spec_path_of(spec)} to it and run `toolkit k8s` again",
            err=True,
        )


def spec_path_of(spec: Spec) -> str:
    """The spec file, for messages."""
    return spec.source or "the spec"


def _replicas(pool: PoolDeployment) -> str:
    if not pool.autoscale:
        return str(pool.replicas or pool.min_replicas)
    targets = [f"{pool.cpu_target_utilization}% CPU"]
    if pool.queue_time_target_us is not None:
        targets.append(f"queue time {pool.queue_time_target_us} us per request")
    return f"{pool.min_replicas}-{pool.max_replicas} (HPA on {', '.join(targets)})"


def _address(spec: Spec, written: FleetFiles, index: int) -> str:
    from toolkit.k8s.fleet import pool_addresses
    from toolkit.k8s.manifests import object_name, pods_address, service_address

    pool = written.pools[index]
    if written.kserve:
        return f"KServe InferenceService {object_name(written.cluster, pool)} (KServe names its Services)"
    if index == 0:
        return f"{service_address(written.cluster, pool)} (clients)"
    headless = pods_address(written.cluster, pool)
    addresses = pool_addresses(spec, pool.name)
    if addresses == (headless,):
        return f"{headless} (the entry pool's router; headless Service of the ready pods)"
    return (
        f"{', '.join(addresses)} (the router, from pools[{index}].addresses; "
        f"the headless Service is {headless})"
    )
