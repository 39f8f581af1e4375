"""Find a ``tritonserver`` binary and make ready what it needs to run the python backend.

The search order is fixed: an explicit path, ``tritonserver`` on ``PATH``, then the server bundled in
the ``nvidia-pytriton`` wheel. The bundled server needs its shared libraries on ``LD_LIBRARY_PATH``
and a backend directory in which the python backend sits beside the stub built for the running
Python; :func:`prepare_backend_dir` builds (and caches) that directory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from toolkit.errors import ServerError

logger = logging.getLogger(__name__)

InstallKind = Literal["explicit", "path", "bundled"]

_STUB_NAME = "triton_python_backend_stub"
_COMPLETE_MARKER = ".complete"
_CHECK_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class TritonInstall:
    """A ``tritonserver`` binary and what it needs around it.

    Attributes:
        binary: The ``tritonserver`` executable.
        kind: Where it was found: ``explicit`` (given by the caller), ``path`` (on ``PATH``) or
            ``bundled`` (shipped in the ``nvidia-pytriton`` wheel).
        libs_dir: Folder to put first on ``LD_LIBRARY_PATH``; set for the bundled server only.
        python_backend_dir: The bundled python backend (``libtriton_python.so`` and its utils),
            copied by :func:`prepare_backend_dir`; ``None`` where the server brings its own.
        stubs_dir: Folder holding one ``<major.minor>/triton_python_backend_stub`` per Python.
        cache_dir: Folder of response-cache implementations to pass as ``--cache-directory``.
    """

    binary: Path
    kind: InstallKind
    libs_dir: Path | None = None
    python_backend_dir: Path | None = None
    stubs_dir: Path | None = None
    cache_dir: Path | None = None

    @property
    def needs_backend_dir(self) -> bool:
        """Whether :func:`prepare_backend_dir` must build a backend directory for this server."""
        return self.python_backend_dir is not None and self.stubs_dir is not None


def find_tritonserver(explicit: Path | None = None) -> TritonInstall:
    """Find the ``tritonserver`` to run.

    Args:
        explicit: A binary chosen by the caller; when given, it must exist and be executable and
            nothing else is searched.

    Returns:
        The explicit binary, else ``tritonserver`` on ``PATH``, else the bundled one. An explicit
        path that is the bundled binary keeps the bundled libraries and backend.

    Raises:
        ServerError: The explicit path is missing or not executable, or no server was found.
    """
    if explicit is not None:
        path = Path(explicit).expanduser()
        if not path.is_file():
            raise ServerError(f"tritonserver binary {path} does not exist or is not a file.")
        if not os.access(path, os.X_OK):
            raise ServerError(f"tritonserver binary {path} is not executable (chmod +x it).")
        bundled = bundled_tritonserver()
        if bundled is not None and _same_file(bundled.binary, path):
            return TritonInstall(
                binary=path,
                kind="explicit",
                libs_dir=bundled.libs_dir,
                python_backend_dir=bundled.python_backend_dir,
                stubs_dir=bundled.stubs_dir,
                cache_dir=bundled.cache_dir,
            )
        return TritonInstall(binary=path, kind="explicit")
    on_path = shutil.which("tritonserver")
    if on_path is not None:
        return TritonInstall(binary=Path(on_path), kind="path")
    bundled = bundled_tritonserver()
    if bundled is not None:
        return bundled
    raise ServerError(
        "No tritonserver found: pass --tritonserver PATH, put tritonserver on PATH, "
        "or install the serve extra, whose nvidia-pytriton wheel bundles one "
        "(pip install 'adaptive-ranking-toolkit[serve]')."
    )


def bundled_tritonserver() -> TritonInstall | None:
    """Return the server bundled in the ``nvidia-pytriton`` wheel, or ``None`` when absent.

    The ``pytriton`` package is located without being imported.
    """
    try:
        spec = importlib.util.find_spec("pytriton")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    root = package_dir / "tritonserver"
    binary = root / "bin" / "tritonserver"
    if not binary.is_file():
        return None
    python_backend = root / "backends" / "python"
    stubs = root / "python_backend_stubs"
    caches = root / "caches"
    libs = package_dir.parent / "nvidia_pytriton.libs"
    return TritonInstall(
        binary=binary,
        kind="bundled",
        libs_dir=libs if libs.is_dir() else None,
        python_backend_dir=python_backend if python_backend.is_dir() else None,
        stubs_dir=stubs if stubs.is_dir() else None,
        cache_dir=caches if caches.is_dir() else None,
    )


def default_cache_root() -> Path:
    """Per-user folder where prepared backend directories are kept between runs."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "adaptive-ranking-toolkit" / "backends"


