"""Tier benchmark: PyTorch eager against the deployed ONNX Runtime variant, and efficiency.

Reports, in one run, for each demo tier:
  1. PyTorch eager against the variant deploy serves (ONNX Runtime CPU), one thread each, at
     N = 16, 64, 256, timed with their windows interleaved (target: ONNX Runtime >= 1.5x at N=256);
  2. achieved GFLOP/s of the deployed variant (FLOPs counted from its ONNX graph, an integer
     multiply-add counted as two operations like a float one) against large single-thread matrix
     products measured in the same run: float32 (PyTorch) and int8 (ONNX Runtime's
     ``MatMulInteger``, the operator of the int8 variants), so that an int8 variant's share is read
     against the arithmetic it runs.

Writes ``benchmarks/results/tiers.md`` and ``tiers.json``. Trains the demo tiers first if their
checkpoints are missing and runs ``toolkit export`` (which reuses unchanged variants).

Usage: ``python benchmarks/tiers.py [--spec ensembles/ads_ranking.yaml] [--rounds 3]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch
from common import RESULTS, ROOT, prepare, write_report
from onnx import TensorProto, helper

from toolkit.data import REQUEST_TENSORS, demo_holdout_set
from toolkit.export import cpu_session, read_manifest
from toolkit.export.timing import measure_interleaved
from toolkit.flops import flops_model
from toolkit.machine import machine_facts
from toolkit.repository.select import select_variants
from toolkit.spec import load_spec
from toolkit.train.checkpoints import load_preprocess, load_tier

COUNTS = (16, 64, 256)
SPEEDUP_TARGET = 1.5


def _product_rate(product: Callable[[], object], size: int, repeats: int) -> float:
    """Billions of operations per second of a ``size`` x ``size`` matrix ``product``.

    One call to warm up, then the best of ``repeats``; a multiply-add counts as two operations.
    """
    product()
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        product()
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


def matmul_gflops(size: int = 1024, repeats: int = 20) -> float:
    """Single-thread GFLOP/s of a float32 ``size`` x ``size`` matrix product (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return _product_rate(lambda: torch.matmul(a, b), size, repeats)


def int8_matmul_gops(size: int = 1024, repeats: int = 20) -> float:
    """Single-thread GOP/s of ONNX Runtime's ``MatMulInteger``, uint8 x int8, ``size`` x ``size``.

    A multiply-add counts as two operations, as in :func:`matmul_gflops`; best of ``repeats``.
    """
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "b"], ["c"])],
        "int8_matmul",
        [
            helper.make_tensor_value_info("a", TensorProto.UINT8, [size, size]),
            helper.make_tensor_value_info("b", TensorProto.INT8, [size, size]),
        ],
        [helper.make_tensor_value_info("c", TensorProto.INT32, [size, size])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    rng = np.random.default_rng(0)
    feed = {
        "a": rng.integers(0, 256, (size, size), dtype=np.uint8),
        "b": rng.integers(-128, 128, (size, size), dtype=np.int8),
    }
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "int8_matmul.onnx"
        onnx.save(model, path)
        session = cpu_session(str(path))
    return _product_rate(lambda: session.run(None, feed), size, repeats)


def run(spec_path: Path, rounds: int, out: Path) -> dict[str, Any]:
    """Run the benchmark and return what was written to ``out``/tiers.json."""
    torch.set_num_threads(1)
    spec = load_spec(spec_path)
    checkpoints = ROOT / spec.paths.checkpoints
    prepare(spec_path, spec)
    artifacts = ROOT / spec.paths.artifacts
    manifest = read_manifest(artifacts)
    variants = {t: s.variant for t, s in select_variants(spec, manifest, "cpu").items()}
    preprocess = load_preprocess(checkpoints, spec)
    base = demo_holdout_set(spec, 1).request(0)
    inputs = {}
    for n in COUNTS:
        rows = np.arange(n) % base["ad_dense"].shape[0]
        raw = {**base, "ad_dense": base["ad_dense"][rows], "ad_sparse": base["ad_sparse"][rows]}
        with torch.no_grad():
            pre = preprocess(*(torch.from_numpy(np.ascontiguousarray(raw[k])) for k in REQUEST_TENSORS))
        inputs[n] = {k: t.numpy() for k, t in zip(REQUEST_TENSORS, pre, strict=True)}
    peak = matmul_gflops()
    int8_peak = int8_matmul_gops()
    tiers: dict[str, Any] = {}
    for tier in spec.tier_names:
        model = load_tier(checkpoints, spec, tier).eval()
        path = artifacts / tier / variants[tier] / "model.onnx"
        session = cpu_session(str(path))
        flops = flops_model(path)
        entry: dict[str, Any] = {"variant": variants[tier], "counts": {}}
        for n in COUNTS:
            feed = inputs[n]
            tensors = tuple(torch.from_numpy(feed[k]) for k in REQUEST_TENSORS)

            def eager(model: torch.nn.Module = model, tensors: tuple[torch.Tensor, ...] = tensors) -> None:
                with torch.no_grad():
                    model(*tensors)

            def onnxruntime(session: Any = session, feed: dict[str, np.ndarray] = feed) -> None:
                session.run(["score"], feed)

            calls = {"torch": eager, "onnxruntime": onnxruntime}
            samples = [measure_interleaved(calls) for _ in range(rounds)]
            ratios = [s["torch"].median_ms / s["onnxruntime"].median_ms for s in samples]
            ort_ms = statistics.median(s["onnxruntime"].median_ms for s in samples)
            entry["counts"][str(n)] = {
                "torch_ms": statistics.median(s["torch"].median_ms for s in samples),
                "onnxruntime_ms": ort_ms,
                "speedup": statistics.median(ratios),
                "mflop": float(flops.at(n)) / 1e6,
                "gflops": float(flops.at(n)) / (ort_ms / 1000.0) / 1e9,
            }
        tiers[tier] = entry
        print(f"{tier}: done", file=sys.stderr, flush=True)
    result = {
        "benchmark": "tiers",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "spec": str(spec_path),
        "rounds": rounds,
        "matmul_gflops": peak,
        "int8_matmul_gops": int8_peak,
        "tiers": tiers,
    }
    write_report(out, "tiers", result, render(result))
    return result


def render(result: dict[str, Any]) -> str:
    """The markdown report of a result."""
    m = result["machine"]
    lines = [
        "# Tier benchmark",
        "",
        f"Run {result['created']} on {m['cpu']} ({m['cores']} cores usable), Python {m['python']}, "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, toolkit {m['toolkit']}. "
        f"Spec `{result['spec']}`. One thread for PyTorch and for ONNX Runtime.",
        "",
        "## 1. PyTorch eager against the deployed ONNX Runtime variant",
        "",
        f"Median of {result['rounds']} rounds; in each, the two are timed with their windows interleaved "
        f"until three windows agree within 10%. Target: ONNX Runtime >= {SPEEDUP_TARGET}x faster at N=256.",
        "",
        "| tier | variant | N | PyTorch ms | ONNX Runtime ms | speed-up | target |",
        "|---|---|---|---|---|---|---|",
    ]
    for tier, entry in result["tiers"].items():
        for n, c in entry["counts"].items():
            verdict = ("met" if c["speedup"] >= SPEEDUP_TARGET else "missed") if n == "256" else ""
            lines.append(
                f"| {tier} | {entry['variant']} | {n} | {c['torch_ms']:.3f} | {c['onnxruntime_ms']:.3f} | "
                f"{c['speedup']:.2f}x | {verdict} |"
            )
    lines += [
        "",
        "## 2. Achieved GFLOP/s against the machine",
        "",
        f"1024 x 1024 matrix products, one thread, best of 20: float32 (PyTorch) "
        f"{result['matmul_gflops']:.1f} GFLOP/s, int8 (ONNX Runtime MatMulInteger) "
        f"{result['int8_matmul_gops']:.1f} GOP/s. FLOPs are counted from the deployed graph, an "
        "integer multiply-add as two operations: an int8 variant runs its large matrix products in "
        "int8, so its share of the float32 product's can pass 100%; read it against the int8 one.",
        "",
        "| tier | variant | N | MFLOP/request | GFLOP/s | share of float32's | share of int8's |",
        "|---|---|---|---|---|---|---|",
    ]
    for tier, entry in result["tiers"].items():
        for n, c in entry["counts"].items():
            fp32 = c["gflops"] / result["matmul_gflops"]
            int8 = c["gflops"] / result["int8_matmul_gops"]
            lines.append(
                f"| {tier} | {entry['variant']} | {n} | {c['mflop']:.2f} | {c['gflops']:.2f} | "
                f"{fp32:.1%} | {int8:.1%} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path("ensembles/ads_ranking.yaml"))
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (default 3)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    run(args.spec, args.rounds, args.out)
    print((args.out / "tiers.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
