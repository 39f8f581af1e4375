"""From an ensemble spec to its pools on a cluster: names and addresses shared by deploy and ``toolkit k8s``.

The spec's ``pools`` and ``kubernetes`` sections become the generator's :class:`ClusterSettings` and
:class:`PoolDeployment` objects (:func:`cluster_settings`, :func:`pool_deployments`), and
:func:`write_fleet` writes their manifests with the entry pool's ``Dockerfile.entry``. A spec without
``pools`` runs as one pool, :data:`SINGLE_POOL`, serving everything.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from toolkit.k8s.manifests import (
    MANAGED_BY,
    PODS_SERVICE_SUFFIX,
    TRITON_IMAGE,
    ClusterSettings,
    ManifestError,
    PoolDeployment,
    dns_label,
    pods_address,
    pods_service_name,
    pool_manifests,
    supported_kubernetes_versions,
    write_manifests,
)
from toolkit.spec.schema import PoolSpec, Spec

T = TypeVar("T")
Step = tuple[str, dict[str, Any]]

SINGLE_POOL = "triton"
"""Pool name of a spec without ``pools`` (one deployment serves everything)."""

GRPC_PORT = 8001
"""Triton's gRPC port in the pools' pods and Services."""


def namespace(spec: Spec) -> str:
    """The namespace of the spec's objects: ``kubernetes.namespace`` or the ensemble name as a DNS label."""
    return spec.kubernetes.namespace or dns_label(spec.name)


def pool_object_name(spec: Spec, pool: str) -> str:
    """Name of a pool's Kubernetes objects, ``<ensemble>-<pool>`` (``ads-ranking-big``)."""
    return f"{dns_label(spec.name)}-{pool}"


def peer_service_name(spec: Spec, pool: str) -> str:
    """Name of a pool's headless Service, which resolves to every ready pod of the pool."""
    return f"{pool_object_name(spec, pool)}{PODS_SERVICE_SUFFIX}"


def default_address(spec: Spec, pool: str) -> str:
    """The address the entry pool's router calls ``pool`` at in the cluster.

    It is the pool's headless Service: its DNS name resolves to every ready pod, and the router's
    gRPC channels balance calls over them (``round_robin``), where a plain Service would pin each
    long-lived HTTP/2 connection to one pod.
    """
    domain = spec.kubernetes.cluster_domain
    return f"{peer_service_name(spec, pool)}.{namespace(spec)}.svc.{domain}:{GRPC_PORT}"


def pool_addresses(
    spec: Spec, pool: str, overrides: dict[str, tuple[str, ...]] | None = None
) -> tuple[str, ...]:
    """Where the router finds ``pool``'s servers: an override, the spec's ``addresses``, or the cluster's.

    Args:
        spec: The ensemble spec (with ``pools``).
        pool: A pool name.
        overrides: Addresses per pool that beat the spec (``toolkit deploy --pool-address``).
    """
    if overrides and overrides.get(pool):
        return tuple(overrides[pool])
    return spec.pool(pool).addresses or (default_address(spec, pool),)


# --- from the spec to the manifest generator (``toolkit k8s``) ---

ENTRY_DOCKERFILE = "Dockerfile.entry"
"""File name of the entry pool's image recipe, written next to the manifests when there are remote pools."""


def _source(spec: Spec) -> str:
    return spec.source or "<spec>"


def _keyed(spec: Spec, key: str, message: str) -> ManifestError:
    """A ManifestError that names the spec file and the key to fix, as spec errors do."""
    return ManifestError(f"{_source(spec)}: key '{key}': {message}")


def _build_stepwise(spec: Spec, build: Callable[..., T], base: dict[str, Any], steps: list[Step]) -> T:
    """Build ``build(**kwargs)`` adding the spec's values one key at a time, to name the key at fault.

    ``base`` holds values known to be valid; each step replaces some of them with the spec's, and the
    first step whose values the generator refuses names the key in the error.
    """
    kwargs = dict(base)
    result = build(**kwargs)
    for key, change in steps:
        kwargs.update(change)
        try:
            result = build(**kwargs)
        except ManifestError as exc:
            raise _keyed(spec, key, str(exc)) from None
    return result


