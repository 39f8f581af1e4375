"""Unit tests of toolkit.k8s.fleet and ``toolkit k8s``: from an ensemble spec to validated manifests."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import run_cli, tiny_spec_dict, write_spec

from toolkit.k8s import TRITON_IMAGE, ManifestError, supported_kubernetes_versions, validate
from toolkit.k8s.fleet import (
    SINGLE_POOL,
    cluster_settings,
    default_address,
    pool_deployments,
    write_fleet,
)
from toolkit.spec import load_spec, spec_from_dict

ENTRY_IMAGE = "ads-ranking-entry:24.10-py3"


def pools_dict(folder: Path, **kubernetes: Any) -> dict[str, Any]:
    """The tiny spec with pools ``cpu`` (entry: lite, standard) and ``big`` (gpu: xl)."""
    data = tiny_spec_dict(folder)
    names = [tier["name"] for tier in data["tiers"]]
    assert names == ["lite", "standard", "xl"]
    data["tiers"][2]["pool"] = "big"
    data["pools"] = [
        {"name": "cpu", "cpu": "2", "memory": "4Gi", "min_replicas": 2, "max_replicas": 8},
        {
            "name": "big",
            "hardware": "gpu",
            "cpu": "4",
            "memory": "16Gi",
            "max_replicas": 3,
            "queue_time_target_us": 5000,
        },
    ]
    data["kubernetes"] = {
        "namespace": "ranking",
        "repository": "s3://models/ads/",
        "s3_secret": "s3-creds",
        "s3_endpoint": "https://minio.storage:9000",
        **kubernetes,
    }
    return data


def documents(path: Path) -> list[dict[str, Any]]:
    return list(yaml.safe_load_all(path.read_text(encoding="utf-8")))


def kind(manifests: list[dict[str, Any]], name: str, headless: bool = False) -> dict[str, Any]:
    (only,) = [
        m
        for m in manifests
        if m["kind"] == name and (name != "Service" or (m["spec"].get("clusterIP") == "None") == headless)
    ]
    return only


def pod_spec(manifests: list[dict[str, Any]]) -> dict[str, Any]:
    return kind(manifests, "Deployment")["spec"]["template"]["spec"]


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``toolkit k8s`` once on the two-pool spec (entry_image set), and once without entry_image."""
    folder = tmp_path_factory.mktemp("fleet")
    spec_path = write_spec(folder / "spec.yaml", pools_dict(folder, entry_image=ENTRY_IMAGE))
    out = folder / "k8s"
    proc = run_cli("k8s", "--spec", str(spec_path), "--out", str(out))
    bare_path = write_spec(folder / "bare.yaml", pools_dict(folder))
    bare = run_cli("k8s", "--spec", str(bare_path), "--out", str(folder / "bare"))
    return {"spec": load_spec(spec_path), "out": out, "proc": proc, "bare": bare, "bare_out": folder / "bare"}


# --- the two-pool spec ---


def test_k8s_writes_one_file_per_pool_summary_and_entry_dockerfile(written: dict[str, Any]) -> None:
    out = written["out"]
    assert sorted(p.name for p in out.iterdir()) == ["Dockerfile.entry", "README.md", "big.yaml", "cpu.yaml"]
    stdout = written["proc"].stdout
    for line in (
        f"kubectl apply -f {out / 'big.yaml'}\n  kubectl apply -f {out / 'cpu.yaml'}",
        "kubectl create namespace ranking",
        "create secret generic s3-creds",
        "runs ensemble tiny (router, preprocess); tiers lite, standard",
        "runs tier xl",
        "repository s3://https://minio.storage:9000/models/ads/big",
        "gRPC tiny-cpu.ranking.svc.cluster.local:8001 (clients)",
        "gRPC tiny-big-pods.ranking.svc.cluster.local:8001 (the entry pool's router",
        "replicas 1-3 (HPA on 70% CPU, queue time 5000 us per request)",
    ):
        assert line in stdout
    assert "warning" not in written["proc"].stderr  # entry_image is set


