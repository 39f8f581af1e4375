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

import math
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal

import yaml

from toolkit.errors import ToolkitError, one_line
from toolkit.ngc import DEFAULT_IMAGE, ENGINE_CACHE_ROOT

TRITON_IMAGE = DEFAULT_IMAGE
"""The NGC image of Triton 2.51 (24.10), the release the toolkit's bundled tritonserver matches."""

MANAGED_BY = "adaptive-ranking-toolkit"
ANNOTATION_PREFIX = "adaptive-ranking-toolkit/"

QUEUE_TIME_METRIC = "nv_inference_queue_duration_us_per_request"
"""Pods metric the HPA reads when a pool sets ``queue_time_target_us``: mean queue time per request (us)."""

QUEUE_TIME_ADAPTER_RULE = """\
# prometheus-adapter (custom.metrics.k8s.io) rule serving the Pods metric
# nv_inference_queue_duration_us_per_request: the mean time a request of the pod waited in
# Triton's queues over the last minute, in microseconds, over every model the pod serves.
# Prometheus must scrape the pods (prometheus.io/* annotations) and label the series with
# namespace and pod (the usual kubernetes-pods scrape job does).
rules:
  custom:
    - seriesQuery: 'nv_inference_queue_duration_us{namespace!="",pod!=""}'
      resources:
        overrides:
          namespace: {resource: namespace}
          pod: {resource: pod}
      name:
        matches: ^nv_inference_queue_duration_us$
        as: nv_inference_queue_duration_us_per_request
      metricsQuery: >-
        sum(rate(nv_inference_queue_duration_us{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>)
        / clamp_min(sum(rate(nv_inference_request_success{<<.LabelMatchers>>}[1m])) by (<<.GroupBy>>), 1)
"""
"""The custom-metrics adapter rule the queue-time HPA metric needs (also written as an HPA annotation)."""

DEFAULT_GPU_TOLERATIONS: tuple[Mapping[str, str], ...] = (
    MappingProxyType({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}),
)
DEFAULT_GPU_NODE_SELECTOR: Mapping[str, str] = MappingProxyType({"nvidia.com/gpu.present": "true"})

KSERVE_API_VERSION = "serving.kserve.io/v1beta1"

# Probe timings (seconds).
STARTUP_INITIAL_DELAY_S = 10
STARTUP_PERIOD_S = 10
READINESS_PERIOD_S = 5
READINESS_FAILURES = 3
LIVENESS_PERIOD_S = 10
LIVENESS_FAILURES = 6
PROBE_TIMEOUT_S = 5
PRESTOP_SLEEP_S = 5
"""The pod keeps serving this long after it is told to stop, while endpoints drop it from the Service."""

_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_QUANTITY = re.compile(r"^[+]?(\d+(\.\d*)?|\.\d+)(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]|[eE][+-]?\d+)?$")
_S3_URL = re.compile(
    r"^s3://(?:(?P<endpoint>(?:https?://)?[A-Za-z0-9.-]+:\d+)/)?"
    r"(?P<bucket>[a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(?P<prefix>/[^\s]*)?$"
)
_S3_ENDPOINT = re.compile(r"^(?P<scheme>https?://)?(?P<host>[A-Za-z0-9.-]+):(?P<port>\d+)$")
_SELECTOR_KEYS = ("app.kubernetes.io/name", "app.kubernetes.io/instance")

PODS_SERVICE_SUFFIX = "-pods"
"""Suffix of a pool's headless Service name: ``<ensemble>-<pool>-pods``."""


class ManifestError(ToolkitError, ValueError):
    """A pool description is inconsistent, or a manifest does not validate.

    Derives from :class:`ValueError` as well, so callers outside the toolkit can catch that.
    """


def dns_label(text: str) -> str:
    """Turn ``text`` into a DNS-1035 label (lowercase, ``-`` for other characters), for object names.

    Args:
        text: A name such as a spec's ensemble name (``ads_ranking``).

    Returns:
        The label, e.g. ``ads-ranking``; it may still be empty or start with a digit, which
        :class:`ClusterSettings` rejects.
    """
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]", "-", text.lower())).strip("-")[:63].rstrip("-")


def _frozen_mapping(value: Mapping[str, str] | None, what: str) -> Mapping[str, str]:
    items = dict(value or {})
    for key, item in items.items():
        if not isinstance(key, str) or not isinstance(item, str):
            raise ManifestError(f"{what} must map strings to strings, got {key!r}: {item!r}.")
    return MappingProxyType(items)


def _check_labels(labels: Mapping[str, str], what: str) -> None:
    for key, value in labels.items():
        problem = _label_key_problem(key)
        if problem:
            raise ManifestError(f"{what}: label key {key!r} {problem}.")
        if len(value) > 63 or not _LABEL_VALUE.match(value):
            raise ManifestError(
                f"{what}: label {key}={value!r} is not a valid label value (at most 63 characters, "
                "alphanumerics, '-', '_' or '.', starting and ending with an alphanumeric)."
            )


def _label_key_problem(key: str) -> str | None:
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS1123_SUBDOMAIN.match(prefix)):
        return "has a prefix that is not a DNS subdomain"
    if not name or len(name) > 63 or not _QUALIFIED_NAME.match(name):
        return "is not a qualified name (at most 63 alphanumerics, '-', '_' or '.' after an optional prefix/)"
    return None


def _check_quantity(value: str | None, what: str) -> None:
    if value is None:
        return
    if not isinstance(value, str) or not _QUANTITY.match(value):
        raise ManifestError(
            f"{what} must be a Kubernetes quantity string such as '2', '500m', '8Gi', got {value!r}."
        )


