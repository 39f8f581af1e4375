"""Kubernetes manifests for Triton pools (Deployment, Service, HPA, PDB, or a KServe InferenceService).

Independent of the spec file: describe pools with :class:`PoolDeployment` and :class:`ClusterSettings`;
see :mod:`toolkit.k8s.manifests`.
"""

from toolkit.k8s.manifests import (
    QUEUE_TIME_ADAPTER_RULE,
    QUEUE_TIME_METRIC,
    TRITON_IMAGE,
    ClusterSettings,
    ManifestError,
    PoolDeployment,
    dns_label,
    object_name,
    pool_manifests,
    render_yaml,
    service_address,
    summary_markdown,
    supported_kubernetes_versions,
    triton_args,
    validate,
    write_manifests,
)

__all__ = [
    "QUEUE_TIME_ADAPTER_RULE",
    "QUEUE_TIME_METRIC",
    "TRITON_IMAGE",
    "ClusterSettings",
    "ManifestError",
    "PoolDeployment",
    "dns_label",
    "object_name",
    "pool_manifests",
    "render_yaml",
    "service_address",
    "summary_markdown",
    "supported_kubernetes_versions",
    "triton_args",
    "validate",
    "write_manifests",
]
