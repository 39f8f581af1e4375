"""Load awareness: how long requests waited in the router's queue, and how far to step traffic down.

Triton queues every request of the ensemble in front of the router (its only queue) and hands it
over when a router instance is free; the router cannot see that wait per request. It reads it from
Triton's own statistics of the router model instead (``GET /v2/models/<router>/stats``, the
cumulative queue time and count), every :data:`POLL_S` seconds, as the mean wait of the requests
that started since the last read. With it:

- a request's latency budget is what is left of it after the wait (a budget the request gives, or
  ``routing.slo_ms`` for one that gives none), so the tier the router picks is one expected to answer
  within the rest;
- with ``routing.slo_ms``, a *ceiling* on the tier the policy may pick moves with the load: while
  requests wait longer than a share of the SLO (:data:`TARGET_WAIT_SHARE`) it steps down, half a
  tier per read at the target and more in proportion above it, sending more traffic to cheaper
  tiers, so that the queue drains before it reaches the admission timeout; while the router's
  instances are busy nearly all the time (:data:`BUSY_HIGH`, their own share of time spent on
  requests, which moves at once where the wait lags) it steps down a little, before a queue forms;
  and only once they have had room (:data:`BUSY_LOW`) with the wait well under the target for
  :data:`HOLD_READS` reads in a row does it step back up, a little per read. A fractional ceiling
  sends that share of the requests above it one tier up;
- with a queue timeout (``triton.queue_timeout_ms``), while the requests it starts have waited
  longer than the timeout, the router sheds them (UNAVAILABLE) at once instead of scoring them, so
  the queue drains at the speed of a refusal; Triton's own queue policy needs its dynamic batcher,
  which the router does without (see :func:`toolkit.repository.configs.router_config`).

Plain Python (``http.client``, ``json``): it runs inside the router model.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import urllib.parse
from collections.abc import Callable

from .policy import Decision

POLL_S = 0.05
"""How often the router reads its queue statistics."""

TARGET_WAIT_SHARE = 0.2
"""The queue wait, as a share of the SLO, above which the ceiling steps down."""

STEP_DOWN = 0.5
"""Tiers the ceiling falls per read while the wait is at the target; in proportion to the wait above it."""

STEP_UP = 0.025
"""Tiers the ceiling rises per read while the wait is under half the target and the router has room."""

BUSY_HIGH = 0.9
"""The router instance's busy share above which the ceiling steps down (by :data:`STEP_DOWN_BUSY`)."""

BUSY_LOW = 0.75
"""The busy share under which the ceiling may step up."""

STEP_DOWN_BUSY = 0.1
"""Tiers the ceiling falls per read while the router is busier than :data:`BUSY_HIGH`."""

HOLD_READS = 10
"""Reads in a row with room and a low wait before the ceiling steps up: the wait of the requests that
started lags the queue behind them, and a ceiling that rose at the first low read would climb back
into the overload it had just left."""

Reader = Callable[[], tuple[int, float] | None]
"""Returns the router model's cumulative (requests started, ms they waited in the queue), or None."""


