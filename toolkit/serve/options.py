"""Server options and the command line and environment they turn into."""

from __future__ import annotations

import os
import sysconfig
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from toolkit.errors import RepositoryError, ServerError
from toolkit.serve.locate import TritonInstall
from toolkit.serve.ports import free_port

ModelControlMode = Literal["none", "explicit", "poll"]
MODEL_CONTROL_MODES: tuple[str, ...] = ("none", "explicit", "poll")


@dataclass(frozen=True)
class ServerOptions:
    """How to run one Triton server.

    Attributes:
        repository: The model repository folder, or an ``s3://BUCKET/PREFIX`` URL (a string) that
            Triton reads itself, with credentials from the environment (``AWS_ACCESS_KEY_ID``,
            ``AWS_SECRET_ACCESS_KEY``, ``AWS_DEFAULT_REGION``).
        host: Address the gRPC, HTTP and metrics endpoints bind to.
        grpc_port: gRPC port.
        http_port: HTTP port (also used to probe readiness).
        metrics_port: Prometheus metrics port.
        tritonserver: A ``tritonserver`` binary to use instead of searching for one.
        log_file: Where the server's stdout and stderr go; a new temporary file when ``None``.
        model_control_mode: ``none`` loads every model at start, ``explicit`` only
            ``load_models`` (and those loaded later through the API), ``poll`` also follows
            changes in the repository.
        load_models: Models to load at start in ``explicit`` mode.
        exit_timeout_s: Seconds the server waits for in-flight requests when told to stop.
        backend_config: ``backend,key=value`` settings, for example
            ``python,shm-default-byte-size=16777216``.
        startup_timeout_s: Seconds :meth:`TritonServer.wait_ready` waits by default.
        log_verbose: Triton's ``--log-verbose`` level (0 is off).
        extra_args: More ``tritonserver`` arguments, passed last and as given.
        require_onnxruntime: Refuse to start unless the python backend can import onnxruntime.
        s3_endpoint: With an ``s3://`` repository: an S3-compatible endpoint such as
            ``http://HOST:9000`` (default: AWS S3).

    Raises:
        ServerError: A value is out of range, the repository does not exist, or a combination is
            inconsistent (for example ``load_models`` outside ``explicit`` mode).
    """

    repository: Path | str
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    tritonserver: Path | None = None
    log_file: Path | None = None
    model_control_mode: ModelControlMode = "none"
    load_models: tuple[str, ...] = ()
    exit_timeout_s: int = 5
    backend_config: tuple[str, ...] = ()
    startup_timeout_s: float = 120.0
    log_verbose: int = 0
    extra_args: tuple[str, ...] = ()
    require_onnxruntime: bool = True
    s3_endpoint: str | None = None

    @classmethod
    def on_free_ports(cls, repository: Path | str, **settings: Any) -> ServerOptions:
        """Options for a server on ``repository`` whose gRPC, HTTP and metrics ports are free now.

        Args:
            repository: The model repository (as :attr:`repository`).
            **settings: Any other field.
        """
        return cls(
            repository=repository,
            grpc_port=free_port(),
            http_port=free_port(),
            metrics_port=free_port(),
            **settings,
        )

    def __post_init__(self) -> None:
        if self.is_s3:
            self._check_s3()
        else:
            object.__setattr__(self, "repository", Path(self.repository))
            if self.s3_endpoint is not None:
                raise ServerError("An S3 endpoint needs an s3://BUCKET/PREFIX repository.")
        for name in ("tritonserver", "log_file"):
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, Path(value))
        for name in ("load_models", "backend_config", "extra_args"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.is_s3 and not Path(self.repository).is_dir():
            raise ServerError(f"Model repository {self.repository} does not exist or is not a directory.")
        if not self.host:
            raise ServerError("The host to bind must not be empty (use 127.0.0.1 for local only).")
        self._check_ports()
        if self.model_control_mode not in MODEL_CONTROL_MODES:
            raise ServerError(
                f"Model control mode must be one of {', '.join(MODEL_CONTROL_MODES)}, "
                f"got {self.model_control_mode!r}."
            )
        if self.load_models and self.model_control_mode != "explicit":
            raise ServerError(
                f"Models to load at start ({', '.join(self.load_models)}) need model control mode "
                f"'explicit', got {self.model_control_mode!r}; in the other modes every model loads."
            )
        for model in self.load_models:
            if not model or model in (".", "..") or "/" in model or "\\" in model:
                raise ServerError(f"Model name {model!r} is not a valid name (no path separators).")
        if self.exit_timeout_s < 0:
            raise ServerError(f"The exit timeout must be 0 s or more, got {self.exit_timeout_s}.")
        if self.startup_timeout_s <= 0:
            raise ServerError(f"The startup timeout must be positive, got {self.startup_timeout_s}.")
        if self.log_verbose < 0:
            raise ServerError(f"The log verbosity must be 0 or more, got {self.log_verbose}.")
        for item in self.backend_config:
            backend, comma, setting = item.partition(",")
            key, equals, _ = setting.partition("=")
            if not backend.strip() or not comma or not key.strip() or not equals:
                raise ServerError(
                    f"Backend setting {item!r} is not of the form backend,key=value "
                    "(for example python,shm-default-byte-size=16777216)."
                )

    @property
    def is_s3(self) -> bool:
        """Whether the repository is an ``s3://`` URL."""
        from toolkit.s3url import is_s3_url

        return is_s3_url(self.repository)

    @property
    def model_repository(self) -> str:
        """The ``--model-repository`` value: the absolute folder, or the URL in Triton's S3 form."""
        if self.is_s3:
            from toolkit.repository.object_store import triton_repository_url

            return triton_repository_url(str(self.repository), self.s3_endpoint)
        return str(Path(self.repository).resolve())

    def _check_s3(self) -> None:
        from toolkit.repository.object_store import parse_s3_url

        try:
            parse_s3_url(str(self.repository), "--repository", self.s3_endpoint)
        except RepositoryError as exc:
            raise ServerError(str(exc)) from None

    @property
    def ports(self) -> dict[str, int]:
        """Each port by the flag that sets it."""
        return {
            "--grpc-port": self.grpc_port,
            "--http-port": self.http_port,
            "--metrics-port": self.metrics_port,
        }

    def _check_ports(self) -> None:
        seen: dict[int, str] = {}
        for flag, port in self.ports.items():
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise ServerError(f"{flag} must be a port number in 1..65535, got {port!r}.")
            if port in seen:
                raise ServerError(
                    f"{seen[port]} and {flag} are both {port}; each endpoint needs its own port."
                )
            seen[port] = flag


def build_argv(options: ServerOptions, install: TritonInstall, backend_dir: Path | None) -> list[str]:
    """Return the ``tritonserver`` command line for ``options``.

    Every endpoint binds ``options.host`` explicitly (the server's own default is 0.0.0.0). An
    ``s3://`` repository also gets ``--disable-auto-complete-config``, so a model folder whose
    ``config.pbtxt`` is not uploaded yet is skipped rather than loaded with a guessed config.

    Args:
        options: What to run.
        install: The server binary and, for the bundled one, its response-cache folder.
        backend_dir: The ``--backend-directory`` from :func:`prepare_backend_dir`, or ``None`` to
            keep the server's own.
    """
    argv = [
        str(install.binary),
        f"--model-repository={options.model_repository}",
        f"--grpc-address={options.host}",
        f"--grpc-port={options.grpc_port}",
        f"--http-address={options.host}",
        f"--http-port={options.http_port}",
        f"--metrics-address={options.host}",
        f"--metrics-port={options.metrics_port}",
        f"--exit-timeout-secs={options.exit_timeout_s}",
        f"--model-control-mode={options.model_control_mode}",
    ]
    if options.is_s3:
        argv.append("--disable-auto-complete-config")
    if backend_dir is not None:
        argv.append(f"--backend-directory={backend_dir}")
    if install.cache_dir is not None:
        argv.append(f"--cache-directory={install.cache_dir}")
    argv.extend(f"--load-model={model}" for model in options.load_models)
    argv.extend(f"--backend-config={item}" for item in options.backend_config)
    if options.log_verbose:
        argv.append(f"--log-verbose={options.log_verbose}")
    argv.extend(options.extra_args)
    return argv


def build_env(
    install: TritonInstall,
    python_bin_dir: Path,
    base: Mapping[str, str] | None = None,
    python_lib_dir: Path | None = None,
) -> dict[str, str]:
    """Return the server's environment.

    ``python_bin_dir`` goes first on ``PATH`` so the python backend stub imports that environment's
    packages; with the bundled server, its libraries and then ``python_lib_dir`` go first on
    ``LD_LIBRARY_PATH``. ``AWS_DEFAULT_REGION`` is set from ``AWS_REGION`` when only the latter is
    set: Triton's S3 client reads no other.

    Args:
        install: The server binary found.
        python_bin_dir: ``bin`` folder of the Python environment the python backend uses.
        base: Environment to start from; default ``os.environ``.
        python_lib_dir: Folder of that Python's ``libpython`` (see :func:`python_library_dir`).
    """
    env = dict(os.environ if base is None else base)
    if "AWS_REGION" in env and "AWS_DEFAULT_REGION" not in env:
        env["AWS_DEFAULT_REGION"] = env["AWS_REGION"]  # Triton's S3 client reads only the latter
    env["PATH"] = _prepend(str(python_bin_dir), env.get("PATH", ""))
    if install.libs_dir is not None:
        if python_lib_dir is not None:
            env["LD_LIBRARY_PATH"] = _prepend(str(python_lib_dir), env.get("LD_LIBRARY_PATH", ""))
        env["LD_LIBRARY_PATH"] = _prepend(str(install.libs_dir), env.get("LD_LIBRARY_PATH", ""))
    return env


def python_library_dir() -> Path | None:
    """The folder of this interpreter's shared ``libpython``, or None when it has none.

    The bundled python backend stub links ``libpython3.X.so.1.0`` and takes the first the loader
    finds, often the system's, while its standard library comes from this environment. Another patch
    release of the two disagrees in private APIs (``multiprocessing`` fails with ``'_thread.RLock'
    object has no attribute '_recursion_count'`` under Debian's 3.11.2 with a 3.11.7 standard
    library), so the server gets this interpreter's own library first.
    """
    libdir, soname = sysconfig.get_config_var("LIBDIR"), sysconfig.get_config_var("INSTSONAME")
    if not libdir or not soname or not (Path(libdir) / soname).is_file():
        return None
    return Path(libdir)


def _prepend(entry: str, value: str) -> str:
    rest = [part for part in value.split(os.pathsep) if part and part != entry]
    return os.pathsep.join([entry, *rest])
