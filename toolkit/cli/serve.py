"""``toolkit serve``: run Triton on the model repository until Ctrl-C or SIGTERM."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, cast

import click

from toolkit.serve.options import MODEL_CONTROL_MODES
from toolkit.spec.load import DEFAULT_SPEC

if TYPE_CHECKING:
    from rich.console import Console

    from toolkit.serve import ServerOptions, TritonServer
    from toolkit.serve.options import ModelControlMode

_WATCH_INTERVAL_S = 0.5


@click.command("serve")
@click.option(
    "--spec",
    "spec_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=DEFAULT_SPEC,
    show_default=True,
    help="Ensemble spec; its triton: section gives the default host and ports and its "
    "paths.repository the default repository. Not needed when --repository is given and the "
    "default spec does not exist.",
)
@click.option(
    "--repository",
    metavar="PATH|s3://BUCKET/PREFIX",
    help="Model repository to serve (default: the spec's paths.repository), or an s3://BUCKET/PREFIX "
    "URL that tritonserver reads itself (credentials from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and "
    "AWS_DEFAULT_REGION); see --s3-endpoint.",
)
@click.option(
    "--s3-endpoint",
    metavar="URL",
    help="With --repository s3://...: an S3-compatible endpoint such as http://HOST:9000 (default: AWS S3).",
)
@click.option(
    "--pool",
    metavar="NAME",
    help="With pools in the spec: serve this pool's repository, REPOSITORY/NAME (default without "
    "--repository: the entry pool, the first in the spec). Give each pool's server its own ports.",
)
@click.option("--host", help="Address every endpoint binds to (default: the spec's triton.host, 127.0.0.1).")
@click.option("--grpc-port", type=click.IntRange(1, 65535), help="gRPC port (default: the spec's).")
@click.option("--http-port", type=click.IntRange(1, 65535), help="HTTP port (default: the spec's).")
@click.option("--metrics-port", type=click.IntRange(1, 65535), help="Metrics port (default: the spec's).")
@click.option(
    "--tritonserver",
    type=click.Path(dir_okay=False, path_type=Path),
    help="tritonserver binary to run. Default: tritonserver on PATH, else the one bundled in the "
    "nvidia-pytriton wheel.",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File for the server's output (default: a new temporary file, printed once ready).",
)
@click.option(
    "--model-control-mode",
    type=click.Choice(MODEL_CONTROL_MODES),
    default="none",
    show_default=True,
    help="none: load every model at start; explicit: load only --load-model models (others through "
    "the repository API); poll: also pick up changes to the repository.",
)
@click.option(
    "--load-model",
    "load_models",
    multiple=True,
    metavar="NAME",
    help="Model to load at start; repeat for several. Needs --model-control-mode explicit.",
)
@click.option(
    "--startup-timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=120.0,
    show_default=True,
    metavar="SECONDS",
    help="Give up (and stop the server) if it is not ready after this many seconds.",
)
@click.option(
    "--backend-config",
    multiple=True,
    metavar="BACKEND,KEY=VALUE",
    help="Backend setting passed to tritonserver, e.g. python,shm-default-byte-size=16777216 for "
    "large requests; repeat for several.",
)
@click.option(
    "--log-verbose",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="tritonserver's verbose log level (0 off, 1 and up more detail) in the server log.",
)
def command(
    spec_path: Path,
    repository: str | None,
    s3_endpoint: str | None,
    pool: str | None,
    host: str | None,
    grpc_port: int | None,
    http_port: int | None,
    metrics_port: int | None,
    tritonserver: Path | None,
    log_file: Path | None,
    model_control_mode: str,
    load_models: tuple[str, ...],
    startup_timeout: float,
    backend_config: tuple[str, ...],
    log_verbose: int,
) -> None:
    """Start Triton on the model repository and serve until Ctrl-C or SIGTERM.

    Waits until the server is ready, prints its gRPC, HTTP and metrics addresses and its log file,
    then keeps it running; on Ctrl-C or SIGTERM it stops the server cleanly and exits 0.

    An s3:// repository (as `toolkit deploy --out s3://...` publishes it) is read by tritonserver
    itself, which copies each model it loads to a local temporary folder; the server is started with
    --disable-auto-complete-config so a model whose config.pbtxt is not uploaded yet is skipped.

    With pools in the spec, each pool is its own server: `toolkit serve --pool big --grpc-port 8101
    --http-port 8100 --metrics-port 8102` serves the pool big, and plain `toolkit serve` the entry
    pool, whose router calls the others at the addresses `toolkit deploy` wrote into it.
    """
    from rich.console import Console

    from toolkit.repository.object_store import check_repository, is_s3_url
    from toolkit.serve import ServerOptions, TritonServer
    from toolkit.spec import TritonSpec, load_spec

    spec_given = click.get_current_context().get_parameter_source("spec_path") != (
        click.core.ParameterSource.DEFAULT
    )
    if repository is not None and not spec_given and not spec_path.exists():
        if pool is not None:
            raise click.UsageError(f"--pool needs a spec with pools; {spec_path} does not exist")
        triton = TritonSpec()
    else:
        spec = load_spec(spec_path)
        triton = spec.triton
        if pool is not None and pool not in {p.name for p in spec.pools}:
            known = ", ".join(p.name for p in spec.pools) or "the spec has no pools"
            raise click.BadParameter(f"{pool!r} is not a pool of {spec_path} ({known})", param_hint="--pool")
        if pool is None and repository is None and spec.pools:
            pool = spec.entry_pool
        repository = repository if repository is not None else spec.paths.repository
        if pool is not None:
            repository = f"{str(repository).rstrip('/')}/{pool}"
    if s3_endpoint is not None and not is_s3_url(repository):
        raise click.UsageError("--s3-endpoint needs --repository s3://BUCKET/PREFIX")
    if is_s3_url(repository):
        note = check_repository(str(repository), s3_endpoint)
        if note:
            click.echo(note, err=True)
    options = ServerOptions(
        repository=repository if is_s3_url(repository) else Path(str(repository)),
        s3_endpoint=s3_endpoint,
        host=host if host is not None else triton.host,
        grpc_port=grpc_port if grpc_port is not None else triton.grpc_port,
        http_port=http_port if http_port is not None else triton.http_port,
        metrics_port=metrics_port if metrics_port is not None else triton.metrics_port,
        tritonserver=tritonserver,
        log_file=log_file,
        model_control_mode=cast("ModelControlMode", model_control_mode),
        load_models=load_models,
        backend_config=backend_config,
        startup_timeout_s=startup_timeout,
        log_verbose=log_verbose,
    )
    _serve(TritonServer(options), options, Console(stderr=True))


def _serve(server: TritonServer, options: ServerOptions, console: Console) -> None:
    from toolkit.errors import ServerError

    stop_requested = threading.Event()
    ready = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        if not ready.is_set():
            raise KeyboardInterrupt
        stop_requested.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with console.status(f"Starting tritonserver on {options.repository} ..."):
            server.start()
            server.wait_ready()
        ready.set()
        click.echo(
            f"Triton ready: gRPC {server.grpc_url}, HTTP {server.http_url}, "
            f"metrics {server.metrics_url}; log {server.log_path}"
        )
        while not stop_requested.wait(_WATCH_INTERVAL_S):
            if not server.running:
                server.stop()
                raise ServerError(
                    f"tritonserver stopped on its own (exit code {server.returncode}); see "
                    f"{server.log_path}. Last log lines:\n{server.log_tail(10)}"
                )
        with console.status("Stopping tritonserver ..."):
            server.stop()
        click.echo(f"Triton stopped (exit code {server.returncode}).", err=True)
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
