"""Tier pools end to end: two embedded tritonservers on 127.0.0.1, the router of one calling the other.

The session's tiny spec gets two pools: ``cpu`` (the entry pool: ensemble, router, preprocess, lite and
standard) and ``big`` (xl). ``toolkit deploy`` writes one repository per pool; each is served by its
own real tritonserver, and the router of ``cpu`` calls xl on ``big`` over gRPC. The tests check that
the two servers answer exactly as the session's single server does, that stopping ``big`` mid-load
sends xl's requests to standard without a failed request, that xl serves again once ``big`` is back,
and that the router counted all of it in its Prometheus counter.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import yaml
from helpers import run_cli, serving, write_spec

from toolkit.client import RankingClient
from toolkit.data import demo_holdout_set
from toolkit.errors import ServerError
from toolkit.evaluate.offline import OfflineEnsemble
from toolkit.repository import MARKER
from toolkit.serve import ServerOptions, TritonServer, find_tritonserver, free_port
from toolkit.serve.metrics import router_events as read_router_events
from toolkit.spec import Spec, load_spec

pytestmark = pytest.mark.e2e

TIMEOUT_MS = 500.0
QUEUE_TIMEOUT_MS = 2000.0
"""Above the pool's deadline, so requests queued behind a call that waits it out are not shed."""
RETRY_AFTER_MS = 300.0
_NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@dataclass
class Pools:
    """The two pools' repositories and servers; ``big`` can be stopped and started again."""

    spec: Spec
    repository: Path
    big_options: ServerOptions
    deploy_output: str
    variants: dict[str, str]
    big: TritonServer | None = None
    cpu: TritonServer | None = None

    def start_big(self) -> TritonServer:
        self.big = TritonServer(self.big_options)
        self.big.start()
        self.big.wait_ready()
        return self.big

    @property
    def big_address(self) -> str:
        return f"127.0.0.1:{self.big_options.grpc_port}"


@pytest.fixture(scope="module")
def pools(pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pools]:
    try:
        find_tritonserver(None)
    except ServerError as exc:
        pytest.skip(f"no tritonserver on this machine: {exc}")
    folder = tmp_path_factory.mktemp("pools")
    grpc, http, metrics = free_port(), free_port(), free_port()
    data = yaml.safe_load(pipeline.spec_path.read_text(encoding="utf-8"))
    data["pools"] = [
        {"name": "cpu"},
        {
            "name": "big",
            "addresses": [f"127.0.0.1:{grpc}"],
            "timeout_ms": TIMEOUT_MS,
            "retry_after_ms": RETRY_AFTER_MS,
        },
    ]
    data["tiers"][2]["pool"] = "big"
    data.setdefault("triton", {})["queue_timeout_ms"] = QUEUE_TIMEOUT_MS
    data["paths"]["repository"] = str(folder / "repositories")
    spec_path = write_spec(folder / "pools.yaml", data)
    pins = [arg for tier, variant in pipeline.pins.items() for arg in ("--pin", f"{tier}={variant}")]
    output = run_cli("deploy", "--spec", str(spec_path), *pins).stdout
    repository = folder / "repositories"
    variants = json.loads((repository / MARKER).read_text(encoding="utf-8"))["variants"]
    big_options = ServerOptions(
        repository=repository / "big",
        grpc_port=grpc,
        http_port=http,
        metrics_port=metrics,
        log_file=folder / "big.log",
    )
    state = Pools(load_spec(spec_path), repository, big_options, output, variants)
    try:
        state.start_big()
        with serving(repository / "cpu", folder / "cpu") as cpu:
            state.cpu = cpu
            yield state
    finally:
        if state.big is not None:
            state.big.stop()


def model_folders(repository: Path) -> set[str]:
    return {p.name for p in repository.iterdir() if p.is_dir()}


def inference_count(server: TritonServer, model: str) -> int:
    with _NO_PROXY.open(f"http://{server.http_url}/v2/models/{model}/stats", timeout=5) as reply:
        stats = json.loads(reply.read())
    return int(stats["model_stats"][0]["inference_count"])


def router_events(server: TritonServer) -> dict[tuple[str, str], float]:
    """The router's ``toolkit_router_events_total`` counters by (event, subject)."""
    return read_router_events(server.metrics_url)