def pool_specs(spec: Spec) -> tuple[PoolSpec, ...]:
    """The spec's pools; a spec without ``pools`` has one, :data:`SINGLE_POOL`, on ``triton.target``."""
    return spec.pools or (PoolSpec(name=SINGLE_POOL, hardware=spec.triton.target),)


def _pool_key(spec: Spec, index: int, name: str) -> str:
    if spec.pools:
        return f"pools[{index}].{name}"
    return "triton.target" if name in ("hardware", "gpus") else "kubernetes"


def cluster_settings(spec: Spec) -> ClusterSettings:
    """The cluster-wide settings of the spec's pools (ensemble name, namespace, image, DNS domain).

    Args:
        spec: The ensemble spec.

    Raises:
        ManifestError: A value is not valid in Kubernetes; the message names the spec file and key.
    """
    k8s = spec.kubernetes
    ensemble = dns_label(spec.name)
    base = {"namespace": "default", "ensemble": "ensemble"}
    steps: list[Step] = [
        ("name", {"ensemble": ensemble}),
        ("kubernetes.namespace" if k8s.namespace else "name", {"namespace": namespace(spec)}),
        ("kubernetes.image", {"image": cluster_image(spec)}),
        ("kubernetes.cluster_domain", {"cluster_domain": k8s.cluster_domain}),
    ]
    _check_image(spec, "kubernetes.image", k8s.image)
    return _build_stepwise(spec, ClusterSettings, base, steps)


def cluster_image(spec: Spec) -> str:
    """The Triton image of the pools: ``kubernetes.image`` or :data:`TRITON_IMAGE`."""
    return spec.kubernetes.image or TRITON_IMAGE


def entry_image(spec: Spec) -> str:
    """The image of the entry pool: ``kubernetes.entry_image``, else the pools' image."""
    return spec.kubernetes.entry_image or cluster_image(spec)


def _check_image(spec: Spec, key: str, image: str) -> None:
    if image and (image != image.strip() or any(char.isspace() for char in image)):
        raise _keyed(spec, key, f"an image reference has no spaces, got {image!r}")


def repository_url(spec: Spec, pool: str) -> str:
    """The model repository ``pool`` reads: ``<kubernetes.repository>/<pool>``.

    A spec without pools reads ``kubernetes.repository`` itself, where ``toolkit deploy --out URL``
    publishes its one repository.

    Raises:
        ManifestError: ``kubernetes.repository`` is not set.
    """
    base = spec.kubernetes.repository.rstrip("/")
    if not base:
        where = (
            f"pool {pool} reads <repository>/{pool}, where `toolkit deploy --out <repository>` publishes it"
            if spec.pools
            else "the pool reads it where `toolkit deploy --out <repository>` publishes the repository"
        )
        raise _keyed(
            spec,
            "kubernetes.repository",
            f"not set; set it to the s3://bucket/prefix URL you publish the model repository to with "
            f"`toolkit deploy --out s3://bucket/prefix` ({where})",
        )
    return f"{base}/{pool}" if spec.pools else base


