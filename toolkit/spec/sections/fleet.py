"""Pools of servers (``pools``) and their Kubernetes manifests (``kubernetes``)."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from toolkit.spec.sections.common import KeyedValueError
from toolkit.spec.variants import TARGETS

POOL_NAME_PATTERN = re.compile(r"^[a-z]([-a-z0-9]{0,30}[a-z0-9])?$")
"""Pool names: DNS labels (they name a repository folder and the pool's Kubernetes objects)."""

_HOST_PORT = re.compile(
    r"^(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?):(?P<port>\d{1,5})$"
)
_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def check_address(value: str, key: str) -> None:
    """Raise KeyedValueError (on ``key``) unless ``value`` is a gRPC address ``host:port``."""
    match = _HOST_PORT.match(value) if isinstance(value, str) else None
    if not match or not 1 <= int(match["port"]) <= 65535:
        raise KeyedValueError(
            key, f"expected a gRPC address host:port (port 1-65535, IPv6 in brackets), got {value!r}"
        )


@dataclass(frozen=True)
class PoolSpec:
    """A pool: one Triton deployment (a set of identical servers) that serves some of the tiers.

    The first pool of ``pools`` is the *entry* pool: its servers hold the ensemble, the router, the
    preprocess step and the gate besides their tiers, and clients call them. The router calls tiers
    of its own pool through BLS and tiers of other pools over gRPC, at ``addresses``.

    Attributes:
        name: Pool name, a DNS label (``cpu``, ``big``); ``toolkit deploy`` writes its repository
            to ``<out>/<name>``.
        hardware: ``cpu`` or ``gpu``: the deploy target of its tiers (``gpu``: TensorRT engines or
            ONNX Runtime on GPU instances of an NGC tritonserver) and what its pods request.
        addresses: gRPC addresses (``host:port``) of the pool's servers, which the router of the
            entry pool calls; tried in turn when one is unreachable. Default: the pool's Kubernetes
            Service (from the ``kubernetes`` section). ``toolkit deploy --pool-address`` overrides.
        timeout_ms: Deadline of the router's calls to this pool (0: ``triton.tier_timeout_ms``).
        retry_after_ms: How long the router leaves an address alone after a call to it failed or
            timed out; then one request tries it again.
        cpu: CPU request of each of its pods (a Kubernetes quantity: ``"4"``, ``"500m"``).
        memory: Memory request and limit of each pod (``"8Gi"``).
        gpus: GPUs per pod (``nvidia.com/gpu``); default 1 for ``gpu`` pools, 0 for ``cpu`` pools.
        min_replicas: Fewest pods the autoscaler keeps.
        max_replicas: Most pods the autoscaler starts.
        cpu_target_utilization: Autoscaler target, percent of the CPU request.
        queue_time_target_us: When > 0, the autoscaler also scales on Triton's mean queue time per
            request (microseconds) through a custom-metrics adapter.
    """

    name: str
    hardware: Literal["cpu", "gpu"] = "cpu"
    addresses: tuple[str, ...] = ()
    timeout_ms: float = 0.0
    retry_after_ms: float = 1000.0
    cpu: str = "2"
    memory: str = "4Gi"
    gpus: int = -1
    min_replicas: int = 1
    max_replicas: int = 4
    cpu_target_utilization: int = 70
    queue_time_target_us: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not POOL_NAME_PATTERN.match(self.name):
            raise KeyedValueError(
                "name",
                f"pool name {self.name!r} is not a DNS label: lowercase letters, digits and '-', starting "
                "with a letter, at most 32 characters",
            )
        if self.hardware not in TARGETS:
            raise KeyedValueError("hardware", f"expected one of {', '.join(TARGETS)}, got {self.hardware!r}")
        for i, address in enumerate(self.addresses):
            check_address(address, f"addresses[{i}]")
        if len(set(self.addresses)) != len(self.addresses):
            raise KeyedValueError("addresses", "addresses must differ")
        if not math.isfinite(self.timeout_ms) or self.timeout_ms < 0:
            raise KeyedValueError("timeout_ms", f"must be a number >= 0, got {self.timeout_ms}")
        if not math.isfinite(self.retry_after_ms) or self.retry_after_ms <= 0:
            raise KeyedValueError("retry_after_ms", f"must be a number > 0, got {self.retry_after_ms}")
        if self.gpus == -1:
            object.__setattr__(self, "gpus", 1 if self.hardware == "gpu" else 0)
        if self.gpus < 0:
            raise KeyedValueError("gpus", f"must be >= 0, got {self.gpus}")
        if self.hardware == "gpu" and self.gpus < 1:
            raise KeyedValueError("gpus", "a gpu pool needs at least 1 GPU per pod")
        if self.hardware == "cpu" and self.gpus:
            raise KeyedValueError("gpus", f"a cpu pool requests no GPUs, got {self.gpus}")
        if self.min_replicas < 1:
            raise KeyedValueError("min_replicas", f"must be at least 1, got {self.min_replicas}")
        if self.max_replicas < self.min_replicas:
            raise KeyedValueError(
                "max_replicas", f"must be >= min_replicas ({self.min_replicas}), got {self.max_replicas}"
            )
        if not 1 <= self.cpu_target_utilization <= 1000:
            raise KeyedValueError(
                "cpu_target_utilization",
                f"must be a percentage in 1..1000, got {self.cpu_target_utilization}",
            )
        if self.queue_time_target_us < 0:
            raise KeyedValueError("queue_time_target_us", f"must be >= 0, got {self.queue_time_target_us}")


@dataclass(frozen=True)
class KubernetesSpec:
    """Where and how ``toolkit k8s`` runs the pools on a Kubernetes cluster.

    Attributes:
        namespace: Namespace of every object (default: the ensemble name as a DNS label).
        repository: ``s3://bucket/prefix`` the repositories are published to with ``toolkit deploy
            --out``; a pool reads ``<repository>/<pool>`` (a spec without pools reads ``repository``).
        s3_endpoint: An S3-compatible endpoint, ``[http://|https://]host[:port]`` (plain HTTP and
            port 80 when left out), or empty for AWS S3; or put it in ``repository``, as
            ``s3://[https://]host:port/bucket/prefix``.
        s3_secret: Secret with ``AWS_ACCESS_KEY_ID`` and ``AWS_SECRET_ACCESS_KEY`` for Triton, or
            empty to rely on the pods' identity (``service_account``).
        s3_region: ``AWS_DEFAULT_REGION`` of the pods, or empty.
        service_account: Service account of the pods, or empty.
        image: Triton image of the pools (default: the NGC tritonserver release the toolkit's
            bundled server matches).
        entry_image: Image of the entry pool when it differs (with remote pools its router needs
            ``tritonclient[grpc]`` in the python backend's Python; ``toolkit k8s`` writes a
            Dockerfile for it).
        cluster_domain: The cluster's DNS domain, for the pools' Service addresses.
        kubernetes_version: Version whose schemas the manifests are validated against.
        kserve: Write KServe InferenceServices instead of Deployments and Services.
        model_control_mode: ``explicit`` (load every model at start; changes roll out as new pods)
            or ``poll``.
        image_tensorrt: TensorRT version of the image, for images the NGC release table does not
            list (empty: from the table). TensorRT plans built by another version are refused.
        engine_cache: Size of a PersistentVolumeClaim (``"10Gi"``) that keeps ONNX Runtime's TensorRT
            engines for the GPU pools serving ONNX variants, so a new pod reuses them instead of
            building them on its first requests; empty for none (each pod builds its own).
        engine_cache_class: StorageClass of that claim (it must offer ReadWriteMany); empty for the
            cluster's default.
        build_engines: Also write a Job per such GPU pool that starts the pool's own image on its
            repository once, so its TensorRT builds every engine into the cache before the pool
            serves. Needs ``engine_cache``.
    """

    namespace: str = ""
    repository: str = ""
    s3_endpoint: str = ""
    s3_secret: str = ""
    s3_region: str = ""
    service_account: str = ""
    image: str = ""
    entry_image: str = ""
    cluster_domain: str = "cluster.local"
    kubernetes_version: str = "1.30"
    kserve: bool = False
    model_control_mode: Literal["explicit", "poll"] = "explicit"
    image_tensorrt: str = ""
    engine_cache: str = ""
    engine_cache_class: str = ""
    build_engines: bool = False

    def __post_init__(self) -> None:
        if self.image_tensorrt and not re.match(r"^\d+\.\d+\.\d+(\.\d+)?$", self.image_tensorrt):
            raise KeyedValueError(
                "image_tensorrt",
                f"expected a TensorRT version such as 10.5.0.18, got {self.image_tensorrt!r}",
            )
        if self.engine_cache and not re.match(r"^\d+(\.\d+)?(Ki|Mi|Gi|Ti)$", self.engine_cache):
            raise KeyedValueError(
                "engine_cache", f"expected a storage size such as 10Gi, got {self.engine_cache!r}"
            )
        if self.build_engines and not self.engine_cache:
            raise KeyedValueError(
                "build_engines", "the engine-build Job writes into the engine cache: set engine_cache too"
            )
        if self.repository and not self.repository.startswith("s3://"):
            raise KeyedValueError(
                "repository", f"expected an s3://bucket/prefix URL, got {self.repository!r}"
            )
        if self.namespace and not _NAMESPACE.match(self.namespace):
            raise KeyedValueError(
                "namespace", f"{self.namespace!r} is not a DNS label (lowercase letters, digits and '-')"
            )
        if not re.match(r"^\d+\.\d+$", self.kubernetes_version):
            raise KeyedValueError(
                "kubernetes_version", f"expected MAJOR.MINOR such as 1.30, got {self.kubernetes_version!r}"
            )