@pytest.mark.parametrize("which", ["oldest", "newest"])
def test_every_document_validates_against_old_and_new_kubernetes(written: dict[str, Any], which: str) -> None:
    versions = supported_kubernetes_versions()
    version = versions[0] if which == "oldest" else versions[-1]
    assert versions[0] != versions[-1]
    for name in ("cpu.yaml", "big.yaml"):
        manifests = documents(written["out"] / name)
        assert [m["kind"] for m in manifests] == [
            "Deployment",
            "Service",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
        ]
        validate(manifests, version)


def test_gpu_pool_requests_gpus_and_tolerates_the_taint_cpu_pool_does_not(written: dict[str, Any]) -> None:
    big = pod_spec(documents(written["out"] / "big.yaml"))
    (main,) = big["containers"]
    assert main["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert main["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert main["resources"]["requests"]["memory"] == "16Gi"
    assert any(t["key"] == "nvidia.com/gpu" for t in big["tolerations"])
    cpu = pod_spec(documents(written["out"] / "cpu.yaml"))
    (main,) = cpu["containers"]
    assert "nvidia.com/gpu" not in main["resources"]["requests"]
    assert "nvidia.com/gpu" not in main["resources"]["limits"]
    assert "tolerations" not in cpu and "nodeSelector" not in cpu


def test_each_pool_reads_its_own_repository_folder(written: dict[str, Any]) -> None:
    for pool in ("cpu", "big"):
        (main,) = pod_spec(documents(written["out"] / f"{pool}.yaml"))["containers"]
        assert main["args"][0] == f"--model-repository=s3://https://minio.storage:9000/models/ads/{pool}"
        env = {item["name"]: item for item in main.get("env", [])}
        assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"]["name"] == "s3-creds"


def test_headless_service_is_where_the_router_calls_the_pool(written: dict[str, Any]) -> None:
    spec = written["spec"]
    address = default_address(spec, "big")
    assert address == "tiny-big-pods.ranking.svc.cluster.local:8001"
    host, _, port = address.rpartition(":")
    name, namespace, svc, domain = host.split(".", 3)
    assert (svc, domain) == ("svc", spec.kubernetes.cluster_domain)
    manifests = documents(written["out"] / "big.yaml")
    headless = kind(manifests, "Service", headless=True)
    assert headless["metadata"]["name"] == name and headless["metadata"]["namespace"] == namespace
    assert headless["spec"]["publishNotReadyAddresses"] is False
    assert [p["port"] for p in headless["spec"]["ports"]] == [int(port)]
    # The pods listen on that port (a headless Service maps none) and the Service selects them.
    (main,) = pod_spec(manifests)["containers"]
    assert {"name": "grpc", "containerPort": int(port), "protocol": "TCP"} in main["ports"]
    labels = kind(manifests, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert headless["spec"]["selector"].items() <= labels.items()
    assert address in (written["out"] / "README.md").read_text(encoding="utf-8")


def test_entry_pool_runs_the_entry_image_the_others_the_triton_image(written: dict[str, Any]) -> None:
    (entry,) = pod_spec(documents(written["out"] / "cpu.yaml"))["containers"]
    (other,) = pod_spec(documents(written["out"] / "big.yaml"))["containers"]
    assert entry["image"] == ENTRY_IMAGE
    assert other["image"] == TRITON_IMAGE


def test_dockerfile_pins_the_installed_tritonclient_on_the_cluster_image(written: dict[str, Any]) -> None:
    text = (written["out"] / "Dockerfile.entry").read_text(encoding="utf-8")
    lines = [line for line in text.splitlines() if not line.startswith("#")]
    version = importlib.metadata.version("tritonclient")
    assert lines[0] == f"FROM {TRITON_IMAGE}"
    assert f'RUN pip install --no-cache-dir "tritonclient[grpc]=={version}"' in lines
    summary = (written["out"] / "README.md").read_text(encoding="utf-8")
    assert "Dockerfile.entry" in summary and "kubernetes.entry_image" in summary


def test_missing_entry_image_is_a_warning_not_an_error(written: dict[str, Any]) -> None:
    bare = written["bare"]
    assert bare.returncode == 0
    (warning,) = [line for line in bare.stderr.splitlines() if line.strip()]
    assert warning.startswith("warning: kubernetes.entry_image is not set")
    assert "Dockerfile.entry" in warning and "bare.yaml" in warning
    (entry,) = pod_spec(documents(written["bare_out"] / "cpu.yaml"))["containers"]
    assert entry["image"] == TRITON_IMAGE
    assert "router fails to load" in (written["bare_out"] / "README.md").read_text(encoding="utf-8")


# --- the mapping, in process ---


def test_pool_deployments_map_the_spec(tmp_path: Path) -> None:
    data = pools_dict(tmp_path)
    data["kubernetes"] = {"repository": "s3://models/ads"}
    spec = spec_from_dict(data, "spec.yaml")
    cluster = cluster_settings(spec)
    assert (cluster.namespace, cluster.ensemble, cluster.image) == (
        "tiny",
        "tiny",
        TRITON_IMAGE,
    )
    cpu, big = pool_deployments(spec)
    assert (cpu.name, cpu.hardware, cpu.gpus, cpu.min_replicas, cpu.max_replicas) == ("cpu", "cpu", 0, 2, 8)
    assert (big.name, big.hardware, big.gpus, big.cpu, big.memory) == ("big", "gpu", 1, "4", "16Gi")
    assert (cpu.queue_time_target_us, big.queue_time_target_us) == (None, 5000)
    assert cpu.repository_url == "s3://models/ads/cpu" and big.repository_url == "s3://models/ads/big"
    assert cpu.image is None and big.image is None  # no entry_image: the cluster's
    for pool in (cpu, big):
        assert (pool.s3_secret, pool.s3_endpoint, pool.s3_region, pool.service_account) == (None,) * 4
        assert pool.model_control_mode == "explicit" and pool.grpc_port == 8001


def test_errors_name_the_spec_file_and_key(tmp_path: Path) -> None:
    data = pools_dict(tmp_path)
    data["kubernetes"]["s3_endpoint"] = "minio.storage:x"  # not a port
    with pytest.raises(
        ManifestError, match=r"^spec\.yaml: key 'kubernetes\.s3_endpoint': .*is not an endpoint"
    ):
        pool_deployments(spec_from_dict(data, "spec.yaml"))
    data = pools_dict(tmp_path, s3_endpoint="")
    data["pools"][0]["cpu"] = "two"
    with pytest.raises(ManifestError, match=r"^spec\.yaml: key 'pools\[0\]\.cpu': Pool cpu: cpu must be"):
        pool_deployments(spec_from_dict(data, "spec.yaml"))
    data = pools_dict(tmp_path, kubernetes_version="1.99")
    with pytest.raises(ManifestError, match=r"key 'kubernetes\.kubernetes_version': no bundled schemas"):
        write_fleet(spec_from_dict(data, "spec.yaml"), tmp_path / "out")
    data = pools_dict(tmp_path)
    data["name"] = "a" * 57  # a...-cpu fits, a...-cpu-pods is longer than a Service name may be
    with pytest.raises(ManifestError, match=r"key 'pools\[0\]\.name': Service name .* longer than 63"):
        pool_deployments(spec_from_dict(data, "spec.yaml"))
    assert not (tmp_path / "out").exists()


# --- errors and other forms through the CLI ---


def test_missing_repository_fails_naming_the_key(tmp_path: Path) -> None:
    data = pools_dict(tmp_path)
    del data["kubernetes"]["repository"]
    spec_path = write_spec(tmp_path / "spec.yaml", data)
    proc = run_cli("k8s", "--spec", str(spec_path), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {spec_path}: key 'kubernetes.repository': not set")
    assert "toolkit deploy --out s3://" in line
    assert not (tmp_path / "out").exists()


def test_bad_pool_value_fails_naming_the_pool(tmp_path: Path) -> None:
    data = pools_dict(tmp_path)
    data["pools"][1]["memory"] = "lots"
    spec_path = write_spec(tmp_path / "spec.yaml", data)
    proc = run_cli("k8s", "--spec", str(spec_path), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {spec_path}: key 'pools[1].memory': ")
    assert "'lots'" in line
    assert not (tmp_path / "out").exists()


def test_kserve_refuses_remote_pools(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path / "spec.yaml", pools_dict(tmp_path))
    proc = run_cli("k8s", "--spec", str(spec_path), "--out", str(tmp_path / "out"), "--kserve", check=False)
    assert proc.returncode == 1
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {spec_path}: key 'kubernetes.kserve': the KServe form cannot run remote")
    assert "(big)" in line and "--no-kserve" in line
    assert not (tmp_path / "out").exists()


def test_spec_without_pools_is_one_pool_and_kserve_validates(tmp_path: Path) -> None:
    data = tiny_spec_dict(tmp_path)
    data["triton"]["target"] = "gpu"
    data["kubernetes"] = {"repository": "s3://models/ads", "kserve": True}
    spec_path = write_spec(tmp_path / "spec.yaml", data)
    out = tmp_path / "out"
    versions = supported_kubernetes_versions()
    proc = run_cli("k8s", "--spec", str(spec_path), "--out", str(out), "--kubernetes-version", versions[0])
    assert sorted(p.name for p in out.iterdir()) == ["README.md", f"{SINGLE_POOL}.yaml"]
    assert "runs ensemble tiny (router, preprocess); tiers lite, standard, xl" in proc.stdout
    assert f"validated against Kubernetes {versions[0]}" in proc.stdout
    manifests = documents(out / f"{SINGLE_POOL}.yaml")
    isvc = kind(manifests, "InferenceService")
    assert isvc["metadata"] == {**isvc["metadata"], "name": "tiny-triton", "namespace": "tiny"}
    model = isvc["spec"]["predictor"]["model"]
    assert model["storageUri"] == "s3://models/ads"  # without pools: the repository itself
    assert model["resources"]["limits"]["nvidia.com/gpu"] == 1
    for version in (versions[0], versions[-1]):
        validate(manifests, version)
    # The plain form of the same spec, in process: one pool with both Services.
    plain = write_fleet(load_spec(spec_path), tmp_path / "plain", kserve=False)
    assert [p.name for p in plain.paths] == [f"{SINGLE_POOL}.yaml", "README.md"]
    assert plain.dockerfile is None
    kinds = [m["kind"] for m in documents(plain.paths[0])]
    assert kinds == ["Deployment", "Service", "Service", "HorizontalPodAutoscaler", "PodDisruptionBudget"]


def test_kubernetes_version_flag_is_checked(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path / "spec.yaml", pools_dict(tmp_path))
    proc = run_cli(
        "k8s",
        "--spec",
        str(spec_path),
        "--out",
        str(tmp_path / "out"),
        "--kubernetes-version",
        "1.99",
        check=False,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip() == (
        "error: --kubernetes-version: no bundled schemas for Kubernetes '1.99'; kubernetes-validate knows "
        f"{supported_kubernetes_versions()[0]} to {supported_kubernetes_versions()[-1]}"
    )
    assert not (tmp_path / "out").exists()


# --- GPU pools: the engine cache, the engine-build Job and the plans' TensorRT ---


def test_engine_cache_and_build_job_go_to_gpu_pools_only_and_validate(tmp_path: Path) -> None:
    spec_path = write_spec(
        tmp_path / "spec.yaml",
        pools_dict(tmp_path, engine_cache="20Gi", engine_cache_class="shared-rwx", build_engines=True),
    )
    proc = run_cli("k8s", "--spec", str(spec_path), "--out", str(tmp_path / "out"))

    big = documents(tmp_path / "out" / "big.yaml")
    assert [m["kind"] for m in big[:3]] == ["PersistentVolumeClaim", "Job", "Deployment"]
    claim = kind(big, "PersistentVolumeClaim")
    assert claim["metadata"]["name"] == "tiny-big-trt-engine-cache"
    assert claim["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "20Gi"}},
        "storageClassName": "shared-rwx",
    }
    serving = pod_spec(big)
    job = kind(big, "Job")["spec"]["template"]["spec"]
    for pod in (serving, job):
        assert {
            "name": "trt-engine-cache",
            "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]},
        } in pod["volumes"]
        (container,) = pod["containers"]
        assert {"name": "trt-engine-cache", "mountPath": "/tmp/triton_trt_cache"} in container["volumeMounts"]
        assert container["image"] == TRITON_IMAGE
        assert any(t["key"] == "nvidia.com/gpu" for t in pod["tolerations"])
    (builder,) = job["containers"]
    assert job["restartPolicy"] == "Never"
    assert builder["command"][:2] == ["/bin/sh", "-c"]
    assert "'--load-model=*'" in builder["command"][2]
    assert "s3://https://minio.storage:9000/models/ads/big" in builder["command"][2]
    assert builder["resources"] == serving["containers"][0]["resources"]
    job_labels = kind(big, "Job")["spec"]["template"]["metadata"]["labels"]
    selector = kind(big, "Service")["spec"]["selector"]
    assert not selector.items() <= job_labels.items()  # the Services never send traffic to the Job's pod
    for version in supported_kubernetes_versions()[:: len(supported_kubernetes_versions()) - 1]:
        validate(big, version)
    cpu = documents(tmp_path / "out" / "cpu.yaml")
    assert [m["kind"] for m in cpu] == [
        "Deployment",
        "Service",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
    ]
    assert "note:" not in proc.stderr


def test_the_build_job_script_is_valid_shell_and_stops_the_server_once_ready(tmp_path: Path) -> None:
    import subprocess

    from toolkit.k8s.manifests import build_engines_script

    (deployment,) = [
        pool
        for pool in pool_deployments(
            spec_from_dict(pools_dict(tmp_path, engine_cache="20Gi", build_engines=True), "spec.yaml")
        )
        if pool.build_engines
    ]
    script = build_engines_script(deployment)
    assert subprocess.run(["sh", "-n", "-c", script]).returncode == 0
    assert script.splitlines()[0].startswith("tritonserver ") and script.splitlines()[0].endswith(" &")
    assert (
        'kill -TERM "$server"' in script
        and f"http://127.0.0.1:{deployment.http_port}/v2/health/ready" in script
    )


def test_build_engines_without_an_engine_cache_fails_naming_the_key(tmp_path: Path) -> None:
    spec_path = write_spec(tmp_path / "spec.yaml", pools_dict(tmp_path, build_engines=True))
    proc = run_cli("k8s", "--spec", str(spec_path), "--out", str(tmp_path / "out"), check=False)
    assert proc.returncode == 1
    assert "kubernetes.build_engines" in proc.stderr and "engine_cache" in proc.stderr
    assert not (tmp_path / "out").exists()


def test_k8s_refuses_a_deployed_plan_the_pools_image_cannot_load(tmp_path: Path) -> None:
    import json

    spec_path = write_spec(tmp_path / "spec.yaml", pools_dict(tmp_path))
    repository = Path(load_spec(spec_path).paths.repository)
    (repository / "big").mkdir(parents=True)
    marker = {"engines": {"xl": {"tensorrt_version": "10.16.1.11", "device": "NVIDIA L4"}}}
    (repository / "big" / "toolkit-repository.json").write_text(json.dumps(marker), encoding="utf-8")

    refused = run_cli("k8s", "--spec", str(spec_path), "--out", str(tmp_path / "out"), check=False)
    stated = write_spec(
        tmp_path / "stated.yaml",
        pools_dict(tmp_path, image="example.com/triton:26.05", image_tensorrt="10.16.1.11"),
    )
    accepted = run_cli("k8s", "--spec", str(stated), "--out", str(tmp_path / "out2"))

    assert refused.returncode == 1 and len(refused.stderr.strip().splitlines()) == 1
    assert "pool big, tier xl" in refused.stderr and "10.16.1.11" in refused.stderr
    assert "10.5.0.18" in refused.stderr
    assert not (tmp_path / "out").exists()
    assert (tmp_path / "out2" / "big.yaml").is_file() and "note:" not in accepted.stderr
