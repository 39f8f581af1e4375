"""``toolkit bench``: load against a running Triton with the ensemble, step by step."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.common import fmt, folder, load, output_console, parse_candidates, results_table, spec_option


def _levels(value: str | None, flag: str) -> list[float]:
    if not value:
        return []
    try:
        levels = [float(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not a comma-separated list of numbers", param_hint=flag
        ) from None
    if not levels or any(v <= 0 for v in levels):
        raise click.BadParameter(f"{value!r}: every level must be a positive number", param_hint=flag)
    return levels


@click.command("bench")
@spec_option
@click.option("--url", help="gRPC address host:port (default: the spec's triton host and grpc_port).")
@click.option(
    "--concurrency",
    metavar="C1,C2,...",
    help="Closed-loop steps: this many requests in flight (default 1,2,4,8 when --rate is not given).",
)
@click.option("--rate", metavar="R1,R2,...", help="Open-loop steps: arrivals per second.")
@click.option(
    "--arrivals",
    type=click.Choice(["poisson", "constant"]),
    default="poisson",
    show_default=True,
    help="Inter-arrival times with --rate.",
)
@click.option(
    "--window-s", type=click.FloatRange(min=0.05), default=2.0, show_default=True, help="Window length."
)
@click.option(
    "--max-windows",
    type=click.IntRange(min=3),
    default=10,
    show_default=True,
    help="Windows per step at most.",
)
@click.option(
    "--warmup-s",
    type=click.FloatRange(min=0),
    default=0.0,
    show_default=True,
    help="Seconds each step's load runs before its first window; their requests count in no figure, "
    "their failures in 'failed'.",
)
@click.option("--tier", help="Request parameter `tier` (force a tier; default: routed).")
@click.option("--latency-budget-ms", type=click.FloatRange(min=0, min_open=True), help="Request parameter.")
@click.option(
    "--candidates",
    metavar="MIN:MAX",
    help="Candidates per generated request (default: the spec's data). With data.files in the spec and "
    "no --candidates, the requests are the held-out log's instead of generated ones.",
)
@click.option(
    "--requests",
    "pool",
    type=click.IntRange(min=1),
    default=500,
    show_default=True,
    help="Requests (generated, or the first of the held-out log), cycled.",
)
@click.option(
    "--slo-ms", type=click.FloatRange(min=0, min_open=True), help="Report the highest load with p99 <= this."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for bench.csv, bench.json and bench.png (default: <artifacts>/bench).",
)
def command(
    spec_path: Path,
    url: str | None,
    concurrency: str | None,
    rate: str | None,
    arrivals: str,
    window_s: float,
    max_windows: int,
    warmup_s: float,
    tier: str | None,
    latency_budget_ms: float | None,
    candidates: str | None,
    pool: int,
    slo_ms: float | None,
    out: Path | None,
) -> None:
    """Load a running Triton's ensemble step by step and measure each step.

    Closed loop (--concurrency: that many requests in flight) or open loop (--rate: arrivals per
    second, Poisson or constant, so overload shows as latency instead of being hidden by the client
    waiting). Each step runs windows of --window-s seconds until three agree within 10% on
    throughput and median latency (at most --max-windows), like perf_analyzer, and reports
    requests/s, candidates/s, latency p50/p90/p95/p99/max (log-bucketed histogram), errors by kind,
    the tier mix, the NE of the scores served (against the generated labels), and per model the
    server-side split from Triton's statistics API (queue, compute input, infer, output). Writes
    bench.csv, bench.json and bench.png.
    """
    import asyncio

    from rich.console import Console

    from toolkit.bench.load import StabilityPolicy, StepSpec, bench_requests, highest_within_slo, run_step
    from toolkit.bench.output import write_results

    spec = load(spec_path)
    rates = _levels(rate, "--rate")
    levels = _levels(concurrency, "--concurrency")
    if rates and levels:
        raise click.BadParameter("give --concurrency or --rate, not both", param_hint="--rate")
    steps = [StepSpec("rate", r, arrivals) for r in rates] or [
        StepSpec("concurrency", c) for c in (levels or [1, 2, 4, 8])
    ]
    if tier is not None and tier not in spec.tier_names:
        raise click.BadParameter(
            f"{tier!r} is not a tier of the spec ({', '.join(spec.tier_names)})", param_hint="--tier"
        )
    requests = bench_requests(spec, pool, parse_candidates(candidates))
    address = url or f"{spec.triton.host}:{spec.triton.grpc_port}"
    policy = StabilityPolicy(window_s=window_s, max_windows=max_windows, warmup_s=warmup_s)
    console = Console(stderr=True)
    results = []
    for step in steps:
        with console.status(f"{step.mode} {step.level:g}") as status:
            result = asyncio.run(
                run_step(
                    address,
                    spec.name,
                    requests,
                    step,
                    spec.tier_names,
                    tier,
                    latency_budget_ms,
                    policy,
                    on_window=lambda i, w, s=step: status.update(
                        f"{s.mode} {s.level:g}: window {i}, {w.completed / max(w.seconds, 1e-9):.0f} req/s"
                    ),
                )
            )
        console.log(
            f"{step.mode} {step.level:g}: {result.requests_per_s:.1f} req/s, "
            f"p99 {result.latency['p99_ms']:.2f} ms"
        )
        results.append(result)
    target = folder(out, str(Path(spec.paths.artifacts) / "bench"))
    written = write_results(
        results, target, {"url": address, "model": spec.name, "slo_ms": slo_ms, "tier": tier}
    )
    table = results_table(
        f"{spec.name} at {address}: measured over each step's last 3 windows",
        [
            "step",
            "stable",
            "req/s",
            "cand/s",
            "p50 ms",
            "p90 ms",
            "p99 ms",
            "max ms",
            "failed",
            "NE",
            "tier mix",
        ],
    )
    for r in results:
        mix = ", ".join(f"{t} {s:.0%}" for t, s in r.tier_mix.items())
        table.add_row(
            f"{r.step.mode} {r.step.level:g}",
            "yes" if r.stable else "no",
            fmt(r.requests_per_s, 1),
            fmt(r.candidates_per_s, 0),
            *(fmt(r.latency[k], 2) for k in ("p50_ms", "p90_ms", "p99_ms", "max_ms")),
            str(r.all_failed),
            fmt(r.ne, 4),
            mix,
        )
    output_console().print(table)
    if slo_ms is not None:
        best = highest_within_slo(results, slo_ms)
        click.echo(
            f"highest load with p99 <= {slo_ms:g} ms: {best.step.mode} {best.step.level:g} "
            f"({best.requests_per_s:.1f} req/s, p99 {best.latency['p99_ms']:.2f} ms)"
            if best
            else f"no step met p99 <= {slo_ms:g} ms without failures"
        )
    click.echo(f"wrote {target}/{', '.join(path.name for path in written)}")
    if len(written) < 3:
        click.echo("bench.png needs matplotlib: pip install 'adaptive-ranking-toolkit[export]'")
