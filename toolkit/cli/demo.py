"""``toolkit demo``: serve the repository, replay held-out traffic, print what happened, stop."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import click

from toolkit.cli.common import fmt, folder, load, output_console, results_table, spec_option

if TYPE_CHECKING:
    from toolkit.serve import TritonServer
    from toolkit.spec import Spec


@click.command("demo")
@spec_option
@click.option(
    "--repository",
    type=click.Path(file_okay=False, path_type=Path),
    help="Model repository to serve (default: the spec's paths.repository).",
)
@click.option(
    "--requests",
    "num_requests",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Held-out requests to send; each is sent routed and once forced to every tier.",
)
@click.option(
    "--concurrency",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option(
    "--tritonserver",
    type=click.Path(dir_okay=False, path_type=Path),
    help="tritonserver binary (default: tritonserver on PATH, else the one bundled in nvidia-pytriton).",
)
@click.option(
    "--log-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="File for the server's log (default: a temporary file, printed at the end).",
)
def command(
    spec_path: Path,
    repository: Path | None,
    num_requests: int,
    concurrency: int,
    tritonserver: Path | None,
    log_file: Path | None,
) -> None:
    """Start Triton on the repository, send real gRPC traffic through the ensemble, print a summary.

    The server binds 127.0.0.1 on free ports and is stopped at the end (also on Ctrl-C or error).
    Held-out generated requests go through the ensemble once routed by the spec's policy and once
    forced to each tier, so the table compares each tier alone with the routed mix on the same
    requests: requests per tier, NE and AUC, NE on informative and other users, client-side p50/p99
    latency, failures.

    With pools in the spec, one server per pool: every other pool first, on the gRPC port of the
    address its entry in the deployed router names (which must be on this machine), then the entry
    pool; the summary adds how the router's calls to the other pools went.
    """
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from toolkit.bench import demo_rows, replay
    from toolkit.data import demo_holdout_set
    from toolkit.serve import ServerOptions, TritonServer

    spec = load(spec_path)
    repo = folder(repository, spec.paths.repository)
    console = Console(stderr=True)
    if num_requests > spec.data.holdout_requests:
        raise click.BadParameter(
            f"{num_requests} is more than the spec's data.holdout_requests ({spec.data.holdout_requests})",
            param_hint="--requests",
        )
    requests = demo_holdout_set(spec).subset(range(num_requests))
    peers = _peer_servers(spec, repo, tritonserver, log_file) if spec.pools else []
    entry_repo = repo / spec.entry_pool if spec.pools else repo
    options = ServerOptions.on_free_ports(entry_repo, tritonserver=tritonserver, log_file=log_file)
    server = TritonServer(options)
    try:
        for pool, peer in peers:
            with console.status(f"starting tritonserver of pool {pool} on {peer.options.repository}/"):
                peer.start()
                peer.wait_ready()
            console.log(f"pool {pool}: tritonserver ready at {peer.grpc_url} (pid {peer.pid})")
        with console.status(f"starting tritonserver on {entry_repo}/"):
            server.start()
            server.wait_ready()
        console.log(f"tritonserver ready at {server.grpc_url} (pid {server.pid}, log {server.log_path})")
        warmup = requests.subset(range(min(16, requests.num_requests)))
        for name in (*spec.tier_names, None):
            replay(server.grpc_url, spec.name, warmup, name, concurrency)
        runs = [(None, "routed"), *[(name, f"forced {name}") for name in spec.tier_names]]
        results = {}
        with Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        ) as progress:
            for tier, label in runs:
                task = progress.add_task(label, total=requests.num_requests)
                results[tier] = replay(
                    server.grpc_url,
                    spec.name,
                    requests,
                    tier,
                    concurrency,
                    on_done=lambda task=task: progress.advance(task),
                )
        events = _remote_events(server) if peers else {}
    finally:
        server.stop()
        for _, peer in peers:
            peer.stop()
    console.log("tritonserver stopped" if not peers else f"{len(peers) + 1} tritonservers stopped")
    rows = demo_rows(requests, results[None], {t: results[t] for t in spec.tier_names}, spec.tier_names)
    ctr = float(requests.labels.mean())
    table = results_table(
        f"{requests.num_requests} held-out requests ({requests.num_candidates} candidates, CTR {ctr:.2%}) "
        f"through {spec.name}, policy {spec.routing.policy!r}{_variants(repo)}",
        ["", "requests", "share", "NE", "AUC", "NE informative", "NE other", "p50 ms", "p99 ms", "failed"],
    )
    for row in rows:
        table.add_row(
            row.label,
            str(row.requests),
            "-" if row.share is None else f"{row.share:.0%}",
            fmt(row.ne),
            fmt(row.auc),
            fmt(row.ne_informative),
            fmt(row.ne_other),
            fmt(row.p50_ms, 2),
            fmt(row.p99_ms, 2),
            str(row.failed),
        )
    output_console().print(table)
    click.echo(
        "NE: normalized entropy, lower is better; every row uses the same requests and background CTR."
    )
    for pool, _ in peers:
        click.echo(_describe_pool_calls(spec, pool, events))
    click.echo(f"server log: {server.log_path}")
    failures = {label: results[tier].errors for tier, label in runs if results[tier].errors}
    for label, errors in failures.items():
        kinds = ", ".join(f"{count} {kind}" for kind, count in errors.most_common())
        click.echo(f"{label}: {kinds}")
    if failures:
        raise click.ClickException("some requests failed; see the server log")


def _variants(repo: Path) -> str:
    """``; tiers: lite onnx-fp32, ...`` from the repository's marker, or nothing if unreadable."""
    import json

    from toolkit.repository import MARKER

    try:
        variants = json.loads((repo / MARKER).read_text(encoding="utf-8"))["variants"]
    except (OSError, ValueError, KeyError, TypeError):
        return ""
    return "; tiers served as " + ", ".join(f"{t} {v}" for t, v in variants.items())