def _check_int(value: Any, what: str, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ManifestError(f"{what} must be an integer of at least {minimum}, got {value!r}.")
    if maximum is not None and value > maximum:
        raise ManifestError(f"{what} must be at most {maximum}, got {value!r}.")


@dataclass(frozen=True)
class ClusterSettings:
    """Settings shared by every pool of one ensemble in one cluster.

    Attributes:
        namespace: Namespace of every object.
        ensemble: The ensemble's name as a DNS-1035 label (``ads-ranking``; see :func:`dns_label`
            for a spec name with underscores). Objects are named ``<ensemble>-<pool>``.
        image: Default Triton image of the pools (the NGC image matching the bundled server).
        image_pull_secrets: Secrets to pull the image with (NGC images are public; a mirror may not be).
        labels: Extra labels on every object and pod.
        gpu_node_selector: Node selector of GPU pools. The default is the label NVIDIA's GPU feature
            discovery (GPU Operator) sets; pass ``{}`` on clusters without it -- the ``nvidia.com/gpu``
            request alone already keeps GPU pools on GPU nodes.
        gpu_tolerations: Tolerations of GPU pools (GPU nodes are usually tainted ``nvidia.com/gpu``).
        priority_class: ``priorityClassName`` of every pod, or None.
        cluster_domain: The cluster's DNS domain, for the service addresses in the summary.

    Raises:
        ManifestError: A name or label is not valid in Kubernetes.
    """

    namespace: str
    ensemble: str
    image: str = TRITON_IMAGE
    image_pull_secrets: tuple[str, ...] = ()
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    gpu_node_selector: Mapping[str, str] = field(
        default_factory=lambda: dict(DEFAULT_GPU_NODE_SELECTOR), hash=False
    )
    gpu_tolerations: tuple[Mapping[str, str], ...] = field(default=DEFAULT_GPU_TOLERATIONS, hash=False)
    priority_class: str | None = None
    cluster_domain: str = "cluster.local"

    def __post_init__(self) -> None:
        if not isinstance(self.namespace, str) or not _DNS1123_LABEL.match(self.namespace):
            raise ManifestError(
                f"Namespace {self.namespace!r} is not a DNS-1123 label (lowercase alphanumerics and '-')."
            )
        if not isinstance(self.ensemble, str) or not _DNS1035_LABEL.match(self.ensemble):
            hint = dns_label(self.ensemble) if isinstance(self.ensemble, str) else ""
            suggestion = f" (for example {hint!r})" if hint and _DNS1035_LABEL.match(hint) else ""
            raise ManifestError(
                f"Ensemble name {self.ensemble!r} is not a DNS-1035 label: lowercase alphanumerics and '-', "
                f"starting with a letter{suggestion}."
            )
        if not isinstance(self.image, str) or not self.image.strip():
            raise ManifestError("The Triton image must not be empty.")
        object.__setattr__(self, "image_pull_secrets", tuple(self.image_pull_secrets))
        for secret in self.image_pull_secrets:
            if not _DNS1123_SUBDOMAIN.match(secret):
                raise ManifestError(f"Image pull secret {secret!r} is not a valid Secret name.")
        object.__setattr__(self, "labels", _frozen_mapping(self.labels, "Cluster labels"))
        _check_labels(self.labels, "Cluster labels")
        for key in self.labels:
            if key in _SELECTOR_KEYS:
                raise ManifestError(f"Cluster label {key!r} is set by the generator (it selects the pods).")
        object.__setattr__(
            self, "gpu_node_selector", _frozen_mapping(self.gpu_node_selector, "GPU node selector")
        )
        _check_labels(self.gpu_node_selector, "GPU node selector")
        object.__setattr__(
            self,
            "gpu_tolerations",
            tuple(_frozen_mapping(item, "GPU toleration") for item in self.gpu_tolerations),
        )
        if self.priority_class is not None and not _DNS1123_SUBDOMAIN.match(self.priority_class):
            raise ManifestError(f"Priority class {self.priority_class!r} is not a valid name.")
        if not _DNS1123_SUBDOMAIN.match(self.cluster_domain):
            raise ManifestError(f"Cluster domain {self.cluster_domain!r} is not a DNS name.")


@dataclass(frozen=True)
class PoolDeployment:
    """One pool: a Triton deployment serving one model repository.

    Attributes:
        name: The pool's name (``cpu``, ``big``); a DNS-1123 label.
        repository_url: The pool's model repository, ``s3://bucket/prefix/<pool>``; a custom
            S3-compatible endpoint goes in ``s3_endpoint`` or in the URL as Triton writes it,
            ``s3://host:port/bucket/prefix`` (``s3://https://host:port/...`` for HTTPS).
        cpu: CPU request (a quantity: ``"4"``, ``"500m"``); the HPA's utilization is relative to it.
        memory: Memory request and limit (``"8Gi"``). The ``/dev/shm`` volume counts towards it.
        hardware: ``cpu`` or ``gpu``; a GPU pool requests ``gpus`` ``nvidia.com/gpu`` and gets the
            cluster's GPU node selector and tolerations.
        gpus: GPUs per pod (0 for CPU pools, at least 1 for GPU pools).
        min_replicas: HPA minimum (at least 1).
        max_replicas: HPA maximum.
        replicas: ``spec.replicas`` of the Deployment, or None to leave it to the HPA (applying a
            manifest that sets it resets the HPA's count on every ``kubectl apply``). Without
            autoscaling, None means ``min_replicas``.
        autoscale: Whether to generate the HorizontalPodAutoscaler.
        image: The Triton image, or None for the cluster's.
        grpc_port: Triton's gRPC port (Service port ``grpc``).
        http_port: Triton's HTTP port (Service port ``http``; the probes use it).
        metrics_port: Triton's Prometheus metrics port (Service port ``metrics``; scraped).
        s3_secret: Name of a Secret with the keys ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY``
            (and optionally ``AWS_DEFAULT_REGION``, ``AWS_SESSION_TOKEN``), passed to Triton as
            environment variables; None to rely on the pod's identity (for example IRSA through
            ``service_account``).
        s3_endpoint: A custom S3-compatible endpoint, ``host:port`` or ``https://host:port``; written
            into Triton's repository URL.
        s3_region: ``AWS_DEFAULT_REGION``; None to take it from the Secret, when it has the key.
        service_account: ``serviceAccountName`` of the pods, or None.
        cpu_target_utilization: HPA target, percent of the CPU request.
        queue_time_target_us: HPA target for :data:`QUEUE_TIME_METRIC` (mean queue time per request,
            microseconds) through a custom-metrics adapter (:data:`QUEUE_TIME_ADAPTER_RULE`), or None.
        model_control_mode: ``explicit`` (load every model at start with ``--load-model=*``; changes roll
            out as new pods) or ``poll`` (follow the repository every ``repository_poll_secs``).
        repository_poll_secs: Poll interval in ``poll`` mode.
        startup_timeout_s: How long a pod may take to load its models before it is restarted.
        exit_timeout_s: Triton's ``--exit-timeout-secs`` (in-flight requests at shutdown).
        shm_size: Size of the memory-backed ``/dev/shm`` (the python backend's tensors go through it).
        cpu_limit: CPU limit, or None for none (CFS throttling hurts tail latency); memory always gets a
            limit equal to its request.
        max_unavailable: PodDisruptionBudget ``maxUnavailable`` (at least 1, so node drains proceed).
        node_selector: Extra node selector labels.
        labels: Extra labels on the pool's objects and pods.
        env: Extra plain environment variables of the Triton container (e.g. other pools' addresses).
        extra_args: More ``tritonserver`` arguments, passed last and as given.
        engine_cache: GPU pools: size of a ReadWriteMany PersistentVolumeClaim mounted where ONNX
            Runtime's TensorRT accelerator keeps its engines (:data:`ENGINE_CACHE_ROOT`), so a new pod
            loads the engines the first one built instead of building them on its first requests;
            None for none.
        engine_cache_class: StorageClass of that claim, or None for the cluster's default.
        build_engines: GPU pools with ``engine_cache``: also write a Job that runs the pool's own image
            on its repository until every model is loaded (loading runs each model's warmup, which
            builds its engines with the image's TensorRT into the cache), then exits.

    Raises:
        ManifestError: A value is out of range or inconsistent with another.
    """

    name: str
    repository_url: str
    cpu: str
    memory: str
    hardware: Literal["cpu", "gpu"] = "cpu"
    gpus: int = 0
    min_replicas: int = 1
    max_replicas: int = 4
    replicas: int | None = None
    autoscale: bool = True
    image: str | None = None
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    s3_secret: str | None = None
    s3_endpoint: str | None = None
    s3_region: str | None = None
    service_account: str | None = None
    cpu_target_utilization: int = 70
    queue_time_target_us: int | None = None
    model_control_mode: Literal["explicit", "poll"] = "explicit"
    repository_poll_secs: int = 30
    startup_timeout_s: int = 600
    exit_timeout_s: int = 30
    shm_size: str = "1Gi"
    cpu_limit: str | None = None
    max_unavailable: int = 1
    node_selector: Mapping[str, str] = field(default_factory=dict, hash=False)
    labels: Mapping[str, str] = field(default_factory=dict, hash=False)
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    extra_args: tuple[str, ...] = ()
    engine_cache: str | None = None
    engine_cache_class: str | None = None
    build_engines: bool = False

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or len(self.name) > 63 or not _DNS1123_LABEL.match(self.name):
            raise ManifestError(
                f"Pool name {self.name!r} is not a DNS-1123 label (lowercase alphanumerics and '-')."
            )
        what = f"Pool {self.name}"
        _split_s3(self.repository_url, self.s3_endpoint, what)
        _check_quantity(self.cpu, f"{what}: cpu")
        _check_quantity(self.memory, f"{what}: memory")
        _check_quantity(self.shm_size, f"{what}: shm_size")
        _check_quantity(self.cpu_limit, f"{what}: cpu_limit")
        if self.hardware not in ("cpu", "gpu"):
            raise ManifestError(f"{what}: hardware must be 'cpu' or 'gpu', got {self.hardware!r}.")
        _check_int(self.gpus, f"{what}: gpus", 0)
        if self.hardware == "gpu" and self.gpus < 1:
            raise ManifestError(f"{what}: a GPU pool needs gpus of at least 1, got {self.gpus}.")
        if self.hardware == "cpu" and self.gpus:
            raise ManifestError(f"{what}: a CPU pool requests no GPUs, got gpus={self.gpus}.")
        _check_int(self.min_replicas, f"{what}: min_replicas", 1)
        _check_int(self.max_replicas, f"{what}: max_replicas", self.min_replicas)
        if self.replicas is not None:
            _check_int(self.replicas, f"{what}: replicas", self.min_replicas, self.max_replicas)
        if self.image is not None and (not isinstance(self.image, str) or not self.image.strip()):
            raise ManifestError(f"{what}: the image must not be empty (None means the cluster's).")
        ports = {"grpc_port": self.grpc_port, "http_port": self.http_port, "metrics_port": self.metrics_port}
        for port_name, port in ports.items():
            _check_int(port, f"{what}: {port_name}", 1, 65535)
        if len(set(ports.values())) != len(ports):
            raise ManifestError(f"{what}: the gRPC, HTTP and metrics ports must differ, got {ports}.")
        for secret_field in ("s3_secret", "service_account"):
            value = getattr(self, secret_field)
            if value is not None and not _DNS1123_SUBDOMAIN.match(value):
                raise ManifestError(f"{what}: {secret_field} {value!r} is not a valid object name.")
        if self.s3_region is not None and not re.match(r"^[a-z0-9-]+$", self.s3_region):
            raise ManifestError(f"{what}: s3_region {self.s3_region!r} is not a region name.")
        _check_int(self.cpu_target_utilization, f"{what}: cpu_target_utilization", 1)
        if self.queue_time_target_us is not None:
            _check_int(self.queue_time_target_us, f"{what}: queue_time_target_us", 1)
        if self.model_control_mode not in ("explicit", "poll"):
            raise ManifestError(
                f"{what}: model_control_mode must be 'explicit' or 'poll', got {self.model_control_mode!r}."
            )
        _check_int(self.repository_poll_secs, f"{what}: repository_poll_secs", 1)
        _check_int(self.startup_timeout_s, f"{what}: startup_timeout_s", STARTUP_INITIAL_DELAY_S)
        _check_int(self.exit_timeout_s, f"{what}: exit_timeout_s", 0)
        _check_int(self.max_unavailable, f"{what}: max_unavailable", 1)
        for name in ("node_selector", "labels", "env"):
            object.__setattr__(self, name, _frozen_mapping(getattr(self, name), f"{what}: {name}"))
        _check_labels(self.node_selector, f"{what}: node_selector")
        _check_labels(self.labels, f"{what}: labels")
        for key in self.labels:
            if key in _SELECTOR_KEYS:
                raise ManifestError(f"{what}: label {key!r} is set by the generator (it selects the pods).")
        for key in self.env:
            if not re.match(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$", key):
                raise ManifestError(f"{what}: environment variable name {key!r} is not valid.")
            if key.startswith("AWS_"):
                raise ManifestError(f"{what}: set S3 credentials with s3_secret/s3_region, not env {key}.")
        _check_quantity(self.engine_cache, f"{what}: engine_cache")
        if self.engine_cache_class is not None and not _DNS1123_SUBDOMAIN.match(self.engine_cache_class):
            raise ManifestError(
                f"{what}: engine_cache_class {self.engine_cache_class!r} is not an object name."
            )
        if self.build_engines and (self.hardware != "gpu" or self.engine_cache is None):
            raise ManifestError(
                f"{what}: build_engines needs a GPU pool with an engine_cache to build the engines into."
            )
        object.__setattr__(self, "extra_args", tuple(self.extra_args))
        for arg in self.extra_args:
            if not isinstance(arg, str) or not arg.startswith("--"):
                raise ManifestError(f"{what}: extra tritonserver argument {arg!r} must start with '--'.")

    @property
    def triton_repository_url(self) -> str:
        """The repository URL as Triton reads it (``s3://host:port/bucket/...`` with an endpoint)."""
        endpoint, bucket_path = _split_s3(self.repository_url, self.s3_endpoint, self.name)
        return f"s3://{endpoint}/{bucket_path}" if endpoint else f"s3://{bucket_path}"


def _split_s3(url: str, endpoint: str | None, what: str) -> tuple[str | None, str]:
    """Return (endpoint or None, ``bucket/prefix``) of an S3 repository URL and a separate endpoint."""
    match = _S3_URL.match(url) if isinstance(url, str) else None
    if not match:
        raise ManifestError(
            f"{what}: repository_url must be s3://bucket/prefix (or s3://host:port/bucket/prefix for an "
            f"S3-compatible store), got {url!r}."
        )
    if endpoint is not None:
        if match["endpoint"]:
            raise ManifestError(
                f"{what}: the repository URL {url!r} already names an endpoint; "
                f"drop s3_endpoint {endpoint!r}."
            )
        if not isinstance(endpoint, str) or not _S3_ENDPOINT.match(endpoint):
            raise ManifestError(
                f"{what}: s3_endpoint must be host:port or https://host:port (Triton needs the port), "
                f"got {endpoint!r}."
            )
    return match["endpoint"] or endpoint, match["bucket"] + (match["prefix"] or "")


def object_name(cluster: ClusterSettings, pool: PoolDeployment) -> str:
    """Name of the pool's objects, ``<ensemble>-<pool>``.

    Raises:
        ManifestError: It is longer than the 63 characters a Service name allows.
    """
    name = f"{cluster.ensemble}-{pool.name}"
    if len(name) > 63:
        raise ManifestError(
            f"Object name {name!r} is longer than 63 characters; shorten the ensemble or pool."
        )
    return name


def service_address(cluster: ClusterSettings, pool: PoolDeployment) -> str:
    """The gRPC address of a pool's Service inside the cluster, ``name.namespace.svc.domain:port``."""
    return f"{object_name(cluster, pool)}.{cluster.namespace}.svc.{cluster.cluster_domain}:{pool.grpc_port}"


def pods_service_name(cluster: ClusterSettings, pool: PoolDeployment) -> str:
    """Name of the pool's headless Service, ``<ensemble>-<pool>-pods``.

    Raises:
        ManifestError: It is longer than the 63 characters a Service name allows.
    """
    name = object_name(cluster, pool) + PODS_SERVICE_SUFFIX
    if len(name) > 63:
        raise ManifestError(
            f"Service name {name!r} is longer than 63 characters; shorten the ensemble or pool."
        )
    return name


def pods_address(cluster: ClusterSettings, pool: PoolDeployment) -> str:
    """The gRPC address of a pool's headless Service: its DNS name resolves to every ready pod.

    This is the address another pool's router calls the pool at (``name-pods.namespace.svc.domain:port``);
    the pods listen on the same port, since a headless Service maps no ports.
    """
    host = f"{pods_service_name(cluster, pool)}.{cluster.namespace}.svc.{cluster.cluster_domain}"
    return f"{host}:{pool.grpc_port}"


def triton_args(pool: PoolDeployment) -> list[str]:
    """The ``tritonserver`` arguments of a pool's container (the command is ``tritonserver``).

    Args:
        pool: The pool.
    """
    args = [
        f"--model-repository={pool.triton_repository_url}",
        f"--model-control-mode={pool.model_control_mode}",
    ]
    if pool.model_control_mode == "explicit":
        args.append("--load-model=*")
    else:
        args.append(f"--repository-poll-secs={pool.repository_poll_secs}")
    args += [
        "--strict-readiness=true",
        f"--http-port={pool.http_port}",
        f"--grpc-port={pool.grpc_port}",
        f"--metrics-port={pool.metrics_port}",
        "--allow-metrics=true",
        f"--exit-timeout-secs={pool.exit_timeout_s}",
    ]
    return args + list(pool.extra_args)


def _selector(name: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": "tritonserver", "app.kubernetes.io/instance": name}


def _labels(cluster: ClusterSettings, pool: PoolDeployment, name: str) -> dict[str, str]:
    labels = _selector(name)
    labels.update(
        {
            "app.kubernetes.io/component": "inference-pool",
            "app.kubernetes.io/part-of": cluster.ensemble,
            "app.kubernetes.io/managed-by": MANAGED_BY,
            f"{ANNOTATION_PREFIX}pool": pool.name,
            f"{ANNOTATION_PREFIX}hardware": pool.hardware,
        }
    )
    labels.update(cluster.labels)
    labels.update(pool.labels)
    return labels


def _metadata(cluster: ClusterSettings, pool: PoolDeployment, name: str) -> dict[str, Any]:
    return {"name": name, "namespace": cluster.namespace, "labels": _labels(cluster, pool, name)}


def _resources(pool: PoolDeployment) -> dict[str, dict[str, str | int]]:
    requests: dict[str, str | int] = {"cpu": pool.cpu, "memory": pool.memory}
    limits: dict[str, str | int] = {"memory": pool.memory}
    if pool.cpu_limit is not None:
        limits["cpu"] = pool.cpu_limit
    if pool.gpus:
        requests["nvidia.com/gpu"] = pool.gpus
        limits["nvidia.com/gpu"] = pool.gpus
    return {"requests": requests, "limits": limits}


def _s3_env(pool: PoolDeployment) -> list[dict[str, Any]]:
    env: list[dict[str, Any]] = []
    if pool.s3_secret is not None:
        for key, optional in (
            ("AWS_ACCESS_KEY_ID", False),
            ("AWS_SECRET_ACCESS_KEY", False),
            ("AWS_SESSION_TOKEN", True),
        ):
            ref: dict[str, Any] = {"name": pool.s3_secret, "key": key}
            if optional:
                ref["optional"] = True
            env.append({"name": key, "valueFrom": {"secretKeyRef": ref}})
    if pool.s3_region is not None:
        env.append({"name": "AWS_DEFAULT_REGION", "value": pool.s3_region})
    elif pool.s3_secret is not None:
        env.append(
            {
                "name": "AWS_DEFAULT_REGION",
                "valueFrom": {
                    "secretKeyRef": {"name": pool.s3_secret, "key": "AWS_DEFAULT_REGION", "optional": True}
                },
            }
        )
    return env


def _container_env(pool: PoolDeployment) -> list[dict[str, Any]]:
    """The Triton container's environment: the S3 settings, then the pool's own variables."""
    return _s3_env(pool) + [{"name": key, "value": value} for key, value in pool.env.items()]


def _http_probe(
    path: str, pool: PoolDeployment, period: int, failures: int, delay: int = 0
) -> dict[str, Any]:
    probe: dict[str, Any] = {"httpGet": {"path": path, "port": pool.http_port, "scheme": "HTTP"}}
    if delay:
        probe["initialDelaySeconds"] = delay
    probe.update({"periodSeconds": period, "timeoutSeconds": PROBE_TIMEOUT_S, "failureThreshold": failures})
    return probe


def startup_failure_threshold(pool: PoolDeployment) -> int:
    """Startup probe failures allowed, so that delay + period x failures covers ``startup_timeout_s``."""
    return max(1, math.ceil((pool.startup_timeout_s - STARTUP_INITIAL_DELAY_S) / STARTUP_PERIOD_S))


def _shm_volume(pool: PoolDeployment) -> dict[str, Any]:
    return {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": pool.shm_size}}


ENGINE_CACHE_VOLUME = "trt-engine-cache"
"""Name of the engine-cache volume in the pods and the suffix of its PersistentVolumeClaim."""


def _engine_cache(pool: PoolDeployment) -> bool:
    return pool.hardware == "gpu" and pool.engine_cache is not None


def _volumes(pool: PoolDeployment, name: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The pod's volumes and the Triton container's mounts: ``/dev/shm`` and, when kept, the engine cache."""
    volumes = [_shm_volume(pool)]
    mounts = [{"name": "dshm", "mountPath": "/dev/shm"}]
    if _engine_cache(pool):
        volumes.append(
            {
                "name": ENGINE_CACHE_VOLUME,
                "persistentVolumeClaim": {"claimName": f"{name}-{ENGINE_CACHE_VOLUME}"},
            }
        )
        mounts.append({"name": ENGINE_CACHE_VOLUME, "mountPath": ENGINE_CACHE_ROOT})
    return volumes, mounts


def _engine_cache_claim(cluster: ClusterSettings, pool: PoolDeployment, name: str) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": pool.engine_cache}},
    }
    if pool.engine_cache_class is not None:
        spec["storageClassName"] = pool.engine_cache_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _metadata(cluster, pool, f"{name}-{ENGINE_CACHE_VOLUME}"),
        "spec": spec,
    }


def build_engines_script(pool: PoolDeployment) -> str:
    """The engine-build Job's shell script: serve the repository until every model is ready, then stop.

    Loading a model runs its warmup request, which makes ONNX Runtime's TensorRT accelerator build the
    model's engines with the image's own TensorRT and write them into the cache. The script fails when
    the server exits early or the models are not ready within ``startup_timeout_s``.
    """
    args = " ".join(shlex.quote(arg) for arg in triton_args(pool))
    ready = f"http://127.0.0.1:{pool.http_port}/v2/health/ready"
    return "\n".join(
        [
            f"tritonserver {args} &",
            "server=$!",
            f"deadline=$(( $(date +%s) + {pool.startup_timeout_s} ))",
            f"probe=\"import urllib.request as u; u.urlopen('{ready}', timeout=5)\"",
            'until python3 -c "$probe" 2>/dev/null; do',
            '  if ! kill -0 "$server" 2>/dev/null; then',
            '    echo "tritonserver exited before its models were ready"; exit 1',
            "  fi",
            '  if [ "$(date +%s)" -ge "$deadline" ]; then',
            f'    echo "models not ready after {pool.startup_timeout_s} s"; kill "$server"; exit 1',
            "  fi",
            "  sleep 5",
            "done",
            f'echo "every model is loaded; its TensorRT engines are in {ENGINE_CACHE_ROOT}"',
            'kill -TERM "$server"',
            'wait "$server" || true',
        ]
    )


def _build_engines_job(cluster: ClusterSettings, pool: PoolDeployment, name: str) -> dict[str, Any]:
    volumes, mounts = _volumes(pool, name)
    container: dict[str, Any] = {
        "name": "build-engines",
        "image": pool.image or cluster.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["/bin/sh", "-c", build_engines_script(pool)],
    }
    env = _container_env(pool)
    if env:
        container["env"] = env
    container.update({"resources": _resources(pool), "volumeMounts": mounts})
    pod_spec = _scheduling(cluster, pool)
    pod_spec.update({"restartPolicy": "Never", "containers": [container], "volumes": volumes})
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": _metadata(cluster, pool, f"{name}-build-engines"),
        "spec": {
            "backoffLimit": 1,
            "activeDeadlineSeconds": pool.startup_timeout_s + 300,
            "template": {
                "metadata": {"labels": _labels(cluster, pool, f"{name}-build-engines")},
                "spec": pod_spec,
            },
        },
    }


def _scheduling(cluster: ClusterSettings, pool: PoolDeployment) -> dict[str, Any]:
    """Pod-level scheduling fields shared by the Deployment and the KServe predictor."""
    spec: dict[str, Any] = {}
    if pool.service_account is not None:
        spec["serviceAccountName"] = pool.service_account
    if cluster.priority_class is not None:
        spec["priorityClassName"] = cluster.priority_class
    if cluster.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": secret} for secret in cluster.image_pull_secrets]
    node_selector = dict(cluster.gpu_node_selector) if pool.hardware == "gpu" else {}
    node_selector.update(pool.node_selector)
    if node_selector:
        spec["nodeSelector"] = node_selector
    if pool.hardware == "gpu" and cluster.gpu_tolerations:
        spec["tolerations"] = [dict(item) for item in cluster.gpu_tolerations]
    return spec


def _deployment(cluster: ClusterSettings, pool: PoolDeployment, name: str) -> dict[str, Any]:
    volumes, mounts = _volumes(pool, name)
    env = _container_env(pool)
    container: dict[str, Any] = {
        "name": "tritonserver",
        "image": pool.image or cluster.image,
        "imagePullPolicy": "IfNotPresent",
        "command": ["tritonserver"],
        "args": triton_args(pool),
        "ports": [
            {"name": "http", "containerPort": pool.http_port, "protocol": "TCP"},
            {"name": "grpc", "containerPort": pool.grpc_port, "protocol": "TCP"},
            {"name": "metrics", "containerPort": pool.metrics_port, "protocol": "TCP"},
        ],
    }
    if env:
        container["env"] = env
    container.update(
        {
            "resources": _resources(pool),
            "startupProbe": _http_probe(
                "/v2/health/ready",
                pool,
                STARTUP_PERIOD_S,
                startup_failure_threshold(pool),
                delay=STARTUP_INITIAL_DELAY_S,
            ),
            "readinessProbe": _http_probe("/v2/health/ready", pool, READINESS_PERIOD_S, READINESS_FAILURES),
            "livenessProbe": _http_probe("/v2/health/live", pool, LIVENESS_PERIOD_S, LIVENESS_FAILURES),
            "lifecycle": {"preStop": {"exec": {"command": ["sleep", str(PRESTOP_SLEEP_S)]}}},
            "volumeMounts": mounts,
        }
    )
    selector = _selector(name)
    pod_spec: dict[str, Any] = _scheduling(cluster, pool)
    pod_spec.update(
        {
            "terminationGracePeriodSeconds": PRESTOP_SLEEP_S + pool.exit_timeout_s + 10,
            "topologySpreadConstraints": [
                {
                    "maxSkew": 1,
                    "topologyKey": "kubernetes.io/hostname",
                    "whenUnsatisfiable": "ScheduleAnyway",
                    "labelSelector": {"matchLabels": dict(selector)},
                }
            ],
            "containers": [container],
            "volumes": volumes,
        }
    )
    spec: dict[str, Any] = {}
    if pool.replicas is not None or not pool.autoscale:
        spec["replicas"] = pool.replicas if pool.replicas is not None else pool.min_replicas
    spec.update(
        {
            "selector": {"matchLabels": selector},
            # New pods load their models for minutes: surge one, never drop serving capacity.
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "progressDeadlineSeconds": pool.startup_timeout_s + 300,
            "template": {
                "metadata": {
                    "labels": _labels(cluster, pool, name),
                    "annotations": {
                        "prometheus.io/scrape": "true",
                        "prometheus.io/port": str(pool.metrics_port),
                        "prometheus.io/path": "/metrics",
                    },
                },
                "spec": pod_spec,
            },
        }
    )
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(cluster, pool, name),
        "spec": spec,
    }


def _service(cluster: ClusterSettings, pool: PoolDeployment, name: str) -> dict[str, Any]:
    ports = [
        {"name": port_name, "port": port, "targetPort": port_name, "protocol": "TCP"}
        for port_name, port in (
            ("grpc", pool.grpc_port),
            ("http", pool.http_port),
            ("metrics", pool.metrics_port),
        )
    ]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(cluster, pool, name),
        "spec": {"type": "ClusterIP", "selector": _selector(name), "ports": ports},
    }


def _pods_service(cluster: ClusterSettings, pool: PoolDeployment, name: str) -> dict[str, Any]:
    """The headless Service of the pool's ready pods, for clients that balance over the pods themselves."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        # Labelled as the pool's other objects (app.kubernetes.io/instance is the pool's object name).
        "metadata": {
            "name": pods_service_name(cluster, pool),
            "namespace": cluster.namespace,
            "labels": _labels(cluster, pool, name),
        },
        "spec": {
            "type": "ClusterIP",
            "clusterIP": "None",
            "selector": _selector(name),
            "ports": [{"name": "grpc", "port": pool.grpc_port, "targetPort": "grpc", "protocol": "TCP"}],
            # Only ready pods (every model loaded) are in the DNS answer.
            "publishNotReadyAddresses": False,
        },
    }


def _hpa(cluster: ClusterSettings, pool: PoolDeployment, name: str) -> dict[str, Any]:
    metrics: list[dict[str, Any]] = [
        {
            "type": "Resource",
            "resource": {
                "name": "cpu",
                "target": {"type": "Utilization", "averageUtilization": pool.cpu_target_utilization},
            },
        }
    ]
    metadata = _metadata(cluster, pool, name)
    if pool.queue_time_target_us is not None:
        metrics.append(
            {
                "type": "Pods",
                "pods": {
                    "metric": {"name": QUEUE_TIME_METRIC},
                    "target": {"type": "AverageValue", "averageValue": str(pool.queue_time_target_us)},
                },
            }
        )
        metadata["annotations"] = {f"{ANNOTATION_PREFIX}custom-metrics-rule": QUEUE_TIME_ADAPTER_RULE}
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": metadata,
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
            "minReplicas": pool.min_replicas,
            "maxReplicas": pool.max_replicas,
            "metrics": metrics,
            # Scale up at once (a new pod needs minutes to load), down slowly and by half at most.
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0},
                "scaleDown": {
                    "stabilizationWindowSeconds": 300,
                    "policies": [{"type": "Percent", "value": 50, "periodSeconds": 60}],
                },
            },
        },
    }


def _pdb(
    cluster: ClusterSettings, pool: PoolDeployment, name: str, selector: dict[str, str]
) -> dict[str, Any]:
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _metadata(cluster, pool, name),
        "spec": {"maxUnavailable": pool.max_unavailable, "selector": {"matchLabels": selector}},
    }


