"""Pools: what calling a tier in another pool costs, and how fast the router steps down and back.

Deploys the demo ensemble twice from the same export: as one repository (``ensembles/ads_ranking.yaml``)
and split into pools (``examples/pools/spec.yaml``, every pool for CPU: pool ``cpu`` with the router,
lite and standard; pool ``big`` with xl on a second server). Starts the three embedded servers and
sends the same held-out requests one at a time, alternating between the single server and the pools,
each forced to xl (remote in the pools) and to standard (local in both). Reports p50 and p99 and the
remote hop's cost at p50.

Then, with one client sending xl requests to the pools without pause, stops ``big`` (SIGINT) and
starts it again: how long until the first answer from standard after the stop, how long until xl
answers again after ``big`` is ready, and how many requests failed (target: none).

Writes ``benchmarks/results/pools.md`` and ``pools.json``; scratch repositories go to
``benchmarks/scratch/pools``. Trains and exports the demo first where their outputs are missing.

Usage: ``python benchmarks/pools.py [--requests 300]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, ROOT, prepare, toolkit, write_report

from toolkit.client import RankingClient
from toolkit.data import demo_holdout_set
from toolkit.machine import machine_facts
from toolkit.serve import ServerOptions, TritonServer, free_port
from toolkit.serve.metrics import router_events
from toolkit.spec import load_spec

SINGLE_SPEC = Path("ensembles/ads_ranking.yaml")
POOLS_SPEC = Path("examples/pools/spec.yaml")
SCRATCH = ROOT / "benchmarks" / "scratch" / "pools"


def _options(repository: Path, grpc_port: int | None = None) -> ServerOptions:
    return ServerOptions(
        repository=repository,
        grpc_port=grpc_port or free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
    )


def _percentiles(values: list[float]) -> dict[str, float]:
    return {"p50_ms": float(np.percentile(values, 50)), "p99_ms": float(np.percentile(values, 99))}


def _outage(pools_url: str, spec: Any, big: TritonServer) -> dict[str, Any]:
    """Stop ``big`` under load and start it again; time the step-down and the way back."""
    holdout = demo_holdout_set(spec, 64)
    answers: list[tuple[float, str]] = []
    failures: list[str] = []
    stop = threading.Event()

    def send() -> None:
        with RankingClient(pools_url, spec.name, tier_names=spec.tier_names) as client:
            r = 0
            while not stop.is_set():
                try:
                    ranking = client.rank(tier="xl", **holdout.request(r % 64))
                    answers.append((time.monotonic(), ranking.tier_names[0]))
                except Exception as exc:
                    failures.append(f"{type(exc).__name__}: {exc}")
                r += 1

    def first(after: float, tier: str, timeout_s: float = 60.0) -> float:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            hit = next((t for t, name in list(answers) if t >= after and name == tier), None)
            if hit is not None:
                return hit - after
            stop.wait(0.01)
        raise RuntimeError(f"no answer from {tier} within {timeout_s:g} s")

    worker = threading.Thread(target=send, daemon=True)
    worker.start()
    try:
        first(time.monotonic(), "xl")
        stopping = time.monotonic()
        big.stop()
        stopped = time.monotonic()
        to_standard = first(stopping, "standard")
        while sum(1 for t, _ in list(answers) if t >= stopped) < 50:
            stop.wait(0.01)
        big.start()
        big.wait_ready()
        ready = time.monotonic()
        back_to_xl = first(ready, "xl")
    finally:
        stop.set()
        worker.join(timeout=30)
    during = [name for t, name in answers if stopped <= t < ready]
    return {
        "requests": len(answers) + len(failures),
        "failed": len(failures),
        "failures": failures[:5],
        "first_standard_after_stop_s": to_standard,
        "stop_s": stopped - stopping,
        "answers_while_down": len(during),
        "answers_while_down_by_standard": sum(1 for name in during if name == "standard"),
        "first_xl_after_ready_s": back_to_xl,
    }


def run(count: int, out: Path) -> dict[str, Any]:
    """Run the benchmark and return what was written to ``out``/pools.json."""
    single = load_spec(ROOT / SINGLE_SPEC)
    prepare(ROOT / SINGLE_SPEC, single)
    spec = load_spec(ROOT / POOLS_SPEC)
    shutil.rmtree(SCRATCH, ignore_errors=True)
    big_port = free_port()
    toolkit("deploy", "--spec", str(SINGLE_SPEC), "--out", str(SCRATCH / "single"))
    toolkit(
        "deploy",
        "--spec",
        str(POOLS_SPEC),
        "--target",
        "cpu",
        "--out",
        str(SCRATCH / "pools"),
        "--pool-address",
        f"big=127.0.0.1:{big_port}",
    )
    requests = demo_holdout_set(spec, count)
    raws = [requests.request(r) for r in range(count)]
    timings: dict[str, dict[str, list[float]]] = {t: {"single": [], "pools": []} for t in ("standard", "xl")}
    big = TritonServer(_options(SCRATCH / "pools" / "big", big_port))
    with (
        TritonServer(_options(SCRATCH / "single")) as one,
        big,
        TritonServer(_options(SCRATCH / "pools" / "cpu")) as entry,
        RankingClient(one.grpc_url, spec.name, tier_names=spec.tier_names) as to_one,
        RankingClient(entry.grpc_url, spec.name, tier_names=spec.tier_names) as to_pools,
    ):
        clients = {"single": to_one, "pools": to_pools}
        for tier in timings:
            for raw in raws[:20]:
                for client in clients.values():
                    client.rank(tier=tier, **raw)
            for raw in raws:
                for where, client in clients.items():
                    started = time.perf_counter()
                    ranking = client.rank(tier=tier, **raw)
                    timings[tier][where].append((time.perf_counter() - started) * 1000.0)
                    if set(ranking.tier_names) != {tier}:
                        raise RuntimeError(
                            f"{where}: a request forced to {tier} was served by {ranking.tier_names}"
                        )
            print(f"{tier}: done", file=sys.stderr, flush=True)
        outage = _outage(entry.grpc_url, spec, big)
        events = router_events(entry.metrics_url)
    tiers = {}
    for tier, by in timings.items():
        one_p, pools_p = _percentiles(by["single"]), _percentiles(by["pools"])
        tiers[tier] = {
            "single": one_p,
            "pools": pools_p,
            "hop_p50_ms": pools_p["p50_ms"] - one_p["p50_ms"],
            "remote": tier in spec.remote_tiers,
        }
    result = {
        "benchmark": "pools",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "requests": count,
        "tiers": tiers,
        "outage": outage,
        "router_events": {
            f"{e}:{s}": v for (e, s), v in sorted(events.items()) if e.startswith(("remote", "fallback"))
        },
    }
    write_report(out, "pools", result, render(result))
    return result


def render(result: dict[str, Any]) -> str:
    """The markdown report of a result."""
    m, o = result["machine"], result["outage"]
    lines = [
        "# Pools",
        "",
        f"Run {result['created']} on {m['cpu']} ({m['cores']} cores usable), onnxruntime {m['onnxruntime']}, "
        f"toolkit {m['toolkit']}; three embedded tritonservers and the client on the same machine. "
        f"{result['requests']} held-out requests per tier, one at a time, single server and pools "
        "alternating.",
        "",
        "Single: one repository with every tier. Pools: the entry pool `cpu` (router, lite, standard) "
        "calls xl on the pool `big`, a second server, over gRPC; standard is local in both.",
        "",
        "| tier | in the pools | single p50 ms | pools p50 ms | hop p50 ms | single p99 ms | pools p99 ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for tier, t in result["tiers"].items():
        lines.append(
            f"| {tier} | {'remote (big)' if t['remote'] else 'local (cpu)'} | {t['single']['p50_ms']:.2f} "
            f"| {t['pools']['p50_ms']:.2f} | {t['hop_p50_ms']:+.2f} | {t['single']['p99_ms']:.2f} "
            f"| {t['pools']['p99_ms']:.2f} |"
        )
    lines += [
        "",
        "Outage: one client sends xl requests to the pools without pause; `big` is stopped (SIGINT) and "
        "started again.",
        "",
        f"- {o['requests']} requests, {o['failed']} failed (target: 0).",
        f"- First answer from standard {o['first_standard_after_stop_s'] * 1000:.0f} ms after the stop began "
        f"(the server took {o['stop_s']:.1f} s to exit); {o['answers_while_down_by_standard']} of "
        f"{o['answers_while_down']} answers while `big` was down came from standard.",
        f"- First answer from xl {o['first_xl_after_ready_s'] * 1000:.0f} ms after `big` was ready again.",
        "",
        "Router counters on the entry pool: "
        + ", ".join(f"`{k}` {v:g}" for k, v in result["router_events"].items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300, help="held-out requests per tier (default 300)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    run(args.requests, args.out)
    print((args.out / "pools.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
