"""toolkit tune on the demo: the configuration it finds against the spec's default, at a p99 SLO.

Runs ``toolkit tune`` on the demo spec as a user would, twice: on the spec's own traffic (the demo
data, 8 to 48 candidates per request) with ``--slo-ms`` (20 ms), and on production-sized requests
(``--candidates 512:1024``) with ``--big-slo-ms`` (100 ms). Each is a fresh record, a quick search
from the spec's ``triton`` keys within ``--budget-minutes``, then tune's confirmation: the three
best configurations, the default always among them, measured ``--confirm`` more times each,
alternating (A, B, C, A, B, C, ...), so that both sides of the ratio are measured in one run under
the same drift and the chosen one's figure is not just the luckiest of many measurements. The ratio
is the chosen configuration's median throughput within the SLO over the default's.

Target (on the spec's own traffic): the chosen configuration reaches >= 1.3x the default's
throughput at the same SLO, or the default is on the front (no configuration beat it by more than
the search's margin in the confirmation: its median, and the start's run in every round).

Writes ``benchmarks/results/tune.md``, ``tune.json`` and ``tune.png`` (the plot of the search on
the spec's traffic); tune's output folders are under ``benchmarks/scratch/tune``. Trains and
exports the demo first where its outputs are missing.

Usage: ``python benchmarks/tune.py [--spec ensembles/ads_ranking.yaml] [--slo-ms 20]
[--big-slo-ms 100] [--budget-minutes 15] [--confirm 5]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

from common import RESULTS, ROOT, prepare, toolkit, write_report

from toolkit.machine import machine_facts
from toolkit.spec import load_spec
from toolkit.tune.space import ServingConfig

TARGET = 1.3
SCRATCH = ROOT / "benchmarks" / "scratch" / "tune"
CONCURRENCY = (1, 2, 4, 8, 16, 32, 64)
WINDOW_S, MAX_WINDOWS, REQUESTS = 1.0, 6, 300
BIG = (512, 1024)


def tune(
    spec_path: Path, name: str, slo_ms: float, budget_minutes: float, confirm: int, candidates: tuple | None
) -> dict[str, Any]:
    """One ``toolkit tune`` run; its summary with the ratio of the chosen to the default."""
    out = SCRATCH / name
    flags = ["--concurrency", ",".join(map(str, CONCURRENCY)), "--window-s", f"{WINDOW_S:g}"]
    flags += ["--max-windows", str(MAX_WINDOWS), "--requests", str(REQUESTS)]
    if candidates:
        flags += ["--candidates", f"{candidates[0]}:{candidates[1]}"]
    flags += ["--slo-ms", f"{slo_ms:g}", "--budget-minutes", f"{budget_minutes:g}", "--confirm", str(confirm)]
    toolkit("tune", "--spec", str(spec_path), *flags, "--out", str(out), "--restart")
    search = json.loads((out / "tune-points.json").read_text(encoding="utf-8"))
    start, chosen = search["start_requests_per_s"], search["chosen_requests_per_s"]
    ratio = chosen / start if start and chosen else float("nan")
    return {
        "name": name,
        "command": "toolkit tune " + " ".join(flags),
        "slo_ms": slo_ms,
        "candidates": list(candidates) if candidates else None,
        "search": search,
        "chosen": search["chosen"],
        "ratio": ratio,
        "met": ratio >= TARGET,
        "default_on_front": search["chosen"] == search["start"],
        "png": str((out / "tune.png").relative_to(ROOT)),
    }


def run(
    spec_path: Path, slo_ms: float, big_slo_ms: float, budget_minutes: float, confirm: int
) -> dict[str, Any]:
    """Tune on the spec's traffic and on production-sized requests."""
    spec = load_spec(spec_path)
    prepare(spec_path, spec)
    runs = [
        tune(spec_path, "spec-traffic", slo_ms, budget_minutes, confirm, None),
        tune(spec_path, "big-requests", big_slo_ms, budget_minutes, confirm, BIG),
    ]
    shutil.copyfile(ROOT / runs[0]["png"], RESULTS / "tune.png")
    shutil.copyfile(ROOT / runs[1]["png"], RESULTS / "tune_big.png")
    return {
        "date": dt.date.today().isoformat(),
        "machine": machine_facts(),
        "spec": spec_path.name,
        "default": ServingConfig.from_spec(spec).key,
        "budget_minutes": budget_minutes,
        "confirm": confirm,
        "load": {"concurrency": list(CONCURRENCY), "window_s": WINDOW_S, "requests": REQUESTS},
        "target": TARGET,
        "runs": runs,
    }