def _image_tag(image: str) -> str | None:
    last = image.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last and "@" not in last else None


def _kserve(cluster: ClusterSettings, pool: PoolDeployment, name: str) -> list[dict[str, Any]]:
    if pool.queue_time_target_us is not None:
        raise ManifestError(
            f"Pool {pool.name}: the KServe form autoscales through KServe's own HPA, which cannot read the "
            "queue-time metric; drop queue_time_target_us or use the plain Deployment form."
        )
    endpoint, bucket_path = _split_s3(pool.repository_url, pool.s3_endpoint, pool.name)
    manifests: list[dict[str, Any]] = []
    predictor: dict[str, Any] = {}
    if pool.autoscale:
        predictor.update(
            {
                "minReplicas": pool.min_replicas,
                "maxReplicas": pool.max_replicas,
                "scaleMetric": "cpu",
                "scaleTarget": pool.cpu_target_utilization,
            }
        )
    else:
        count = pool.replicas if pool.replicas is not None else pool.min_replicas
        predictor.update({"minReplicas": count, "maxReplicas": count})
    predictor.update(_scheduling(cluster, pool))
    if pool.s3_secret is not None or endpoint is not None or pool.s3_region is not None:
        # KServe's storage initializer reads S3 credentials from the secrets of the predictor's
        # service account, and the endpoint and region from that account's annotations.
        if pool.service_account is not None:
            raise ManifestError(
                f"Pool {pool.name}: in the KServe form the S3 secret, endpoint and region go on a service "
                f"account the generator creates; drop service_account {pool.service_account!r} or annotate "
                "that account yourself and drop the s3_* settings."
            )
        account_name = f"{name}-s3"
        annotations: dict[str, str] = {}
        if endpoint is not None:
            parts = _S3_ENDPOINT.match(endpoint)
            assert parts is not None  # checked by _split_s3
            annotations["serving.kserve.io/s3-endpoint"] = f"{parts['host']}:{parts['port']}"
            annotations["serving.kserve.io/s3-usehttps"] = "1" if parts["scheme"] == "https://" else "0"
        if pool.s3_region is not None:
            annotations["serving.kserve.io/s3-region"] = pool.s3_region
        account: dict[str, Any] = {
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": _metadata(cluster, pool, account_name),
        }
        if pool.s3_secret is not None:
            account["secrets"] = [{"name": pool.s3_secret}]
        if annotations:
            account["metadata"]["annotations"] = annotations
        manifests.append(account)
        predictor["serviceAccountName"] = account_name
    model: dict[str, Any] = {"modelFormat": {"name": "triton"}, "protocolVersion": "v2"}
    tag = _image_tag(pool.image or cluster.image)
    if tag is not None:
        model["runtimeVersion"] = tag
    model["storageUri"] = f"s3://{bucket_path}"
    if pool.env:
        model["env"] = [{"name": key, "value": value} for key, value in pool.env.items()]
    model["resources"] = _resources(pool)
    model["volumeMounts"] = [{"name": "dshm", "mountPath": "/dev/shm"}]
    predictor["volumes"] = [_shm_volume(pool)]
    predictor["model"] = model
    metadata = _metadata(cluster, pool, name)
    metadata["annotations"] = {
        "serving.kserve.io/deploymentMode": "RawDeployment",
        "serving.kserve.io/autoscalerClass": "hpa",
        "serving.kserve.io/enable-prometheus-scraping": "true",
    }
    manifests.append(
        {
            "apiVersion": KSERVE_API_VERSION,
            "kind": "InferenceService",
            "metadata": metadata,
            "spec": {"predictor": predictor},
        }
    )
    manifests.append(_pdb(cluster, pool, name, {"serving.kserve.io/inferenceservice": name}))
    return manifests


