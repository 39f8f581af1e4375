"""Unit tests of toolkit.k8s: pool manifests, their validation, YAML and files."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from toolkit.errors import ToolkitError
from toolkit.k8s import (
    QUEUE_TIME_ADAPTER_RULE,
    QUEUE_TIME_METRIC,
    TRITON_IMAGE,
    ClusterSettings,
    ManifestError,
    PoolDeployment,
    dns_label,
    pods_address,
    pool_manifests,
    render_yaml,
    service_address,
    supported_kubernetes_versions,
    triton_args,
    validate,
    write_manifests,
)
from toolkit.k8s.manifests import startup_failure_threshold

CLUSTER = ClusterSettings(namespace="ranking", ensemble="ads-ranking")


def cpu_pool(**changes: Any) -> PoolDeployment:
    values: dict[str, Any] = {
        "name": "cpu",
        "repository_url": "s3://models/ads/cpu",
        "cpu": "4",
        "memory": "8Gi",
        "min_replicas": 2,
        "max_replicas": 10,
        "s3_secret": "s3-creds",
    }
    values.update(changes)
    return PoolDeployment(**values)


def gpu_pool(**changes: Any) -> PoolDeployment:
    values: dict[str, Any] = {
        "name": "big",
        "repository_url": "s3://models/ads/big",
        "cpu": "8",
        "memory": "32Gi",
        "hardware": "gpu",
        "gpus": 2,
        "min_replicas": 1,
        "max_replicas": 3,
        "s3_secret": "s3-creds",
        "s3_endpoint": "https://minio.storage:9000",
        "cpu_target_utilization": 60,
        "queue_time_target_us": 5000,
    }
    values.update(changes)
    return PoolDeployment(**values)


def by_kind(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Manifests by kind; the headless Service under ``Service/pods``."""
    kinds = [
        "Service/pods"
        if item["kind"] == "Service" and item["spec"].get("clusterIP") == "None"
        else item["kind"]
        for item in manifests
    ]
    assert len(kinds) == len(set(kinds)), kinds
    return dict(zip(kinds, manifests, strict=True))


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    (only,) = deployment["spec"]["template"]["spec"]["containers"]
    return only


# --- every manifest validates ---


