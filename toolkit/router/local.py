"""Models the router runs in its own process: the ONNX file of a model served beside it.

With ``local_tiers: inprocess`` the router opens an ONNX Runtime session on the very file Triton
serves for a local CPU tier (a version folder of ``<repository>/<tier>``) and calls it directly
instead of through BLS. Triton stays the authority on what is served: the router asks it (at most
once per ``check_every_s`` while the tier is served, on every call while it is not) which version
folders it serves and runs the newest of them, opening its file when it is new; while a new version
loads it keeps running the one it has, as long as Triton serves some version. So unloading a tier,
loading it again and replacing its file under traffic behave as with BLS. Plain Python; the ONNX
Runtime session is opened by the function the caller passes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any


class NotServedError(Exception):
    """The model is not served now (unloaded, not loaded yet, or its folder has no version)."""


def versions(folder: Path, filename: str) -> list[int]:
    """The numeric version folders of ``folder`` that hold ``filename``, newest first."""
    try:
        entries = os.listdir(folder)
    except OSError:
        return []
    numbers = sorted((int(e) for e in entries if e.isdigit()), reverse=True)
    return [v for v in numbers if (folder / str(v) / filename).is_file()]


def newest_version(folder: Path, filename: str) -> int | None:
    """The highest numeric version folder of ``folder`` that holds ``filename``, or None."""
    found = versions(folder, filename)
    return found[0] if found else None


Signature = tuple[int, int, int, int]


def _signature(path: Path) -> Signature:
    stat = path.stat()
    return stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size


class LocalModel:
    """The session of one model served beside the router, kept equal to what Triton serves.

    A new file of a model already running is opened in the background (``background``) while the
    old session keeps answering, so replacing a tier under traffic stalls no request; a model with
    nothing to run yet is opened at once. A file that fails to open is not tried again until it
    changes, and the old session (if any) keeps answering.

    Args:
        name: Model name (the folder beside the router's).
        folder: ``<repository>/<name>``.
        filename: The model file in each version folder.
        is_ready: Whether Triton serves ``(name, version)`` now; with version None, whether it serves
            any version of the model.
        open_session: Opens a session on a model file.
        check_every_s: How long a served model is used before Triton is asked again.
        clock: Seconds, monotonic.
        background: Runs a function in the background and returns its future (for example
            ``ThreadPoolExecutor.submit``); None: new files are opened at once.
    """

    def __init__(
        self,
        name: str,
        folder: Path,
        filename: str,
        is_ready: Callable[[str, int | None], bool],
        open_session: Callable[[Path], Any],
        check_every_s: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        background: Callable[..., Future] | None = None,
    ) -> None:
        self.name = name
        self.folder = folder
        self.filename = filename
        self.is_ready = is_ready
        self.open_session = open_session
        self.check_every_s = check_every_s
        self.clock = clock
        self.background = background
        self.session: Any = None
        self.version: int | None = None
        self.signature: Signature | None = None
        self.served = False
        self.checked = -float("inf")
        self._pending: tuple[int, Signature, Future] | None = None
        self._failed: Signature | None = None

    def preload(self) -> None:
        """Open the newest version's file now, so the first request does not wait for it.

        It is used once Triton says that version is served; a file that fails here is left for
        :meth:`get` to report.
        """
        version = newest_version(self.folder, self.filename)
        if version is None:
            return
        path = self.folder / str(version) / self.filename
        try:
            signature = _signature(path)
            session = self.open_session(path)
        except Exception:
            return
        self.session, self.version, self.signature = session, version, signature

    def get(self) -> Any:
        """The session of the version Triton serves; :class:`NotServedError` when it serves none.

        Raises:
            NotServedError: Triton serves no version of the model now.
            Exception: Whatever ``open_session`` raises for a new file (once per file).
        """
        self._adopt()
        now = self.clock()
        if not (self.served and now - self.checked < self.check_every_s):
            self.checked = now
            self._refresh()
        if not self.served:
            raise NotServedError(f"model {self.name!r} is not served now (not loaded, or being replaced)")
        return self.session

    def _adopt(self) -> None:
        """Take the session opened in the background, once it is ready."""
        if self._pending is None or not self._pending[2].done():
            return
        version, signature, future = self._pending
        self._pending = None
        try:
            session = future.result()
        except Exception:
            self._failed = signature
            raise
        self.session, self.version, self.signature = session, version, signature

    def _refresh(self) -> None:
        for version in versions(self.folder, self.filename):
            if self.is_ready(self.name, version):
                self._use(version)
                return
        # No version folder is served (a new one loading, the model unloaded): keep what we run
        # while Triton still serves some version, as a BLS call would then be answered.
        self.served = self.session is not None and self.is_ready(self.name, None)

    def _use(self, version: int) -> None:
        path = self.folder / str(version) / self.filename
        try:
            signature = _signature(path)
        except OSError:
            self.served = self.session is not None
            return
        if (signature == self.signature and self.session is not None) or signature == self._failed:
            self.served = self.session is not None
            return
        if self.session is None or self.background is None:
            try:
                self.session = self.open_session(path)
            except Exception:
                self._failed = signature
                self.served = self.session is not None
                raise
            self.version, self.signature = version, signature
        elif self._pending is None or self._pending[1] != signature:
            self._pending = (version, signature, self.background(self.open_session, path))
        self.served = True
