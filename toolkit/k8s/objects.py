"""The Kubernetes objects of one pool: Deployment, Services, autoscaler, disruption budget, or KServe."""

from __future__ import annotations

import math
import shlex
from typing import Any

from toolkit.k8s.pool import (
    ANNOTATION_PREFIX,
    KSERVE_API_VERSION,
    LIVENESS_FAILURES,
    LIVENESS_PERIOD_S,
    MANAGED_BY,
    PRESTOP_SLEEP_S,
    PROBE_TIMEOUT_S,
    QUEUE_TIME_ADAPTER_RULE,
    QUEUE_TIME_METRIC,
    READINESS_FAILURES,
    READINESS_PERIOD_S,
    STARTUP_INITIAL_DELAY_S,
    STARTUP_PERIOD_S,
    ClusterSettings,
    ManifestError,
    PoolDeployment,
    object_name,
    pods_service_name,
    s3_location,
    triton_args,
)
from toolkit.ngc import ENGINE_CACHE_ROOT


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
    location = s3_location(pool.repository_url, pool.s3_endpoint, pool.name)
    endpoint = location.endpoint
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
            annotations["serving.kserve.io/s3-endpoint"] = endpoint.host_port
            annotations["serving.kserve.io/s3-usehttps"] = "1" if endpoint.scheme == "https" else "0"
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
    model["storageUri"] = location.url
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