def test_deploy_writes_one_repository_per_pool(pools: Pools) -> None:
    spec = pools.spec
    assert model_folders(pools.repository) == {"cpu", "big"}
    assert model_folders(pools.repository / "cpu") == {
        spec.name,
        spec.preprocess_model,
        spec.router_model,
        "lite",
        "standard",
    }
    assert model_folders(pools.repository / "big") == {"xl"}
    for pool in ("cpu", "big"):
        marker = json.loads((pools.repository / pool / MARKER).read_text(encoding="utf-8"))
        assert marker["pool"] == pool
        assert set(marker["variants"]) == set(spec.pool_tiers(pool))
    router = json.loads((pools.repository / "cpu" / spec.router_model / "1" / "router.json").read_text())
    assert router["remote_tiers"] == {
        "xl": {
            "pool": "big",
            "addresses": [pools.big_address],
            "timeout_ms": TIMEOUT_MS,
            "retry_after_ms": RETRY_AFTER_MS,
        }
    }
    assert (
        f"pool big (cpu, python) -> big/: called by the router at {pools.big_address}" in pools.deploy_output
    )


def test_router_serves_xl_from_the_other_pool(pools: Pools, pipeline) -> None:
    spec = pools.spec
    offline = OfflineEnsemble(spec, pipeline.artifacts, pools.variants)
    holdout = demo_holdout_set(spec)
    before = inference_count(pools.big, "xl")
    served_by_big = 0
    routed = Counter()
    with RankingClient(pools.cpu.grpc_url, spec.name, tier_names=spec.tier_names) as client:
        for r in range(16):
            raw = holdout.request(r)
            ranking = client.rank(**raw)
            decision, scores, tiers = offline.route(raw)
            np.testing.assert_array_equal(ranking.tiers, tiers)
            np.testing.assert_allclose(ranking.scores, scores, atol=1e-5, rtol=0)
            routed[decision.tier] += 1
            forced = client.rank(tier="xl", **raw)
            assert set(forced.tier_names) == {"xl"}
            expected = offline.score(offline.preprocessed(raw), "xl")
            np.testing.assert_allclose(forced.scores, expected, atol=1e-5, rtol=0)
            served_by_big += 1 + (decision.tier == "xl")
    assert routed["xl"] > 0 and routed["lite"] > 0, routed
    assert inference_count(pools.big, "xl") - before == served_by_big
    events = router_events(pools.cpu)
    assert events.get(("tier", "lite"), 0) > 0
    assert inference_count(pools.cpu, "lite") == 0  # run in the router's process
    assert events.get(("remote_ok", pools.big_address), 0) >= served_by_big