def pool_manifests(
    cluster: ClusterSettings, pool: PoolDeployment, *, kserve: bool = False
) -> list[dict[str, Any]]:
    """The manifests of one pool, as plain dicts in apply order.

    The plain form is a Deployment, a ClusterIP Service (ports ``grpc``, ``http``, ``metrics``), a
    HorizontalPodAutoscaler (``autoscaling/v2``, when ``pool.autoscale``) and a PodDisruptionBudget
    (``policy/v1``), all named ``<ensemble>-<pool>``, plus a headless Service ``<ensemble>-<pool>-pods``
    (``clusterIP: None``, the gRPC port only, ready pods only): its DNS name, :func:`pods_address`, resolves
    to the addresses of the pool's ready pods, so that a gRPC client -- the entry pool's router calling the
    tiers of this pool -- balances its calls over them itself.

    The Deployment runs ``tritonserver`` of the NGC image on the pool's repository URL (S3 credentials from
    ``pool.s3_secret`` through ``secretKeyRef`` environment variables), with a memory-backed ``/dev/shm``,
    Prometheus scrape annotations on the pod template, a startup probe on ``/v2/health/ready`` that allows
    ``startup_timeout_s``, a readiness probe on the same path every 5 s and a liveness probe on
    ``/v2/health/live`` every 10 s (6 failures), all on the HTTP port. Rolling updates surge one pod and keep
    every serving pod until its replacement is ready; a 5 s pre-stop pause lets endpoints drop a stopping
    pod before Triton refuses new requests. gRPC clients keep long-lived HTTP/2 connections, which a
    ClusterIP Service balances per connection: open several channels, or balance on the client over the
    headless Service.

    The HPA scales on CPU utilization (``cpu_target_utilization`` % of the request) and, when
    ``queue_time_target_us`` is set, on the Pods metric :data:`QUEUE_TIME_METRIC`, the mean queue time per
    request in microseconds, which a custom-metrics adapter must serve from Triton's
    ``nv_inference_queue_duration_us`` and ``nv_inference_request_success`` counters; the prometheus-adapter
    rule it expects is :data:`QUEUE_TIME_ADAPTER_RULE`, also written on the HPA as the annotation
    ``adaptive-ranking-toolkit/custom-metrics-rule``.

    With ``kserve=True`` the pool is a KServe ``InferenceService`` instead (RawDeployment mode, the Triton
    model format with ``storageUri`` the pool's ``s3://bucket/prefix``, KServe's HPA on CPU), plus a
    PodDisruptionBudget on its pods and, with ``s3_secret``, a ServiceAccount that carries the Secret and the
    endpoint annotations KServe's storage initializer reads. KServe then owns the Deployment, Service and
    HPA; its Triton runtime serves HTTP on 8080 and gRPC on 9000 whatever the pool's ports say, and there
    is no headless Service, so other pools cannot reach this one at :func:`pods_address`.

    Args:
        cluster: Cluster-wide settings.
        pool: The pool.
        kserve: Generate the KServe form.

    Returns:
        The manifests; validate them with :func:`validate`.

    Raises:
        ManifestError: An object name is too long, or the KServe form cannot express the pool.
    """
    name = object_name(cluster, pool)
    if kserve:
        if _engine_cache(pool):
            raise ManifestError(
                f"Pool {pool.name}: the KServe form does not mount the engine cache; write the plain form "
                "or leave engine_cache unset."
            )
        return _kserve(cluster, pool, name)
    manifests = []
    if _engine_cache(pool):
        manifests.append(_engine_cache_claim(cluster, pool, name))
        if pool.build_engines:
            manifests.append(_build_engines_job(cluster, pool, name))
    manifests += [
        _deployment(cluster, pool, name),
        _service(cluster, pool, name),
        _pods_service(cluster, pool, name),
    ]
    if pool.autoscale:
        manifests.append(_hpa(cluster, pool, name))
    manifests.append(_pdb(cluster, pool, name, _selector(name)))
    return manifests


