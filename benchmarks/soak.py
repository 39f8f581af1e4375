"""Soak: the routed demo ensemble at about half its capacity for 10 minutes, so a leak or a drift shows.

Starts the embedded Triton on the deployed demo repository, measures its capacity (closed loop,
concurrency 4, routed requests), then offers half of it as Poisson arrivals for ``--minutes``
minutes, in windows of 30 s. Per window: requests answered and failed, p50 and p99, and the resident
memory of the server's whole process tree (tritonserver and its python-backend stubs). The report
compares the first and the last minute.

Writes ``benchmarks/results/soak.md`` and ``soak.json``; trains, exports and deploys the demo first
where their outputs are missing.

Usage: ``python benchmarks/soak.py [--spec ensembles/ads_ranking.yaml] [--minutes 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import sys
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, prepare, write_report

from toolkit.bench.load import StabilityPolicy, StepSpec, Window, run_step
from toolkit.data import demo_holdout_set
from toolkit.machine import machine_facts, process_tree_rss_kib
from toolkit.serve import ServerOptions, TritonServer
from toolkit.spec import load_spec

WINDOW_S = 30.0
SHARE = 0.5


def tree_rss_mib(root: int) -> float:
    """Resident memory of process ``root`` and all its descendants, in MiB."""
    return process_tree_rss_kib(root) / 1024.0


def run(spec_path: Path, minutes: float, out: Path) -> dict[str, Any]:
    """Run the soak and return what was written to ``out``/soak.json."""
    spec = load_spec(spec_path)
    prepare(spec_path, spec, deploy=True)
    requests = demo_holdout_set(spec, 500)
    options = ServerOptions.on_free_ports(ROOT / spec.paths.repository)
    windows: list[dict[str, Any]] = []
    with TritonServer(options) as server:
        capacity = asyncio.run(
            run_step(
                server.grpc_url,
                spec.name,
                requests,
                StepSpec("concurrency", 4),
                spec.tier_names,
                policy=StabilityPolicy(window_s=2.0, stable_windows=3, max_windows=8),
            )
        )
        rate = capacity.requests / capacity.seconds * SHARE
        count = max(2, round(minutes * 60.0 / WINDOW_S))
        print(
            f"capacity {capacity.requests / capacity.seconds:.0f}/s; soaking at {rate:.0f}/s", file=sys.stderr
        )
        start_rss = tree_rss_mib(server.pid)

        def on_window(number: int, window: Window) -> None:
            record = {
                "window": number,
                "answered": window.completed,
                "failed": int(sum(window.errors.values())),
                "p50_ms": window.histogram.percentile(50),
                "p99_ms": window.histogram.percentile(99),
                "rss_mib": tree_rss_mib(server.pid),
            }
            windows.append(record)
            print(
                f"window {number}: {record['answered']} answered, {record['failed']} failed, "
                f"p99 {record['p99_ms']:.2f} ms, {record['rss_mib']:.0f} MiB",
                file=sys.stderr,
                flush=True,
            )

        soak = asyncio.run(
            run_step(
                server.grpc_url,
                spec.name,
                requests,
                StepSpec("rate", rate),
                spec.tier_names,
                policy=StabilityPolicy(window_s=WINDOW_S, stable_windows=count, max_windows=count),
                on_window=on_window,
            )
        )
    per_minute = max(1, round(60.0 / WINDOW_S))
    first, last = windows[:per_minute], windows[-per_minute:]
    result = {
        "benchmark": "soak",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "spec": str(spec_path),
        "capacity_per_s": capacity.requests / capacity.seconds,
        "rate_per_s": rate,
        "minutes": len(windows) * WINDOW_S / 60.0,
        "answered": soak.requests,
        "failed": soak.failed,
        "errors": soak.errors,
        "tier_mix": soak.tier_mix,
        "rss_before_mib": start_rss,
        "first_minute": _summary(first),
        "last_minute": _summary(last),
        "windows": windows,
    }
    write_report(out, "soak", result, render(result))
    return result


def _summary(windows: list[dict[str, Any]]) -> dict[str, float]:
    return {
        "p99_ms": max(w["p99_ms"] for w in windows),
        "p50_ms": max(w["p50_ms"] for w in windows),
        "rss_mib": windows[-1]["rss_mib"],
        "answered": sum(w["answered"] for w in windows),
    }


def render(result: dict[str, Any]) -> str:
    """The markdown report of a result."""
    m, first, last = result["machine"], result["first_minute"], result["last_minute"]
    mix = ", ".join(f"{tier} {share:.0%}" for tier, share in result["tier_mix"].items())
    lines = [
        "# Soak",
        "",
        f"Run {result['created']} on {m['cpu']} ({m['cores']} cores usable), onnxruntime {m['onnxruntime']}, "
        f"toolkit {m['toolkit']}; the embedded tritonserver on the demo repository, the load generator on "
        "the same machine (`make bench-soak`).",
        "",
        f"Capacity (closed loop, concurrency 4, routed): {result['capacity_per_s']:.0f} requests/s. Offered "
        f"{result['rate_per_s']:.0f} requests/s (Poisson) for {result['minutes']:.0f} minutes: "
        f"{result['answered']:,} answered, {result['failed']} failed; tier mix {mix}.",
        "",
        "| | p50 ms | p99 ms | server memory (process tree) |",
        "|---|---|---|---|",
        f"| before the load | | | {result['rss_before_mib']:.0f} MiB |",
        f"| first minute | {first['p50_ms']:.2f} | {first['p99_ms']:.2f} | {first['rss_mib']:.0f} MiB |",
        f"| last minute | {last['p50_ms']:.2f} | {last['p99_ms']:.2f} | {last['rss_mib']:.0f} MiB |",
        "",
        f"Memory from the end of the first minute to the end: {last['rss_mib'] - first['rss_mib']:+.0f} MiB; "
        f"p99 {last['p99_ms'] - first['p99_ms']:+.2f} ms.",
        "",
        "| window (30 s) | answered | failed | p50 ms | p99 ms | memory MiB |",
        "|---|---|---|---|---|---|",
    ]
    for w in result["windows"]:
        lines.append(
            f"| {w['window']} | {w['answered']:,} | {w['failed']} | {w['p50_ms']:.2f} | {w['p99_ms']:.2f} | "
            f"{w['rss_mib']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path("ensembles/ads_ranking.yaml"))
    parser.add_argument("--minutes", type=float, default=10.0, help="minutes at half capacity (default 10)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    run(args.spec, args.minutes, args.out)
    print((args.out / "soak.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
