"""Request-centric against per-pair scoring: what computing the user side once per request saves.

The toolkit's tiers take one request (user tensors [1, ...], N candidates) and compute the user side
once; most public CTR models take one row per (user, candidate) pair, so the user features are tiled
N times and the user side runs N times. This benchmark exports the largest demo tier both ways from
the same checkpoint (ONNX, fp32, the spec's opset, into a temporary directory), checks that the two
give the same scores, and times them with ONNX Runtime CPU, one thread each, their windows
interleaved, at N = 16 to 1024. It reports ms per request, candidates/s, their ratio (target:
request-centric >= 3x the candidates/s of per-pair at N=256), the FLOPs of each graph and the bytes
each request sends, and plots the cost against N.

Writes ``benchmarks/results/per_pair.md``, ``per_pair.json`` and ``per_pair.png``. Trains the demo
tiers first if their checkpoints are missing and runs ``toolkit export`` (which reuses unchanged
variants).

Usage: ``python benchmarks/per_pair.py [--spec ensembles/ads_ranking.yaml] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from common import RESULTS, ROOT, held_out_requests, prepare, write_report
from matplotlib.figure import Figure

from toolkit.data import REQUEST_TENSORS
from toolkit.export import SCORE, cpu_session, export_tier
from toolkit.export.onnx_export import export_module
from toolkit.export.timing import measure_interleaved
from toolkit.flops import flops_model
from toolkit.machine import machine_facts
from toolkit.models.base import RankingModel
from toolkit.spec import load_spec
from toolkit.train.checkpoints import load_preprocess, load_tier

COUNTS = (16, 32, 64, 128, 256, 512, 1024)
TARGET_N, TARGET_RATIO = 256, 3.0
MAX_ABS_DIFF = 1e-4
USER_TENSORS = REQUEST_TENSORS[:3]


class PerPair(torch.nn.Module):
    """A tier scored one (user, candidate) pair per row: every input has leading dim N.

    The user side runs on all N rows and its parts go to ``head`` as they are, one row per
    candidate, which is what the tier's ``broadcast`` hands ``head`` for a batch of N requests of
    one candidate each, less the identity ``index_select``.
    """

    def __init__(self, model: RankingModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        user_dense: torch.Tensor,
        user_sparse: torch.Tensor,
        user_history: torch.Tensor,
        ad_dense: torch.Tensor,
        ad_sparse: torch.Tensor,
    ) -> torch.Tensor:
        """Click probabilities [N], one per row."""
        user = self.model.user_side(user_dense, user_sparse, user_history)
        candidate = self.model.candidate_side(ad_dense, ad_sparse)
        return torch.sigmoid(self.model.head(user, candidate))


def export_per_pair(model: RankingModel, example: dict[str, torch.Tensor], path: Path, opset: int) -> None:
    """Export ``PerPair(model)`` with all five inputs sharing one dynamic leading dim.

    Args:
        model: The trained tier, in eval mode.
        example: Per-pair inputs with N >= 2 rows (at N = 1 a tier may trace its one-request path).
        path: ONNX file to write.
        opset: ONNX opset version.
    """
    n = torch.export.Dim("num_pairs", min=2, max=1 << 20)
    shapes = {name: {0: n} for name in REQUEST_TENSORS}
    example_inputs = tuple(example[name] for name in REQUEST_TENSORS)
    export_module(PerPair(model).eval(), example_inputs, path, [SCORE], shapes, opset)


def tile_user(feed: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The per-pair request of ``feed``: its user rows repeated once per candidate."""
    n = feed["ad_dense"].shape[0]
    return {k: np.repeat(v, n, axis=0) if k in USER_TENSORS else v for k, v in feed.items()}