class _Dumper(yaml.SafeDumper):
    """Safe dumper that writes multi-line strings as literal blocks."""


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)


def render_yaml(manifests: Iterable[Mapping[str, Any]]) -> str:
    """Multi-document YAML of ``manifests``, each document starting with ``---``.

    Keys keep the order the builders insert them in (``apiVersion``, ``kind``, ``metadata``, ``spec``, ...),
    so the text is the same from run to run; ``yaml.safe_load_all`` gives the dicts back.

    Args:
        manifests: The manifests.
    """
    return yaml.dump_all(
        [dict(item) for item in manifests],
        Dumper=_Dumper,
        explicit_start=True,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=1_000_000,
    )


def supported_kubernetes_versions() -> list[str]:
    """``major.minor`` versions whose schemas ``kubernetes-validate`` bundles (validation is offline)."""
    import kubernetes_validate

    versions = {kubernetes_validate.utils.major_minor(v) for v in kubernetes_validate.utils.all_versions()}
    return sorted(versions, key=lambda v: tuple(int(part) for part in v.split(".")))


def _describe(manifest: Mapping[str, Any], index: int) -> str:
    kind = manifest.get("kind") if isinstance(manifest.get("kind"), str) else f"manifest #{index}"
    metadata = manifest.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return f"{kind} {name}" if isinstance(name, str) and name else f"{kind} (unnamed)"


