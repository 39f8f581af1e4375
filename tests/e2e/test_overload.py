"""Overload on the real embedded Triton: more than its capacity for 20 s, nothing queues unboundedly.

The driver sends pre-serialized requests over raw gRPC with Poisson arrivals (open loop), so it can
offer more than the server can take on the same two cores. Every request must either succeed or be
shed with UNAVAILABLE: by the router ("Request shed", ``triton.admission: router``, the default, at
1.5 times the capacity: a refusal costs the router a python-backend call, so it holds only up to a
load it can refuse) or by Triton's queue policy ("Request timeout expired", ``admission: batcher``,
at 3 times); rejections come back quickly (the queue timeout is 100 ms); the server process
survives, answers the next request, and its memory (the tritonserver process and its python-backend
stubs) stays bounded.
"""

from __future__ import annotations

import asyncio
import collections
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import free_port_options, run_cli, write_spec
from tritonclient.grpc import service_pb2

from toolkit.bench.raw import offer, serialized_requests
from toolkit.client import RankingClient
from toolkit.data import REQUEST_TENSORS, generate_requests
from toolkit.machine import process_tree_rss_kib
from toolkit.serve import TritonServer

pytestmark = pytest.mark.e2e

OVERLOAD_S = 20.0
ADMISSIONS = {"router": (1.5, "Request shed"), "batcher": (3.0, "Request timeout expired")}
"""Per ``triton.admission``: the offered load as a multiple of the measured capacity, and what the
message of a shed request says. The load generator shares the server's cores, so requests are large
(768 to 1024 candidates) to keep the offered rate within what it can send."""


def _payloads(spec, count: int) -> list[bytes]:
    requests = generate_requests(spec.features, count, (768, 1024), 1.0, seed=83, world_seed=spec.seed)
    out = serialized_requests(requests, spec.name)
    for payload in out:
        message = service_pb2.ModelInferRequest.FromString(payload)
        assert [i.name for i in message.inputs] == list(REQUEST_TENSORS)
    return out


def _drive(url: str, payloads: list[bytes], rate: float | None, seconds: float, pid: int) -> dict:
    """Closed loop at concurrency 4 when ``rate`` is None, else Poisson arrivals at ``rate``/s.

    The server's memory is sampled before, every half second of the open loop, and after.
    """
    rss = [process_tree_rss_kib(pid)]
    last = [time.perf_counter()]

    def sample() -> None:
        if time.perf_counter() - last[0] > 0.5:
            rss.append(process_tree_rss_kib(pid))
            last[0] = time.perf_counter()

    offered = asyncio.run(offer(url, payloads, rate, seconds, concurrency=4, on_send=sample))
    rss.append(process_tree_rss_kib(pid))
    return {
        "results": offered.results,
        "messages": offered.messages,
        "sent": offered.sent,
        "seconds": seconds,
        "rss_kib": rss,
    }


def _deploy(pipeline, repository: Path, admission: str) -> Path:
    """The session's deployment with ``triton.admission`` set (the session's own for the default)."""
    if admission == "router":
        return pipeline.repository
    data = yaml.safe_load(pipeline.spec_path.read_text(encoding="utf-8"))
    data["triton"]["admission"] = admission
    spec_path = write_spec(repository.parent / "spec.yaml", data)
    pins = [a for t, v in pipeline.pins.items() for a in ("--pin", f"{t}={v}")]
    run_cli("deploy", "--spec", str(spec_path), "--out", str(repository), *pins)
    return repository


@pytest.mark.parametrize("admission", sorted(ADMISSIONS))
def test_more_than_capacity_for_20_s_gets_answers_or_fast_clear_rejections(
    pipeline, tmp_path: Path, admission: str
) -> None:
    spec = pipeline.spec
    multiple, marker = ADMISSIONS[admission]
    repository = _deploy(pipeline, tmp_path / "repository", admission)
    payloads = _payloads(spec, 100)
    with TritonServer(free_port_options(repository, tmp_path / "tritonserver.log")) as server:
        pid = server.pid
        closed = _drive(server.grpc_url, payloads, None, 4.0, pid)
        capacity = sum(status == "OK" for status, _ in closed["results"]) / closed["seconds"]
        overload = _drive(server.grpc_url, payloads, multiple * capacity, OVERLOAD_S, pid)
        with RankingClient(server.grpc_url, spec.name, tier_names=spec.tier_names) as client:
            after = client.rank(**generate_requests(spec.features, 1, (3, 3), 0.5, seed=5).request(0))
        assert server.running and server.pid == pid

    statuses = collections.Counter(status for status, _ in overload["results"])
    ok = [ms for status, ms in overload["results"] if status == "OK"]
    shed = [ms for status, ms in overload["results"] if status != "OK"]
    rss_mb = np.array(overload["rss_kib"]) / 1024
    print(
        f"\noverload, admission {admission}: capacity {capacity:.0f} req/s (closed loop, 4 in flight); "
        f"offered "
        f"{overload['sent'] / OVERLOAD_S:.0f} req/s for {OVERLOAD_S:g} s: {dict(statuses)}; answered p50/p99 "
        f"{np.percentile(ok, 50):.0f}/{np.percentile(ok, 99):.0f} ms; rejected p50/p99 "
        f"{np.percentile(shed, 50):.0f}/{np.percentile(shed, 99):.0f} ms; server RSS start "
        f"{rss_mb[0]:.0f} MB, peak {rss_mb.max():.0f} MB"
    )
    assert overload["sent"] / OVERLOAD_S >= (1 + multiple) / 2 * capacity  # really offered more than it takes
    assert set(statuses) <= {"OK", "UNAVAILABLE"}, overload["messages"]
    assert statuses["UNAVAILABLE"] > 0 and statuses["OK"] > 0
    assert marker in overload["messages"]["UNAVAILABLE"]
    assert np.percentile(shed, 50) < 1000.0  # shed after ~the 100 ms queue timeout, not after a backlog
    assert np.percentile(ok, 50) < 1000.0
    assert rss_mb.max() - rss_mb[0] < 500.0
    assert after.scores.shape == (3,)
