"""``toolkit bench`` results: CSV, JSON and a PNG of latency percentiles and tier mix against load."""

from __future__ import annotations

import csv
import importlib.util
import json
from pathlib import Path
from typing import Any

from toolkit.bench.load import StepResult

COLUMNS = (
    "mode",
    "level",
    "windows",
    "stable",
    "requests",
    "failed",
    "warmup_failed",
    "seconds",
    "requests_per_s",
    "candidates_per_s",
    "p50_ms",
    "p90_ms",
    "p95_ms",
    "p99_ms",
    "max_ms",
    "ne",
)


def write_results(results: list[StepResult], out: Path, meta: dict[str, Any]) -> list[Path]:
    """Write ``bench.csv`` (one row per step), ``bench.json`` (everything) and ``bench.png``.

    The plot needs matplotlib (the ``export`` extra); a client-only install writes the CSV and JSON.

    Returns:
        The files written.
    """
    out.mkdir(parents=True, exist_ok=True)
    rows = [r.row() for r in results]
    with (out / "bench.csv").open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow([*COLUMNS, "errors", "tier_mix"])
        for row in rows:
            writer.writerow(
                [*(row[c] for c in COLUMNS), json.dumps(row["errors"]), json.dumps(row["tier_mix"])]
            )
    (out / "bench.json").write_text(json.dumps({**meta, "steps": rows}, indent=2) + "\n", encoding="utf-8")
    written = [out / "bench.csv", out / "bench.json"]
    if importlib.util.find_spec("matplotlib") is not None:
        plot(results, out / "bench.png", meta.get("slo_ms"))
        written.append(out / "bench.png")
    return written


def plot(results: list[StepResult], path: Path, slo_ms: float | None = None) -> None:
    """Latency percentiles (left) and tier mix (right) against throughput."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r.requests_per_s for r in results]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for key in ("p50_ms", "p90_ms", "p99_ms"):
        left.plot(x, [r.latency[key] for r in results], "o-", label=key.removesuffix("_ms"))
    if slo_ms:
        left.axhline(slo_ms, color="grey", linestyle="--", label=f"SLO {slo_ms:g} ms")
    left.set_xlabel("answered requests per second")
    left.set_ylabel("latency (ms)")
    left.grid(alpha=0.3)
    left.legend()
    tiers = sorted({t for r in results for t in r.tier_mix})
    bottom = [0.0] * len(results)
    labels = [f"{r.step.mode[0]}={r.step.level:g}" for r in results]
    for tier in tiers:
        share = [r.tier_mix.get(tier, 0.0) for r in results]
        right.bar(labels, share, bottom=bottom, label=tier)
        bottom = [b + s for b, s in zip(bottom, share, strict=True)]
    right.set_ylabel("share of answered requests")
    right.set_xlabel("load step (c = concurrency, r = requests/s)")
    right.legend()
    fig.savefig(path, dpi=110)
    plt.close(fig)