@pytest.mark.parametrize("make_pool", [cpu_pool, gpu_pool], ids=["cpu", "gpu"])
def test_every_manifest_validates_strictly(make_pool: Any) -> None:
    manifests = pool_manifests(CLUSTER, make_pool())
    assert list(by_kind(manifests)) == [
        "Deployment",
        "Service",
        "Service/pods",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    validate(manifests)
    # Straight through kubernetes-validate too, strict, so the wrapper cannot hide a failure.
    for manifest in manifests:
        assert kubernetes_validate.validate(manifest, "1.30", strict=True) == "1.30"


def test_validates_against_every_bundled_version() -> None:
    versions = supported_kubernetes_versions()
    assert "1.30" in versions and versions == sorted(versions, key=lambda v: int(v.split(".")[1]))
    manifests = pool_manifests(CLUSTER, cpu_pool()) + pool_manifests(CLUSTER, gpu_pool())
    for version in (versions[0], "1.30", versions[-1], "v1.30.4"):
        validate(manifests, version)


def test_unsupported_kubernetes_version_is_a_one_line_error() -> None:
    with pytest.raises(
        ManifestError, match=r"'1\.99' has no bundled schemas; kubernetes-validate knows"
    ) as info:
        validate(pool_manifests(CLUSTER, cpu_pool()), "1.99")
    assert "\n" not in str(info.value)


# --- Deployment ---


def test_deployment_runs_tritonserver_on_the_repository() -> None:
    main = container(by_kind(pool_manifests(CLUSTER, cpu_pool()))["Deployment"])
    assert main["image"] == TRITON_IMAGE == "nvcr.io/nvidia/tritonserver:24.10-py3"
    assert main["command"] == ["tritonserver"]
    args = main["args"]
    assert args[:3] == [
        "--model-repository=s3://models/ads/cpu",
        "--model-control-mode=explicit",
        "--load-model=*",
    ]
    assert "--strict-readiness=true" in args
    assert {"--http-port=8000", "--grpc-port=8001", "--metrics-port=8002"} <= set(args)
    assert not any(arg.startswith("--repository-poll-secs") for arg in args)


def test_poll_mode_sets_the_poll_interval_and_loads_everything_itself() -> None:
    args = triton_args(cpu_pool(model_control_mode="poll", repository_poll_secs=45))
    assert "--model-control-mode=poll" in args and "--repository-poll-secs=45" in args
    assert "--load-model=*" not in args


def test_custom_endpoint_goes_into_tritons_url() -> None:
    assert triton_args(gpu_pool())[0] == "--model-repository=s3://https://minio.storage:9000/models/ads/big"
    plain = cpu_pool(s3_endpoint="minio.storage:9000")
    assert plain.triton_repository_url == "s3://minio.storage:9000/models/ads/cpu"
    inline = cpu_pool(repository_url="s3://minio.storage:9000/models/ads/cpu")
    assert inline.triton_repository_url == "s3://minio.storage:9000/models/ads/cpu"


def test_probes_hit_triton_health_endpoints_on_the_http_port() -> None:
    pool = cpu_pool(http_port=9100, grpc_port=9101, metrics_port=9102, startup_timeout_s=900)
    main = container(by_kind(pool_manifests(CLUSTER, pool))["Deployment"])
    http_ports = [p["containerPort"] for p in main["ports"] if p["name"] == "http"]
    assert http_ports == [9100]
    expected = {
        "startupProbe": "/v2/health/ready",
        "readinessProbe": "/v2/health/ready",
        "livenessProbe": "/v2/health/live",
    }
    for probe, path in expected.items():
        assert main[probe]["httpGet"] == {"path": path, "port": 9100, "scheme": "HTTP"}
    startup = main["startupProbe"]
    budget = startup["initialDelaySeconds"] + startup["periodSeconds"] * startup["failureThreshold"]
    assert startup["failureThreshold"] == startup_failure_threshold(pool)
    assert 900 <= budget < 900 + startup["periodSeconds"]
    assert "initialDelaySeconds" not in main["livenessProbe"]  # the startup probe gates it


def test_resources_and_cpu_pool_has_no_gpu_scheduling() -> None:
    deployment = by_kind(pool_manifests(CLUSTER, cpu_pool()))["Deployment"]
    resources = container(deployment)["resources"]
    assert resources == {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "8Gi"}}
    pod = deployment["spec"]["template"]["spec"]
    assert "tolerations" not in pod and "nodeSelector" not in pod
    limited = container(by_kind(pool_manifests(CLUSTER, cpu_pool(cpu_limit="6")))["Deployment"])
    assert limited["resources"]["limits"] == {"memory": "8Gi", "cpu": "6"}


def test_gpu_pool_requests_gpus_and_lands_on_gpu_nodes() -> None:
    deployment = by_kind(pool_manifests(CLUSTER, gpu_pool()))["Deployment"]
    resources = container(deployment)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == 2
    assert resources["limits"]["nvidia.com/gpu"] == 2
    pod = deployment["spec"]["template"]["spec"]
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    custom = ClusterSettings(namespace="ranking", ensemble="ads-ranking", gpu_node_selector={})
    pod = by_kind(pool_manifests(custom, gpu_pool(node_selector={"pool": "a100"})))["Deployment"]
    assert pod["spec"]["template"]["spec"]["nodeSelector"] == {"pool": "a100"}


def test_s3_credentials_come_from_the_secret() -> None:
    env = {
        item["name"]: item
        for item in container(by_kind(pool_manifests(CLUSTER, cpu_pool()))["Deployment"])["env"]
    }
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[key]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": key}
    assert env["AWS_DEFAULT_REGION"]["valueFrom"]["secretKeyRef"]["optional"] is True
    assert "value" not in env["AWS_ACCESS_KEY_ID"]
    regional = container(by_kind(pool_manifests(CLUSTER, cpu_pool(s3_region="eu-west-1")))["Deployment"])
    assert {"name": "AWS_DEFAULT_REGION", "value": "eu-west-1"} in regional["env"]
    anonymous = container(by_kind(pool_manifests(CLUSTER, cpu_pool(s3_secret=None)))["Deployment"])
    assert "env" not in anonymous