def _peer_servers(
    spec: Spec, repo: Path, tritonserver: Path | None, log_file: Path | None
) -> list[tuple[str, TritonServer]]:
    """A server per pool other than the entry pool, on the port the deployed router calls it at."""
    import json

    from toolkit.errors import ToolkitError
    from toolkit.serve import ServerOptions, TritonServer, free_port

    router_json = repo / spec.entry_pool / spec.router_model / "1" / "router.json"
    try:
        remote = json.loads(router_json.read_text(encoding="utf-8"))["remote_tiers"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ToolkitError(
            f"{router_json}: cannot read the router's pools ({exc}); "
            f"run `toolkit deploy --spec {spec.source}`"
        ) from None
    addresses = {entry["pool"]: entry["addresses"] for entry in remote.values()}
    servers = []
    for pool in spec.pools[1:]:
        if pool.name not in addresses:
            raise ToolkitError(f"{router_json}: the router does not call pool {pool.name!r}; deploy again")
        host, _, port = addresses[pool.name][0].rpartition(":")
        if host not in _LOCAL_HOSTS:
            raise ToolkitError(
                f"{router_json}: the router calls pool {pool.name!r} at {addresses[pool.name][0]}, not on "
                "this machine; `toolkit demo` runs every pool here: deploy with "
                f"--pool-address {pool.name}=127.0.0.1:PORT"
            )
        log = (
            None if log_file is None else log_file.with_name(f"{log_file.stem}-{pool.name}{log_file.suffix}")
        )
        options = ServerOptions(
            repository=repo / pool.name,
            host="127.0.0.1",
            grpc_port=int(port),
            http_port=free_port(),
            metrics_port=free_port(),
            tritonserver=tritonserver,
            log_file=log,
        )
        servers.append((pool.name, TritonServer(options)))
    return servers


_LOCAL_HOSTS = ("127.0.0.1", "localhost", "[::1]")


def _remote_events(server: TritonServer) -> dict[tuple[str, str], float]:
    from toolkit.errors import ServerError
    from toolkit.serve.metrics import router_events

    try:
        return router_events(server.metrics_url)
    except ServerError:
        return {}


def _describe_pool_calls(spec: Spec, pool: str, events: dict[tuple[str, str], float]) -> str:
    """One line on the router's calls to ``pool``: answered, refused, timed out, and step-downs."""
    tiers = spec.pool_tiers(pool)

    def total(event: str) -> int:
        return int(sum(v for (e, _), v in events.items() if e == event))

    fallbacks = int(sum(events.get(("fallback", t), 0) for t in tiers))
    return (
        f"pool {pool} ({', '.join(tiers)}), called by the router over gRPC: {total('remote_ok')} calls "
        f"answered, {total('remote_unavailable')} refused, {total('remote_timeout')} timed out, "
        f"{total('remote_error')} failed; {fallbacks} stepped down to a cheaper tier"
    )