def _json_path(path: Iterable[Any]) -> str:
    out = ""
    for item in path:
        out += f"[{item}]" if isinstance(item, int) else (f".{item}" if out else str(item))
    return out or "(top level)"


def _check_metadata(manifest: Mapping[str, Any], label: str) -> None:
    metadata = manifest.get("metadata")
    if not isinstance(metadata, Mapping) or not isinstance(metadata.get("name"), str):
        raise ManifestError(f"{label}: metadata.name is missing.")
    name = metadata["name"]
    dns = _DNS1035_LABEL if manifest.get("kind") in ("Service", "InferenceService") else _DNS1123_SUBDOMAIN
    limit = 63 if dns is _DNS1035_LABEL else 253
    if len(name) > limit or not dns.match(name):
        rule = "a DNS-1035 label" if dns is _DNS1035_LABEL else "a DNS-1123 subdomain"
        raise ManifestError(f"{label}: metadata.name {name!r} is not {rule} of at most {limit} characters.")
    for key in ("labels", "annotations"):
        entries = metadata.get(key)
        if entries is None:
            continue
        if not isinstance(entries, Mapping):
            raise ManifestError(f"{label}: metadata.{key} must be a mapping.")
        for entry, value in entries.items():
            problem = _label_key_problem(entry) if isinstance(entry, str) else "is not a string"
            if problem:
                raise ManifestError(f"{label}: metadata.{key} key {entry!r} {problem}.")
            if key == "labels" and (
                not isinstance(value, str) or len(value) > 63 or not _LABEL_VALUE.match(value)
            ):
                raise ManifestError(f"{label}: metadata.labels {entry}={value!r} is not a valid label value.")