def test_shared_memory_and_prometheus_annotations() -> None:
    deployment = by_kind(pool_manifests(CLUSTER, cpu_pool(shm_size="2Gi")))["Deployment"]
    pod = deployment["spec"]["template"]
    assert pod["spec"]["volumes"] == [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}}]
    assert {"name": "dshm", "mountPath": "/dev/shm"} in container(deployment)["volumeMounts"]
    assert pod["metadata"]["annotations"] == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "8002",
        "prometheus.io/path": "/metrics",
    }


def test_replicas_left_to_the_hpa_unless_given_or_not_autoscaled() -> None:
    assert "replicas" not in by_kind(pool_manifests(CLUSTER, cpu_pool()))["Deployment"]["spec"]
    assert by_kind(pool_manifests(CLUSTER, cpu_pool(replicas=3)))["Deployment"]["spec"]["replicas"] == 3
    fixed = pool_manifests(CLUSTER, cpu_pool(autoscale=False))
    assert list(by_kind(fixed)) == ["Deployment", "Service", "Service/pods", "PodDisruptionBudget"]
    assert fixed[0]["spec"]["replicas"] == 2
    validate(fixed)


# --- Service, HPA, PDB ---


def test_service_exposes_the_three_ports_and_selects_the_pods() -> None:
    manifests = by_kind(pool_manifests(CLUSTER, cpu_pool(grpc_port=7001, http_port=7000, metrics_port=7002)))
    service = manifests["Service"]
    assert service["spec"]["type"] == "ClusterIP"
    ports = {p["name"]: (p["port"], p["targetPort"]) for p in service["spec"]["ports"]}
    assert ports == {"grpc": (7001, "grpc"), "http": (7000, "http"), "metrics": (7002, "metrics")}
    pod_labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= pod_labels.items()
    named = {p["name"]: p["containerPort"] for p in container(manifests["Deployment"])["ports"]}
    assert named == {"grpc": 7001, "http": 7000, "metrics": 7002}
    assert service_address(CLUSTER, cpu_pool()) == "ads-ranking-cpu.ranking.svc.cluster.local:8001"


def test_headless_service_resolves_to_the_ready_pods_on_the_grpc_port() -> None:
    manifests = by_kind(pool_manifests(CLUSTER, gpu_pool(grpc_port=7001)))
    headless = manifests["Service/pods"]
    assert headless["metadata"]["name"] == "ads-ranking-big-pods"
    assert headless["metadata"]["labels"] == manifests["Service"]["metadata"]["labels"]
    spec = headless["spec"]
    assert spec["clusterIP"] == "None" and spec["publishNotReadyAddresses"] is False
    assert spec["selector"] == manifests["Service"]["spec"]["selector"]
    assert spec["ports"] == [{"name": "grpc", "port": 7001, "targetPort": "grpc", "protocol": "TCP"}]
    # A headless Service maps no ports: the pods must listen on the port the address names.
    named = {p["name"]: p["containerPort"] for p in container(manifests["Deployment"])["ports"]}
    assert named["grpc"] == 7001
    assert pods_address(CLUSTER, gpu_pool()) == "ads-ranking-big-pods.ranking.svc.cluster.local:8001"
    # The headless name is five characters longer than the pool's other objects.
    near = ClusterSettings(namespace="ranking", ensemble="a" * 55)
    assert len(pool_manifests(near, cpu_pool(s3_secret=None), kserve=True)[0]["metadata"]["name"]) == 59
    with pytest.raises(ManifestError, match=r"Service name 'a+-cpu-pods' is longer than 63 characters"):
        pool_manifests(near, cpu_pool())


