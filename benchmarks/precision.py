"""Precision benchmark: what each exported variant buys per tier, measured in one run.

Reports, for the demo tiers:
  1. latency of every passing ONNX variant against fp32 (ONNX Runtime CPU, one thread) at
     N = 16, 64, 256 candidates, the variants timed in interleaved rounds so that drift of a shared
     machine hits them alike; the speed-up of the best int8 variant (target >= 1.3x within the
     acceptance bounds);
  2. embedding bytes of the row-wise int8 and int4 variants against fp32 (target: int4 <= 15%);
  3. the quality deltas of every variant against fp32 PyTorch (from export's acceptance check).

Writes ``benchmarks/results/precision.md`` and ``precision.json``. Trains the demo tiers first if
their checkpoints are missing, and runs ``toolkit export``, which reuses unchanged variants.

Usage: ``python benchmarks/precision.py [--spec ensembles/ads_ranking.yaml] [--rounds 5]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, ROOT, prepare, write_report

from toolkit.data import REQUEST_TENSORS, demo_holdout_set
from toolkit.export import cpu_session, read_manifest
from toolkit.export.timing import TimingPolicy, measure
from toolkit.machine import machine_facts
from toolkit.spec import Spec, load_spec
from toolkit.spec.variants import FP32, VARIANTS

COUNTS = (16, 64, 256)
INT8 = ("onnx-int8-dynamic", "onnx-int8-static", "onnx-int8-emb-int4")
SPEEDUP_TARGET = 1.3
INT4_TARGET = 0.15


def _inputs(spec: Spec, artifacts: Path, n: int) -> dict[str, np.ndarray]:
    """One held-out request widened to ``n`` candidates, after the exported preprocess step."""
    base = demo_holdout_set(spec, 1).request(0)
    rows = np.arange(n) % base["ad_dense"].shape[0]
    raw = {**base, "ad_dense": base["ad_dense"][rows], "ad_sparse": base["ad_sparse"][rows]}
    pre = cpu_session(str(artifacts / spec.preprocess_model / FP32 / "model.onnx"))
    return dict(zip(REQUEST_TENSORS, pre.run(None, raw), strict=True))


def _time_interleaved(
    sessions: dict[tuple[str, str], Any], inputs: dict[int, dict[str, np.ndarray]], rounds: int
) -> dict[tuple[str, str, int], list[float]]:
    policy = TimingPolicy(window_ms=30.0)
    samples: dict[tuple[str, str, int], list[float]] = {}
    for r in range(rounds):
        print(f"round {r + 1}/{rounds}", file=sys.stderr, flush=True)
        for (tier, variant), session in sessions.items():
            for n, feed in inputs.items():
                timing = measure(lambda s=session, f=feed: s.run(["score"], f), policy)
                samples.setdefault((tier, variant, n), []).append(timing.median_ms)
    return samples


def run(spec_path: Path, rounds: int, out: Path) -> dict[str, Any]:
    """Run the benchmark and return what was written to ``out``/precision.json."""
    spec = load_spec(spec_path)
    prepare(spec_path, spec)
    artifacts = ROOT / spec.paths.artifacts
    manifest = read_manifest(artifacts)
    sessions = {}
    for tier, entry in manifest.tiers.items():
        for variant, v in entry.variants.items():
            if v.passed and VARIANTS[variant].engine == "onnx":
                sessions[(tier, variant)] = cpu_session(str(artifacts / tier / variant / "model.onnx"))
    inputs = {n: _inputs(spec, artifacts, n) for n in COUNTS}
    samples = _time_interleaved(sessions, inputs, rounds)
    latency = {f"{t}|{v}|{n}": statistics.median(s) for (t, v, n), s in samples.items()}
    speedups: dict[str, dict[str, float]] = {}
    for (tier, variant, n), times in samples.items():
        if variant == FP32:
            continue
        base = samples[(tier, FP32, n)]
        ratios = [b / t for b, t in zip(base, times, strict=True)]
        speedups.setdefault(f"{tier}|{variant}", {})[str(n)] = statistics.median(ratios)
    result = {
        "benchmark": "precision",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "spec": str(spec_path),
        "rounds": rounds,
        "counts": list(COUNTS),
        "acceptance": manifest.acceptance,
        "latency_ms": latency,
        "speedup_vs_fp32": speedups,
        "manifest": {
            tier: {
                variant: {
                    "status": v.status.value,
                    "reason": v.reason,
                    "quality": v.quality,
                    "embeddings": v.details.get("embeddings"),
                    "bytes": v.bytes,
                    "max_abs_error": v.max_abs_error,
                }
                for variant, v in entry.variants.items()
            }
            for tier, entry in manifest.tiers.items()
        },
    }
    write_report(out, "precision", result, render(result))
    return result


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value:+.3%}"


def render(result: dict[str, Any]) -> str:
    """The markdown report of a result."""
    m = result["machine"]
    lines = [
        "# Precision benchmark",
        "",
        f"Run {result['created']} on {m['cpu']} ({m['cores']} cores usable), Python {m['python']}, "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, toolkit {m['toolkit']}. "
        f"Spec `{result['spec']}`.",
        "",
        "## 1. Latency per request against fp32 (ONNX Runtime CPU, 1 thread)",
        "",
        f"Median of {result['rounds']} interleaved rounds; in each round every variant is timed until "
        "three windows agree within 10%. Speed-up = fp32 time / variant time, paired per round. "
        f"Target: the best int8 variant >= {SPEEDUP_TARGET}x faster than fp32, within the acceptance bounds.",
        "",
    ]
    counts = result["counts"]
    header = "| tier | variant | " + " | ".join(f"N={n} ms" for n in counts) + " | "
    header += " | ".join(f"N={n} speed-up" for n in counts) + " |"
    lines += [header, "|" + "---|" * (2 + 2 * len(counts))]
    verdicts = []
    for tier, variants in result["manifest"].items():
        for variant, entry in variants.items():
            if entry["status"] != "OK" or VARIANTS[variant].engine != "onnx":
                continue
            times = [result["latency_ms"].get(f"{tier}|{variant}|{n}") for n in counts]
            ups = result["speedup_vs_fp32"].get(f"{tier}|{variant}", {})
            cells = [f"{t:.3f}" if t is not None else "-" for t in times]
            cells += [f"{ups[str(n)]:.2f}x" if str(n) in ups else "-" for n in counts]
            lines.append(f"| {tier} | {variant} | " + " | ".join(cells) + " |")
        best = {
            n: max(
                (result["speedup_vs_fp32"].get(f"{tier}|{v}", {}).get(str(n), 0.0), v)
                for v in INT8
                if variants.get(v, {}).get("status") == "OK"
            )
            if any(variants.get(v, {}).get("status") == "OK" for v in INT8)
            else (0.0, "none passed")
            for n in counts
        }
        met = [n for n in counts if best[n][0] >= SPEEDUP_TARGET]
        verdicts.append(
            f"- {tier}: best int8 "
            + ", ".join(f"N={n} {best[n][0]:.2f}x ({best[n][1]})" for n in counts)
            + f" -> target met at {', '.join(f'N={n}' for n in met) if met else 'no N'}"
        )
    lines += ["", *verdicts, "", "## 2. Embedding bytes against fp32", ""]
    lines += [
        f"Row-wise quantized tables with per-row scale and offset (fp32 for int8, fp16 for int4). "
        f"Target: int4 <= {INT4_TARGET:.0%} of fp32, within the acceptance bounds.",
        "",
        "| tier | fp32 bytes | int8 bytes | int8 share | int4 bytes | int4 share | int4 status | target |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for tier, variants in result["manifest"].items():
        e8 = (variants.get("onnx-emb-int8") or {}).get("embeddings") or {}
        e4 = (variants.get("onnx-emb-int4") or {}).get("embeddings") or {}
        if not e4:
            continue
        status = variants["onnx-emb-int4"]["status"]
        met = "met" if e4["ratio"] <= INT4_TARGET and status == "OK" else "missed"
        lines.append(
            f"| {tier} | {e4['fp32_bytes']:,} | {e8.get('quantized_bytes', 0):,} | {e8.get('ratio', 0):.1%} "
            f"| {e4['quantized_bytes']:,} | {e4['ratio']:.1%} | {status} | {met} |"
        )
    bounds = result.get("acceptance") or result["gate"]  # "gate": reports written before the rename
    lines += [
        "",
        "## 3. Quality against fp32 PyTorch (held-out requests)",
        "",
        f"Acceptance: NE within ±{bounds['max_ne_change']:.2%}, "
        f"AUC >= {bounds['min_auc_ratio']:.2%} of fp32.",
        "",
        "| tier | variant | status | NE | ΔNE | AUC ratio | max abs error |",
        "|---|---|---|---|---|---|---|",
    ]
    for tier, variants in result["manifest"].items():
        for variant, entry in variants.items():
            q = entry.get("quality") or {}
            err = (entry.get("max_abs_error") or {}).get("score")
            lines.append(
                f"| {tier} | {variant} | {entry['status']} | "
                f"{q['ne']:.5f} | {_pct(q.get('ne_delta_rel'))} | {q['auc_ratio']:.5f} | {err:.1e} |"
                if q
                else f"| {tier} | {variant} | {entry['status']} | - | - | - | {entry.get('reason') or '-'} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path("ensembles/ads_ranking.yaml"))
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    run(args.spec, args.rounds, args.out)
    print((args.out / "precision.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