_KSERVE_COMPONENT_FIELDS = frozenset(
    {
        "minReplicas",
        "maxReplicas",
        "scaleTarget",
        "scaleMetric",
        "containerConcurrency",
        "timeout",
        "canaryTrafficPercent",
        "logger",
        "batcher",
        "labels",
        "annotations",
        "deploymentStrategy",
    }
)
_KSERVE_MODEL_FIELDS = frozenset(
    {"modelFormat", "runtime", "runtimeVersion", "storageUri", "protocolVersion", "storage"}
)


def _validate_inference_service(manifest: Mapping[str, Any], label: str, version: str) -> None:
    import kubernetes_validate

    if manifest.get("apiVersion") != KSERVE_API_VERSION:
        raise ManifestError(
            f"{label}: apiVersion must be {KSERVE_API_VERSION}, got {manifest.get('apiVersion')!r}."
        )
    extra = sorted(set(manifest) - {"apiVersion", "kind", "metadata", "spec", "status"})
    if extra:
        raise ManifestError(f"{label}: unknown top-level field(s) {', '.join(extra)}.")
    spec = manifest.get("spec")
    unknown = (
        sorted(set(spec) - {"predictor", "transformer", "explainer"}) if isinstance(spec, Mapping) else []
    )
    if unknown:
        raise ManifestError(f"{label}: unknown field(s) spec.{', spec.'.join(unknown)}.")
    predictor = spec.get("predictor") if isinstance(spec, Mapping) else None
    if not isinstance(predictor, Mapping):
        raise ManifestError(f"{label}: spec.predictor is missing or not a mapping.")
    model = predictor.get("model")
    if not isinstance(model, Mapping):
        raise ManifestError(
            f"{label}: spec.predictor.model is missing or not a mapping (the Triton predictor)."
        )
    model_format = model.get("modelFormat")
    if not isinstance(model_format, Mapping) or model_format.get("name") != "triton":
        raise ManifestError(f"{label}: spec.predictor.model.modelFormat.name must be 'triton'.")
    storage_uri = model.get("storageUri")
    if (
        not isinstance(storage_uri, str)
        or not _S3_URL.match(storage_uri)
        or _S3_URL.match(storage_uri)["endpoint"]
    ):
        raise ManifestError(
            f"{label}: spec.predictor.model.storageUri must be s3://bucket/prefix, got {storage_uri!r}."
        )
    for key in ("minReplicas", "maxReplicas", "scaleTarget"):
        value = predictor.get(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise ManifestError(
                f"{label}: spec.predictor.{key} must be a non-negative integer, got {value!r}."
            )
    low, high = predictor.get("minReplicas"), predictor.get("maxReplicas")
    if isinstance(low, int) and isinstance(high, int) and high < low:
        raise ManifestError(f"{label}: spec.predictor.maxReplicas {high} is below minReplicas {low}.")
    # The predictor inlines a PodSpec and the model a Container: check them against the core schemas.
    container = {key: value for key, value in model.items() if key not in _KSERVE_MODEL_FIELDS}
    container.setdefault("name", "kserve-container")
    pod_spec = {
        key: value
        for key, value in predictor.items()
        if key not in _KSERVE_COMPONENT_FIELDS and key != "model"
    }
    pod_spec["containers"] = [container]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "predictor"}, "spec": pod_spec}
    try:
        kubernetes_validate.validate(pod, version, strict=True)
    except kubernetes_validate.ValidationError as error:
        path = list(error.path)
        if path[:3] == ["spec", "containers", 0]:
            rest = _json_path(path[3:])
            where = "spec.predictor.model" if rest == "(top level)" else f"spec.predictor.model.{rest}"
        else:
            rest = _json_path(path[1:])
            where = "spec.predictor" if rest == "(top level)" else f"spec.predictor.{rest}"
        raise ManifestError(f"{label}: {where}: {one_line(error.message, 240)}") from None


