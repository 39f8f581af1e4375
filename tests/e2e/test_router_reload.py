"""The router replaced while it serves: Triton polls the repository and swaps router versions.

The router exports its counters as Prometheus metrics. Deleting them at unload, while the new version
was already serving, aborted the embedded server ("malloc(): unaligned fastbin chunk detected"); this
test replaces the router twice under traffic and checks the server survives with no failed request.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from helpers import free_port_options

from toolkit.client import RankingClient
from toolkit.data import demo_holdout_set
from toolkit.errors import ServerError
from toolkit.serve import TritonServer, find_tritonserver
from toolkit.serve.metrics import router_events

pytestmark = pytest.mark.e2e

_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def router_versions(server: TritonServer, router: str) -> dict[str, str]:
    request = urllib.request.Request(
        f"http://{server.http_url}/v2/repository/index", data=b"{}", method="POST"
    )
    with _NO_PROXY.open(request, timeout=5) as reply:
        index = json.loads(reply.read())
    return {m.get("version", ""): m.get("state", "") for m in index if m["name"] == router}


def deploy_without_queue_timeout(pipeline: Any, repository: Path) -> None:
    """The session's deployment without the router's queue timeout.

    Loading a router version starts two python-backend processes that import ONNX Runtime and open
    every local tier: on a 2-core machine that starves the serving version for more than the 100 ms
    a request may queue, and shedding under the test's own CPU load is test_overload's subject.
    """
    from helpers import run_cli, write_spec

    data = yaml.safe_load(pipeline.spec_path.read_text(encoding="utf-8"))
    data["triton"]["queue_timeout_ms"] = 0
    spec_path = write_spec(repository.parent / "spec.yaml", data)
    pins = [a for t, v in pipeline.pins.items() for a in ("--pin", f"{t}={v}")]
    run_cli("deploy", "--spec", str(spec_path), "--out", str(repository), *pins)


def swapped(states: dict[str, str], version: str) -> bool:
    """Whether ``version`` is the one router version ready."""
    return [v for v, state in states.items() if state == "READY"] == [version]


def test_polling_server_survives_the_router_replaced_under_traffic(pipeline, tmp_path: Path) -> None:
    try:
        find_tritonserver(None)
    except ServerError as exc:
        pytest.skip(f"no tritonserver on this machine: {exc}")
    spec = pipeline.spec
    repository = tmp_path / "repository"
    deploy_without_queue_timeout(pipeline, repository)
    options = free_port_options(repository, tmp_path / "tritonserver.log")
    options = dataclasses.replace(
        options, model_control_mode="poll", extra_args=("--repository-poll-secs=1",)
    )
    raw = demo_holdout_set(spec).request(0)
    stop = threading.Event()
    answered: list[str] = []
    failures: list[str] = []

    def traffic(url: str) -> None:
        with RankingClient(url, spec.name, tier_names=spec.tier_names) as client:
            while not stop.is_set():
                try:
                    answered.append(client.rank(tier="standard", **raw).tier_names[0])
                except Exception as exc:
                    failures.append(str(exc))

    with TritonServer(options) as server:
        worker = threading.Thread(target=traffic, args=(server.grpc_url,), daemon=True)
        worker.start()
        try:
            for version in ("2", "3"):
                router = repository / spec.router_model
                shutil.copytree(router / "1", router / version)
                deadline = time.monotonic() + 60
                while not swapped(router_versions(server, spec.router_model), version) or not answered:
                    assert time.monotonic() < deadline, router_versions(server, spec.router_model)
                    assert server.running, server.log_tail()
                    stop.wait(0.2)
                served = len(answered)
                while len(answered) < served + 20 and server.running and not failures:
                    stop.wait(0.05)
        finally:
            stop.set()
            worker.join(30)
        assert server.running, server.log_tail()
        assert not failures, failures[:3]
        events = router_events(server.metrics_url)
        assert events[("tier", "standard")] == len(answered)
    assert "unaligned" not in server.log_tail(200)