class QueueWait:
    """The router model's recent queue wait and the tier ceiling it sets.

    Args:
        tiers: How many tiers there are (the ceiling starts at the most expensive, ``tiers - 1``).
        slo_ms: The p99 latency the router protects (0: no ceiling; the wait still shortens budgets).
        rng: Draws which requests go one tier above a fractional ceiling.
    """

    def __init__(self, tiers: int, slo_ms: float = 0.0, rng: random.Random | None = None) -> None:
        self.top = float(max(tiers - 1, 0))
        self.slo_ms = slo_ms
        self.level = self.top
        self.wait_ms = 0.0
        self.busy = 0.0
        self.reads = 0
        self._calm = 0
        self._last: tuple[int, float] | None = None
        self._rng = rng or random.Random(0)

    def observe(self, started: int, waited_ms: float, busy: float | None = None) -> None:
        """Take a read of the cumulative counters and move the ceiling.

        Args:
            started: Requests the router model has started, in all.
            waited_ms: Milliseconds they waited in its queue, in all.
            busy: The share of the time since the last read this router instance spent on requests
                (None: not known; the wait alone moves the ceiling).
        """
        if busy is not None:
            self.busy = busy
        last, self._last = self._last, (started, waited_ms)
        self.reads += 1
        if last is None or started < last[0] or waited_ms < last[1]:
            return
        count = started - last[0]
        self.wait_ms = (waited_ms - last[1]) / count if count else self.wait_ms / 2.0
        if self.slo_ms <= 0:
            return
        target = TARGET_WAIT_SHARE * self.slo_ms
        calm = self.wait_ms < target / 2.0 and (busy is None or busy < BUSY_LOW)
        self._calm = self._calm + 1 if calm else 0
        if self.wait_ms > target:
            self.level = max(0.0, self.level - STEP_DOWN * self.wait_ms / target)
        elif busy is not None and busy > BUSY_HIGH:
            self.level = max(0.0, self.level - STEP_DOWN_BUSY)
        elif self._calm >= HOLD_READS:
            self.level = min(self.top, self.level + STEP_UP)

    def drained(self) -> None:
        """The queue was seen empty (a router instance waited for its next request): no wait now.

        The next read sets the wait again; until then budgets count none and nothing is shed.
        """
        self.wait_ms = 0.0

    def over(self, limit_ms: float) -> bool:
        """Whether the requests started lately waited longer than ``limit_ms`` (0: never)."""
        return 0.0 < limit_ms < self.wait_ms

    def budget(self, requested_ms: float | None) -> float | None:
        """What is left of a request's budget after the wait (``requested_ms``, else the SLO).

        None when neither is given: the request has no budget.
        """
        budget = requested_ms or self.slo_ms or None
        if budget is None:
            return None
        return max(budget - self.wait_ms, 0.0)

    def ceiling(self) -> int:
        """The most expensive tier index this request may be served by."""
        whole = math.floor(self.level)
        return whole + (1 if self._rng.random() < self.level - whole else 0)

    def limit(self, decision: Decision, tiers: tuple[str, ...]) -> Decision:
        """``decision`` stepped down to the ceiling (a forced tier is left alone)."""
        if decision.reason == "forced" or self.level >= self.top:
            return decision
        index = min(decision.index, self.ceiling())
        if index == decision.index:
            return decision
        return Decision(tiers[index], index, f"load:{decision.reason}")


def stats_reader(url: str, model: str, timeout_s: float = 1.0) -> Reader:
    """Reads ``model``'s cumulative queue statistics from Triton's HTTP endpoint at ``url``.

    Each read opens its own connection and closes it: a server that stops waits (up to its exit
    timeout) for the HTTP connections still open, and a kept one would hold every shutdown that
    long. A read that fails returns None.

    Args:
        url: Triton's HTTP address, ``http://host:port``.
        model: The model whose queue is read (the router).
        timeout_s: Seconds a read may take.
    """
    parts = urllib.parse.urlsplit(url if "//" in url else f"http://{url}")
    path = f"/v2/models/{urllib.parse.quote(model)}/stats"
    host, port = parts.hostname or "127.0.0.1", parts.port or 8000

    def read() -> tuple[int, float] | None:
        connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
        try:
            connection.request("GET", path, headers={"Connection": "close"})
            response = connection.getresponse()
            body = response.read()
            if response.status != 200:
                return None
            stats = json.loads(body)
        except (OSError, http.client.HTTPException, ValueError):
            return None
        finally:
            connection.close()
        started, waited_ns = 0, 0
        for version in stats.get("model_stats", []):
            queue = version.get("inference_stats", {}).get("queue", {})
            started += int(queue.get("count", 0))
            waited_ns += int(queue.get("ns", 0))
        return started, waited_ns / 1e6

    return read
