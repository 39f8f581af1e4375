"""The routing engine: one request from raw tensors to scores, the same online and offline.

It validates the request and its parameters, asks the learned policy's gate (after the cheapest
tier, in cheapest-first mode), decides, caps the decision by the latency budget, scores with the
chosen tier, steps down to cheaper tiers when one fails or is too slow, and runs a cascade's second
call. What it scores with is a :class:`TierBackend`: the Triton router's runs tiers in its own
process, through BLS or over gRPC; ``toolkit evaluate``'s runs the exported ONNX files. Plain
Python and numpy, like the rest of this package.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Coroutine, MutableMapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np

from .budget import LatencyTracker, cap
from .load import QueueWait
from .policy import (
    Decision,
    RequestContext,
    RouterConfig,
    cascade_scores,
    decide,
    parse_parameters,
    request_features,
    top_candidates,
)
from .validate import InputSchema, validate_request

REQUEST_INPUTS = ("user_dense", "user_sparse", "user_history", "ad_dense", "ad_sparse")
"""The raw request tensors, in the order every tier takes them."""

CANDIDATE_INPUTS = ("ad_dense", "ad_sparse")
"""Request tensors with one row per candidate."""

Tensors = dict[str, np.ndarray]
T = TypeVar("T")


def complete(coroutine: Coroutine[Any, Any, T]) -> T:
    """The result of a coroutine that never waits, run without an event loop.

    The engine's coroutines only wait when a backend does (BLS or remote calls); with every model in
    the caller's process, or offline, they run straight through, and an event loop would only add
    its cost.

    Raises:
        RuntimeError: The coroutine waited on something after all.
    """
    try:
        coroutine.send(None)
    except StopIteration as done:
        return done.value
    coroutine.close()
    raise RuntimeError("the routing engine waited on a call although every model it calls runs here")


class TierError(Exception):
    """A tier could not score a request (failed, not available, or past its deadline).

    Attributes:
        tier: The tier.
        timed_out: Whether it missed the deadline (counted as ``timeout:<tier>``).
    """

    def __init__(self, tier: str, message: str, timed_out: bool = False) -> None:
        super().__init__(message)
        self.tier = tier
        self.timed_out = timed_out


class NoTierError(Exception):
    """No tier could answer: the wished one and every cheaper one failed."""


class TierBackend(Protocol):
    """What the engine scores with."""

    async def score(self, tier: str, tensors: Tensors) -> np.ndarray:
        """Scores [N] of ``tier`` for the raw request ``tensors``; :class:`TierError` on failure."""
        ...

    async def gains(self, tensors: Tensors, cheapest: np.ndarray | None) -> tuple[float, ...]:
        """The gate's gains [T - 1] for the raw request (cheapest-first: with the cheapest's scores)."""
        ...


@dataclass(frozen=True)
class Routed:
    """What the engine answered for one request.

    Attributes:
        decision: The decision after the budget cap.
        scores: FP32 [N].
        tiers: INT32 [N]: index of the tier that scored each candidate.
        served: Index of the tier that scored the request (after any step down).
    """

    decision: Decision
    scores: np.ndarray
    tiers: np.ndarray
    served: int


class RoutingEngine:
    """Routes requests with ``config`` and scores them with ``backend``.

    Args:
        config: The router's configuration (``router.json``).
        backend: What scores tiers and runs the gate.
        latency: Recent tier-call latencies for budgets and slow-tier skips; None (offline): neither.
        counts: Where events are counted (``tier:<t>``, ``reason:<r>``, ``error:<t>``,
            ``fallback:<t>``, ``timeout:<t>``, ``slow:<t>``, ``rescored:<t>``, ``error:gate``,
            ``folded_ids``, ``truncated_history``); a fresh Counter if None.
        queue: The router's queue wait (online): budgets count it, and with ``slo_ms`` its tier
            ceiling caps the policy's choice; None (offline): neither.
    """

    def __init__(
        self,
        config: RouterConfig,
        backend: TierBackend,
        latency: LatencyTracker | None = None,
        counts: MutableMapping[str, int] | None = None,
        queue: QueueWait | None = None,
    ) -> None:
        self.config = config
        self.backend = backend
        self.latency = latency
        self.queue = queue
        self.counts: MutableMapping[str, int] = Counter() if counts is None else counts
        self.schema = InputSchema.from_dict(config.inputs) if config.inputs else None
        self.history_length = int(config.inputs.get("history_length", 0)) or None

    def parse(self, raw: Tensors, parameters: dict[str, Any]) -> RequestContext:
        """Validate the raw request and its parameters; the context the policy decides on.

        Raises:
            RoutingError: The request or a parameter is refused (the message names it).
        """
        if self.schema is not None:
            found = validate_request(raw, self.schema)
            if found.folded_ids:
                self.counts["folded_ids"] += found.folded_ids
            if found.truncated_history:
                self.counts["truncated_history"] += 1
        parsed = parse_parameters(parameters, self.config)
        features = request_features(raw["user_history"], int(raw["ad_dense"].shape[0]), self.history_length)
        return RequestContext(
            features=features,
            forced_tier=parsed.tier,
            latency_budget_ms=parsed.latency_budget_ms,
            value=parsed.value,
        )

    async def decide(
        self, tensors: Tensors, context: RequestContext, cheapest: np.ndarray | None = None
    ) -> Decision:
        """The policy's decision (with the gate's gains when learned), before the budget cap.

        Args:
            tensors: The raw request.
            context: From :meth:`parse`.
            cheapest: In cheapest-first mode, the cheapest tier's scores if already known.
        """
        return await self._decide(tensors, context, cheapest, fetch_cheapest=True)

    async def _decide(
        self, tensors: Tensors, context: RequestContext, cheapest: np.ndarray | None, fetch_cheapest: bool
    ) -> Decision:
        if self.config.policy == "learned" and context.forced_tier is None:
            gains = await self._gains(tensors, cheapest, fetch_cheapest)
            context = dataclasses.replace(context, gains=gains)
        return decide(self.config, context)

    async def route(self, tensors: Tensors, context: RequestContext) -> Routed:
        """Decide, cap by the load and the budget, score (stepping down when a tier fails), cascade.

        The budget is the request's ``latency_budget_ms`` (else ``default_budget_ms``, else
        ``slo_ms``) less the time requests now wait in the router's queue.

        Raises:
            NoTierError: Not even the cheapest tier could answer.
        """
        config = self.config
        cheapest = None
        if config.policy == "learned" and context.forced_tier is None and config.cheapest_first:
            cheapest = await self._cheapest(tensors)
        decision = await self._decide(tensors, context, cheapest, fetch_cheapest=False)
        n = int(context.features["num_candidates"])
        if self.queue is not None:
            decision = self.queue.limit(decision, config.tiers)
        if self.latency is not None:
            budget = context.latency_budget_ms or (config.default_budget_ms or None)
            if self.queue is not None:
                budget = self.queue.budget(budget)
            decision = cap(config, decision, budget, n, self.latency)
        scores, served = await self._score_or_fall_back(decision.index, tensors, n, cheapest)
        tiers = np.full(scores.shape, served, dtype=np.int32)
        if decision.rescore_tier is not None and served == decision.index:
            top = top_candidates(scores, decision.top_k)
            try:
                better = await self._rescore(decision.rescore_tier, tensors, top) if len(top) else None
            except TierError as exc:
                self.counts[f"error:{exc.tier}"] += 1
                self.counts[f"fallback:{exc.tier}"] += 1
            else:
                scores, tiers = cascade_scores(scores, decision, lambda _: better)
                self.counts[f"rescored:{decision.rescore_tier}"] += int(
                    (tiers == decision.rescore_index).sum()
                )
        self.counts[f"tier:{config.tiers[served]}"] += 1
        self.counts[f"reason:{decision.reason.split(':')[0]}"] += 1
        return Routed(decision, scores, tiers, served)

    async def score(self, tier: str, tensors: Tensors) -> np.ndarray:
        """``tier``'s scores, timed into the latency tracker; :class:`TierError` when it fails."""
        n = int(tensors["ad_dense"].shape[0])
        started = time.perf_counter()
        try:
            scores = await self.backend.score(tier, tensors)
        except TierError as exc:
            if exc.timed_out:
                self.counts[f"timeout:{tier}"] += 1
                self._observe(tier, n, started)
            raise
        except Exception as exc:
            raise TierError(tier, f"tier {tier!r} failed: {type(exc).__name__}: {exc}") from None
        self._observe(tier, n, started)
        return np.asarray(scores, dtype=np.float32)

    def _observe(self, tier: str, n: int, started: float) -> None:
        if self.latency is not None:
            self.latency.observe(tier, n, (time.perf_counter() - started) * 1000.0)

    async def _score_or_fall_back(
        self, index: int, tensors: Tensors, n: int, cheapest: np.ndarray | None
    ) -> tuple[np.ndarray, int]:
        """Scores of tier ``index``, else of the next cheaper tier that answers, and who answered.

        A tier that fails counts as ``error:<tier>``; one whose recent calls took longer than
        ``tier_timeout_ms`` is not called (``slow:<tier>``); each step down counts as
        ``fallback:<tier>``. The cheapest tier's scores, when already known (``cheapest``), are not
        asked for again.
        """
        failures = []
        limit = self.config.tier_timeout_ms
        for candidate in range(index, -1, -1):
            tier = self.config.tiers[candidate]
            recent = (
                self.latency.recent(tier, n)
                if self.latency is not None and limit > 0 and candidate > 0
                else None
            )
            if recent is not None and recent > limit:
                self.counts[f"slow:{tier}"] += 1
                self.counts[f"fallback:{tier}"] += 1
                failures.append(
                    f"tier {tier!r} is too slow: its recent calls take {recent:.0f} ms > {limit:g} ms"
                )
                continue
            if candidate == 0 and cheapest is not None:
                return cheapest, 0
            try:
                return await self.score(tier, tensors), candidate
            except TierError as exc:
                self.counts[f"error:{tier}"] += 1
                if candidate > 0:
                    self.counts[f"fallback:{tier}"] += 1
                failures.append(str(exc))
        raise NoTierError("no tier could answer this request: " + "; ".join(failures))

    async def _cheapest(self, tensors: Tensors) -> np.ndarray | None:
        tier = self.config.tiers[0]
        try:
            return await self.score(tier, tensors)
        except TierError:
            self.counts[f"error:{tier}"] += 1
            return None

    async def _gains(
        self, tensors: Tensors, cheapest: np.ndarray | None, fetch_cheapest: bool
    ) -> tuple[float, ...] | None:
        """The gate's gains; None (the default tier) when the gate or the cheapest tier failed."""
        if self.config.cheapest_first and cheapest is None:
            cheapest = await self._cheapest(tensors) if fetch_cheapest else None
            if cheapest is None:
                self.counts["error:gate"] += 1
                return None
        try:
            gains = await self.backend.gains(tensors, cheapest if self.config.cheapest_first else None)
        except Exception:
            self.counts["error:gate"] += 1
            return None
        return tuple(float(g) for g in np.asarray(gains).reshape(-1))

    async def _rescore(self, tier: str, tensors: Tensors, top: np.ndarray) -> np.ndarray:
        subset = {
            name: np.ascontiguousarray(value[top]) if name in CANDIDATE_INPUTS else value
            for name, value in tensors.items()
        }
        return await self.score(tier, subset)
