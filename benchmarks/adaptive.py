"""Adaptive against one-size-fits-all: the routed ensemble against always serving the largest tier.

The repository is the demo's, deployed with ``routing.slo_ms`` set to the SLO: the router then gives
every request that brings no budget the SLO as its budget, less the time requests now wait in its
queue (read from Triton's statistics), and steps traffic down to cheaper tiers while that wait
exceeds a fifth of the SLO. Both sides run on the same embedded Triton, the same repository and
the same requests: always-largest sets the request parameter ``tier`` to the largest tier on every
request (a forced tier is never stepped down); adaptive sends the requests as they are;
always-cheapest forces the cheapest tier, the bound of what any routing can answer. Optional extra
sides (``--budgets``) send every request with a ``latency_budget_ms`` of their own.

Each of ``--rounds`` rounds (3 by default) starts a fresh server and:

1. measures the largest tier's capacity within the SLO: always-largest's closed-loop throughput at
   concurrency 4, then open-loop Poisson arrivals at fractions of it (0.5, 0.75, 1); where none
   met the SLO, the lowest rate halved until one does; then ``--refine`` (2) bisections between the
   highest rate that met the SLO and the next one above, which missed. What was answered at the
   highest rate that met the SLO with no failed request is the round's capacity;
2. measures the adaptive sides at the same rates, then every side at twice the capacity, the order
   of the sides alternating from round to round (always-largest first in odd rounds, last in even
   ones), so that a slower or faster spell of the machine does not favour one side.

Each step runs its load one window long before it measures (a warm-up whose failures still count:
the server's answer to a change of load is not its answer to the load), then reports requests/s
answered, latency percentiles from each request's scheduled arrival (no coordinated omission),
failed requests, the tier mix and the NE of the scores served (against the generated labels). The
verdict counts the rounds in which adaptive held p99 under the SLO with no failed request at twice
the capacity while always-largest did not, and gives every round and the medians.

Requests carry 512 to 1024 candidates by default (production ads ranking scores hundreds per
request; the demo data's 8 to 48 would make the largest tier's cost vanish beside the fixed cost of
a request). Writes ``benchmarks/results/adaptive.md``, ``adaptive.json`` and ``adaptive.png``.
Trains and exports the demo first where their outputs are missing.

Usage: ``python benchmarks/adaptive.py [--spec ensembles/ads_ranking.yaml] [--slo-ms 50] [--rounds 3]
[--budgets 5,8]``
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, held_out_requests, prepare, write_report

from toolkit.bench.load import StabilityPolicy, StepSpec, run_step
from toolkit.data.requests import RequestSet
from toolkit.machine import machine_facts
from toolkit.repository.plan import DeployOptions, plan_deploy
from toolkit.repository.writer import write_repository
from toolkit.serve import ServerOptions, TritonServer
from toolkit.serve.backends import resolve_backend
from toolkit.spec import load_spec

LARGEST = "always-largest"
ADAPTIVE = "adaptive"
CHEAPEST = "always-cheapest"
SCRATCH = ROOT / "benchmarks" / "scratch" / "adaptive"


def _budget_side(budget_ms: float) -> str:
    return f"adaptive, budget {budget_ms:g} ms"


def _step(
    url: str,
    model: str,
    requests: RequestSet,
    step: StepSpec,
    tiers: tuple[str, ...],
    plan: tuple[str | None, float | None],
    policy: StabilityPolicy,
    label: str,
) -> dict[str, Any]:
    """One load step of one side; ``plan`` is the side's (forced tier, request budget)."""
    tier, budget = plan
    result = asyncio.run(run_step(url, model, requests, step, tiers, tier, budget, policy))
    mix = ", ".join(f"{t} {s:.0%}" for t, s in result.tier_mix.items())
    print(
        f"{label}, {step.mode} {step.level:.0f}: {result.requests_per_s:.1f} req/s, "
        f"p99 {result.latency['p99_ms']:.1f} ms, failed {result.failed}, {mix}",
        file=sys.stderr,
        flush=True,
    )
    return {"offered_per_s": step.level, "sent": result.sent, **result.row()}


def _failed(row: dict[str, Any]) -> int:
    return row["failed"] + row.get("warmup_failed", 0)


def _meets(row: dict[str, Any], slo_ms: float) -> bool:
    return _failed(row) == 0 and row["requests"] > 0 and row["p99_ms"] <= slo_ms