def pool_deployments(spec: Spec) -> list[PoolDeployment]:
    """The spec's pools as the generator describes them, the entry pool first.

    Each pool reads :func:`repository_url`, serves gRPC on :data:`GRPC_PORT` and takes its hardware,
    requests and autoscaling from its ``pools`` entry, and S3 access, service account and model control
    mode from ``kubernetes``; the entry pool runs :func:`entry_image`, the others the cluster's image.

    Args:
        spec: The ensemble spec.

    Raises:
        ManifestError: ``kubernetes.repository`` is not set, or a value is not valid in Kubernetes; the
            message names the spec file and the key (``<file>: key 'pools[1].memory': ...``).
    """
    k8s = spec.kubernetes
    cluster = cluster_settings(spec)
    _check_image(spec, "kubernetes.entry_image", k8s.entry_image)
    deployments = []
    for index, pool in enumerate(pool_specs(spec)):
        base: dict[str, Any] = {
            "name": "pool",
            "repository_url": "s3://bucket/prefix",
            "cpu": "1",
            "memory": "1Gi",
            "grpc_port": GRPC_PORT,
        }
        steps: list[Step] = [
            (_pool_key(spec, index, "name"), {"name": pool.name}),
            ("kubernetes.repository", {"repository_url": repository_url(spec, pool.name)}),
            ("kubernetes.s3_endpoint", {"s3_endpoint": k8s.s3_endpoint or None}),
            ("kubernetes.s3_secret", {"s3_secret": k8s.s3_secret or None}),
            ("kubernetes.s3_region", {"s3_region": k8s.s3_region or None}),
            ("kubernetes.service_account", {"service_account": k8s.service_account or None}),
            ("kubernetes.model_control_mode", {"model_control_mode": k8s.model_control_mode}),
            ("kubernetes.entry_image", {"image": (k8s.entry_image or None) if index == 0 else None}),
            (_pool_key(spec, index, "cpu"), {"cpu": pool.cpu}),
            (_pool_key(spec, index, "memory"), {"memory": pool.memory}),
            (_pool_key(spec, index, "hardware"), {"hardware": pool.hardware, "gpus": pool.gpus}),
            (
                "kubernetes.engine_cache",
                {
                    "engine_cache": k8s.engine_cache or None,
                    "engine_cache_class": k8s.engine_cache_class or None,
                    "build_engines": k8s.build_engines and pool.hardware == "gpu",
                },
            ),
            (
                _pool_key(spec, index, "max_replicas"),
                {"min_replicas": pool.min_replicas, "max_replicas": pool.max_replicas},
            ),
            (
                _pool_key(spec, index, "cpu_target_utilization"),
                {"cpu_target_utilization": pool.cpu_target_utilization},
            ),
            (
                _pool_key(spec, index, "queue_time_target_us"),
                {"queue_time_target_us": pool.queue_time_target_us or None},
            ),
        ]
        deployment = _build_stepwise(spec, PoolDeployment, base, steps)
        try:
            pods_service_name(cluster, deployment)
        except ManifestError as exc:
            raise _keyed(spec, "name" if not spec.pools else f"pools[{index}].name", str(exc)) from None
        # The entry pool's router is configured with default_address (toolkit deploy): the manifests
        # must create exactly that Service.
        assert pods_address(cluster, deployment) == default_address(spec, pool.name)
        deployments.append(deployment)
    return deployments


def pool_models(spec: Spec, pool: str) -> tuple[str, ...]:
    """The models besides tiers a pool serves: the entry pool's ensemble, router, preprocess (and gate)."""
    return () if spec.pools and pool != spec.entry_pool else spec.entry_models


def pool_tiers(spec: Spec, pool: str) -> tuple[str, ...]:
    """The tiers a pool serves, cheapest first (every tier for a spec without pools)."""
    return spec.pool_tiers(pool) if spec.pools else spec.tier_names


def remote_pools(spec: Spec) -> tuple[str, ...]:
    """The pools the entry pool's router calls over gRPC (every pool but the entry pool)."""
    return tuple(pool.name for pool in spec.pools[1:])


def tritonclient_version() -> str:
    """The installed ``tritonclient``'s version, which the entry image pins.

    Raises:
        ManifestError: tritonclient is not installed.
    """
    try:
        return importlib.metadata.version("tritonclient")
    except importlib.metadata.PackageNotFoundError:
        raise ManifestError(
            f"tritonclient is not installed, so {ENTRY_DOCKERFILE} cannot pin its version; "
            "install the toolkit with its dependencies."
        ) from None