def test_hpa_min_max_and_cpu_target_as_given_without_queue_metric() -> None:
    hpa = by_kind(pool_manifests(CLUSTER, cpu_pool(cpu_target_utilization=55)))["HorizontalPodAutoscaler"]
    spec = hpa["spec"]
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "ads-ranking-cpu",
    }
    assert (spec["minReplicas"], spec["maxReplicas"]) == (2, 10)
    assert spec["metrics"] == [
        {
            "type": "Resource",
            "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 55}},
        }
    ]
    assert "annotations" not in hpa["metadata"]


def test_queue_time_metric_only_when_set() -> None:
    hpa = by_kind(pool_manifests(CLUSTER, gpu_pool()))["HorizontalPodAutoscaler"]
    spec = hpa["spec"]
    assert (spec["minReplicas"], spec["maxReplicas"]) == (1, 3)
    resource, pods = spec["metrics"]
    assert resource["resource"]["target"]["averageUtilization"] == 60
    assert pods == {
        "type": "Pods",
        "pods": {
            "metric": {"name": QUEUE_TIME_METRIC},
            "target": {"type": "AverageValue", "averageValue": "5000"},
        },
    }
    rule = hpa["metadata"]["annotations"]["adaptive-ranking-toolkit/custom-metrics-rule"]
    assert rule == QUEUE_TIME_ADAPTER_RULE
    assert f"as: {QUEUE_TIME_METRIC}" in rule and "nv_inference_queue_duration_us{" in rule
    unset = by_kind(pool_manifests(CLUSTER, gpu_pool(queue_time_target_us=None)))["HorizontalPodAutoscaler"]
    assert [m["type"] for m in unset["spec"]["metrics"]] == ["Resource"]


def test_pdb_present_and_selects_the_pods() -> None:
    manifests = by_kind(pool_manifests(CLUSTER, gpu_pool(max_unavailable=2)))
    pdb = manifests["PodDisruptionBudget"]
    assert pdb["apiVersion"] == "policy/v1"
    assert pdb["spec"]["maxUnavailable"] == 2
    pod_labels = manifests["Deployment"]["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()


# --- invalid manifests are rejected ---


def mutated(path: list[Any], value: Any) -> list[dict[str, Any]]:
    manifests = copy.deepcopy(pool_manifests(CLUSTER, cpu_pool()))
    target: Any = manifests
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return manifests


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (
            [0, "spec", "replicas"],
            "two",
            r"^Deployment ads-ranking-cpu: spec\.replicas: 'two' is not of type 'integer'(, 'null')?$",
        ),
        (
            [0, "spec", "template", "spec", "containers", 0, "readinessProbe", "httpGet", "pathh"],
            "/v2/health/ready",
            r"^Deployment ads-ranking-cpu: spec\.template\.spec\.containers\[0\]\.readinessProbe\.httpGet: "
            r"Additional properties are not allowed \('pathh' was unexpected\)$",
        ),
        ([1, "spec", "portz"], [], r"^Service ads-ranking-cpu: spec: .*'portz' was unexpected"),
        (
            [2, "spec", "publishNotReadyAddresses"],
            "no",
            r"^Service ads-ranking-cpu-pods: spec\.publishNotReadyAddresses: 'no' is not of type 'boolean'",
        ),
        ([3, "spec", "maxReplicas"], "10", r"^HorizontalPodAutoscaler ads-ranking-cpu: spec\.maxReplicas: "),
        (
            [4, "spec", "selector", "matchLabels"],
            "app",
            r"^PodDisruptionBudget ads-ranking-cpu: spec\.selector",
        ),
        (
            [1, "metadata", "name"],
            "Ads_Ranking",
            r"^Service Ads_Ranking: metadata\.name 'Ads_Ranking' is not a DNS-1035",
        ),
        (
            [0, "metadata", "labels", "team"],
            "a b",
            r"^Deployment ads-ranking-cpu: metadata\.labels team='a b'",
        ),
    ],
    ids=[
        "wrong-type",
        "unknown-field",
        "service-unknown",
        "headless-type",
        "hpa-type",
        "pdb-type",
        "bad-name",
        "bad-label",
    ],
)
def test_invalid_manifest_rejected_with_one_line_naming_the_object(
    path: list[Any], value: Any, message: str
) -> None:
    manifests = mutated(path, value)
    with pytest.raises(ValueError, match=message) as info:
        validate(manifests)
    assert isinstance(info.value, ToolkitError)
    assert "\n" not in str(info.value)