def validate(manifests: Iterable[Mapping[str, Any]], kubernetes_version: str = "1.30") -> None:
    """Validate manifests against the Kubernetes schemas, strictly (unknown fields are errors).

    Core kinds are checked with ``kubernetes-validate``'s bundled strict JSON schemas (no network), plus
    the object name and label rules the API server applies and the schemas leave out. KServe's
    ``InferenceService`` is a custom resource the bundled schemas do not know: it is checked structurally
    here (apiVersion, top-level fields, ``spec.predictor.model`` with the Triton format and an
    ``s3://`` ``storageUri``, replica counts), and the predictor's pod fields and the model's container fields
    against the core ``PodSpec``/``Container`` schemas. Any other unknown kind is an error.

    Args:
        manifests: The manifests.
        kubernetes_version: ``major.minor`` of the target cluster; see :func:`supported_kubernetes_versions`.

    Raises:
        ManifestError: (a ``ValueError``) with one line naming the kind and name of the first object that
            fails, the field path and the problem; or the version is not supported.
    """
    import kubernetes_validate

    version = str(kubernetes_version).removeprefix("v")
    supported = supported_kubernetes_versions()
    if kubernetes_validate.utils.major_minor(version) not in supported:
        raise ManifestError(
            f"Kubernetes version {kubernetes_version!r} has no bundled schemas; "
            f"kubernetes-validate knows {supported[0]} to {supported[-1]}."
        )
    for index, manifest in enumerate(manifests):
        if not isinstance(manifest, Mapping):
            raise ManifestError(f"Manifest #{index} is a {type(manifest).__name__}, not a mapping.")
        label = _describe(manifest, index)
        for key in ("apiVersion", "kind"):
            if not isinstance(manifest.get(key), str):
                raise ManifestError(f"{label}: {key} is missing or not a string.")
        _check_metadata(manifest, label)
        if manifest["kind"] == "InferenceService":
            _validate_inference_service(manifest, label, version)
            continue
        try:
            kubernetes_validate.validate(dict(manifest), version, strict=True)
        except kubernetes_validate.ValidationError as error:
            raise ManifestError(
                f"{label}: {_json_path(error.path)}: {one_line(error.message, 240)}"
            ) from None
        except kubernetes_validate.SchemaNotFoundError as error:
            raise ManifestError(f"{label}: {one_line(error.message, 240)}.") from None


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
