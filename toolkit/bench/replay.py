"""Replay generated requests against a running ensemble over gRPC and keep every answer."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from toolkit.client import AsyncRankingClient, ClientError
from toolkit.data.requests import RequestSet


@dataclass
class ReplayResult:
    """Answers to a replayed request set, in request order.

    Attributes:
        scores: Score per candidate (NaN where the request failed), FP32 [T].
        tiers: Tier index per candidate (-1 where the request failed), INT32 [T].
        latency_ms: Client-side latency per request [R].
        errors: Failed requests by gRPC status.
        wall_s: Wall-clock seconds of the whole replay.
    """

    scores: np.ndarray
    tiers: np.ndarray
    latency_ms: np.ndarray
    errors: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0

    @property
    def failed(self) -> int:
        """Number of failed requests."""
        return sum(self.errors.values())

    def request_tier(self, offsets: np.ndarray) -> np.ndarray:
        """The tier of each request's first candidate (the tier that served it), INT32 [R]."""
        return self.tiers[offsets[:-1]]


async def _replay(
    url: str,
    model: str,
    requests: RequestSet,
    tier: str | None,
    concurrency: int,
    timeout_s: float,
    on_done: Callable[[], None] | None,
) -> ReplayResult:
    scores = np.full(requests.num_candidates, np.nan, dtype=np.float32)
    tiers = np.full(requests.num_candidates, -1, dtype=np.int32)
    latency = np.full(requests.num_requests, np.nan)
    errors: Counter[str] = Counter()
    queue: asyncio.Queue[int] = asyncio.Queue()
    for r in range(requests.num_requests):
        queue.put_nowait(r)
    async with AsyncRankingClient(url, model, timeout_s=timeout_s) as client:

        async def worker() -> None:
            while not queue.empty():
                r = queue.get_nowait()
                lo, hi = int(requests.offsets[r]), int(requests.offsets[r + 1])
                started = time.perf_counter()
                try:
                    ranking = await client.rank(tier=tier, **requests.request(r))
                except ClientError as exc:
                    errors[exc.status or type(exc).__name__] += 1
                else:
                    latency[r] = (time.perf_counter() - started) * 1000.0
                    scores[lo:hi] = ranking.scores
                    tiers[lo:hi] = ranking.tiers
                if on_done is not None:
                    on_done()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(max(1, concurrency))))
        wall = time.perf_counter() - started
    return ReplayResult(scores, tiers, latency, errors, wall)


def replay(
    url: str,
    model: str,
    requests: RequestSet,
    tier: str | None = None,
    concurrency: int = 4,
    timeout_s: float = 30.0,
    on_done: Callable[[], None] | None = None,
) -> ReplayResult:
    """Send every request of ``requests`` to ``model`` at ``url`` with ``concurrency`` in flight.

    Args:
        url: gRPC address.
        model: Ensemble name.
        requests: Requests to send (labels are kept client-side for scoring quality).
        tier: Force this tier (request parameter ``tier``); routed when ``None``.
        concurrency: Requests in flight at once.
        timeout_s: Per-request deadline.
        on_done: Called after each request (progress).
    """
    return asyncio.run(_replay(url, model, requests, tier, concurrency, timeout_s, on_done))