def prepare_backend_dir(install: TritonInstall, workdir: Path | None = None) -> Path | None:
    """Build the ``--backend-directory`` the bundled server needs, or reuse a cached one.

    The python backend and the stub for the running Python (``major.minor``) are copied into
    ``<workdir>/<key>/python``, where the key hashes the sources, so a later start reuses the copy.
    The copy is written beside its final place and renamed, so a crash or a concurrent start never
    leaves a half-written directory in use.

    Args:
        install: The server found by :func:`find_tritonserver`.
        workdir: Folder to keep prepared directories in; default :func:`default_cache_root`.

    Returns:
        The folder to pass as ``--backend-directory``, or ``None`` for a server that uses its own
        backend directory.

    Raises:
        ServerError: No stub exists for the running Python, or the folder cannot be written.
    """
    backend_src, stubs_dir = install.python_backend_dir, install.stubs_dir
    if backend_src is None or stubs_dir is None:
        return None
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = stubs_dir / version / _STUB_NAME
    if not stub.is_file():
        available = sorted(p.name for p in stubs_dir.iterdir() if (p / _STUB_NAME).is_file())
        raise ServerError(
            f"The bundled tritonserver has no python backend stub for Python {version} "
            f"(looked for {stub}; available: {', '.join(available) or 'none'}). "
            "Use a supported Python or a tritonserver that matches it."
        )
    sources = sorted(p for p in backend_src.rglob("*") if p.is_file() and _keep(p))
    key = _content_key([stub, *sources], version)
    root = Path(workdir) if workdir is not None else default_cache_root()
    target = root / key
    if (target / _COMPLETE_MARKER).is_file():
        logger.debug("reusing backend directory %s", target)
        return target
    try:
        root.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=root))
    except OSError as exc:
        raise ServerError(f"Cannot create the backend directory under {root}: {exc.strerror}.") from None
    try:
        shutil.copytree(
            backend_src,
            staging / "python",
            ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
        )
        shutil.copy2(stub, staging / "python" / _STUB_NAME)
        (staging / _COMPLETE_MARKER).write_text(f"python {version}\nstub {stub}\n", encoding="utf-8")
        _replace_if_absent(staging, target)
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise ServerError(f"Cannot prepare the backend directory {target}: {exc}.") from None
    logger.info("prepared backend directory %s (python backend + stub for Python %s)", target, version)
    return target


def backend_python() -> Path:
    """Return the Python the python backend stub will import packages from.

    The server is started with this interpreter's ``bin`` folder first on ``PATH``; the stub uses
    the first ``python3`` (or ``python``) found there.
    """
    bin_dir = Path(sys.executable).parent
    for name in ("python3", "python"):
        candidate = bin_dir / name
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return Path(sys.executable)


def check_python_backend_env(python: Path, require_onnxruntime: bool = True) -> None:
    """Refuse an environment in which python-backend models would misbehave.

    With numpy 2 the embedded server (2.51) loads every python-backend model, which then returns
    empty output tensors; the tier runner of the python backend needs ``onnxruntime``.

    Args:
        python: The interpreter whose packages the stub imports (see :func:`backend_python`).
        require_onnxruntime: Also require ``import onnxruntime`` to work.

    Raises:
        ServerError: numpy cannot be imported or is 2 or newer, or onnxruntime is required and
            cannot be imported. The message says what was seen and what to install.
    """
    result = _run_python(python, "import numpy; print(numpy.__version__)")
    if result.returncode != 0:
        raise ServerError(
            f"The python backend cannot import numpy with {python}: {_last_line(result.stderr)}. "
            f"Install it there: {python} -m pip install 'numpy<2'."
        )
    lines = result.stdout.strip().splitlines()
    seen = lines[-1].strip() if lines else ""
    major = _major(seen)
    if major is None:
        raise ServerError(f"Could not read the numpy version from {python} (it printed {seen!r}).")
    if major >= 2:
        raise ServerError(
            f"The python backend would import numpy {seen} from {python}; with numpy 2 or newer "
            "the embedded tritonserver returns empty output tensors from python-backend models. "
            f"Install numpy 1.x there: {python} -m pip install 'numpy<2'."
        )
    if not require_onnxruntime:
        return
    result = _run_python(python, "import onnxruntime")
    if result.returncode != 0:
        raise ServerError(
            f"The python backend cannot import onnxruntime with {python} "
            f"({_last_line(result.stderr)}); the python-backend tier runner needs it. "
            f"Install it there: {python} -m pip install onnxruntime."
        )


def _run_python(python: Path, code: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            [str(python), "-c", code],
            capture_output=True,
            text=True,
            timeout=_CHECK_TIMEOUT_S,
            check=False,
            stdin=subprocess.DEVNULL,
        )
    except FileNotFoundError:
        raise ServerError(f"The python backend's interpreter {python} does not exist.") from None
    except PermissionError:
        raise ServerError(f"The python backend's interpreter {python} is not executable.") from None
    except subprocess.TimeoutExpired:
        raise ServerError(
            f"Checking the python backend's environment with {python} took over {_CHECK_TIMEOUT_S:.0f} s."
        ) from None


def _major(version: str) -> int | None:
    head = version.split(".", 1)[0]
    return int(head) if head.isdigit() else None


def _last_line(text: str) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    return lines[-1] if lines else "no error output"


def _keep(path: Path) -> bool:
    return "__pycache__" not in path.parts and path.suffix != ".pyc"


def _content_key(files: list[Path], version: str) -> str:
    digest = hashlib.sha256(version.encode())
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def _replace_if_absent(staging: Path, target: Path) -> None:
    try:
        os.rename(staging, target)
    except OSError:
        if not (target / _COMPLETE_MARKER).is_file():
            raise
        shutil.rmtree(staging, ignore_errors=True)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False
