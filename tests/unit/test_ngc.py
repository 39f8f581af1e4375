"""The NGC release table, and refusing TensorRT plans that the serving image cannot load."""

from __future__ import annotations

import re

import pytest

from toolkit.errors import RepositoryError
from toolkit.k8s import TRITON_IMAGE
from toolkit.ngc import (
    DEFAULT_IMAGE,
    DEFAULT_RELEASE,
    OLDEST_PYTHON,
    RELEASES,
    check_plan,
    release_of,
    same_tensorrt,
    serving_tensorrt,
)


def test_every_release_row_states_its_versions_and_where_they_come_from() -> None:
    for tag, row in RELEASES.items():
        assert row.release == tag and re.fullmatch(r"\d\d\.\d\d", tag)
        assert re.fullmatch(r"\d+\.\d+\.\d+(\.\d+)?", row.tensorrt), row
        assert re.fullmatch(r"\d+\.\d+\.\d+", row.triton), row
        assert re.fullmatch(r"3\.\d+", row.python), row
        assert row.source.startswith("https://"), row
    assert list(RELEASES) == sorted(RELEASES)


def test_the_default_image_is_the_release_the_bundled_server_matches_and_k8s_deploys_it() -> None:
    assert DEFAULT_IMAGE == TRITON_IMAGE == f"nvcr.io/nvidia/tritonserver:{DEFAULT_RELEASE}-py3"
    assert RELEASES[DEFAULT_RELEASE].triton == "2.51.0"
    assert OLDEST_PYTHON == "3.10"


@pytest.mark.parametrize(
    ("image", "release"),
    [
        ("nvcr.io/nvidia/tritonserver:24.10-py3", "24.10"),
        ("nvcr.io/nvidia/tritonserver:25.01-py3-min", "25.01"),
        ("registry.example:5000/mirror/nvidia/tritonserver:24.10-py3", "24.10"),
        ("nvcr.io/nvidia/tritonserver:24.11-py3", None),
        ("nvcr.io/nvidia/tritonserver:24.10-trtllm-python-py3", None),
        ("example.com/team/ranking-entry:1.4", None),
        ("nvcr.io/nvidia/tritonserver@sha256:0123", None),
        ("tritonserver", None),
    ],
)
def test_release_of_resolves_only_listed_ngc_tags_of_the_triton_image(
    image: str, release: str | None
) -> None:
    row = release_of(image)
    assert (row.release if row else None) == release


@pytest.mark.parametrize(
    ("built", "serving", "same"),
    [
        ("10.5.0", "10.5.0.18", True),
        ("10.5.0.18", "10.5.0.18", True),
        ("10.8.0.43", "10.8.0.43", True),
        ("10.16.1.11", "10.5.0.18", False),
        ("10.5.1", "10.5.0.18", False),
        ("11.2.1.2", "10.16.1.11", False),
    ],
)
def test_same_tensorrt_compares_major_minor_and_patch(built: str, serving: str, same: bool) -> None:
    assert same_tensorrt(built, serving) is same


def test_check_plan_refuses_another_tensorrt_naming_both_versions_and_the_ways_out() -> None:
    with pytest.raises(RepositoryError) as info:
        check_plan("tier xl (trt-fp16)", "10.16.1.11", DEFAULT_IMAGE)

    message = str(info.value)
    assert "\n" not in message
    assert "tier xl (trt-fp16)" in message and "10.16.1.11" in message and "10.5.0.18" in message
    assert "pip install 'tensorrt-cu12==10.5.0.*'" in message
    assert "onnx-fp16" in message and "kubernetes.engine_cache" in message


def test_check_plan_passes_a_plan_of_the_image_tensorrt_and_notes_an_image_it_cannot_check() -> None:
    assert check_plan("tier xl (trt-fp16)", "10.5.0", DEFAULT_IMAGE) is None
    assert check_plan("tier xl (trt-fp16)", "10.8.0.43", "nvcr.io/nvidia/tritonserver:25.01-py3") is None
    note = check_plan("tier xl (trt-fp16)", "10.8.0.43", "example.com/triton:custom")
    assert note is not None and "kubernetes.image_tensorrt" in note and "example.com/triton:custom" in note


def test_a_stated_image_tensorrt_beats_the_table() -> None:
    assert serving_tensorrt(DEFAULT_IMAGE, "10.16.1.11") == "10.16.1.11"
    assert check_plan("tier xl (trt-fp16)", "10.16.1.11", DEFAULT_IMAGE, "10.16.1.11") is None
    with pytest.raises(
        RepositoryError, match=r"10\.5\.0\.18.*example\.com/triton:custom runs TensorRT 10\.8"
    ):
        check_plan("tier xl (trt-fp16)", "10.5.0.18", "example.com/triton:custom", "10.8.0.43")