def _outcome(run: dict[str, Any]) -> str:
    if run["met"]:
        return f"**met**: {run['ratio']:.2f}x the default's throughput at the same SLO."
    if run["default_on_front"]:
        return (
            "**the default is on the front**: no configuration beat it by more than the search's margin "
            "in the confirmation's medians and in enough of its rounds (see below)."
        )
    return (
        f"**not met**: the chosen configuration gives {run['ratio']:.2f}x the default's throughput "
        f"(target {TARGET}x), and the default is not on the front either."
    )


def _section(run: dict[str, Any], title: str, png: str) -> list[str]:
    search = run["search"]
    knobs = search["knobs"]
    lines = [
        f"## {title}",
        "",
        f"`{run['command']}`",
        "",
        search["verdict"],
        "",
        "| point | " + " | ".join(knobs) + " | req/s | p99 ms | steps | s | |",
        "|---|" + "---|" * len(knobs) + "---|---|---|---|---|",
    ]
    for row in search["points"]:
        cells = [str(row[k]) for k in knobs]
        p99 = "-" if row["p99_ms"] is None else f"{row['p99_ms']:.1f}"
        rps = f"{row['requests_per_s']:.1f}" if row["meets_slo"] else "-"
        lines.append(
            f"| {row['point']} | " + " | ".join(cells) + f" | {rps} | {p99} | {row['steps']} | "
            f"{row['seconds']:.0f} | {row['role']} |"
        )
    lines += [
        "",
        f"![throughput against p99 of every configuration measured]({png})",
        "",
        f"Default {search['start_requests_per_s'] or 0:.1f} requests/s, chosen "
        f"{search['chosen_requests_per_s'] or 0:.1f} requests/s "
        + ("(medians of the confirmation runs)" if search["confirmed"] else "(the search's measurements)")
        + f": **{run['ratio']:.2f}x**.",
        "",
    ]
    return lines


def markdown(result: dict[str, Any]) -> str:
    """The report."""
    m = result["machine"]
    traffic, big = result["runs"]
    lines = [
        "# toolkit tune on the demo",
        "",
        f"Measured {result['date']} on {m['cpu']} ({m['cores']} cores), Python {m['python']}, toolkit "
        f"{m['toolkit']}; the embedded tritonserver and the load generator share the machine, so the "
        "figures describe the two together. Command: `make bench-tune` (`python benchmarks/tune.py`). "
        f"Default configuration: `{result['default']}`.",
        "",
        f"Load: closed loop, concurrency {','.join(map(str, result['load']['concurrency']))}, "
        f"{result['load']['window_s']:g} s windows, {result['load']['requests']} requests cycled; a "
        "configuration scores the highest throughput of a step whose p99 met the SLO with no failed "
        f"request. Budget {result['budget_minutes']:g} minutes per search.",
        "",
        f"Target on the spec's traffic (>= {TARGET}x the default's throughput at the same SLO, or the "
        f"default on the front): {_outcome(traffic)}",
        "",
        f"On production-sized requests ({big['candidates'][0]} to {big['candidates'][1]} candidates, "
        f"SLO {big['slo_ms']:g} ms): {_outcome(big)}",
        "",
    ]
    lines += _section(traffic, f"The spec's traffic, SLO {traffic['slo_ms']:g} ms", "tune.png")
    lines += _section(
        big, f"Requests of {big['candidates'][0]} to {big['candidates'][1]} candidates", "tune_big.png"
    )
    return "\n".join(lines)


def main() -> None:
    """Parse flags, run, write the report."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path("ensembles/ads_ranking.yaml"))
    parser.add_argument("--slo-ms", type=float, default=20.0)
    parser.add_argument("--big-slo-ms", type=float, default=100.0)
    parser.add_argument("--budget-minutes", type=float, default=15.0)
    parser.add_argument("--confirm", type=int, default=5)
    args = parser.parse_args()
    result = run(args.spec, args.slo_ms, args.big_slo_ms, args.budget_minutes, args.confirm)
    write_report(RESULTS, "tune", result, markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
