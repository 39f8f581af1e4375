"""YAML rendering and offline validation of manifests against the Kubernetes schemas."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import yaml

from toolkit.errors import one_line
from toolkit.k8s.pool import (
    _DNS1035_LABEL,
    _DNS1123_SUBDOMAIN,
    _LABEL_VALUE,
    KSERVE_API_VERSION,
    ManifestError,
    _label_key_problem,
)
from toolkit.s3url import parse_s3_url


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


def _plain_s3_url(value: object) -> bool:
    """Whether ``value`` is ``s3://bucket/prefix`` without an endpoint (KServe takes that apart)."""
    try:
        return isinstance(value, str) and parse_s3_url(value).endpoint is None
    except ValueError:
        return False


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
    if not _plain_s3_url(storage_uri):
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
