"""Router overhead: the ensemble (preprocess + BLS router + tier) against calling the tier directly.

Starts the embedded Triton on the deployed demo repository and sends the same requests one at a
time, alternating between the ensemble with the tier forced (request parameter ``tier``) and the
tier model itself with the already-preprocessed tensors, both over gRPC. Reports p50 and p99 of
each and the overhead at p50 (target: <= 0.5 ms or <= 15%).

Writes ``benchmarks/results/router_overhead.md`` and ``router_overhead.json``. Trains, exports and
deploys the demo first where their outputs are missing.

Usage: ``python benchmarks/router_overhead.py [--spec ensembles/ads_ranking.yaml] [--requests 300]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
from common import RESULTS, ROOT, prepare, write_report

from toolkit.client import RankingClient
from toolkit.data import REQUEST_TENSORS, demo_holdout_set
from toolkit.evaluate.offline import OfflineEnsemble, deployed_variants
from toolkit.machine import machine_facts
from toolkit.serve import ServerOptions, TritonServer, free_port
from toolkit.spec import load_spec

OVERHEAD_MS, OVERHEAD_SHARE = 0.5, 0.15


def _direct(client: grpcclient.InferenceServerClient, tier: str, pre: dict[str, np.ndarray]) -> None:
    inputs = []
    for name in REQUEST_TENSORS:
        value = pre[name]
        tensor = grpcclient.InferInput(
            name, list(value.shape), "FP32" if value.dtype == np.float32 else "INT64"
        )
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    client.infer(tier, inputs, outputs=[grpcclient.InferRequestedOutput("score")])


def run(spec_path: Path, count: int, out: Path) -> dict[str, Any]:
    """Run the benchmark and return what was written to ``out``/router_overhead.json."""
    spec = load_spec(spec_path)
    prepare(spec_path, spec, deploy=True)
    artifacts, repository = ROOT / spec.paths.artifacts, ROOT / spec.paths.repository
    offline = OfflineEnsemble(spec, artifacts, deployed_variants(spec, artifacts, repository), routed=False)
    requests = demo_holdout_set(spec, count)
    raws = [requests.request(r) for r in range(count)]
    pres = [offline.preprocessed(raw) for raw in raws]
    options = ServerOptions(
        repository=repository, grpc_port=free_port(), http_port=free_port(), metrics_port=free_port()
    )
    tiers: dict[str, Any] = {}
    with (
        TritonServer(options) as server,
        RankingClient(server.grpc_url, spec.name, tier_names=spec.tier_names) as ensemble,
    ):
        direct = grpcclient.InferenceServerClient(server.grpc_url)
        for tier in spec.tier_names:
            for raw, pre in zip(raws[:20], pres[:20], strict=True):
                ensemble.rank(tier=tier, **raw)
                _direct(direct, tier, pre)
            via, straight = [], []
            for raw, pre in zip(raws, pres, strict=True):
                started = time.perf_counter()
                ensemble.rank(tier=tier, **raw)
                via.append((time.perf_counter() - started) * 1000.0)
                started = time.perf_counter()
                _direct(direct, tier, pre)
                straight.append((time.perf_counter() - started) * 1000.0)
            p50_via, p50_direct = float(np.percentile(via, 50)), float(np.percentile(straight, 50))
            tiers[tier] = {
                "ensemble_p50_ms": p50_via,
                "ensemble_p99_ms": float(np.percentile(via, 99)),
                "direct_p50_ms": p50_direct,
                "direct_p99_ms": float(np.percentile(straight, 99)),
                "overhead_p50_ms": p50_via - p50_direct,
                "overhead_p50_share": (p50_via - p50_direct) / p50_direct,
            }
            print(f"{tier}: done", file=sys.stderr, flush=True)
        direct.close()
    result = {
        "benchmark": "router_overhead",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "spec": str(spec_path),
        "requests": count,
        "tiers": tiers,
    }
    write_report(out, "router_overhead", result, render(result))
    return result


def render(result: dict[str, Any]) -> str:
    """The markdown report of a result."""
    m = result["machine"]
    lines = [
        "# Router overhead",
        "",
        f"Run {result['created']} on {m['cpu']} ({m['cores']} cores usable), onnxruntime {m['onnxruntime']}, "
        f"toolkit {m['toolkit']}; the embedded tritonserver, client on the same machine. "
        f"{result['requests']} held-out requests, one at a time, ensemble and direct calls alternating.",
        "",
        "The ensemble runs the preprocess model, then the BLS router (python backend), which calls the "
        "tier; the direct call sends the already-preprocessed tensors to the tier model. "
        f"Target: overhead <= {OVERHEAD_MS} ms or <= {OVERHEAD_SHARE:.0%} at p50.",
        "",
        "| tier | ensemble p50 ms | direct p50 ms | overhead p50 | ensemble p99 ms | direct p99 ms "
        "| target |",
        "|---|---|---|---|---|---|---|",
    ]
    for tier, t in result["tiers"].items():
        met = t["overhead_p50_ms"] <= OVERHEAD_MS or t["overhead_p50_share"] <= OVERHEAD_SHARE
        lines.append(
            f"| {tier} | {t['ensemble_p50_ms']:.2f} | {t['direct_p50_ms']:.2f} | "
            f"{t['overhead_p50_ms']:.2f} ms ({t['overhead_p50_share']:.0%}) | {t['ensemble_p99_ms']:.2f} | "
            f"{t['direct_p99_ms']:.2f} | {'met' if met else 'missed'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path("ensembles/ads_ranking.yaml"))
    parser.add_argument("--requests", type=int, default=300, help="held-out requests per tier (default 300)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    run(args.spec, args.requests, args.out)
    print((args.out / "router_overhead.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