def test_unknown_kind_and_non_mapping_are_errors() -> None:
    with pytest.raises(ManifestError, match=r"^Widget w: Couldn't find schema for kind Widget"):
        validate([{"apiVersion": "v1", "kind": "Widget", "metadata": {"name": "w"}}])
    with pytest.raises(ManifestError, match=r"^Manifest #0 is a list"):
        validate([[]])  # type: ignore[list-item]
    with pytest.raises(ManifestError, match=r"^Service \(unnamed\): metadata\.name is missing"):
        validate([{"apiVersion": "v1", "kind": "Service", "metadata": {}}])


# --- YAML ---


def test_yaml_round_trips_and_is_stable() -> None:
    manifests = pool_manifests(CLUSTER, cpu_pool()) + pool_manifests(CLUSTER, gpu_pool())
    text = render_yaml(manifests)
    assert text.startswith("---\napiVersion: apps/v1\nkind: Deployment\n")
    assert text.count("---\n") == len(manifests)
    assert list(yaml.safe_load_all(text)) == manifests
    assert render_yaml(copy.deepcopy(manifests)) == text
    # The adapter rule is a readable block, not an escaped one-liner.
    assert "custom-metrics-rule: |" in text


def test_kserve_round_trips() -> None:
    manifests = pool_manifests(CLUSTER, gpu_pool(queue_time_target_us=None), kserve=True)
    assert list(yaml.safe_load_all(render_yaml(manifests))) == manifests


# --- KServe ---


def test_kserve_form_uses_the_triton_predictor_on_the_repository() -> None:
    manifests = pool_manifests(CLUSTER, gpu_pool(queue_time_target_us=None), kserve=True)
    kinds = by_kind(manifests)
    assert list(kinds) == ["ServiceAccount", "InferenceService", "PodDisruptionBudget"]
    service = kinds["InferenceService"]
    assert service["apiVersion"] == "serving.kserve.io/v1beta1"
    assert service["metadata"]["annotations"]["serving.kserve.io/deploymentMode"] == "RawDeployment"
    predictor = service["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "triton"}
    assert model["storageUri"] == "s3://models/ads/big"
    assert model["runtimeVersion"] == "24.10-py3"
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 2
    assert (predictor["minReplicas"], predictor["maxReplicas"], predictor["scaleTarget"]) == (1, 3, 60)
    account = kinds["ServiceAccount"]
    assert predictor["serviceAccountName"] == account["metadata"]["name"]
    assert account["secrets"] == [{"name": "s3-creds"}]
    assert account["metadata"]["annotations"] == {
        "serving.kserve.io/s3-endpoint": "minio.storage:9000",
        "serving.kserve.io/s3-usehttps": "1",
    }
    pdb = kinds["PodDisruptionBudget"]
    assert pdb["spec"]["selector"]["matchLabels"] == {"serving.kserve.io/inferenceservice": "ads-ranking-big"}
    validate(manifests)


def test_kserve_without_s3_settings_has_no_service_account() -> None:
    manifests = pool_manifests(CLUSTER, cpu_pool(s3_secret=None), kserve=True)
    assert [m["kind"] for m in manifests] == ["InferenceService", "PodDisruptionBudget"]
    validate(manifests)


def test_kserve_refuses_what_it_cannot_express() -> None:
    with pytest.raises(ManifestError, match="queue-time metric"):
        pool_manifests(CLUSTER, gpu_pool(), kserve=True)
    with pytest.raises(ManifestError, match="drop service_account 'irsa'"):
        pool_manifests(CLUSTER, cpu_pool(service_account="irsa"), kserve=True)


def kserve_mutated(change: Any) -> list[dict[str, Any]]:
    manifests = copy.deepcopy(pool_manifests(CLUSTER, cpu_pool(), kserve=True))
    change(next(m for m in manifests if m["kind"] == "InferenceService"))
    return manifests


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda isvc: isvc["spec"].pop("predictor"), r"spec\.predictor is missing"),
        (
            lambda isvc: isvc.update(apiVersion="serving.kserve.io/v1alpha1"),
            r"apiVersion must be serving\.kserve\.io/v1beta1",
        ),
        (
            lambda isvc: isvc["spec"]["predictor"]["model"].update(storageUri="/models"),
            r"spec\.predictor\.model\.storageUri must be s3://",
        ),
        (
            lambda isvc: isvc["spec"]["predictor"]["model"]["modelFormat"].update(name="onnx"),
            r"spec\.predictor\.model\.modelFormat\.name must be 'triton'",
        ),
        (
            lambda isvc: isvc["spec"]["predictor"].update(nodeSelectr={}),
            r"spec\.predictor: .*'nodeSelectr' was unexpected",
        ),
        (
            lambda isvc: isvc["spec"]["predictor"]["model"]["resources"].update(request={}),
            r"spec\.predictor\.model\.resources: .*'request' was unexpected",
        ),
        (
            lambda isvc: isvc["spec"]["predictor"].update(maxReplicas=1),
            r"spec\.predictor\.maxReplicas 1 is below minReplicas 2",
        ),
        (lambda isvc: isvc["spec"].update(predicter={}), r"unknown field\(s\) spec\.predicter"),
    ],
    ids=[
        "no-predictor",
        "api-version",
        "storage",
        "format",
        "pod-field",
        "container-field",
        "replicas",
        "spec-field",
    ],
)
def test_kserve_structural_validation(change: Any, message: str) -> None:
    with pytest.raises(ValueError, match=r"^InferenceService ads-ranking-cpu: " + message) as info:
        validate(kserve_mutated(change))
    assert "\n" not in str(info.value)


