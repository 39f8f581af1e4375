"""PyTriton baseline: our deployment of the xl tier against the xl PyTorch model served with PyTriton.

What a user without the toolkit would most likely do is bind the largest tier's PyTorch model to
NVIDIA PyTriton. This script measures, on the same machine in one run and with the same requests and
load generator (``toolkit.bench.load.run_step``, closed loop over gRPC):

  (a) PyTriton serving the preprocess module and the xl tier's PyTorch model, eager, under
      ``torch.no_grad()``, one torch thread per instance, one model instance (PyTriton's default;
      ``--pytriton-instances`` for more), no dynamic batching (each request is one user with N
      candidates);
  (b) the deployed ensemble (the router running xl with preprocess fused in, the variant
      ``toolkit deploy`` chose) with the request parameter ``tier=xl``, on the embedded tritonserver.

The PyTriton model takes the ensemble's raw inputs and returns ``score`` and ``tier`` like the
ensemble, so ``AsyncRankingClient`` drives both unchanged. PyTriton runs in a child process (its
callable would otherwise share the load generator's interpreter and GIL; with the server in its own
process both sides are separate from the client) and with the statistics endpoint unrestricted,
which the load generator reads. The child puts this interpreter's own ``libpython`` first on
``LD_LIBRARY_PATH`` (see :func:`_use_own_libpython`); without it PyTriton's proxy model may fail to
load.

Only one server runs at a time (the machine may have few cores): each round starts one side,
checks it, measures concurrency 1 and 4, stops it, then does the same for the other; rounds
alternate which side goes first and the report gives the median over rounds. The first round
compares the xl scores of both on the same requests before anything is timed.

Writes ``benchmarks/results/pytriton_baseline.md`` and ``pytriton_baseline.json``. Trains, exports
and deploys the demo first where their outputs are missing.

Usage: ``python benchmarks/pytriton_baseline.py [--spec ensembles/ads_ranking.yaml] [--rounds 2]
[--pytriton-instances 1]``
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import importlib.metadata
import multiprocessing as mp
import os
import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, ROOT, held_out_requests, prepare, write_report

from toolkit.bench.load import StabilityPolicy, StepResult, StepSpec, run_step
from toolkit.client import RankingClient
from toolkit.data import REQUEST_TENSORS
from toolkit.data.requests import RequestSet
from toolkit.evaluate.offline import deployed_variants
from toolkit.machine import machine_facts
from toolkit.serve import ServerOptions, TritonServer, free_port, python_library_dir
from toolkit.spec import Spec, load_spec

TIER = "xl"
PYTRITON_MODEL = "xl_pytriton"
CONCURRENCY = (1, 4)
REQUESTS = 200
CANDIDATES = (128, 384)
CHECK_REQUESTS = 8
TOLERANCE = 0.05
WINDOW_S = 1.0
MAX_WINDOWS = 6
SIDES = ("toolkit", "pytriton")
STARTUP_TIMEOUT_S = 120.0


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _xl_callable(spec: Spec, checkpoints: Path) -> Callable[[list[Any]], list[dict[str, np.ndarray]]]:
    """The PyTriton inference callable: raw request tensors -> preprocess -> xl, one request at a time."""
    import torch

    from toolkit.train.checkpoints import load_preprocess, load_tier

    preprocess = load_preprocess(checkpoints, spec)
    model = load_tier(checkpoints, spec, TIER).eval()
    tier_index = spec.tier_names.index(TIER)

    def infer(requests: list[Any]) -> list[dict[str, np.ndarray]]:
        responses = []
        with torch.no_grad():
            for request in requests:
                raw = (torch.tensor(request[name]) for name in REQUEST_TENSORS)
                score = model(*preprocess(*raw)).numpy().astype(np.float32, copy=False)
                responses.append({"score": score, "tier": np.full(score.shape, tier_index, dtype=np.int32)})
        return responses

    return infer


def _use_own_libpython() -> None:
    """Put this interpreter's ``libpython`` first on ``LD_LIBRARY_PATH`` for the server PyTriton starts.

    PyTriton does not, and its proxy model then fails where the system's ``libpython`` is another
    patch release than this environment's (see :func:`toolkit.serve.python_library_dir`).
    """
    libdir = python_library_dir()
    if libdir is not None:
        rest = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and p != str(libdir)]
        os.environ["LD_LIBRARY_PATH"] = os.pathsep.join([str(libdir), *rest])


def serve_pytriton(
    spec_path: str, ports: dict[str, int], instances: int, log_path: str, conn: Connection, stop: Any
) -> None:
    """Child-process entry point: bind the xl model to PyTriton, run it until ``stop`` is set.

    Args:
        spec_path: The ensemble spec.
        ports: ``grpc``, ``http`` and ``metrics`` ports.
        instances: Model instances (one callable, with its own copy of the model, each).
        log_path: File that receives the server's log (PyTriton prints it to stdout).
        conn: Pipe end to send ``("ready", "")`` or ``("error", details)`` on.
        stop: A ``multiprocessing`` event; the server stops once it is set.
    """
    import torch
    from pytriton.model_config import ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig, TritonSecurityConfig

    torch.set_num_threads(1)
    torch.set_num_interop_threads(1)
    _use_own_libpython()
    sys.stdout = open(log_path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115
    spec = load_spec(Path(spec_path))
    f = spec.features
    inputs = [
        Tensor(name="user_dense", dtype=np.float32, shape=(1, f.user_dense)),
        Tensor(name="user_sparse", dtype=np.int64, shape=(1, len(f.user_sparse))),
        Tensor(name="user_history", dtype=np.int64, shape=(1, -1)),
        Tensor(name="ad_dense", dtype=np.float32, shape=(-1, f.ad_dense)),
        Tensor(name="ad_sparse", dtype=np.int64, shape=(-1, len(f.ad_sparse))),
    ]
    outputs = [
        Tensor(name="score", dtype=np.float32, shape=(-1,)),
        Tensor(name="tier", dtype=np.int32, shape=(-1,)),
    ]
    config = TritonConfig(
        grpc_address="127.0.0.1",
        grpc_port=ports["grpc"],
        http_address="127.0.0.1",
        http_port=ports["http"],
        metrics_address="127.0.0.1",
        metrics_port=ports["metrics"],
        exit_timeout_secs=5,
    )
    triton = None
    try:
        triton = Triton(config=config, security_config=TritonSecurityConfig(restricted_endpoints=[]))
        triton.bind(
            model_name=PYTRITON_MODEL,
            infer_func=[_xl_callable(spec, ROOT / spec.paths.checkpoints) for _ in range(instances)],
            inputs=inputs,
            outputs=outputs,
            config=ModelConfig(batching=False),
        )
        triton.run()
        conn.send(("ready", ""))
        stop.wait()
    except BaseException:
        conn.send(("error", traceback.format_exc()))
    finally:
        if triton is not None:
            triton.stop()
        sys.stdout.flush()


@contextlib.contextmanager
def pytriton_server(spec_path: Path, instances: int = 1) -> Iterator[str]:
    """Run :func:`serve_pytriton` in a child process; yield its gRPC address once the model is ready.

    Args:
        spec_path: The ensemble spec.
        instances: PyTriton model instances.

    Raises:
        RuntimeError: The child failed or was not ready in time; the message carries its log's tail.
    """
    ctx = mp.get_context("spawn")
    ports = {"grpc": free_port(), "http": free_port(), "metrics": free_port()}
    fd, log_path = tempfile.mkstemp(prefix="pytriton-", suffix=".log")
    os.close(fd)
    receive, send = ctx.Pipe(duplex=False)
    stop = ctx.Event()
    child = ctx.Process(target=serve_pytriton, args=(str(spec_path), ports, instances, log_path, send, stop))
    child.start()
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not receive.poll(0.2):
            if not child.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"PyTriton did not start.\n{_tail(log_path)}")
        status, details = receive.recv()
        if status != "ready":
            raise RuntimeError(f"PyTriton failed to start:\n{details}\n{_tail(log_path)}")
        yield f"127.0.0.1:{ports['grpc']}"
    finally:
        stop.set()
        child.join(30.0)
        if child.is_alive():
            child.terminate()
            child.join(10.0)
        with contextlib.suppress(OSError):
            os.unlink(log_path)


def _tail(path: str, lines: int = 30) -> str:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def _scores(url: str, model: str, spec: Spec, requests: RequestSet, tier: str | None) -> list[np.ndarray]:
    with RankingClient(url, model, tier_names=spec.tier_names, timeout_s=60.0) as client:
        rankings = [client.rank(tier=tier, **requests.request(r)) for r in range(CHECK_REQUESTS)]
    served = {name for ranking in rankings for name in ranking.tier_names}
    if served != {TIER}:
        raise RuntimeError(f"{model} answered with tiers {sorted(served)}, expected only {TIER}")
    return [ranking.scores for ranking in rankings]


def _measure(url: str, model: str, spec: Spec, requests: RequestSet, tier: str | None) -> dict[str, Any]:
    steps = {}
    for c in CONCURRENCY:
        step: StepResult = asyncio.run(
            run_step(
                url,
                model,
                requests,
                StepSpec("concurrency", c),
                spec.tier_names,
                tier=tier,
                policy=StabilityPolicy(window_s=WINDOW_S, max_windows=MAX_WINDOWS),
            )
        )
        steps[str(c)] = {
            "requests_per_s": step.requests_per_s,
            "candidates_per_s": step.candidates_per_s,
            "p50_ms": step.latency["p50_ms"],
            "p99_ms": step.latency["p99_ms"],
            "failed": step.failed,
            "stable": step.stable,
            "windows": step.windows,
            "tier_mix": step.tier_mix,
        }
        _progress(
            f"  concurrency {c}: {step.requests_per_s:.1f} req/s, p50 {step.latency['p50_ms']:.2f} ms, "
            f"p99 {step.latency['p99_ms']:.2f} ms, failed {step.failed}"
        )
    return steps


def _median_steps(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    out = {}
    for c in rounds[0]:
        entries = [r[c] for r in rounds]
        out[c] = {
            key: statistics.median(e[key] for e in entries)
            for key in ("requests_per_s", "candidates_per_s", "p50_ms", "p99_ms")
        }
        out[c]["failed"] = sum(e["failed"] for e in entries)
        out[c]["stable"] = all(e["stable"] for e in entries)
    return out


def run(spec_path: Path, out: Path, rounds: int = 2, pytriton_instances: int = 1) -> dict[str, Any]:
    """Run the benchmark and return what was written to ``out``/pytriton_baseline.json.

    Args:
        spec_path: The ensemble spec.
        out: Folder for the report files.
        rounds: Measurement rounds; each starts, checks, measures and stops both sides in turn.
        pytriton_instances: Instances of the PyTriton model (PyTriton's default, one callable, is 1).

    Raises:
        RuntimeError: A server did not start, answered with another tier, or the scores disagree
            by more than the tolerance.
    """
    spec = load_spec(spec_path)
    prepare(spec_path, spec, deploy=True)
    artifacts, repository = ROOT / spec.paths.artifacts, ROOT / spec.paths.repository
    variant = deployed_variants(spec, artifacts, repository)[TIER]
    requests = held_out_requests(spec, REQUESTS, candidates=CANDIDATES)
    options = ServerOptions.on_free_ports(repository)
    measured: dict[str, list[dict[str, Any]]] = {side: [] for side in SIDES}
    install_kind = ""
    checked: dict[str, list[np.ndarray]] = {}
    startup_s: dict[str, list[float]] = {side: [] for side in SIDES}
    for number in range(rounds):
        order = SIDES if number % 2 == 0 else SIDES[::-1]
        for side in order:
            _progress(f"round {number + 1}/{rounds}: {side}")
            started = time.perf_counter()
            if side == "toolkit":
                server_context: contextlib.AbstractContextManager[Any] = TritonServer(options)
                model, tier = spec.name, TIER
            else:
                server_context = pytriton_server(spec_path, pytriton_instances)
                model, tier = PYTRITON_MODEL, None
            with server_context as server:
                if side == "toolkit":
                    url, install_kind = server.grpc_url, server.install.kind if server.install else ""
                else:
                    url = server
                startup_s[side].append(time.perf_counter() - started)
                scores = _scores(url, model, spec, requests, tier)
                checked.setdefault(side, scores)
                measured[side].append(_measure(url, model, spec, requests, tier))
    diff = max(
        float(np.max(np.abs(a - b))) for a, b in zip(checked["toolkit"], checked["pytriton"], strict=True)
    )
    _progress(f"max abs score difference (toolkit {variant} vs PyTorch eager): {diff:.5f}")
    if diff >= TOLERANCE:
        raise RuntimeError(f"xl scores disagree: max abs difference {diff:.5f} >= {TOLERANCE}")
    sides = {side: _median_steps(measured[side]) for side in SIDES}
    ratios = {
        c: {
            "throughput": sides["toolkit"][c]["requests_per_s"] / sides["pytriton"][c]["requests_per_s"],
            "p50": sides["toolkit"][c]["p50_ms"] / sides["pytriton"][c]["p50_ms"],
        }
        for c in sides["toolkit"]
    }
    result = {
        "benchmark": "pytriton_baseline",
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": machine_facts(),
        "pytriton": importlib.metadata.version("nvidia-pytriton"),
        "spec": str(spec_path),
        "tier": TIER,
        "xl_variant": variant,
        "toolkit_tritonserver": install_kind,
        "pytriton_instances": pytriton_instances,
        "requests": REQUESTS,
        "candidates": list(CANDIDATES),
        "window_s": WINDOW_S,
        "max_windows": MAX_WINDOWS,
        "rounds": rounds,
        "startup_s": {side: statistics.median(v) for side, v in startup_s.items()},
        "check": {"requests": CHECK_REQUESTS, "max_abs_diff": diff, "tolerance": TOLERANCE},
        "sides": sides,
        "ratios": ratios,
        "per_round": measured,
    }
    write_report(out, "pytriton_baseline", result, render(result))
    return result


def render(result: dict[str, Any]) -> str:
    """The markdown report of a result.

    Args:
        result: What :func:`run` returned.

    Returns:
        The report: run facts, a table per side and concurrency, the ratios and a one-line verdict.
    """
    m = result["machine"]
    low, high = result["candidates"]
    lines = [
        "# PyTriton baseline",
        "",
        f"Run {result['created']} on {m['cpu']} ({m['cores']} cores usable), Python {m['python']}, "
        f"torch {m['torch']}, onnxruntime {m['onnxruntime']}, nvidia-pytriton {result['pytriton']}, "
        f"toolkit {m['toolkit']}. Spec `{result['spec']}`.",
        "",
        f"- **PyTriton**: the `{result['tier']}` tier's PyTorch model behind PyTriton's bundled tritonserver "
        "(python-backend proxy to a Python callable in its own process): preprocess module then the tier "
        "module, eager, `torch.no_grad()`, one torch thread per instance, "
        f"{result['pytriton_instances']} instance(s), no dynamic batching.",
        f"- **toolkit**: the deployed ensemble (the router, running `{result['tier']}` with the preprocess "
        f"step fused in, variant `{result['xl_variant']}`, ONNX Runtime in the router's python-backend "
        f"process, one thread) on the {result['toolkit_tritonserver']} tritonserver, request parameter "
        f"`tier={result['tier']}`. The router has two instances, so two requests run at once; a "
        "PyTriton instance runs one request at a time.",
        "",
        f"Both over gRPC, driven by the same closed-loop load generator with the same "
        f"{result['requests']} held-out requests of {low} to {high} candidates each (production-like "
        f"counts; the demo data has 8 to 48), windows of {result['window_s']:g} s until three agree "
        f"within 10% (at most {result['max_windows']}). One server at a time on the machine; "
        f"{result['rounds']} round(s), alternating which side goes first; figures are medians over "
        "rounds. Client on the same machine.",
        "",
        f"Scores checked first on {result['check']['requests']} requests: max abs difference "
        f"{result['check']['max_abs_diff']:.5f} (tolerance {result['check']['tolerance']}; the deployed "
        "variant is quantized).",
        "",
        "| side | concurrency | requests/s | candidates/s | p50 ms | p99 ms | failed |",
        "|---|---|---|---|---|---|---|",
    ]
    for c in result["sides"]["toolkit"]:
        for side in ("pytriton", "toolkit"):
            s = result["sides"][side][c]
            lines.append(
                f"| {side} | {c} | {s['requests_per_s']:.1f} | {s['candidates_per_s']:.0f} | "
                f"{s['p50_ms']:.2f} | {s['p99_ms']:.2f} | {s['failed']} |"
            )
    lines += [
        "",
        "| concurrency | throughput toolkit / PyTriton | p50 toolkit / PyTriton |",
        "|---|---|---|",
    ]
    for c, r in result["ratios"].items():
        lines.append(f"| {c} | {r['throughput']:.2f}x | {r['p50']:.2f}x |")
    unsettled = [
        f"{side} at concurrency {c}"
        for side, steps in result["sides"].items()
        for c, s in steps.items()
        if not s["stable"]
    ]
    if unsettled:
        lines += [
            "",
            f"Did not settle in every round (figures from the last three windows): {', '.join(unsettled)}.",
        ]
    lines += ["", _verdict(result["ratios"])]
    return "\n".join(lines) + "\n"


def _verdict(ratios: dict[str, dict[str, float]]) -> str:
    parts = []
    for c, r in ratios.items():
        if r["throughput"] >= 1.0:
            who = f"the toolkit serves {r['throughput']:.2f}x PyTriton's requests per second"
        else:
            who = f"PyTriton serves {1.0 / r['throughput']:.2f}x the toolkit's requests per second"
        lower = "the toolkit's" if r["p50"] <= 1.0 else "PyTriton's"
        parts.append(f"at concurrency {c} {who}, and {lower} p50 is lower (ratio {r['p50']:.2f})")
    return "Result: " + "; ".join(parts) + "."


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spec", type=Path, default=Path("ensembles/ads_ranking.yaml"))
    parser.add_argument("--rounds", type=int, default=2, help="measurement rounds (default 2)")
    parser.add_argument(
        "--pytriton-instances", type=int, default=1, help="PyTriton model instances (default 1)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    run(args.spec, args.out, args.rounds, args.pytriton_instances)
    print((args.out / "pytriton_baseline.md").read_text(encoding="utf-8"))


if __name__ == "__main__":
    main()