def run(spec_path: Path, rounds: int, out: Path) -> dict[str, Any]:
    """Run the benchmark and return what was written to ``out``/per_pair.json."""
    torch.set_num_threads(1)
    spec = load_spec(spec_path)
    checkpoints = ROOT / spec.paths.checkpoints
    prepare(spec_path, spec)
    tier = spec.tier_names[-1]
    preprocess = load_preprocess(checkpoints, spec)
    raw = held_out_requests(spec, 1, candidates=(max(COUNTS), max(COUNTS))).request(0)
    with torch.no_grad():
        pre = preprocess(*(torch.from_numpy(np.ascontiguousarray(raw[k])) for k in REQUEST_TENSORS))
    full = {k: t.numpy() for k, t in zip(REQUEST_TENSORS, pre, strict=True)}
    inputs = {n: {k: v if k in USER_TENSORS else v[:n] for k, v in full.items()} for n in COUNTS}
    model = load_tier(checkpoints, spec, tier).eval()
    with tempfile.TemporaryDirectory(prefix="per_pair-") as tmp:
        paths = {"request": Path(tmp) / "request.onnx", "pair": Path(tmp) / "pair.onnx"}
        example = {k: torch.from_numpy(v) for k, v in inputs[COUNTS[0]].items()}
        export_tier(model, example, paths["request"], spec.export.opset)
        pair_example = {k: torch.from_numpy(v) for k, v in tile_user(inputs[COUNTS[0]]).items()}
        export_per_pair(model, pair_example, paths["pair"], spec.export.opset)
        sessions = {name: cpu_session(str(path)) for name, path in paths.items()}
        flops = {name: flops_model(path) for name, path in paths.items()}
    counts: dict[str, Any] = {}
    for n in COUNTS:
        feeds = {"request": inputs[n], "pair": tile_user(inputs[n])}
        scores = {name: sessions[name].run([SCORE], feeds[name])[0] for name in feeds}
        diff = float(np.abs(scores["request"] - scores["pair"]).max())
        if not diff < MAX_ABS_DIFF:
            raise SystemExit(
                f"{tier} N={n}: per-pair and request-centric scores differ by up to {diff:.2e} "
                f"(limit {MAX_ABS_DIFF:.0e}); the per-pair graph is not the same model"
            )
        calls = {name: functools.partial(sessions[name].run, [SCORE], feeds[name]) for name in feeds}
        samples = [measure_interleaved(calls) for _ in range(rounds)]
        request_ms = statistics.median(s["request"].median_ms for s in samples)
        pair_ms = statistics.median(s["pair"].median_ms for s in samples)
        counts[str(n)] = {
            "request_ms": request_ms,
            "pair_ms": pair_ms,
            "request_cps": n / (request_ms / 1000.0),
            "pair_cps": n / (pair_ms / 1000.0),
            "ratio": statistics.median(s["pair"].median_ms / s["request"].median_ms for s in samples),
            "request_bytes": sum(v.nbytes for v in feeds["request"].values()),
            "pair_bytes": sum(v.nbytes for v in feeds["pair"].values()),
            "request_mflop": float(flops["request"].at(n)) / 1e6,
            "pair_mflop": float(flops["pair"].at(n)) / 1e6,
            "max_abs_diff": diff,
            "stable": all(t.stable for s in samples for t in s.values()),
        }
        print(f"{tier} N={n}: done", file=sys.stderr, flush=True)
    result = {
        "benchmark": "per_pair",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "spec": str(spec_path),
        "tier": tier,
        "opset": spec.export.opset,
        "rounds": rounds,
        "counts": counts,
    }
    write_report(out, "per_pair", result, render(result))
    plot(result, out / "per_pair.png")
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    """Draw ms per request and candidates/s against N, both formulations, log-log, to ``path``."""
    ns = [int(n) for n in result["counts"]]
    figure = Figure(figsize=(10, 4), layout="constrained")
    latency, throughput = figure.subplots(1, 2)
    for key, label in (("request", "request-centric"), ("pair", "per-pair")):
        latency.plot(ns, [c[f"{key}_ms"] for c in result["counts"].values()], marker="o", label=label)
        throughput.plot(ns, [c[f"{key}_cps"] for c in result["counts"].values()], marker="o", label=label)
    for axes, ylabel in ((latency, "ms per request"), (throughput, "candidates/s")):
        axes.set_xscale("log", base=2)
        axes.set_yscale("log")
        axes.set_xlabel("candidates per request (N)")
        axes.set_ylabel(ylabel)
        axes.grid(True, which="both", alpha=0.3)
        axes.legend()
    figure.suptitle(f"{result['tier']}, ONNX Runtime CPU fp32, one thread")
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)


def render(result: dict[str, Any]) -> str:
    """The markdown report of a result."""
    m = result["machine"]
    counts = result["counts"]
    target = counts[str(TARGET_N)]
    met = target["ratio"] >= TARGET_RATIO
    lines = [
        "# Request-centric against per-pair scoring",
        "",
        f"Run {result['created']} on {m['cpu']} ({m['cores']} cores usable), Python {m['python']}, "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, toolkit {m['toolkit']}. "
        f"Spec `{result['spec']}`, tier `{result['tier']}`. ONNX Runtime CPU, one thread.",
        "",
        f"Both formulations are exported from the same checkpoint to ONNX fp32 (opset {result['opset']}), "
        "so the figures compare the formulation alone. Request-centric: the tier as deployed, user "
        "tensors [1, ...], the user side computed once and shared by the N candidates. Per-pair: one "
        "row per (user, candidate) pair, the user tensors tiled N times by the client (outside the timed "
        "call) and the user side computed N times. Their scores agree within "
        f"{MAX_ABS_DIFF:.0e} at every N. The candidates are the first N of one held-out request of "
        f"{max(int(n) for n in counts)}.",
        "",
        f"Median of {result['rounds']} rounds; in each, the two are timed with their windows interleaved "
        "until three windows agree within 10%. Ratio: request-centric candidates/s over per-pair "
        f"(median of the per-round ratios). Target: >= {TARGET_RATIO:g}x at N={TARGET_N}. "
        "Bytes sent: the input tensors of one request.",
        "",
        "| N | request-centric ms | per-pair ms | request-centric cand/s | per-pair cand/s | ratio "
        "| MFLOP (rc/pp) | bytes sent (rc/pp) | target |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for n, c in counts.items():
        verdict = (("met" if met else "missed") + f" ({c['ratio']:.2f}x)") if n == str(TARGET_N) else ""
        lines.append(
            f"| {n} | {c['request_ms']:.3f} | {c['pair_ms']:.3f} | {c['request_cps']:,.0f} | "
            f"{c['pair_cps']:,.0f} | {c['ratio']:.2f}x | {c['request_mflop']:.1f} / {c['pair_mflop']:.1f} | "
            f"{c['request_bytes']:,} / {c['pair_bytes']:,} | {verdict} |"
        )
    lines += [
        "",
        f"Target {'met' if met else 'missed'}: request-centric scores {target['ratio']:.2f}x the "
        f"candidates/s of per-pair at N={TARGET_N} (target >= {TARGET_RATIO:g}x).",
    ]
    unstable = [n for n, c in counts.items() if not c["stable"]]
    if unstable:
        lines += ["", f"Not every timing settled within 10% at N = {', '.join(unstable)}."]
    lines += ["", "![ms per request and candidates/s against N](per_pair.png)"]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path("ensembles/ads_ranking.yaml"))
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    run(args.spec, args.rounds, args.out)
    print((args.out / "per_pair.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