# --- pool and cluster descriptions ---


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"hardware": "gpu"}, "a GPU pool needs gpus of at least 1"),
        ({"gpus": 1}, "a CPU pool requests no GPUs"),
        ({"cpu": "four"}, "cpu must be a Kubernetes quantity"),
        ({"memory": "8GB"}, "memory must be a Kubernetes quantity"),
        ({"min_replicas": 5, "max_replicas": 2}, "max_replicas must be an integer of at least 5"),
        ({"replicas": 20}, "replicas must be at most 10"),
        ({"http_port": 8001}, "ports must differ"),
        ({"repository_url": "/models/cpu"}, "repository '/models/cpu' is not an S3 URL"),
        ({"s3_endpoint": "minio.storage:x"}, "is not an endpoint"),
        (
            {"repository_url": "s3://minio:9000/models/x", "s3_endpoint": "minio:9000"},
            "already names an endpoint",
        ),
        ({"name": "CPU_pool"}, "Pool name 'CPU_pool' is not a DNS-1123 label"),
        ({"model_control_mode": "none"}, "model_control_mode must be 'explicit' or 'poll'"),
        ({"labels": {"app.kubernetes.io/instance": "x"}}, "set by the generator"),
        ({"env": {"AWS_ACCESS_KEY_ID": "x"}}, "not env AWS_ACCESS_KEY_ID"),
        ({"extra_args": ("-v",)}, "must start with '--'"),
        ({"queue_time_target_us": 0}, "queue_time_target_us must be an integer of at least 1"),
    ],
)
def test_pool_description_errors(changes: dict[str, Any], message: str) -> None:
    with pytest.raises(ManifestError, match=message):
        cpu_pool(**changes)


def test_cluster_description_errors_and_dns_label() -> None:
    with pytest.raises(ManifestError, match=r"Ensemble name 'ads_ranking' .* \(for example 'ads-ranking'\)"):
        ClusterSettings(namespace="ranking", ensemble="ads_ranking")
    with pytest.raises(ManifestError, match="Namespace 'Ranking'"):
        ClusterSettings(namespace="Ranking", ensemble="ads")
    assert dns_label("Ads_Ranking v2") == "ads-ranking-v2"
    long_cluster = ClusterSettings(namespace="ranking", ensemble="a" * 60)
    with pytest.raises(ManifestError, match="longer than 63 characters"):
        pool_manifests(long_cluster, cpu_pool())