def entry_dockerfile(spec: Spec) -> str:
    """``Dockerfile.entry``: the pools' image plus ``tritonclient[grpc]`` for the entry pool's router.

    The router runs in Triton's python backend, on the image's system Python, and calls the tiers of the
    other pools with tritonclient's gRPC client, which the NGC image lacks. The version pinned is the
    installed one, the client the toolkit is tested with.
    """
    base = cluster_image(spec)
    version = tritonclient_version()
    ensemble = dns_label(spec.name)
    tag = base.rsplit("/", 1)[-1].partition(":")[2] or "latest"
    return (
        f"# Image of the entry pool {spec.entry_pool!r} of {spec.name}: generated by {MANAGED_BY} "
        f"from {_source(spec)}; regenerate rather than edit.\n"
        f"# Its router (python backend) calls the tiers of the pools {', '.join(remote_pools(spec))}\n"
        "# over gRPC with tritonclient, which the python backend's Python must import.\n"
        "# Build and push it, set kubernetes.entry_image in the spec to it and run `toolkit k8s` again:\n"
        f"#   docker build -f {ENTRY_DOCKERFILE} -t <registry>/{ensemble}-entry:{tag} .\n"
        f"#   docker push <registry>/{ensemble}-entry:{tag}\n"
        f"FROM {base}\n"
        "# Releases on Ubuntu 24.04 mark the system Python externally managed; the python backend runs it.\n"
        "ENV PIP_BREAK_SYSTEM_PACKAGES=1\n"
        f'RUN pip install --no-cache-dir "tritonclient[grpc]=={version}"\n'
    )


def _entry_notes(spec: Spec) -> list[str]:
    if not remote_pools(spec):
        return []
    if spec.kubernetes.entry_image:
        state = f"The entry pool runs `{spec.kubernetes.entry_image}` (`kubernetes.entry_image`)"
    else:
        state = (
            "`kubernetes.entry_image` is not set, so the entry pool runs the plain Triton image, where its "
            "router fails to load and the pods never become ready"
        )
    return [
        f"The entry pool's router calls the other pools with tritonclient's gRPC client, which the Triton "
        f"image lacks: build `{ENTRY_DOCKERFILE}` (written here) and push it to your registry, set "
        f"`kubernetes.entry_image` in `{_source(spec)}` to it and run `toolkit k8s` again. {state}."
    ]


def kubernetes_version_problem(version: str) -> str | None:
    """Why ``version`` cannot be validated against (no bundled schemas), or None."""
    supported = supported_kubernetes_versions()
    if version in supported:
        return None
    return (
        f"no bundled schemas for Kubernetes {version!r}; kubernetes-validate knows {supported[0]} "
        f"to {supported[-1]}"
    )


@dataclass(frozen=True)
class FleetFiles:
    """What :func:`write_fleet` wrote.

    Attributes:
        out_dir: The folder.
        paths: Every file written: the pools' manifests in order, ``README.md``, then ``Dockerfile.entry``.
        cluster: The cluster-wide settings.
        pools: The pools, the entry pool first.
        kserve: Whether the pools are in the KServe form.
        kubernetes_version: The version the manifests were validated against.
        dockerfile: ``Dockerfile.entry``, or None (no remote pools).
        notes: TensorRT plans of the local repository that could not be checked against their image.
    """

    out_dir: Path
    paths: tuple[Path, ...]
    cluster: ClusterSettings
    pools: tuple[PoolDeployment, ...]
    kserve: bool
    kubernetes_version: str
    dockerfile: Path | None
    notes: tuple[str, ...] = ()


