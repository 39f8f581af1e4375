"""Load awareness: the queue wait read from Triton's statistics, the budget it leaves, the tier ceiling."""

from __future__ import annotations

import json
import random
import socket
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from helpers import http_endpoint

from toolkit.router import Decision, LatencyTracker, QueueWait, RouterConfig, RoutingEngine, stats_reader
from toolkit.router.budget import MIN_SAMPLES
from toolkit.router.engine import complete
from toolkit.router.load import HOLD_READS, STEP_DOWN, STEP_DOWN_BUSY, STEP_UP, TARGET_WAIT_SHARE
from toolkit.router.policy import RequestContext

TIERS = ("small", "medium", "large")
WISH = Decision("large", 2, "static")


class Feed:
    """Triton's cumulative queue counters, fed to a QueueWait read by read."""

    def __init__(self, queue: QueueWait) -> None:
        self.queue, self.started, self.waited_ms = queue, 0, 0.0
        queue.observe(0, 0.0)

    def reads(self, count: int, wait_ms: float, every: int = 10) -> None:
        """``count`` reads in each of which ``every`` requests started, each having waited ``wait_ms``."""
        for _ in range(count):
            self.started += every
            self.waited_ms += every * wait_ms
            self.queue.observe(self.started, self.waited_ms)


def test_the_wait_is_the_mean_of_the_requests_started_since_the_last_read() -> None:
    queue = QueueWait(3, slo_ms=50.0)
    queue.observe(100, 500.0)  # the first read only sets the baseline
    assert queue.wait_ms == 0.0 and queue.level == 2.0
    queue.observe(110, 500.0 + 10 * 7.0)
    assert queue.wait_ms == pytest.approx(7.0)
    queue.observe(110, 570.0)  # nobody started: the wait halves rather than stays
    assert queue.wait_ms == pytest.approx(3.5)
    queue.observe(5, 10.0)  # the counters went back (a reloaded model): a new baseline
    assert queue.wait_ms == pytest.approx(3.5)


def test_the_ceiling_steps_down_while_the_wait_exceeds_its_target_and_back_up_once_it_falls() -> None:
    slo = 50.0
    target = TARGET_WAIT_SHARE * slo
    queue = QueueWait(3, slo_ms=slo)
    feed = Feed(queue)
    feed.reads(1, wait_ms=target * 1.2)
    assert queue.level == pytest.approx(2.0 - 1.2 * STEP_DOWN)
    feed.reads(1, wait_ms=target * 1.6)  # further above the target: a longer step
    assert queue.level == pytest.approx(2.0 - 2.8 * STEP_DOWN)
    feed.reads(10, wait_ms=30.0)
    assert queue.level == 0.0  # never below the cheapest tier
    feed.reads(3, wait_ms=target * 0.75)
    assert queue.level == 0.0  # between half the target and the target: it holds
    feed.reads(HOLD_READS - 1, wait_ms=0.5)
    assert queue.level == 0.0  # not at the first low reads
    feed.reads(4, wait_ms=0.5)
    assert queue.level == pytest.approx(4 * STEP_UP)
    feed.reads(1, wait_ms=target * 0.75)
    feed.reads(HOLD_READS - 1, wait_ms=0.5)
    assert queue.level == pytest.approx(4 * STEP_UP)  # one read in between starts the hold again
    feed.reads(200, wait_ms=0.5)
    assert queue.level == 2.0  # never above the most expensive tier


def test_a_fractional_ceiling_sends_that_share_of_the_requests_one_tier_up() -> None:
    queue = QueueWait(3, slo_ms=50.0, rng=random.Random(7))
    queue.level = 0.25
    served = [queue.limit(WISH, TIERS).index for _ in range(4000)]
    assert set(served) == {0, 1}
    assert np.mean(served) == pytest.approx(0.25, abs=0.03)
    assert queue.limit(Decision("large", 2, "forced"), TIERS).index == 2  # a forced tier stays
    stepped = next(d for d in (queue.limit(WISH, TIERS) for _ in range(50)) if d.index < 2)
    assert stepped.reason == "load:static"


def test_without_an_slo_there_is_no_ceiling_but_budgets_still_lose_the_wait() -> None:
    queue = QueueWait(3)
    Feed(queue).reads(20, wait_ms=40.0)
    assert queue.level == 2.0 and queue.limit(WISH, TIERS) == WISH
    assert queue.budget(None) is None
    assert queue.budget(50.0) == pytest.approx(10.0)
    assert queue.budget(30.0) == 0.0
    assert QueueWait(3, slo_ms=50.0).budget(None) == 50.0


class _Backend:
    async def score(self, tier: str, tensors: dict) -> np.ndarray:
        return np.zeros(tensors["ad_dense"].shape[0], dtype=np.float32)

    async def gains(self, tensors: dict, cheapest: np.ndarray | None) -> tuple[float, ...]:
        return ()


def _route(engine: RoutingEngine, n: int = 16) -> Decision:
    tensors = {"ad_dense": np.zeros((n, 2), dtype=np.float32)}
    context = RequestContext(features={"num_candidates": float(n), "history_length": 0.0})
    return complete(engine.route(tensors, context)).decision