def test_cluster_settings_reach_the_pods() -> None:
    cluster = ClusterSettings(
        namespace="ranking",
        ensemble="ads-ranking",
        image="nvcr.io/nvidia/tritonserver:24.10-py3-min",
        image_pull_secrets=("mirror-pull",),
        labels={"team": "ads"},
        priority_class="serving-high",
    )
    manifests = pool_manifests(
        cluster, cpu_pool(image=None, labels={"tier-set": "cheap"}, env={"XL_POOL": "x:8001"})
    )
    validate(manifests)
    deployment = by_kind(manifests)["Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    assert container(deployment)["image"] == "nvcr.io/nvidia/tritonserver:24.10-py3-min"
    assert pod["imagePullSecrets"] == [{"name": "mirror-pull"}]
    assert pod["priorityClassName"] == "serving-high"
    assert {"name": "XL_POOL", "value": "x:8001"} in container(deployment)["env"]
    for manifest in manifests:
        assert manifest["metadata"]["namespace"] == "ranking"
        assert manifest["metadata"]["labels"]["team"] == "ads"
        assert manifest["metadata"]["labels"]["tier-set"] == "cheap"


# --- files ---


def test_write_manifests_writes_one_file_per_pool_and_a_summary(tmp_path: Path) -> None:
    pools = [cpu_pool(), gpu_pool()]
    paths = write_manifests(tmp_path / "out", CLUSTER, pools)
    assert [p.name for p in paths] == ["cpu.yaml", "big.yaml", "README.md"]
    for pool, path in zip(pools, paths, strict=False):
        documents = list(yaml.safe_load_all(path.read_text()))
        assert documents == pool_manifests(CLUSTER, pool)
    summary = paths[-1].read_text()
    assert "ads-ranking-cpu.ranking.svc.cluster.local:8001" in summary
    assert "ads-ranking-big-pods.ranking.svc.cluster.local:8001" in summary
    assert "kubectl apply -f cpu.yaml\nkubectl apply -f big.yaml" in summary  # no entry pool: as given
    assert "s3://https://minio.storage:9000/models/ads/big" in summary
    assert "create secret generic s3-creds" in summary
    assert QUEUE_TIME_METRIC in summary and "metricsQuery" in summary
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["README.md", "big.yaml", "cpu.yaml"]


def test_write_manifests_validates_before_writing(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="has no bundled schemas"):
        write_manifests(tmp_path / "out", CLUSTER, [cpu_pool()], kubernetes_version="1.99")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ManifestError, match="repeated: cpu"):
        write_manifests(tmp_path / "out", CLUSTER, [cpu_pool(), cpu_pool()])
    with pytest.raises(ManifestError, match="queue-time metric"):
        write_manifests(tmp_path / "out", CLUSTER, [cpu_pool(), gpu_pool()], kserve=True)
    assert not (tmp_path / "out").exists()


def test_write_manifests_kserve(tmp_path: Path) -> None:
    paths = write_manifests(tmp_path, CLUSTER, [cpu_pool(), gpu_pool(queue_time_target_us=None)], kserve=True)
    kinds = [m["kind"] for m in yaml.safe_load_all(paths[1].read_text())]
    assert kinds == ["ServiceAccount", "InferenceService", "PodDisruptionBudget"]
    assert "KServe" in paths[-1].read_text()


def test_descriptions_are_frozen_and_hashable() -> None:
    pool = cpu_pool(labels={"team": "ads"})
    assert pool == cpu_pool(labels={"team": "ads"}) and hash(pool) == hash(cpu_pool(labels={"team": "ads"}))
    assert hash(CLUSTER) == hash(ClusterSettings(namespace="ranking", ensemble="ads-ranking"))
    with pytest.raises(TypeError):
        pool.labels["team"] = "search"  # type: ignore[index]
