"""Unit tests of ``toolkit.router.local``: the router's in-process session follows what Triton serves."""

from __future__ import annotations

import os
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest

from toolkit.router import LocalModel, NotServedError, newest_version


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Served:
    """What Triton reports ready, and the sessions opened (each session is the file's text)."""

    def __init__(self) -> None:
        self.ready: set[int] = set()
        self.asked: list[tuple[str, int | None]] = []
        self.opened: list[str] = []

    def is_ready(self, name: str, version: int | None) -> bool:
        self.asked.append((name, version))
        return bool(self.ready) if version is None else version in self.ready

    def open(self, path: Path) -> str:
        text = path.read_text(encoding="utf-8")
        if text == "corrupt":
            raise ValueError(f"{path}: not an ONNX model")
        self.opened.append(text)
        return text


def write_version(folder: Path, version: int, text: str) -> Path:
    path = folder / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def setup(tmp_path: Path) -> tuple[LocalModel, Served, Clock, Path]:
    served, clock = Served(), Clock()
    folder = tmp_path / "xl"
    model = LocalModel(
        "xl", folder, "model.onnx", served.is_ready, served.open, check_every_s=1.0, clock=clock
    )
    return model, served, clock, folder


def test_newest_version_is_the_highest_numbered_folder_with_the_file(tmp_path: Path) -> None:
    write_version(tmp_path, 2, "two")
    write_version(tmp_path, 10, "ten")
    (tmp_path / "11").mkdir()
    (tmp_path / "notes").mkdir()

    assert newest_version(tmp_path, "model.onnx") == 10
    assert newest_version(tmp_path / "missing", "model.onnx") is None


def test_session_is_opened_once_and_triton_asked_again_only_after_the_interval_when_served(setup) -> None:
    model, served, clock, folder = setup
    write_version(folder, 1, "v1")
    served.ready = {1}

    assert model.get() == "v1"
    clock.now = 0.5
    assert model.get() == "v1"
    assert served.asked == [("xl", 1)]
    clock.now = 1.5
    assert model.get() == "v1"

    assert served.asked == [("xl", 1), ("xl", 1)] and served.opened == ["v1"]


def test_unloaded_model_is_not_served_and_is_asked_about_on_every_call_until_loaded_again(setup) -> None:
    model, served, clock, folder = setup
    path = write_version(folder, 1, "v1")
    served.ready = {1}
    assert model.get() == "v1"

    served.ready = set()
    clock.now = 2.0
    with pytest.raises(NotServedError, match="'xl' is not served"):
        model.get()
    with pytest.raises(NotServedError):
        model.get()
    assert served.asked[1:] == [("xl", 1), ("xl", None), ("xl", 1), ("xl", None)]

    path.write_text("v1, replaced", encoding="utf-8")
    os.utime(path, ns=(10**18, 10**18))
    served.ready = {1}
    assert model.get() == "v1, replaced"
    assert served.opened == ["v1", "v1, replaced"]


def test_old_version_serves_while_triton_loads_the_new_one_even_when_it_unloaded_the_old_first(
    setup,
) -> None:
    model, served, clock, folder = setup
    write_version(folder, 1, "v1")
    served.ready = {1}
    assert model.get() == "v1"

    write_version(folder, 2, "v2")
    clock.now = 2.0
    assert model.get() == "v1"
    served.ready = {3}  # Triton marks version 1 gone before 2 is ready, yet still answers calls
    clock.now = 3.0
    assert model.get() == "v1"
    served.ready = set()
    clock.now = 4.5
    with pytest.raises(NotServedError):
        model.get()
    served.ready = {1, 2}
    assert model.get() == "v2"
    served.ready = {2}
    clock.now = 6.0

    assert model.get() == "v2" and model.version == 2 and served.opened == ["v1", "v2"]


def test_model_without_any_version_folder_is_not_served(setup) -> None:
    model, served, _, _ = setup

    with pytest.raises(NotServedError):
        model.get()
    assert served.asked == []


def test_a_file_that_cannot_be_opened_raises_once_and_is_tried_again_only_when_it_changes(setup) -> None:
    model, served, clock, folder = setup
    write_version(folder, 1, "corrupt")
    served.ready = {1}

    with pytest.raises(ValueError, match="not an ONNX model"):
        model.get()
    with pytest.raises(NotServedError):
        model.get()
    write_version(folder, 1, "fixed")
    clock.now = 0.1

    assert model.get() == "fixed"


class Deferred:
    """A background runner whose jobs finish only when the test says so."""

    def __init__(self) -> None:
        self.jobs: list[tuple[Future, Any, tuple[Any, ...]]] = []

    def __call__(self, function: Any, *args: Any) -> Future:
        future: Future = Future()
        self.jobs.append((future, function, args))
        return future

    def finish(self) -> None:
        for future, function, args in self.jobs:
            try:
                future.set_result(function(*args))
            except Exception as exc:
                future.set_exception(exc)
        self.jobs.clear()


def test_a_new_file_opens_in_the_background_while_the_old_session_answers(tmp_path: Path) -> None:
    served, clock, runner = Served(), Clock(), Deferred()
    folder = tmp_path / "xl"
    model = LocalModel("xl", folder, "model.onnx", served.is_ready, served.open, 1.0, clock, runner)
    write_version(folder, 1, "v1")
    served.ready = {1}
    assert model.get() == "v1" and runner.jobs == []

    write_version(folder, 2, "v2")
    served.ready = {2}
    clock.now = 2.0
    assert model.get() == "v1"
    assert model.get() == "v1" and len(runner.jobs) == 1
    runner.finish()

    assert model.get() == "v2" and model.version == 2


def test_a_new_file_that_fails_in_the_background_raises_once_and_the_old_session_answers_on(
    tmp_path: Path,
) -> None:
    served, clock, runner = Served(), Clock(), Deferred()
    folder = tmp_path / "xl"
    model = LocalModel("xl", folder, "model.onnx", served.is_ready, served.open, 1.0, clock, runner)
    write_version(folder, 1, "v1")
    served.ready = {1}
    assert model.get() == "v1"
    write_version(folder, 2, "corrupt")
    served.ready = {2}
    clock.now = 2.0
    assert model.get() == "v1"
    runner.finish()

    with pytest.raises(ValueError, match="not an ONNX model"):
        model.get()
    clock.now = 4.0
    assert model.get() == "v1" and runner.jobs == []


def test_preloaded_session_is_used_once_served_without_opening_the_file_again(setup) -> None:
    model, served, _, folder = setup
    write_version(folder, 3, "v3")
    model.preload()
    assert served.opened == ["v3"] and served.asked == []

    with pytest.raises(NotServedError):
        model.get()
    served.ready = {3}

    assert model.get() == "v3" and served.opened == ["v3"]
