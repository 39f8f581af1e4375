"""Kubernetes manifests for Triton pools, independent of the ensemble spec file.

At fleet scale the tiers of an ensemble are placed in *pools*: each pool is one Triton deployment that
serves its own model repository from object storage (``s3://bucket/prefix/<pool>``). This module
describes a pool with :class:`PoolDeployment` and the cluster-wide settings with :class:`ClusterSettings`,
and turns them into plain ``dict`` manifests:

* :func:`pool_manifests` -- Deployment, Service, headless Service (``<ensemble>-<pool>-pods``),
  HorizontalPodAutoscaler and PodDisruptionBudget of one pool (or, with ``kserve=True``, a KServe
  InferenceService, its PodDisruptionBudget and, for S3 credentials, a ServiceAccount);
* :func:`render_yaml` -- multi-document YAML;
* :func:`validate` -- strict validation against the Kubernetes JSON schemas bundled with
  ``kubernetes-validate`` (offline), plus the name and label rules the API server applies;
* :func:`write_manifests` -- validates every pool, then writes ``<pool>.yaml`` per pool, a ``README.md``
  summary and any extra files (such as a Dockerfile) given.

Choices made here (see the function docstrings for the details):

* **Model control mode** ``explicit`` with ``--load-model=*`` by default: every model of the repository
  loads at start (as in ``none`` mode), later loads happen only through the repository API, and a new
  model version reaches the pods through a rolling update of the Deployment (point ``repository_url`` at a
  new prefix), gated by the readiness probe and the PodDisruptionBudget, and undone with ``kubectl
  rollout undo``. ``poll`` is available (``model_control_mode="poll"``) but publishing to object storage is
  not atomic (objects are uploaded one by one), so a poll can load a half-written model, and replicas poll
  independently, so for a while they serve different versions -- including a router in one pool that
  disagrees with the tier it calls in another.
* **Two Services per pool**: a ClusterIP Service ``<ensemble>-<pool>`` for clients (one virtual IP, which
  balances per connection) and a headless Service ``<ensemble>-<pool>-pods`` (gRPC port only), whose DNS
  name resolves to the pool's *ready* pods. Another pool's router calls a pool through the headless one and
  balances its calls over the pods itself (gRPC ``round_robin``): through a virtual IP every long-lived
  HTTP/2 connection would stay pinned to one pod.
* **Probes** on Triton's HTTP port: startup and readiness ``GET /v2/health/ready`` (with
  ``--strict-readiness=true``: ready once every model is loaded), liveness ``GET /v2/health/live``. Triton
  opens its endpoints only after the start-up model loads, which read the repository from S3, so the
  startup probe allows ``startup_timeout_s`` (10 minutes by default) before the kubelet restarts the pod;
  liveness starts only after it succeeds.
* **Autoscaling** on CPU utilization (of the CPU request), plus, with ``queue_time_target_us``, a Pods
  metric :data:`QUEUE_TIME_METRIC` (mean queue time per request, microseconds) that a custom-metrics
  adapter must serve: :data:`QUEUE_TIME_ADAPTER_RULE` is the prometheus-adapter rule it expects.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from toolkit.k8s.objects import (
    ENGINE_CACHE_VOLUME,
    build_engines_script,
    pool_manifests,
    startup_failure_threshold,
)
from toolkit.k8s.pool import (
    ANNOTATION_PREFIX,
    DEFAULT_GPU_NODE_SELECTOR,
    DEFAULT_GPU_TOLERATIONS,
    KSERVE_API_VERSION,
    LIVENESS_FAILURES,
    LIVENESS_PERIOD_S,
    MANAGED_BY,
    PODS_SERVICE_SUFFIX,
    PRESTOP_SLEEP_S,
    PROBE_TIMEOUT_S,
    QUEUE_TIME_ADAPTER_RULE,
    QUEUE_TIME_METRIC,
    READINESS_FAILURES,
    READINESS_PERIOD_S,
    STARTUP_INITIAL_DELAY_S,
    STARTUP_PERIOD_S,
    TRITON_IMAGE,
    ClusterSettings,
    ManifestError,
    PoolDeployment,
    dns_label,
    object_name,
    pods_address,
    pods_service_name,
    service_address,
    triton_args,
)
from toolkit.k8s.validation import (
    render_yaml,
    supported_kubernetes_versions,
    validate,
)

__all__ = [
    "ANNOTATION_PREFIX",
    "ClusterSettings",
    "DEFAULT_GPU_NODE_SELECTOR",
    "DEFAULT_GPU_TOLERATIONS",
    "ENGINE_CACHE_VOLUME",
    "KSERVE_API_VERSION",
    "LIVENESS_FAILURES",
    "LIVENESS_PERIOD_S",
    "MANAGED_BY",
    "ManifestError",
    "PODS_SERVICE_SUFFIX",
    "PRESTOP_SLEEP_S",
    "PROBE_TIMEOUT_S",
    "PoolDeployment",
    "QUEUE_TIME_ADAPTER_RULE",
    "QUEUE_TIME_METRIC",
    "READINESS_FAILURES",
    "READINESS_PERIOD_S",
    "STARTUP_INITIAL_DELAY_S",
    "STARTUP_PERIOD_S",
    "TRITON_IMAGE",
    "apply_order",
    "build_engines_script",
    "dns_label",
    "object_name",
    "pods_address",
    "pods_service_name",
    "pool_manifests",
    "render_yaml",
    "service_address",
    "startup_failure_threshold",
    "summary_markdown",
    "supported_kubernetes_versions",
    "triton_args",
    "validate",
    "write_manifests",
]


def summary_markdown(
    cluster: ClusterSettings,
    pools: Sequence[PoolDeployment],
    *,
    kserve: bool = False,
    entry_pool: str | None = None,
    notes: Sequence[str] = (),
) -> str:
    """A Markdown summary of the pools: table, apply steps, S3 Secret and custom-metrics needs.

    Args:
        cluster: Cluster-wide settings.
        pools: The pools.
        kserve: The pools are in the KServe form.
        entry_pool: The pool clients call, whose router calls the other pools through their headless
            Services; None when the pools are independent.
        notes: More Markdown paragraphs, appended.
    """
    lines = [
        f"# Triton pools of `{cluster.ensemble}` (namespace `{cluster.namespace}`)",
        "",
        "Generated by adaptive-ranking-toolkit; regenerate rather than edit.",
        "",
    ]
    if kserve:
        lines += [
            "| Pool | Hardware | Requests | Replicas | Model repository | Address (gRPC) |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
    else:
        lines += [
            "| Pool | Hardware | Requests | Replicas | Model repository "
            "| Service (gRPC) | Ready pods, headless (gRPC) |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
    for pool in pools:
        gpus = f", {pool.gpus} GPU" if pool.gpus else ""
        replicas = (
            f"{pool.min_replicas}-{pool.max_replicas}"
            if pool.autoscale
            else str(pool.replicas or pool.min_replicas)
        )
        name = f"{pool.name} (entry)" if pool.name == entry_pool else pool.name
        address = (
            "(KServe)" if kserve else f"`{service_address(cluster, pool)}` | `{pods_address(cluster, pool)}`"
        )
        lines.append(
            f"| {name} | {pool.hardware} | {pool.cpu} CPU, {pool.memory}{gpus} | {replicas} "
            f"| `{pool.triton_repository_url}` | {address} |"
        )
    lines.append("")
    others = [pool for pool in pools if entry_pool is not None and pool.name != entry_pool]
    if entry_pool is not None and not kserve:
        entry = next(pool for pool in pools if pool.name == entry_pool)
        lines += [f"Clients call the entry pool `{entry_pool}` at `{service_address(cluster, entry)}`."]
        if others:
            lines[-1] += (
                f" Its router calls the tiers of the other pools through their headless `-pods` Services "
                f"({', '.join(f'`{pods_address(cluster, pool)}`' for pool in others)}): each DNS name "
                "resolves to the pool's ready pods, and the router balances its calls over them."
            )
        lines.append("")
    elif not kserve:
        lines += [
            "Each pool's ClusterIP Service balances per connection; its headless `-pods` Service resolves "
            "to the pool's ready pods, for gRPC clients that balance over them.",
            "",
        ]
    lines += ["Apply:", "", "```sh", f"kubectl create namespace {cluster.namespace}  # once"]
    secrets = sorted({pool.s3_secret for pool in pools if pool.s3_secret})
    for secret in secrets:
        lines.append(
            f"kubectl -n {cluster.namespace} create secret generic {secret} "
            "--from-literal=AWS_ACCESS_KEY_ID=... --from-literal=AWS_SECRET_ACCESS_KEY=... "
            "--from-literal=AWS_DEFAULT_REGION=..."
        )
    lines += [f"kubectl apply -f {pool.name}.yaml" for pool in apply_order(pools, entry_pool)]
    lines += ["```", ""]
    if others:
        lines += [
            f"The pools the router calls are applied before the entry pool `{entry_pool}`; until they are "
            "ready its router answers from the tiers of its own pool.",
            "",
        ]
    if kserve:
        lines += [
            "The KServe form needs KServe installed with RawDeployment mode and its Triton serving runtime.",
            "",
        ]
    queue_pools = [pool.name for pool in pools if pool.queue_time_target_us is not None]
    if queue_pools and not kserve:
        lines += [
            f"The HPAs of {', '.join(queue_pools)} also read the "
            f"Pods metric `{QUEUE_TIME_METRIC}`; a custom-metrics adapter must serve it, for example with "
            "this prometheus-adapter rule:",
            "",
            "```yaml",
            QUEUE_TIME_ADAPTER_RULE.rstrip("\n"),
            "```",
            "",
        ]
    for note in notes:
        lines += [note.rstrip("\n"), ""]
    return "\n".join(lines)


def apply_order(pools: Sequence[PoolDeployment], entry_pool: str | None = None) -> list[PoolDeployment]:
    """The pools in the order to apply them: the entry pool last, after the pools its router calls."""
    return [pool for pool in pools if pool.name != entry_pool] + [
        pool for pool in pools if pool.name == entry_pool
    ]


def write_manifests(
    out_dir: Path | str,
    cluster: ClusterSettings,
    pools: Sequence[PoolDeployment],
    *,
    kserve: bool = False,
    kubernetes_version: str = "1.30",
    entry_pool: str | None = None,
    notes: Sequence[str] = (),
    extra_files: Mapping[str, str] | None = None,
) -> list[Path]:
    """Validate every pool's manifests, then write ``<pool>.yaml`` for each, ``README.md`` and extra files.

    Nothing is written unless every manifest validates. Files are replaced atomically; other files in
    ``out_dir`` are left alone.

    Args:
        out_dir: Folder to write to (created).
        cluster: Cluster-wide settings.
        pools: The pools; names must differ.
        kserve: Write the KServe form (see :func:`pool_manifests`).
        kubernetes_version: Version to validate against.
        entry_pool: The pool clients call, whose router calls the others (see :func:`summary_markdown`).
        notes: More Markdown paragraphs for the summary.
        extra_files: More files to write, file name to text (such as a Dockerfile).

    Returns:
        The paths written: the pools' files in order, the summary, then the extra files.

    Raises:
        ManifestError: No pools, two pools share a name, the entry pool is not one of them, an extra file
            name is not a plain file name or clashes, or a manifest does not validate.
    """
    if not pools:
        raise ManifestError("No pools to write.")
    names = [pool.name for pool in pools]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ManifestError(f"Pool names must differ; repeated: {', '.join(duplicates)}.")
    if entry_pool is not None and entry_pool not in names:
        raise ManifestError(f"Entry pool {entry_pool!r} is not one of the pools ({', '.join(names)}).")
    extra = dict(extra_files or {})
    taken = {f"{name}.yaml" for name in names} | {"README.md"}
    for filename in extra:
        if filename in taken or not filename or filename != Path(filename).name or filename.startswith("."):
            raise ManifestError(f"Extra file name {filename!r} is not a plain file name of its own.")
    rendered: list[tuple[str, str]] = []
    for pool in pools:
        manifests = pool_manifests(cluster, pool, kserve=kserve)
        validate(manifests, kubernetes_version)
        header = (
            f"# Pool {pool.name} of {cluster.ensemble}: generated by {MANAGED_BY}; "
            "regenerate rather than edit.\n"
        )
        rendered.append((f"{pool.name}.yaml", header + render_yaml(manifests)))
    summary = summary_markdown(cluster, pools, kserve=kserve, entry_pool=entry_pool, notes=notes)
    rendered.append(("README.md", summary))
    rendered += list(extra.items())
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for filename, text in rendered:
        path = out / filename
        temporary = out / f".{filename}.{os.getpid()}.tmp"
        try:
            temporary.write_text(text, encoding="utf-8")
            os.replace(temporary, path)
        except BaseException:
            temporary.unlink(missing_ok=True)
            raise
        written.append(path)
    return written
