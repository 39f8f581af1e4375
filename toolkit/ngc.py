"""NVIDIA's Triton images on NGC: what each release ships, and whether a TensorRT plan can load in it.

A serialized TensorRT engine (a ``model.plan``) loads only in the TensorRT version that built it. The
serving image fixes that version, so a plan built on a workstation with another TensorRT fails to load
in every pod. :func:`check_plan` compares the two before anything is deployed.

:data:`RELEASES` lists the ``nvcr.io/nvidia/tritonserver:<YY.MM>-py3`` releases whose TensorRT version
we found stated in a published source (the ``source`` of each row). For another image, give its
TensorRT version in the spec (``kubernetes.image_tensorrt``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from toolkit.errors import RepositoryError


@dataclass(frozen=True)
class Release:
    """One NGC release of the Triton image.

    Attributes:
        release: ``YY.MM``, the image tag's prefix.
        triton: Triton Inference Server version.
        tensorrt: TensorRT version in the image.
        cuda: CUDA version the image is based on.
        python: The image's system Python (``major.minor``), which runs the python backend.
        source: Where these versions are stated.
    """

    release: str
    triton: str
    tensorrt: str
    cuda: str
    python: str
    source: str


_NOTES = "https://docs.nvidia.com/deeplearning/triton-inference-server/release-notes"
_BUILD_GUIDE = (
    "https://github.com/triton-inference-server/tutorials/blob/main/Build_Guide/RHEL_Manylinux/README.md"
)

RELEASES: dict[str, Release] = {
    r.release: r
    for r in (
        Release("24.10", "2.51.0", "10.5.0.18", "12.6.2", "3.10", f"{_NOTES}/rel-24-10.html"),
        Release("25.01", "2.54.0", "10.8.0.43", "12.8.0", "3.12", f"{_NOTES}/rel-25-01.html"),
        Release("26.05", "2.69.0", "10.16.1.11", "13.2.1", "3.12", _BUILD_GUIDE),
        Release("26.08", "2.72.0", "11.2.1.2", "13.4.1", "3.12", _BUILD_GUIDE),
    )
}
"""Releases whose TensorRT version is stated in the row's source, oldest first."""

DEFAULT_RELEASE = "24.10"
"""The release of the default image: the Triton (2.51) that the ``serve`` extra's bundled server matches."""

DEFAULT_IMAGE = f"nvcr.io/nvidia/tritonserver:{DEFAULT_RELEASE}-py3"
"""The image ``toolkit k8s`` deploys unless the spec names another (``kubernetes.image``)."""

OLDEST_PYTHON = min((r.python for r in RELEASES.values()), key=lambda v: tuple(map(int, v.split("."))))
"""The oldest Python of the images in :data:`RELEASES`: the router package must run on it."""

ENGINE_CACHE_ROOT = "/tmp/triton_trt_cache"
"""Default root of ONNX Runtime's TensorRT engine caches, on the server.

Triton's onnxruntime backend passes ``trt_engine_cache_path`` to ONNX Runtime as it is, so a relative
path would resolve against the server's working directory, not the model's folder; and a cache
written inside the model folder would look like a model change to a polling server. Each model gets
its own folder below the root: ``<root>/<tier>/<variant>[/<sha256 prefix>]``.
"""

_TAG = re.compile(r"^(\d\d\.\d\d)-py3(?:-[a-z0-9.-]+)?$")


def release_of(image: str) -> Release | None:
    """The :data:`RELEASES` row of an NGC Triton image reference, or None when its tag is not listed.

    ``nvcr.io/nvidia/tritonserver:24.10-py3`` and its ``-min`` form resolve; a mirror that keeps the
    repository name and tag (``registry.example/nvidia/tritonserver:24.10-py3``) does too. Images with
    other names (a custom build), a digest or another tag return None.
    """
    name, _, tag = image.rpartition(":")
    if not name or "/" in tag or name.rsplit("/", 1)[-1] != "tritonserver":
        return None
    match = _TAG.match(tag)
    return RELEASES.get(match.group(1)) if match else None


def same_tensorrt(built: str, serving: str) -> bool:
    """Whether a plan built by TensorRT ``built`` loads in TensorRT ``serving``: same major.minor.patch.

    PyPI's ``tensorrt-cu12`` wheels name some releases by three numbers (``10.5.0``) and the images by
    four (``10.5.0.18``); both are the same release.
    """
    return _release_numbers(built) == _release_numbers(serving)


def _release_numbers(version: str) -> tuple[str, ...]:
    return tuple(re.split(r"[.+]", version.strip())[:3])


def serving_tensorrt(image: str, stated: str = "") -> str | None:
    """The TensorRT version of ``image``: ``stated`` when given, else the :data:`RELEASES` row's."""
    if stated:
        return stated
    release = release_of(image)
    return release.tensorrt if release else None


def check_plan(where: str, built: str, image: str, stated: str = "") -> str | None:
    """Refuse a TensorRT plan that cannot load in the serving image.

    Args:
        where: What the plan is, for the message (``tier xl, trt-fp16``).
        built: TensorRT version that built the plan (the export manifest's ``engine.tensorrt_version``).
        image: The serving image.
        stated: The image's TensorRT version from the spec (``kubernetes.image_tensorrt``), or "".

    Returns:
        None when the versions match; a one-line note when the image's TensorRT is unknown (the plan
        is deployed, unchecked).

    Raises:
        RepositoryError: The versions differ. The message names both and the ways out.
    """
    serving = serving_tensorrt(image, stated)
    if serving is None:
        return (
            f"{where}: cannot check the plan against {image}, whose TensorRT version is not known; set "
            f"kubernetes.image_tensorrt to it (the plan was built by TensorRT {built})."
        )
    if same_tensorrt(built, serving):
        return None
    raise RepositoryError(
        f"{where}: the plan was built by TensorRT {built}, but {image} runs TensorRT {serving}, which "
        f"cannot load it. Export with TensorRT {serving} "
        f"(pip install 'tensorrt-cu12=={_pip_version(serving)}'), "
        "or pin the tier's ONNX variant (onnx-fp16) so the server builds its own engines with the image's "
        "TensorRT (kubernetes.engine_cache keeps them across pods)."
    )


def check_plans(built: Mapping[str, str | None], image: str, stated: str = "") -> tuple[str, ...]:
    """:func:`check_plan` for several plans; a plan whose builder's version is not recorded gets a note.

    Args:
        built: Per plan, what it is (for the messages) and the TensorRT version that built it, or None.
        image: The serving image.
        stated: The image's TensorRT version from the spec, or "".

    Returns:
        Notes for plans that could not be checked.

    Raises:
        RepositoryError: A plan was built by another TensorRT than the image's.
    """
    notes = []
    for where, version in built.items():
        if not version:
            notes.append(
                f"{where}: no record says which TensorRT built the plan, so it is not checked "
                f"against {image}."
            )
            continue
        note = check_plan(where, version, image, stated)
        if note:
            notes.append(note)
    return tuple(notes)


def _pip_version(version: str) -> str:
    numbers = _release_numbers(version)
    return ".".join(numbers) + ".*"
