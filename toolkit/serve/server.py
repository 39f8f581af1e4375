"""Run a Triton server as a child process: start it, wait until it is ready, stop it.

The wrapper only manages the process. The server runs in its own process group, so stopping it
reaches the python backend stubs too, and on Linux it receives SIGTERM when the thread that started
it dies, so a crashed or killed parent leaves no orphan behind.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import http.client
import logging
import os
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import IO

from toolkit.errors import ServerError
from toolkit.serve.locate import (
    TritonInstall,
    backend_python,
    check_python_backend_env,
    find_tritonserver,
    prepare_backend_dir,
)
from toolkit.serve.options import ServerOptions, build_argv, build_env, python_library_dir
from toolkit.serve.ports import check_ports_free

logger = logging.getLogger(__name__)

ROUTER_STATS_ENV = "TOOLKIT_TRITON_HTTP_URL"
"""The server's HTTP address, given to the python backend's models: the router reads its queue
statistics there (a deployed ``router.json`` names the spec's port, which a server on other ports
would not answer on)."""

_KILL_GRACE_S = 5.0
_POLL_INTERVAL_S = 0.1
_PROBE_TIMEOUT_S = 1.0
_LOG_TAIL_LINES = 30
_PR_SET_PDEATHSIG = 1
_ERROR_LINE = re.compile(r"^E\d{4} ")
_HARMLESS_ERRORS = ("CudaDriverHelper has not been initialized",)


class TritonServer:
    """A ``tritonserver`` child process.

    Use it as a context manager (start, wait until ready, stop on exit) or call :meth:`start`,
    :meth:`wait_ready` and :meth:`stop` yourself. A server that is still running when the
    interpreter exits is stopped by an ``atexit`` hook.

    On Linux the server gets SIGTERM when the thread that called :meth:`start` ends (the kernel's
    parent-death signal follows the thread), so start it from a thread that outlives it, such as
    the main thread.

    Example:
        >>> with TritonServer(ServerOptions(repository=Path("model_repository"))) as server:
        ...     client = tritonclient.grpc.InferenceServerClient(server.grpc_url)
    """

    def __init__(self, options: ServerOptions) -> None:
        self.options = options
        self._process: subprocess.Popen[bytes] | None = None
        self._install: TritonInstall | None = None
        self._log_path: Path | None = None
        self._stopped = False
        self._lock = threading.Lock()

    def __enter__(self) -> TritonServer:
        self.start()
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Check the environment and spawn the server; does not wait for it to be ready.

        Raises:
            ServerError: The server is already running, a port is taken, no server binary was
                found, the python backend's environment is unfit (numpy 2, no onnxruntime), or the
                process could not be spawned.
        """
        if self.running:
            raise ServerError(f"tritonserver is already running (pid {self.pid}); stop it first.")
        self.stop()
        opts = self.options
        check_ports_free(opts.host, opts.ports)
        install = find_tritonserver(opts.tritonserver)
        python = backend_python()
        check_python_backend_env(python, require_onnxruntime=opts.require_onnxruntime)
        backend_dir = prepare_backend_dir(install)
        argv = build_argv(opts, install, backend_dir)
        env = build_env(install, python.parent, python_lib_dir=python_library_dir())
        env[ROUTER_STATS_ENV] = f"http://{self.http_url}"  # where the router reads its queue wait
        log_path, log_handle = _open_log(opts.log_file)
        logger.info("starting %s tritonserver: %s", install.kind, shlex.join(argv))
        logger.info("tritonserver log: %s", log_path)
        try:
            with log_handle:
                process = subprocess.Popen(
                    argv,
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log_handle,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=_die_with_parent(os.getpid()),
                )
        except OSError as exc:
            raise ServerError(f"Cannot start {install.binary}: {exc.strerror or exc}.") from None
        with self._lock:
            self._process = process
            self._install = install
            self._log_path = log_path
            self._stopped = False
        atexit.register(self.stop)
        logger.info("tritonserver started with pid %d", process.pid)

    def wait_ready(self, timeout: float | None = None) -> None:
        """Poll the server until it reports ready.

        On failure the server is stopped before the error is raised.

        Args:
            timeout: Seconds to wait; default ``options.startup_timeout_s``.

        Raises:
            ServerError: The server was not started, exited, or was not ready in time. The
                message carries the last lines of the server log.
        """
        process = self._process
        if process is None or self._stopped:
            raise ServerError("tritonserver is not running; call start() first.")
        limit = self.options.startup_timeout_s if timeout is None else timeout
        started = time.monotonic()
        deadline = started + limit
        while True:
            if _has_exited(process):
                self.stop()
                raise ServerError(
                    f"tritonserver {_describe_exit(process.returncode)} before it was ready "
                    f"(log: {self._log_path}).{self._failure_details()}"
                )
            if self.is_ready():
                logger.info("tritonserver ready after %.1f s", time.monotonic() - started)
                return
            if time.monotonic() >= deadline:
                self.stop()
                raise ServerError(
                    f"tritonserver was not ready after {limit:g} s and was stopped "
                    f"(log: {self._log_path}).{self._failure_details()}"
                )
            time.sleep(_POLL_INTERVAL_S)

    def is_ready(self) -> bool:
        """Whether the server answers ready on ``/v2/health/ready`` right now."""
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        try:
            with opener.open(f"http://{self.http_url}/v2/health/ready", timeout=_PROBE_TIMEOUT_S) as reply:
                return bool(reply.status == 200)
        except (urllib.error.URLError, http.client.HTTPException, OSError):
            return False

    def stop(self) -> None:
        """Stop the server: SIGINT, then SIGKILL to its process group if it does not exit in time.

        Waits ``exit_timeout_s`` plus a few seconds before killing. Calling it again, or on a
        server that already exited, does nothing.
        """
        with self._lock:
            process = self._process
            if process is None or self._stopped:
                return
            self._stopped = True
            atexit.unregister(self.stop)
            reaped = process.returncode is not None
            if not reaped and not _has_exited(process):
                logger.info("stopping tritonserver (pid %d)", process.pid)
                _send(process.pid, signal.SIGINT)
                wait_s = self.options.exit_timeout_s + _KILL_GRACE_S
                if not _wait_exited(process, wait_s):
                    logger.warning(
                        "tritonserver (pid %d) still running %.0f s after SIGINT; killing its process group",
                        process.pid,
                        wait_s,
                    )
            if not reaped:
                _kill_group(process.pid)
                process.wait()
            logger.info("tritonserver (pid %d) %s", process.pid, _describe_exit(process.returncode))

    @property
    def running(self) -> bool:
        """Whether the server process was started and has not exited."""
        process = self._process
        return process is not None and not self._stopped and not _has_exited(process)

    @property
    def pid(self) -> int | None:
        """Process id of the server, once started."""
        return None if self._process is None else self._process.pid

    @property
    def returncode(self) -> int | None:
        """Exit status once stopped (negative: killed by that signal), else ``None``."""
        return None if self._process is None else self._process.returncode

    @property
    def install(self) -> TritonInstall | None:
        """The server binary in use, once started."""
        return self._install

    @property
    def log_path(self) -> Path | None:
        """File holding the server's stdout and stderr, once started."""
        return self._log_path

    @property
    def grpc_url(self) -> str:
        """Address for gRPC clients, such as ``127.0.0.1:8001``."""
        return f"{self._client_host}:{self.options.grpc_port}"

    @property
    def http_url(self) -> str:
        """Address for HTTP clients, without scheme, such as ``127.0.0.1:8000``."""
        return f"{self._client_host}:{self.options.http_port}"

    @property
    def metrics_url(self) -> str:
        """Full URL of the Prometheus metrics, such as ``http://127.0.0.1:8002/metrics``."""
        return f"http://{self._client_host}:{self.options.metrics_port}/metrics"

    def log_tail(self, n: int = _LOG_TAIL_LINES) -> str:
        """Return the last ``n`` lines of the server log ("" before start or when unreadable)."""
        if self._log_path is None or n <= 0:
            return ""
        try:
            with self._log_path.open("rb") as handle:
                size = handle.seek(0, os.SEEK_END)
                handle.seek(max(0, size - max(65536, 512 * n)))
                data = handle.read()
        except OSError:
            return ""
        return "\n".join(data.decode("utf-8", errors="replace").splitlines()[-n:])

    def log_errors(self, limit: int = 10) -> list[str]:
        """Return up to ``limit`` error lines of the server log, first ones first.

        Errors every CPU-only start logs (no CUDA driver) are left out.
        """
        errors: list[str] = []
        if self._log_path is None or limit <= 0:
            return errors
        try:
            with self._log_path.open(encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    if _ERROR_LINE.match(line) and not any(text in line for text in _HARMLESS_ERRORS):
                        errors.append(line.rstrip("\n"))
                        if len(errors) >= limit:
                            break
        except OSError:
            pass
        return errors

    def _failure_details(self) -> str:
        errors = self.log_errors()
        found = "\nErrors in the log:\n" + "\n".join(errors) if errors else ""
        return f"{found}\nLast log lines:\n{self.log_tail()}"

    @property
    def _client_host(self) -> str:
        host = self.options.host
        if host == "0.0.0.0":
            return "127.0.0.1"
        if host == "::":
            return "[::1]"
        return f"[{host}]" if ":" in host else host


def _open_log(log_file: Path | None) -> tuple[Path, IO[bytes]]:
    try:
        if log_file is not None:
            log_file.parent.mkdir(parents=True, exist_ok=True)
            return log_file, log_file.open("wb")
        fd, name = tempfile.mkstemp(prefix="tritonserver-", suffix=".log")
        return Path(name), os.fdopen(fd, "wb")
    except OSError as exc:
        raise ServerError(f"Cannot open the server log {log_file}: {exc.strerror or exc}.") from None


def _die_with_parent(parent_pid: int) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        logger.warning("prctl is unavailable; tritonserver will not be stopped if this process dies")
        return None
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sigterm)
        if os.getppid() != parent_pid:
            os.kill(os.getpid(), sigterm)

    return preexec


def _has_exited(process: subprocess.Popen[bytes]) -> bool:
    """Whether the child exited, leaving it unreaped so its process group can still be swept."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        process.poll()
        return True


def _wait_exited(process: subprocess.Popen[bytes], timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while not _has_exited(process):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _send(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "has not exited"
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with code {code}"
