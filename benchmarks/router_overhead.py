"""Router overhead: what a routed request costs over calling its tier directly, and where it goes.

Starts the embedded Triton on a copy of the deployed demo repository to which four variants of the
router are added: ``<router>_batcher`` (``triton.admission: batcher``: Triton's dynamic batcher and
queue policy in front of it, called by a second ensemble ``<ensemble>_batcher``), ``<router>_bls``
(``local_tiers: bls``: tiers called through BLS), ``<router>_loop`` (the same router, its
``execute`` always handed to the python backend's event loop, as an ``async def execute`` is) and
``<router>_slo`` (the same router with ``routing.slo_ms`` set, so that each of its instances reads
Triton's statistics of its model every 50 ms for the queue wait). Then, over gRPC from the same machine:

1. **Latency**, one request at a time, with the tier forced (request parameter ``tier``), the paths
   alternating request by request: the ensemble (the entry point), the router called directly (what
   the ensemble wrapper costs), the BLS router, the router on the event loop, and the tier model itself
   with the same raw tensors (every CPU tier has the preprocess step fused in). p50 and p99 of each.
2. **Throughput at concurrency 4** (closed loop) on the policy's own tier mix: the ensemble, the
   routers, and direct tier calls where each request goes to the tier the router chose for it.
3. **Where the time goes**: Triton's statistics per model over the latency run (queue, input,
   compute, output per request).
4. **The statistics reads** of load-aware routing: the read ``<router>_slo`` makes, timed one at a
   time, and what they add up to at the rate its instances read.
5. **Overload**, on requests of 512 to 1024 candidates: each ensemble's capacity (closed loop), then
   Poisson arrivals at 1.5 and 3 times the default's capacity: answered, shed, and their latency,
   for each admission.

Target: overhead at p50 <= 0.5 ms or <= 15% for every tier, and throughput at concurrency 4 >= 85%
of the direct calls'. Writes ``benchmarks/results/router_overhead.md`` and ``router_overhead.json``;
trains, exports and deploys the demo first where their outputs are missing.

Usage: ``python benchmarks/router_overhead.py [--spec ensembles/ads_ranking.yaml] [--requests 300]
[--seconds 10]``
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
from common import RESULTS, ROOT, held_out_requests, prepare, write_report
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from toolkit.bench.load import STATS_FIELDS, server_split, statistics_by_model
from toolkit.bench.raw import offer, serialized_requests
from toolkit.data import REQUEST_TENSORS, demo_holdout_set
from toolkit.machine import machine_facts
from toolkit.repository.configs import router_config
from toolkit.router.load import POLL_S, stats_reader
from toolkit.serve import ServerOptions, TritonServer
from toolkit.serve.metrics import router_tier_calls
from toolkit.spec import load_spec

OVERHEAD_MS, OVERHEAD_SHARE, THROUGHPUT_SHARE = 0.5, 0.15, 0.85
CONCURRENCY = 4
SLO_MS = 50.0
"""``routing.slo_ms`` of the ``_slo`` variant (the adaptive benchmark's SLO)."""
STATS_READS = 500
OVERLOAD_X = (1.5, 3.0)
"""Offered load of the overload runs, as multiples of the ensemble's measured capacity."""
OVERLOAD_S = 10.0
OVERLOAD_CANDIDATES = (512, 1024)
"""Candidates per request of the overload runs: large requests keep the offered rate within what the
load generator can send from the server's own cores."""

_ASYNC_MODEL = '''"""Benchmark variant of the router: its execute always run on the event loop."""

import importlib.util
from pathlib import Path

_found = importlib.util.spec_from_file_location(
    "router_model", Path(__file__).resolve().parent / "router_model.py"
)
_module = importlib.util.module_from_spec(_found)
_found.loader.exec_module(_module)


class TritonPythonModel(_module.TritonPythonModel):
    def initialize(self, args):
        super().initialize(args)
        self.inline = False
'''


def _variant(
    repository: Path,
    router: str,
    suffix: str,
    local_tiers: str,
    loop: bool,
    slo_ms: float = 0.0,
    queue_timeout_ms: float | None = None,
) -> str:
    """Add a copy of the router model named ``<router>_<suffix>`` to ``repository``."""
    name = f"{router}_{suffix}"
    folder = repository / name
    shutil.copytree(repository / router, folder)
    config = text_format.Parse((folder / "config.pbtxt").read_text(encoding="utf-8"), mc.ModelConfig())
    config.name = name
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")
    settings = json.loads((folder / "1" / "router.json").read_text(encoding="utf-8"))
    settings["local_tiers"] = local_tiers
    settings["slo_ms"] = slo_ms
    if queue_timeout_ms is not None:
        settings["queue_timeout_ms"] = queue_timeout_ms
    (folder / "1" / "router.json").write_text(json.dumps(settings, indent=2), encoding="utf-8")
    if loop:
        (folder / "1" / "model.py").rename(folder / "1" / "router_model.py")
        (folder / "1" / "model.py").write_text(_ASYNC_MODEL, encoding="utf-8")
    return name


def _batcher_variant(repository: Path, spec: Any, local_tiers: str) -> tuple[str, str]:
    """Add ``<router>_batcher`` (``triton.admission: batcher``) and ``<ensemble>_batcher`` calling it.

    The router's config is the one deploy writes for that admission; its ``router.json`` leaves the
    queue timeout to Triton's queue policy, as deploy's does.
    """
    name = _variant(repository, spec.router_model, "batcher", local_tiers, loop=False, queue_timeout_ms=0.0)
    batcher = dataclasses.replace(spec, triton=dataclasses.replace(spec.triton, admission="batcher"))
    config = router_config(batcher)
    config.name = name
    (repository / name / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")
    ensemble = f"{spec.name}_batcher"
    shutil.copytree(repository / spec.name, repository / ensemble)
    path = repository / ensemble / "config.pbtxt"
    ensemble_config = text_format.Parse(path.read_text(encoding="utf-8"), mc.ModelConfig())
    ensemble_config.name = ensemble
    ensemble_config.ensemble_scheduling.step[0].model_name = name
    path.write_text(text_format.MessageToString(ensemble_config), encoding="utf-8")
    return name, ensemble


def _batched(repository: Path, model: str) -> bool:
    """Whether ``model`` takes a leading batch dimension (``max_batch_size`` > 0)."""
    config = text_format.Parse(
        (repository / model / "config.pbtxt").read_text(encoding="utf-8"), mc.ModelConfig()
    )
    return config.max_batch_size > 0


def _inputs(raw: dict[str, np.ndarray], batched: bool, module: Any = grpcclient) -> list[Any]:
    inputs = []
    for name in REQUEST_TENSORS:
        value = raw[name][None] if batched else raw[name]
        tensor = module.InferInput(name, list(value.shape), "FP32" if value.dtype == np.float32 else "INT64")
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return inputs


def _statistics(client: grpcclient.InferenceServerClient) -> dict[str, dict[str, int]]:
    """Per model: successful requests and the summed ns of queue, input, compute and output."""
    return statistics_by_model(client.get_inference_statistics(as_json=True))


def _split(
    before: dict[str, dict[str, int]], after: dict[str, dict[str, int]]
) -> dict[str, dict[str, float]]:
    """Per model, the mean ms per request of each phase between two statistics snapshots."""
    return {
        name: {"requests": s["requests"]} | {phase: s[f"{phase}_us"] / 1000.0 for phase in STATS_FIELDS}
        for name, s in server_split(before, after).items()
    }


def _latency(
    client: grpcclient.InferenceServerClient,
    paths: dict[str, tuple[str, bool]],
    raws: list[dict[str, np.ndarray]],
    tier: str,
) -> dict[str, list[float]]:
    """Milliseconds per request of each path for ``tier``, the paths alternating request by request."""
    prepared = {path: [_inputs(raw, batched) for raw in raws] for path, (_, batched) in paths.items()}
    output = [grpcclient.InferRequestedOutput("score")]
    times: dict[str, list[float]] = {path: [] for path in paths}
    for warm in (True, False):
        for i in range(20 if warm else len(raws)):
            for path, (model, _) in paths.items():
                parameters = None if model == tier else {"tier": tier}
                started = time.perf_counter()
                client.infer(model, prepared[path][i], outputs=output, parameters=parameters)
                if not warm:
                    times[path].append((time.perf_counter() - started) * 1000.0)
    return times


async def _throughput(
    url: str, model: str, calls: list[tuple[str, list[Any]]], seconds: float
) -> dict[str, float]:
    """Closed loop, :data:`CONCURRENCY` clients: requests per second and failures for ``seconds``."""
    client = grpcaio.InferenceServerClient(url)
    output = [grpcaio.InferRequestedOutput("score")]
    done, failed, latencies = 0, 0, []
    stop = time.perf_counter() + seconds

    async def worker(offset: int) -> None:
        nonlocal done, failed
        i = offset
        while time.perf_counter() < stop:
            target, inputs = calls[i % len(calls)]
            started = time.perf_counter()
            try:
                await client.infer(target or model, inputs, outputs=output)
                done += 1
                latencies.append((time.perf_counter() - started) * 1000.0)
            except Exception:
                failed += 1
            i += CONCURRENCY

    started = time.perf_counter()
    await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    await client.close()
    return {
        "requests_per_s": done / elapsed,
        "failed": failed,
        "p50_ms": float(np.percentile(latencies, 50)) if latencies else 0.0,
        "p99_ms": float(np.percentile(latencies, 99)) if latencies else 0.0,
    }


def run(spec_path: Path, count: int, seconds: float, out: Path) -> dict[str, Any]:
    """Run the benchmark and return what was written to ``out``/router_overhead.json."""
    spec = load_spec(spec_path)
    prepare(spec_path, spec, deploy=True)
    repository = ROOT / "benchmarks" / "scratch" / "router_overhead" / "repository"
    shutil.rmtree(repository, ignore_errors=True)
    shutil.copytree(ROOT / spec.paths.repository, repository)
    router = spec.router_model
    local_tiers = json.loads((repository / router / "1" / "router.json").read_text(encoding="utf-8"))[
        "local_tiers"
    ]
    bls = _variant(repository, router, "bls", "bls", loop=False)
    looped = _variant(repository, router, "loop", "inprocess", loop=True)
    slo = _variant(repository, router, "slo", local_tiers, loop=False, slo_ms=SLO_MS)
    batcher, ensemble_batcher = _batcher_variant(repository, spec, local_tiers)
    requests = demo_holdout_set(spec, count)
    raws = [requests.request(r) for r in range(count)]
    large = held_out_requests(spec, 100, OVERLOAD_CANDIDATES)
    options = ServerOptions.on_free_ports(repository)
    models = {
        "ensemble": spec.name,
        "ensemble_batcher": ensemble_batcher,
        "router": router,
        "router_bls": bls,
        "router_loop": looped,
        "router_slo": slo,
    }
    paths = {path: (model, _batched(repository, model)) for path, model in models.items()}
    latency: dict[str, Any] = {}
    with TritonServer(options) as server:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        split: dict[str, Any] = {}
        for tier in spec.tier_names:
            before = _statistics(client)
            calls_before = router_tier_calls(server.metrics_url, router=router)
            times = _latency(client, {**paths, "direct": (tier, False)}, raws, tier)
            latency[tier] = {
                path: {"p50_ms": float(np.percentile(t, 50)), "p99_ms": float(np.percentile(t, 99))}
                for path, t in times.items()
            }
            calls = router_tier_calls(server.metrics_url, router=router)
            made, took = calls.get((tier, "inprocess"), (0.0, 0.0))
            made_before, took_before = calls_before.get((tier, "inprocess"), (0.0, 0.0))
            split[tier] = {
                "models": _split(before, _statistics(client)),
                "inprocess_ms": (took - took_before) / max(made - made_before, 1.0) * 1000.0,
            }
            print(f"latency {tier}: done", file=sys.stderr, flush=True)
        chosen = []
        for raw in raws:
            result = client.infer(
                spec.name, _inputs(raw, False), outputs=[grpcclient.InferRequestedOutput("tier")]
            )
            chosen.append(spec.tier_names[int(np.max(result.as_numpy("tier")))])
        client.close()
        mix = {t: chosen.count(t) / len(chosen) for t in spec.tier_names}
        throughput = {}
        for path, (model, batched) in {**paths, "direct": ("", False)}.items():
            calls = [
                (tier if path == "direct" else "", _inputs(raw, batched, grpcaio))
                for raw, tier in zip(raws, chosen, strict=True)
            ]
            throughput[path] = asyncio.run(_throughput(server.grpc_url, model, calls, seconds))
            print(
                f"throughput {path}: {throughput[path]['requests_per_s']:.0f}/s", file=sys.stderr, flush=True
            )
        reads = _stats_reads(server.http_url, slo)
        overload = _overload_runs(server.grpc_url, spec.name, ensemble_batcher, large)
    shutil.rmtree(repository, ignore_errors=True)
    result = {
        "benchmark": "router_overhead",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "spec": str(spec_path),
        "requests": count,
        "seconds": seconds,
        "concurrency": CONCURRENCY,
        "local_tiers": local_tiers,
        "latency": latency,
        "split": split,
        "mix": mix,
        "throughput": throughput,
        "stats_reads": reads,
        "overload": overload,
        "queue_timeout_ms": spec.triton.queue_timeout_ms,
        "router_instances": spec.triton.router_instances,
        "models": models,
    }
    write_report(out, "router_overhead", result, render(result))
    return result


def _stats_reads(http_url: str, model: str) -> dict[str, float]:
    """:data:`STATS_READS` reads of ``model``'s statistics as the router makes them, one at a time."""
    read = stats_reader(f"http://{http_url}", model)
    times, failed = [], 0
    for _ in range(STATS_READS):
        started = time.perf_counter()
        failed += read() is None
        times.append((time.perf_counter() - started) * 1000.0)
    return {
        "reads": STATS_READS,
        "failed": failed,
        "mean_ms": float(np.mean(times)),
        "p99_ms": float(np.percentile(times, 99)),
    }


def _offer(url: str, payloads: list[bytes], rate: float | None, seconds: float) -> dict[str, Any]:
    """Answered and shed requests, and their latency, of :func:`toolkit.bench.raw.offer`."""
    offered = asyncio.run(offer(url, payloads, rate, seconds, concurrency=CONCURRENCY))
    ok = [ms for status, ms in offered.results if status == "OK"]
    shed = [ms for status, ms in offered.results if status == "UNAVAILABLE"]
    return {
        "offered_per_s": offered.sent / seconds,
        "answered_per_s": len(ok) / seconds,
        "answered": len(ok),
        "shed": len(shed),
        "other_failures": len(offered.results) - len(ok) - len(shed),
        "answered_p50_ms": float(np.percentile(ok, 50)) if ok else 0.0,
        "answered_p99_ms": float(np.percentile(ok, 99)) if ok else 0.0,
        "shed_p50_ms": float(np.percentile(shed, 50)) if shed else 0.0,
    }


def _overload_runs(url: str, ensemble: str, ensemble_batcher: str, requests: Any) -> dict[str, Any]:
    """Capacity on large requests (closed loop), then :data:`OVERLOAD_X` times it, for both admissions.

    The two ensembles alternate which goes first at each load.
    """
    payloads = {
        path: serialized_requests(requests, model)
        for path, model in (("router", ensemble), ("batcher", ensemble_batcher))
    }
    capacity = {path: _offer(url, payloads[path], None, 5.0)["answered_per_s"] for path in payloads}
    base = capacity["router"]
    runs: dict[str, Any] = {"capacity_per_s": capacity, "candidates": list(OVERLOAD_CANDIDATES), "loads": []}
    for k, multiple in enumerate(OVERLOAD_X):
        order = ("router", "batcher") if k % 2 == 0 else ("batcher", "router")
        load = {"multiple": multiple}
        for path in order:
            load[path] = _offer(url, payloads[path], multiple * base, OVERLOAD_S)
            print(
                f"overload {multiple:g}x, admission {path}: {load[path]['answered_per_s']:.0f}/s answered",
                file=sys.stderr,
                flush=True,
            )
        runs["loads"].append(load)
    return runs


def _met(overhead_ms: float, share: float) -> bool:
    return overhead_ms <= OVERHEAD_MS or share <= OVERHEAD_SHARE


def render(result: dict[str, Any]) -> str:
    """The markdown report of a result."""
    m, models = result["machine"], result["models"]
    lines = [
        "# Router overhead",
        "",
        f"Run {result['created']} on {m['cpu']} ({m['cores']} cores usable), onnxruntime {m['onnxruntime']}, "
        f"toolkit {m['toolkit']}; the embedded tritonserver, client on the same machine "
        "(`make bench-router`). The deployed router runs local tiers "
        f"`{result['local_tiers']}`; every CPU tier has the preprocess step fused in, so a direct call "
        "sends the same raw tensors as a routed one.",
        "",
        f"## Latency: {result['requests']} held-out requests one at a time, the tier forced, "
        "paths alternating",
        "",
        f"Target: the ensemble's overhead over the direct tier call <= {OVERHEAD_MS} ms or "
        f"<= {OVERHEAD_SHARE:.0%} at p50.",
        "",
        "| tier | direct p50 / p99 ms | ensemble p50 / p99 ms | overhead p50 | target | router called "
        "directly p50 | BLS router p50 | router on the event loop p50 | router with routing.slo_ms p50 "
        "| ensemble with admission: batcher p50 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for tier, t in result["latency"].items():
        direct, ensemble = t["direct"], t["ensemble"]
        overhead = ensemble["p50_ms"] - direct["p50_ms"]
        share = overhead / direct["p50_ms"]
        lines.append(
            f"| {tier} | {direct['p50_ms']:.2f} / {direct['p99_ms']:.2f} | "
            f"{ensemble['p50_ms']:.2f} / {ensemble['p99_ms']:.2f} | {overhead:+.2f} ms ({share:+.0%}) | "
            f"{'met' if _met(overhead, share) else 'missed'} | {t['router']['p50_ms']:.2f} | "
            f"{t['router_bls']['p50_ms']:.2f} | {t['router_loop']['p50_ms']:.2f} | "
            f"{t['router_slo']['p50_ms']:.2f} | {t['ensemble_batcher']['p50_ms']:.2f} |"
        )
    direct = result["throughput"]["direct"]["requests_per_s"]
    mix = ", ".join(f"{tier} {share:.0%}" for tier, share in result["mix"].items())
    lines += [
        "",
        f"## Throughput: concurrency {result['concurrency']}, closed loop, {result['seconds']:g} s per path",
        "",
        f"The policy's own mix ({mix}); the direct calls send each request to the tier the router chose "
        f"for it. Target: the ensemble >= {THROUGHPUT_SHARE:.0%} of the direct calls.",
        "",
        "| path | requests/s | share of direct | p50 ms | p99 ms | failed |",
        "|---|---|---|---|---|---|",
    ]
    names = {
        "ensemble": f"ensemble `{models['ensemble']}`",
        "ensemble_batcher": f"ensemble with `triton.admission: batcher` `{models['ensemble_batcher']}`",
        "router": f"router `{models['router']}` called directly",
        "router_bls": f"router with BLS tier calls `{models['router_bls']}`",
        "router_loop": f"router with its execute on the event loop `{models['router_loop']}`",
        "router_slo": f"router with routing.slo_ms {SLO_MS:g} `{models['router_slo']}`",
        "direct": "tier called directly",
    }
    for path, t in result["throughput"].items():
        lines.append(
            f"| {names[path]} | {t['requests_per_s']:.0f} | {t['requests_per_s'] / direct:.0%} | "
            f"{t['p50_ms']:.2f} | {t['p99_ms']:.2f} | {t['failed']} |"
        )
    lines += [
        "",
        "## Where the time goes, per tier: p50 of the paths and Triton's statistics, ms per request",
        "",
        "Each row splits the ensemble's overhead over the direct call: the ensemble wrapper (ensemble "
        "against the router called directly, p50), then from Triton's statistics of the router model "
        "against the tier model called directly (means over the same run): queue, input and output "
        "handling of the python backend, the router's own Python work (its compute minus its in-process "
        "tier calls, timed by the router), and the tier run in the router's process against in its own.",
        "",
        "| tier | overhead p50 | ensemble wrapper | queue | input | output | router's own work "
        "| tier in the router's process against its own | rest |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    router = models["router"]
    for tier, t in result["latency"].items():
        split = result["split"][tier]
        r, d = split["models"][router], split["models"][tier]
        overhead = t["ensemble"]["p50_ms"] - t["direct"]["p50_ms"]
        wrapper = t["ensemble"]["p50_ms"] - t["router"]["p50_ms"]
        queue = r["queue"] - d["queue"]
        io_in = r["compute_input"] - d["compute_input"]
        io_out = r["compute_output"] - d["compute_output"]
        own = r["compute_infer"] - split["inprocess_ms"]
        tier_gap = split["inprocess_ms"] - d["compute_infer"]
        rest = overhead - wrapper - queue - io_in - io_out - own - tier_gap
        lines.append(
            f"| {tier} | {overhead:.2f} | {wrapper:.2f} | {queue:.2f} | {io_in:.2f} | {io_out:.2f} | "
            f"{own:.2f} | {tier_gap:.2f} | {rest:.2f} |"
        )
    reads, instances = result["stats_reads"], result["router_instances"]
    per_s = instances / POLL_S
    plain, polled = result["throughput"]["router"], result["throughput"]["router_slo"]
    lines += [
        "",
        "## The statistics reads of load-aware routing (`routing.slo_ms`)",
        "",
        f"{reads['reads']} reads of `/v2/models/{models['router_slo']}/stats` as the router makes them, one "
        f"at a time from this process: mean {reads['mean_ms']:.3f} ms, p99 {reads['p99_ms']:.3f} ms, "
        f"{reads['failed']} failed (the time covers the client and the server on the same cores). Each "
        f"router instance reads every {POLL_S * 1000:g} ms: with {instances} instances, {per_s:g} reads a "
        f"second, about {per_s * reads['mean_ms']:.1f} ms of work a second "
        f"({per_s * reads['mean_ms'] / 10:.1f}% of one core). The `_slo` router's reads ran during every "
        f"path of this run; at concurrency {result['concurrency']} it answered "
        f"{polled['requests_per_s']:.0f} requests/s against {plain['requests_per_s']:.0f} for the router "
        f"without (p50 {polled['p50_ms']:.2f} against {plain['p50_ms']:.2f} ms).",
    ]
    overload = result["overload"]
    capacity = overload["capacity_per_s"]
    low, high = overload["candidates"]
    lines += [
        "",
        "## Overload: who turns requests away (`triton.admission`)",
        "",
        f"Requests of {low} to {high} candidates through the ensemble, pre-serialized over raw gRPC. "
        f"Capacity at concurrency {result['concurrency']} (closed loop, 5 s): "
        f"{capacity['router']:.0f} requests/s with `admission: router` (the default: no dynamic "
        f"batcher, the router sheds while requests wait past `queue_timeout_ms` "
        f"{result['queue_timeout_ms']:g} ms), {capacity['batcher']:.0f} with `admission: batcher` "
        f"(Triton's queue policy rejects them). Then Poisson arrivals at a multiple of the first "
        f"capacity for {OVERLOAD_S:g} s each, the two ensembles alternating which goes first. Shed: "
        "UNAVAILABLE.",
        "",
        "| offered | admission | offered requests/s | answered requests/s | answered p50 / p99 ms "
        "| shed | shed p50 ms | other failures |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for load in overload["loads"]:
        for path in ("router", "batcher"):
            r = load[path]
            lines.append(
                f"| {load['multiple']:g}x | {path} | {r['offered_per_s']:.0f} | {r['answered_per_s']:.0f} | "
                f"{r['answered_p50_ms']:.1f} / {r['answered_p99_ms']:.1f} | {r['shed']} | "
                f"{r['shed_p50_ms']:.1f} | {r['other_failures']} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path("ensembles/ads_ranking.yaml"))
    parser.add_argument("--requests", type=int, default=300, help="held-out requests per tier (default 300)")
    parser.add_argument("--seconds", type=float, default=10.0, help="seconds per throughput run (default 10)")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    run(args.spec, args.requests, args.seconds, args.out)
    print((args.out / "router_overhead.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