@dataclass
class Load:
    """Requests sent by a few threads until told to stop: what each got back, and when."""

    client_url: str
    spec: Spec
    threads: int = 2
    results: list[tuple[float, str, tuple[str, ...]]] = field(default_factory=list)
    """Per answered request: when it was sent, ``xl`` (forced) or ``routed``, the tiers that answered."""
    failures: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _workers: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        holdout = demo_holdout_set(self.spec)
        for k in range(self.threads):
            worker = threading.Thread(target=self._run, args=(holdout, k), daemon=True)
            worker.start()
            self._workers.append(worker)

    def _run(self, holdout, k: int) -> None:
        with RankingClient(self.client_url, self.spec.name, tier_names=self.spec.tier_names) as client:
            r = k
            while not self._stop.is_set():
                raw = holdout.request(r % holdout.num_requests)
                forced = "xl" if r % 2 == 0 else None
                sent = time.monotonic()
                try:
                    ranking = client.rank(tier=forced, **raw)
                except Exception as exc:
                    with self._lock:
                        self.failures.append(f"request {r}: {type(exc).__name__}: {exc}")
                else:
                    with self._lock:
                        self.results.append((sent, forced or "routed", ranking.tier_names))
                r += self.threads

    def forced_since(self, since: float) -> list[set[str]]:
        """Who answered each request forced to xl that was sent at ``since`` or later."""
        with self._lock:
            return [set(names) for t, kind, names in self.results if t >= since and kind == "xl"]

    def wait_for(self, since: float, predicate, what: str, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate(self.forced_since(since)) or self.failures:
                return
            self._stop.wait(0.05)
        raise AssertionError(f"no {what} within {timeout_s:g} s; failures: {self.failures[:3]}")

    def stop(self) -> None:
        self._stop.set()
        for worker in self._workers:
            worker.join(timeout=30)


def test_big_pool_stopped_mid_load_falls_back_to_standard_then_serves_xl_again(pools: Pools) -> None:
    spec = pools.spec
    events_before = router_events(pools.cpu)
    load = Load(pools.cpu.grpc_url, spec)
    load.start()
    try:
        start = time.monotonic()
        load.wait_for(start, lambda got: sum(s == {"xl"} for s in got) >= 10, "xl answers before the stop")
        pools.big.stop()
        stopped = time.monotonic()
        load.wait_for(stopped, lambda got: len(got) >= 20, "answers while big is down")
        down = load.forced_since(stopped)
        pools.start_big()
        back = time.monotonic()
        load.wait_for(back, lambda got: {"xl"} in got, "xl answer after big came back")
        load.wait_for(back, lambda got: sum(s == {"xl"} for s in got) >= 10, "xl answers after the restart")
    finally:
        load.stop()
    assert load.failures == [], load.failures[:5]
    assert down and all(s == {"standard"} for s in down), Counter(frozenset(s) for s in down)
    assert len(load.results) > 50
    events = router_events(pools.cpu)
    gained = {key: value - events_before.get(key, 0) for key, value in events.items()}
    assert gained.get(("fallback", "xl"), 0) >= len(down)
    assert gained.get(("remote_unavailable", pools.big_address), 0) >= 1
    assert gained.get(("remote_ok", pools.big_address), 0) >= 20
    assert gained.get(("tier", "standard"), 0) >= len(down)


def test_big_pool_frozen_mid_load_times_out_to_standard_then_serves_xl_again(pools: Pools) -> None:
    spec = pools.spec
    events_before = router_events(pools.cpu)
    load = Load(pools.cpu.grpc_url, spec)
    load.start()
    frozen = False
    try:
        start = time.monotonic()
        load.wait_for(start, lambda got: sum(s == {"xl"} for s in got) >= 10, "xl answers before the freeze")
        os.killpg(pools.big.pid, signal.SIGSTOP)
        frozen = True
        since = time.monotonic()
        load.wait_for(since, lambda got: len(got) >= 20, "answers while big is frozen")
        during = load.forced_since(since)
        os.killpg(pools.big.pid, signal.SIGCONT)
        frozen = False
        thawed = time.monotonic()
        load.wait_for(thawed, lambda got: sum(s == {"xl"} for s in got) >= 10, "xl answers after the thaw")
    finally:
        if frozen:
            os.killpg(pools.big.pid, signal.SIGCONT)
        load.stop()
    assert load.failures == [], load.failures[:5]
    assert during and all(s == {"standard"} for s in during), Counter(frozenset(s) for s in during)
    events = router_events(pools.cpu)
    gained = {key: value - events_before.get(key, 0) for key, value in events.items()}
    assert gained.get(("remote_timeout", pools.big_address), 0) >= 1
    assert gained.get(("timeout", "xl"), 0) >= 1
    assert gained.get(("fallback", "xl"), 0) >= len(during)
    assert gained.get(("remote_resting", "big"), 0) >= 1


def test_deploy_refuses_bad_pool_flags(pools: Pools, pipeline, tmp_path: Path) -> None:
    spec = str(pools.repository.parent / "pools.yaml")
    out = str(tmp_path / "repo")
    unknown = run_cli(
        "deploy", "--spec", spec, "--out", out, "--pool-address", "gpu=127.0.0.1:1", check=False
    )
    assert unknown.returncode != 0
    assert "--pool-address gpu=...: not a pool the router calls (big)" in unknown.stderr
    bad = run_cli("deploy", "--spec", spec, "--out", out, "--pool-address", "big=nohost", check=False)
    assert bad.returncode != 0 and "--pool-address" in bad.stderr and "'big=nohost'" in bad.stderr
    single = str(pipeline.spec_path)
    no_pools = run_cli(
        "deploy", "--spec", single, "--out", out, "--pool-address", "big=127.0.0.1:1", check=False
    )
    assert no_pools.returncode != 0 and "--pool-address given, but the spec has no pools" in no_pools.stderr
    assert not (tmp_path / "repo").exists()
