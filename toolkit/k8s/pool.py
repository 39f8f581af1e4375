"""What a pool is on Kubernetes: the cluster settings, one pool's deployment, their names and addresses."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from toolkit.errors import ToolkitError
from toolkit.ngc import DEFAULT_IMAGE
from toolkit.s3url import EndpointError, S3Location, parse_s3_url

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
        s3_location(self.repository_url, self.s3_endpoint, what)
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
        return s3_location(self.repository_url, self.s3_endpoint, self.name).triton_url


def s3_location(url: str, endpoint: str | None, what: str) -> S3Location:
    """The pool's repository in :mod:`toolkit.s3url`'s grammar (the endpoint in the URL or given apart).

    Raises:
        ManifestError: The URL or endpoint is malformed, or the endpoint is given twice.
    """
    try:
        return parse_s3_url(url, endpoint)
    except EndpointError as exc:
        raise ManifestError(f"{what}: s3_endpoint {exc}.") from None
    except ValueError as exc:
        raise ManifestError(f"{what}: repository {exc}.") from None


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
