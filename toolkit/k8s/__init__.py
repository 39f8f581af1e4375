"""Kubernetes manifests for Triton pools (Deployment, Services, HPA, PDB, or a KServe InferenceService).

:mod:`toolkit.k8s.manifests` is independent of the spec file: describe pools with :class:`PoolDeployment`
and :class:`ClusterSettings`. :mod:`toolkit.k8s.fleet` maps an ensemble spec's ``pools`` and
``kubernetes`` sections onto them (``toolkit k8s``).
"""

from toolkit.k8s.manifests import (
    PODS_SERVICE_SUFFIX,
    QUEUE_TIME_ADAPTER_RULE,
    QUEUE_TIME_METRIC,
    TRITON_IMAGE,
    ClusterSettings,
    ManifestError,
    PoolDeployment,
    apply_order,
    dns_label,
    object_name,
    pods_address,
    pods_service_name,
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
    "PODS_SERVICE_SUFFIX",
    "QUEUE_TIME_ADAPTER_RULE",
    "QUEUE_TIME_METRIC",
    "TRITON_IMAGE",
    "ClusterSettings",
    "ManifestError",
    "PoolDeployment",
    "apply_order",
    "dns_label",
    "object_name",
    "pods_address",
    "pods_service_name",
    "pool_manifests",
    "render_yaml",
    "service_address",
    "summary_markdown",
    "supported_kubernetes_versions",
    "triton_args",
    "validate",
    "write_manifests",
]