def _capacity(
    rates: list[float], measure: Callable[[float], dict[str, Any]], slo_ms: float, refine: int
) -> tuple[float, list[dict[str, Any]]]:
    """The largest tier's capacity within the SLO: the highest Poisson rate whose p99 met it.

    Measures ``rates``; where none met the SLO, halves the lowest until one does (at most ``refine``
    times); then bisects ``refine`` times between the highest rate that met it and the next rate
    measured above, which missed. The same rule on either side, so that a round where the first
    rates all missed is not credited with a capacity it did not show. Returns the answered
    requests/s at the highest rate that met the SLO (the lowest rate tried when none did) and every
    probe as (offered, met).
    """
    probes: list[dict[str, Any]] = []

    def probe(rate: float) -> dict[str, Any]:
        row = measure(rate)
        probes.append({"offered_per_s": row["offered_per_s"], "met": _meets(row, slo_ms)})
        return row

    rows = [probe(rate) for rate in rates]
    rate = min(rates)
    for _ in range(refine):
        if any(_meets(row, slo_ms) for row in rows):
            break
        rate /= 2.0
        rows.append(probe(rate))
    for _ in range(refine):
        met = [row for row in rows if _meets(row, slo_ms)]
        if not met:
            break
        low = max(met, key=lambda row: row["offered_per_s"])
        above = [row["offered_per_s"] for row in rows if row["offered_per_s"] > low["offered_per_s"]]
        if not above:
            break
        rows.append(probe((low["offered_per_s"] + min(above)) / 2.0))
    met = [row for row in rows if _meets(row, slo_ms)]
    best = max(met, key=lambda row: row["offered_per_s"], default=min(rows, key=lambda r: r["offered_per_s"]))
    return best["requests_per_s"], probes


def _round(
    number: int,
    repository: Path,
    spec_name: str,
    requests: RequestSet,
    tiers: tuple[str, ...],
    plans: dict[str, tuple[str | None, float | None]],
    slo_ms: float,
    fractions: tuple[float, ...],
    window_s: float,
    refine: int,
) -> dict[str, Any]:
    """One round on a fresh server: the capacity, every side at its fractions, every side at twice it."""
    steady = StabilityPolicy(window_s=window_s, max_windows=5, warmup_s=window_s)
    warm = StabilityPolicy(window_s=0.5, max_windows=3)
    order = list(plans) if number % 2 else list(reversed(plans))
    sides: dict[str, list[dict[str, Any]]] = {side: [] for side in plans}
    with TritonServer(
        ServerOptions.on_free_ports(repository, log_file=SCRATCH / "tritonserver.log")
    ) as server:
        url = server.grpc_url

        def measure(side: str, rate: float) -> dict[str, Any]:
            step = StepSpec("rate", round(rate, 1), "poisson")
            label = f"round {number}, {side}"
            sides[side].append(_step(url, spec_name, requests, step, tiers, plans[side], steady, label))
            return sides[side][-1]

        for side in order:
            _step(url, spec_name, requests, StepSpec("concurrency", 2), tiers, plans[side], warm, "warm-up")
        closed = _step(
            url, spec_name, requests, StepSpec("concurrency", 4), tiers, plans[LARGEST], steady, "closed loop"
        )
        rates = [f * closed["requests_per_s"] for f in fractions]
        capacity, probes = _capacity(rates, lambda rate: measure(LARGEST, rate), slo_ms, refine)
        for side in order:
            if side != LARGEST:
                for rate in rates:
                    measure(side, rate)
        for side in order:
            measure(side, 2 * capacity)
    return {
        "round": number,
        "order": order,
        "closed_loop": closed,
        "capacity_per_s": capacity,
        "capacity_probes": probes,
        "sides": sides,
    }