def check_deployed_plans(spec: Spec, pools: list[PoolDeployment]) -> tuple[str, ...]:
    """Check the TensorRT plans of the spec's local repository against the image each pool runs.

    ``toolkit deploy`` records, per pool repository (``paths.repository[/<pool>]``), the TensorRT
    version of every plan it wrote. Every pool runs :func:`cluster_image`, or (the entry pool with
    ``kubernetes.entry_image``) an image built from it, so that is the image checked. A repository that
    is not there (published from another machine) is not checked.

    Returns:
        Notes for plans whose image's TensorRT version is not known.

    Raises:
        RepositoryError: A plan was built by another TensorRT than its pool's image runs.
    """
    import json

    from toolkit.layout import MARKER
    from toolkit.ngc import check_plans

    root = Path(spec.paths.repository)
    built: dict[str, str | None] = {}
    for pool in pools:
        marker = root / pool.name / MARKER if spec.pools else root / MARKER
        try:
            engines = json.loads(marker.read_text(encoding="utf-8")).get("engines", {})
        except (OSError, ValueError):
            continue
        for tier, engine in engines.items():
            built[f"pool {pool.name}, tier {tier} ({marker})"] = engine.get("tensorrt_version")
    return check_plans(built, cluster_image(spec), spec.kubernetes.image_tensorrt)


def write_fleet(
    spec: Spec,
    out_dir: Path | str,
    *,
    kserve: bool | None = None,
    kubernetes_version: str | None = None,
) -> FleetFiles:
    """Validate the spec's pools' manifests and write them, the summary and ``Dockerfile.entry``.

    Args:
        spec: The ensemble spec.
        out_dir: Folder to write to (created; other files in it are left alone).
        kserve: Write the KServe form (None: ``kubernetes.kserve``).
        kubernetes_version: ``major.minor`` to validate against (None: ``kubernetes.kubernetes_version``).

    Raises:
        ManifestError: A value does not fit Kubernetes, ``kubernetes.repository`` is not set, the KServe
            form is asked for a spec with remote pools, or a manifest does not validate; the message names
            the spec file and, where one is at fault, the key.
    """
    kserve = spec.kubernetes.kserve if kserve is None else kserve
    version = kubernetes_version or spec.kubernetes.kubernetes_version
    problem = kubernetes_version_problem(version)
    if problem:
        if kubernetes_version:
            raise ManifestError(f"--kubernetes-version: {problem}")
        raise _keyed(spec, "kubernetes.kubernetes_version", problem)
    remote = remote_pools(spec)
    if kserve and remote:
        raise _keyed(
            spec,
            "kubernetes.kserve",
            f"the KServe form cannot run remote pools ({', '.join(remote)}): KServe names its pools' "
            "Services itself, creates no headless Service for the router to reach the ready pods at "
            "and serves gRPC on its runtime's port 9000, and it runs its runtime's image, without "
            "tritonclient; write the plain form (kubernetes.kserve: false, or toolkit k8s --no-kserve)",
        )
    cluster = cluster_settings(spec)
    pools = pool_deployments(spec)
    notes = check_deployed_plans(spec, pools)
    if kserve:
        for index, (pool, deployment) in enumerate(zip(pool_specs(spec), pools, strict=True)):
            if deployment.queue_time_target_us is not None:
                raise _keyed(
                    spec,
                    _pool_key(spec, index, "queue_time_target_us"),
                    f"pool {pool.name}: KServe's own HPA cannot read the queue-time metric; set it to 0 or "
                    "write the plain form",
                )
            try:
                pool_manifests(cluster, deployment, kserve=True)
            except ManifestError as exc:
                # The one other thing the KServe form refuses: S3 settings beside a service account.
                raise _keyed(spec, "kubernetes.service_account", str(exc)) from None
    extra = {ENTRY_DOCKERFILE: entry_dockerfile(spec)} if remote else {}
    try:
        paths = write_manifests(
            out_dir,
            cluster,
            pools,
            kserve=kserve,
            kubernetes_version=version,
            entry_pool=pools[0].name,
            notes=_entry_notes(spec),
            extra_files=extra,
        )
    except ManifestError as exc:
        raise ManifestError(f"{_source(spec)}: {exc}") from None
    return FleetFiles(
        out_dir=Path(out_dir),
        paths=tuple(paths),
        cluster=cluster,
        pools=tuple(pools),
        kserve=kserve,
        kubernetes_version=version,
        dockerfile=paths[-1] if remote else None,
        notes=notes,
    )