def test_the_engine_routes_under_the_ceiling_and_within_the_budget_left_after_the_wait() -> None:
    config = RouterConfig(tiers=TIERS, policy="static", default_tier="large", slo_ms=50.0)
    tracker = LatencyTracker(TIERS)
    for _ in range(MIN_SAMPLES):
        for tier, ms in zip(TIERS, (1.0, 5.0, 40.0), strict=True):
            tracker.observe(tier, 16, ms)
    queue = QueueWait(len(TIERS), config.slo_ms)
    engine = RoutingEngine(config, _Backend(), tracker, queue=queue)

    assert _route(engine).tier == "large"  # no wait: the SLO leaves room for large's 40 ms
    feed = Feed(queue)
    feed.reads(1, wait_ms=8.0)  # 42 ms left; 8 ms is under the 10 ms target: the ceiling stays
    assert queue.level == 2.0 and _route(engine).tier == "large"
    feed.reads(1, wait_ms=12.0)  # 38 ms left: large's 40 ms does not fit, medium's 5 ms does
    assert queue.level == pytest.approx(2.0 - 1.2 * STEP_DOWN)  # and the ceiling allows medium
    assert {_route(engine).tier for _ in range(20)} == {"medium"}
    feed.reads(3, wait_ms=35.0)  # far above the target: the ceiling is at the cheapest
    assert queue.level == 0.0
    assert {_route(engine).tier for _ in range(20)} == {"small"}
    assert engine.counts["reason:load"] > 0


class _Stats:
    """What the fake stats endpoint answers, and the paths it was asked for."""

    def __init__(self) -> None:
        self.status, self.body, self.paths = 200, b"", []

    def __call__(self, path: str) -> tuple[int, bytes]:
        self.paths.append(path)
        return self.status, self.body


@pytest.fixture
def stats_server() -> Iterator[tuple[str, _Stats]]:
    stats = _Stats()
    with http_endpoint(stats) as url:
        yield url, stats


def test_stats_reader_sums_the_queue_of_every_version_of_the_model(stats_server) -> None:
    url, handler = stats_server
    handler.body = json.dumps(
        {
            "model_stats": [
                {"name": "r", "version": "1", "inference_stats": {"queue": {"count": 3, "ns": 6_000_000}}},
                {"name": "r", "version": "2", "inference_stats": {"queue": {"count": 1, "ns": 500_000}}},
            ]
        }
    ).encode()
    read = stats_reader(url, "ads router")

    assert read() == (4, pytest.approx(6.5))
    assert read() == (4, pytest.approx(6.5))  # the kept connection answers again
    assert handler.paths == ["/v2/models/ads%20router/stats"] * 2


def test_stats_reader_answers_none_for_an_error_a_bad_body_or_no_server(stats_server) -> None:
    url, handler = stats_server
    handler.body, handler.status = b"{}", 400
    assert stats_reader(url, "r")() is None
    handler.body, handler.status = b"not json", 200
    assert stats_reader(url, "r")() is None
    assert stats_reader("http://127.0.0.1:9", "r", timeout_s=0.5)() is None


def test_a_busy_router_steps_down_before_a_queue_forms_and_steps_up_only_with_room() -> None:
    queue = QueueWait(3, slo_ms=50.0)
    queue.observe(0, 0.0, busy=0.5)
    queue.observe(10, 10.0, busy=0.95)  # 1 ms waited: no queue yet, but the router is nearly full
    assert queue.level == pytest.approx(2.0 - STEP_DOWN_BUSY) and queue.busy == 0.95
    queue.observe(20, 20.0, busy=0.8)  # neither full nor with room: it holds
    assert queue.level == pytest.approx(2.0 - STEP_DOWN_BUSY)
    for read in range(HOLD_READS):  # room and no wait, read after read: up
        queue.observe(30 + 10 * read, 30.0 + 10 * read, busy=0.5)
    assert queue.level == pytest.approx(2.0 - STEP_DOWN_BUSY + STEP_UP)
    started, waited = 30 + 10 * HOLD_READS, 30.0 + 10 * HOLD_READS
    queue.observe(started, waited - 10.0 + 10 * 20.0, busy=0.5)  # a long wait wins over the room
    assert queue.wait_ms == pytest.approx(20.0)  # twice the target: twice the step
    assert queue.level == pytest.approx(2.0 - STEP_DOWN_BUSY + STEP_UP - 2 * STEP_DOWN)


def test_the_wait_is_over_a_queue_timeout_only_when_one_is_set_and_passed() -> None:
    queue = QueueWait(3)
    queue.observe(0, 0.0)
    queue.observe(10, 400.0)

    assert queue.wait_ms == pytest.approx(40.0)
    assert queue.over(30.0) and not queue.over(40.0) and not queue.over(100.0)
    assert not queue.over(0.0)  # no timeout: never over


def test_a_drained_queue_has_no_wait_until_the_next_read_says_otherwise() -> None:
    queue = QueueWait(3, slo_ms=100.0)
    queue.observe(0, 0.0)
    queue.observe(10, 400.0)

    queue.drained()

    assert queue.wait_ms == 0.0 and not queue.over(30.0)
    assert queue.budget(None) == 100.0
    queue.observe(20, 800.0)
    assert queue.wait_ms == pytest.approx(40.0)


def test_stats_reader_closes_its_connection_after_each_read() -> None:
    """A server that stops waits for open HTTP connections; the reader must not keep one."""
    body = json.dumps({"model_stats": [{"inference_stats": {"queue": {"count": 3, "ns": 6_000_000}}}]})
    closed = threading.Event()
    with socket.create_server(("127.0.0.1", 0)) as listener:
        listener.settimeout(5.0)

        def serve() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.settimeout(5.0)
                request = b""
                while b"\r\n\r\n" not in request:
                    request += connection.recv(4096)
                connection.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n{body}".encode()
                )
                if connection.recv(4096) == b"":  # the client closed its end
                    closed.set()

        server = threading.Thread(target=serve, daemon=True)
        server.start()
        read = stats_reader(f"http://127.0.0.1:{listener.getsockname()[1]}", "router")

        assert read() == (3, 6.0)
        server.join(timeout=5.0)
        assert closed.is_set()