def run(
    spec_path: Path,
    out: Path,
    slo_ms: float,
    rounds: int,
    budgets: tuple[float, ...],
    fractions: tuple[float, ...],
    candidates: tuple[int, int],
    window_s: float,
    refine: int = 2,
) -> dict[str, Any]:
    """Run the benchmark and return what was written to ``out``/adaptive.json."""
    spec = load_spec(spec_path)
    prepare(spec_path, spec)
    tuned = dataclasses.replace(spec, routing=dataclasses.replace(spec.routing, slo_ms=slo_ms))
    repository = SCRATCH / "repository"
    options = DeployOptions(resolve_backend(spec.triton.backend, None))
    write_repository(plan_deploy(tuned, ROOT / spec.paths.artifacts, options), repository)
    requests = held_out_requests(spec, 200, candidates)
    tiers = spec.tier_names
    plans: dict[str, tuple[str | None, float | None]] = {
        LARGEST: (tiers[-1], None),
        ADAPTIVE: (None, None),
        **{_budget_side(b): (None, b) for b in budgets},
        CHEAPEST: (tiers[0], None),
    }
    done = [
        _round(r, repository, spec.name, requests, tiers, plans, slo_ms, fractions, window_s, refine)
        for r in range(1, rounds + 1)
    ]
    result = {
        "benchmark": "adaptive",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "spec": str(spec_path),
        "largest_tier": tiers[-1],
        "tiers": list(tiers),
        "policy": spec.routing.policy,
        "slo_ms": slo_ms,
        "budgets_ms": list(budgets),
        "candidates": list(candidates),
        "window_s": window_s,
        "refine": refine,
        "rounds": done,
    }
    result["summary"] = summary(result)
    write_report(out, "adaptive", result, render(result))
    plot(result, out / "adaptive.png")
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Per side, at twice each round's capacity: every round's row, the medians, the rounds held."""
    slo = result["slo_ms"]
    sides: dict[str, Any] = {}
    for side in result["rounds"][0]["sides"]:
        rows = [r["sides"][side][-1] for r in result["rounds"]]
        sides[side] = {
            "held": sum(_meets(row, slo) for row in rows),
            "median_p99_ms": statistics.median(row["p99_ms"] for row in rows),
            "median_failed": statistics.median(_failed(row) for row in rows),
            "median_ne": statistics.median(row["ne"] for row in rows),
            "median_answered_per_s": statistics.median(row["requests_per_s"] for row in rows),
        }
    rounds = len(result["rounds"])
    largest = [r["sides"][LARGEST][-1] for r in result["rounds"]]
    adaptive = [r["sides"][ADAPTIVE][-1] for r in result["rounds"]]
    won = sum(_meets(a, slo) and not _meets(b, slo) for a, b in zip(adaptive, largest, strict=True))
    cheapest = [r["sides"][CHEAPEST][-1] for r in result["rounds"]]
    beyond = [r["round"] for r, row in zip(result["rounds"], cheapest, strict=True) if not _meets(row, slo)]
    return {"rounds": rounds, "won": won, "met": won == rounds, "sides": sides, "beyond_cheapest": beyond}


def verdict(result: dict[str, Any]) -> str:
    """The sentence that says in how many rounds adaptive held the SLO while always-largest did not."""
    s, slo = result["summary"], result["slo_ms"]
    held, largest = s["sides"][ADAPTIVE], s["sides"][LARGEST]
    tiers = result["tiers"]
    return (
        f"At twice the largest tier's capacity (SLO p99 <= {slo:g} ms, no failed request), adaptive "
        f"held in {held['held']} of {s['rounds']} rounds (median p99 {held['median_p99_ms']:.1f} ms, "
        f"median NE {held['median_ne']:.4f}); always-{result['largest_tier']} held in "
        f"{largest['held']} of {s['rounds']} (median p99 {largest['median_p99_ms']:.1f} ms, median "
        f"failed {largest['median_failed']:g}). Adaptive held while always-largest missed in "
        f"{s['won']} of {s['rounds']} rounds. Target (in every round): **{'met' if s['met'] else 'missed'}**."
        + (
            f" In round{'s' if len(s['beyond_cheapest']) > 1 else ''} "
            f"{', '.join(map(str, s['beyond_cheapest']))}, always-{tiers[0]} missed the SLO at that load "
            "too: the cheapest tier alone could not answer it through the router, so no routing could."
            if s["beyond_cheapest"]
            else ""
        )
    )


def render(result: dict[str, Any]) -> str:
    """The markdown report of a result."""
    m, largest, slo = result["machine"], result["largest_tier"], result["slo_ms"]
    budgets = ", ".join(f"{b:g}" for b in result["budgets_ms"])
    extra = f" Extra sides send every request with `latency_budget_ms` {budgets}." if budgets else ""
    lines = [
        "# Adaptive routing against always serving the largest tier",
        "",
        f"Run {result['created']} on {m['cpu']} ({m['cores']} cores usable), onnxruntime {m['onnxruntime']}, "
        f"toolkit {m['toolkit']}; the embedded tritonserver and the load generator share the machine. "
        f"Spec `{result['spec']}` (policy `{result['policy']}`) deployed with `routing.slo_ms: {slo:g}`; "
        f"requests with {result['candidates'][0]} to {result['candidates'][1]} candidates.",
        "",
        f"Always-{largest}: request parameter `tier={largest}` on every request. Adaptive: the router's "
        f"policy under `routing.slo_ms`, no request parameter. Always-cheapest: `tier={result['tiers'][0]}`, "
        f"what no routing can beat.{extra} Open-loop Poisson arrivals; latency "
        f"counts from each request's scheduled arrival; each step's load runs {result['window_s']:g} s "
        "before its first window (the server's answer to the change of load: a queue filling or "
        "draining, the router stepping down), whose requests count in no figure but their failures; "
        f"then {result['window_s']:g} s windows until three agree within 10% (at most five), figures "
        "over the last three; failed counts the warm-up's too. NE of the scores served, against the "
        "generated labels (lower is better). Each round starts a fresh server; the order of the sides "
        "alternates between rounds.",
        "",
        verdict(result),
        "",
        f"At twice each round's capacity (SLO p99 <= {slo:g} ms):",
        "",
        "| side | " + " | ".join(f"round {r['round']}" for r in result["rounds"]) + " | median p99 | held |",
        "|---|" + "---|" * len(result["rounds"]) + "---|---|",
    ]
    for side, s in result["summary"]["sides"].items():
        cells = []
        for r in result["rounds"]:
            row = r["sides"][side][-1]
            cells.append(f"p99 {row['p99_ms']:.1f} ms, {_failed(row)} failed, NE {row['ne']:.4f}")
        lines.append(
            f"| {side} | " + " | ".join(cells) + f" | {s['median_p99_ms']:.1f} ms | {s['held']} of "
            f"{result['summary']['rounds']} |"
        )
    for r in result["rounds"]:
        closed, capacity = r["closed_loop"], r["capacity_per_s"]
        lines += [
            "",
            f"## Round {r['round']} (order: {', '.join(r['order'])})",
            "",
            f"Always-{largest} closed loop at concurrency 4: {closed['requests_per_s']:.1f} requests/s "
            f"(p99 {closed['p99_ms']:.1f} ms). Its capacity within the SLO: **{capacity:.1f} requests/s**"
            + (
                ""
                if any(p["met"] for p in r["capacity_probes"])
                else " (no rate met the SLO; the lowest rate tried stands in)"
            )
            + f"; the last row of each side is at twice that, {2 * capacity:.0f} requests/s.",
            "",
            "| side | offered req/s | x capacity | answered req/s | p50 ms | p99 ms | failed | NE "
            "| tier mix |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for side, rows in r["sides"].items():
            for row in rows:
                mix = ", ".join(f"{t} {s:.0%}" for t, s in row["tier_mix"].items())
                lines.append(
                    f"| {side} | {row['offered_per_s']:.0f} | {row['offered_per_s'] / capacity:.2f} | "
                    f"{row['requests_per_s']:.1f} | {row['p50_ms']:.1f} | {row['p99_ms']:.1f} | "
                    f"{_failed(row)} | {row['ne']:.4f} | {mix} |"
                )
    lines += ["", "![p99 and tier mix against load, every round](adaptive.png)"]
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """p99 of every side, and the largest tier's share of each adaptive side, against load; every round."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    colours = {side: f"C{i}" for i, side in enumerate(result["rounds"][0]["sides"])}
    for r in result["rounds"]:
        capacity = r["capacity_per_s"]
        for side, rows in r["sides"].items():
            rows = sorted(rows, key=lambda row: row["offered_per_s"])
            load = [row["offered_per_s"] / capacity for row in rows]
            label = side if r["round"] == 1 else None
            left.plot(load, [row["p99_ms"] for row in rows], marker="o", color=colours[side], label=label)
            if side != LARGEST:
                share = [row["tier_mix"].get(result["largest_tier"], 0.0) for row in rows]
                right.plot(load, share, marker="o", color=colours[side], label=label)
    left.axhline(result["slo_ms"], color="grey", linestyle="--", label=f"SLO {result['slo_ms']:g} ms")
    left.set_xlabel("offered load (x the round's capacity of the largest tier)")
    left.set_ylabel("p99 latency (ms)")
    left.set_yscale("log")
    left.legend(fontsize=8)
    right.set_xlabel("offered load (x the round's capacity of the largest tier)")
    right.set_ylabel(f"share of requests on {result['largest_tier']}")
    right.legend(fontsize=8)
    fig.suptitle(f"{len(result['rounds'])} rounds, one line each")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path("ensembles/ads_ranking.yaml"))
    parser.add_argument(
        "--slo-ms", type=float, default=50.0, help="p99 SLO in ms, and routing.slo_ms (default 50)"
    )
    parser.add_argument("--rounds", type=int, default=3, help="rounds, each on a fresh server (default 3)")
    parser.add_argument(
        "--budgets",
        default="",
        help="latency_budget_ms of extra adaptive sides, one side each (default: none)",
    )
    parser.add_argument(
        "--fractions",
        default="0.5,0.75,1",
        help="rates at which the capacity within the SLO is searched, as fractions of the largest tier's "
        "closed-loop throughput (default 0.5,0.75,1)",
    )
    parser.add_argument("--candidates", default="512:1024", help="candidates per request, MIN:MAX")
    parser.add_argument("--window-s", type=float, default=2.0, help="measurement window (default 2 s)")
    parser.add_argument(
        "--refine",
        type=int,
        default=2,
        help="bisections of the largest tier's capacity between the rates measured (default 2)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    low, _, high = args.candidates.partition(":")
    budgets = tuple(float(x) for x in args.budgets.split(",") if x.strip())
    fractions = tuple(float(x) for x in args.fractions.split(","))
    bounds = (int(low), int(high or low))
    run(args.spec, args.out, args.slo_ms, args.rounds, budgets, fractions, bounds, args.window_s, args.refine)
    print((args.out / "adaptive.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
