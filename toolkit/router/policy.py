"""Routing policies: which tier serves a request.

Plain Python and numpy only, with no imports from the rest of the toolkit: ``toolkit deploy`` copies
this package into the router model of the Triton repository, and ``toolkit evaluate`` runs the very
same code offline, so online and offline decisions cannot drift.
"""

from __future__ import annotations

import json
import math
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .learned import choose_tier
from .remote import RemoteTier

_OPS = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}

KNOWN_PARAMETERS = ("tier", "latency_budget_ms", "value")
"""Request parameters the router reads."""

POLICIES = ("static", "rules", "cascade", "learned")
"""Routing policies the router runs."""

LOCAL_TIERS = ("inprocess", "bls")
"""How the router calls the tiers served beside it on the CPU (see ``RouterConfig.local_tiers``)."""

REQUEST_FEATURES = ("history_length", "num_candidates")
"""Request-level features rules may test (see :func:`request_features`)."""


class RoutingError(ValueError):
    """A request the router refuses (bad parameter or input); the message names the culprit."""


@dataclass(frozen=True)
class RuleConfig:
    """Route to ``tier`` when ``feature op value`` holds."""

    feature: str
    op: str
    value: float
    tier: str

    def matches(self, features: dict[str, float]) -> bool:
        """Whether the rule holds for a request's features."""
        return bool(_OPS[self.op](features[self.feature], self.value))


@dataclass(frozen=True)
class RouterConfig:
    """Everything the router needs, written by ``toolkit deploy`` as ``router.json``.

    Attributes:
        tiers: Tier model names in order of rising cost; a tier's index here is what the ``tier``
            output carries.
        policy: ``static`` or ``rules``.
        default_tier: Tier when no rule matches (the only tier of ``static``).
        rules: Ordered rules, first match wins.
        max_candidates: Largest N accepted.
        cascade_tier: With ``cascade``: the bigger tier that re-scores the top candidates (the
            default tier scores all of them first).
        cascade_top_k: With ``cascade``: how many of the default tier's top candidates it re-scores.
        default_budget_ms: Latency budget of requests that give none (0: no budget).
        budget_percentile: Percentile of recent calls a tier's latency estimate uses.
        budget_window: Recent calls kept per tier and candidate-count bucket.
        budget_max_age_s: Seconds after which a timed call no longer counts.
        latency_prior_ms: Per tier, export's measured latency by candidate count: the estimate
            until the router has timed enough calls of its own.
        gate_model: With ``learned``: the gate model the router calls for each request's gains.
        cheapest_first: With ``learned``: the cheapest tier scores every request before the gate,
            which takes its scores; a request the gate keeps there is answered with them.
        learned_lambda: With ``learned``: the price of one MFLOP in log-loss units.
        tier_costs: With ``learned``: per tier, ``[a, b]`` with MFLOP = a + b * N.
        inputs: What a valid raw request looks like (:class:`~.validate.InputSchema` as a dict);
            the router model needs it (policy code alone, as offline, does not).
        preprocess_model: The preprocess model, run for the tiers in ``preprocessed_tiers`` (every
            other tier and the gate have it fused in front and take the raw request).
        preprocess_outputs: Its output name per request tensor.
        preprocessed_tiers: Tiers that take preprocessed tensors (TensorRT plans and other GPU
            tiers, whose graphs are built from the tier alone).
        local_tiers: How the router calls tiers (and the gate) served beside it on the CPU:
            ``inprocess`` (an ONNX Runtime session on the served file, in the router's own
            process) or ``bls`` (a BLS call to the tier model).
        local_threads: ONNX Runtime intra-op threads of each in-process session.
        tier_timeout_ms: Deadline of each tier call, after which the next cheaper tier answers; a
            tier whose recent calls (the budget's percentile) take longer is skipped until its slow
            calls age out; 0: no deadline.
        remote_tiers: Tiers served by another pool, called over gRPC instead of BLS: per tier its
            ``pool``, the ``addresses`` of the pool's servers, the call's ``timeout_ms`` and how long
            a failed address is left alone, ``retry_after_ms`` (see :class:`~.remote.RemoteTier`).
        slo_ms: The p99 latency the router protects (0: none): the budget of requests that give
            none, less the queue wait, and the target its load ceiling keeps the queue wait under
            (see :mod:`~.load`).
        stats_url: Triton's HTTP address, where the router reads its queue statistics (the
            ``TOOLKIT_TRITON_HTTP_URL`` environment variable of the server, when set, wins).
        queue_timeout_ms: The router sheds requests (UNAVAILABLE) while those it starts have waited
            longer than this in its queue (0: never; see :mod:`~.load`).
    """

    tiers: tuple[str, ...]
    policy: str
    default_tier: str
    rules: tuple[RuleConfig, ...] = field(default_factory=tuple)
    max_candidates: int = 1024
    cascade_tier: str = ""
    cascade_top_k: int = 0
    default_budget_ms: float = 0.0
    budget_percentile: float = 90.0
    budget_window: int = 64
    budget_max_age_s: float = 1.0
    latency_prior_ms: dict[str, dict[str, float]] = field(default_factory=dict)
    gate_model: str = ""
    cheapest_first: bool = False
    learned_lambda: float = 0.0
    tier_costs: dict[str, list[float]] = field(default_factory=dict)
    inputs: dict[str, Any] = field(default_factory=dict)
    preprocess_model: str = ""
    preprocess_outputs: dict[str, str] = field(default_factory=dict)
    preprocessed_tiers: tuple[str, ...] = ()
    local_tiers: str = "bls"
    local_threads: int = 1
    tier_timeout_ms: float = 0.0
    remote_tiers: dict[str, dict[str, Any]] = field(default_factory=dict)
    slo_ms: float = 0.0
    stats_url: str = ""
    queue_timeout_ms: float = 0.0

    def __post_init__(self) -> None:
        if self.policy not in POLICIES:
            raise ValueError(f"unknown routing policy {self.policy!r}")
        if self.policy == "cascade":
            if self.cascade_tier not in self.tiers or self.cascade_tier == self.default_tier:
                raise ValueError(f"cascade tier {self.cascade_tier!r} must be a tier other than the default")
            if self.cascade_top_k < 1:
                raise ValueError(f"cascade_top_k must be positive, got {self.cascade_top_k}")
        if self.default_tier not in self.tiers:
            raise ValueError(f"default tier {self.default_tier!r} is not one of {self.tiers}")
        for rule in self.rules:
            if rule.tier not in self.tiers or rule.op not in _OPS or rule.feature not in REQUEST_FEATURES:
                raise ValueError(f"bad rule {rule}: tier, op or feature unknown")
        if self.max_candidates < 1:
            raise ValueError(f"max_candidates must be positive, got {self.max_candidates}")
        if self.policy == "learned" and (not self.gate_model or set(self.tier_costs) != set(self.tiers)):
            raise ValueError("the learned policy needs gate_model and tier_costs for every tier")
        if (
            self.default_budget_ms < 0
            or not 0 < self.budget_percentile <= 100
            or self.budget_window < 1
            or not self.budget_max_age_s > 0
            or not self.slo_ms >= 0
            or not self.queue_timeout_ms >= 0
        ):
            raise ValueError(
                "default_budget_ms must be >= 0, budget_percentile in (0, 100], budget_window >= 1, "
                "budget_max_age_s > 0, slo_ms >= 0, queue_timeout_ms >= 0"
            )
        if self.local_tiers not in LOCAL_TIERS:
            raise ValueError(f"local_tiers must be one of {', '.join(LOCAL_TIERS)}, got {self.local_tiers!r}")
        if self.local_threads < 1:
            raise ValueError(f"local_threads must be positive, got {self.local_threads}")
        unknown = sorted(set(self.preprocessed_tiers) - set(self.tiers))
        if unknown:
            raise ValueError(f"preprocessed tier {unknown[0]!r} is not one of {self.tiers}")
        for tier, remote in self.remote_tiers.items():
            if tier not in self.tiers or tier == self.tiers[0]:
                raise ValueError(f"remote tier {tier!r} must be one of the tiers other than the cheapest")
            RemoteTier.from_dict(tier, remote)

    def to_json(self) -> str:
        """Serialise for ``router.json``."""
        data = {
            "tiers": list(self.tiers),
            "policy": self.policy,
            "default_tier": self.default_tier,
            "rules": [vars(r) for r in self.rules],
            "max_candidates": self.max_candidates,
            "cascade_tier": self.cascade_tier,
            "cascade_top_k": self.cascade_top_k,
            "default_budget_ms": self.default_budget_ms,
            "budget_percentile": self.budget_percentile,
            "budget_window": self.budget_window,
            "budget_max_age_s": self.budget_max_age_s,
            "latency_prior_ms": self.latency_prior_ms,
            "gate_model": self.gate_model,
            "cheapest_first": self.cheapest_first,
            "learned_lambda": self.learned_lambda,
            "tier_costs": self.tier_costs,
            "inputs": self.inputs,
            "preprocess_model": self.preprocess_model,
            "preprocess_outputs": self.preprocess_outputs,
            "preprocessed_tiers": list(self.preprocessed_tiers),
            "local_tiers": self.local_tiers,
            "local_threads": self.local_threads,
            "tier_timeout_ms": self.tier_timeout_ms,
            "remote_tiers": self.remote_tiers,
            "slo_ms": self.slo_ms,
            "stats_url": self.stats_url,
            "queue_timeout_ms": self.queue_timeout_ms,
        }
        return json.dumps(data, indent=2) + "\n"

    @classmethod
    def from_json(cls, text: str) -> RouterConfig:
        """Parse ``router.json``."""
        data = json.loads(text)
        rules = tuple(RuleConfig(**r) for r in data.pop("rules", []))
        preprocessed = tuple(data.pop("preprocessed_tiers", ()))
        return cls(tiers=tuple(data.pop("tiers")), rules=rules, preprocessed_tiers=preprocessed, **data)


@dataclass(frozen=True)
class Decision:
    """The tier chosen for a request and why.

    Attributes:
        tier: Tier model name (with ``cascade``, the tier that scores every candidate first).
        index: Its position in ``RouterConfig.tiers``.
        reason: ``forced`` (request parameter), ``rule:<i>``, ``default``, ``static`` or ``cascade``.
        rescore_tier: With ``cascade``: the tier that re-scores the top candidates, else None.
        rescore_index: Its position in ``RouterConfig.tiers`` (-1 without cascade).
        top_k: How many top candidates it re-scores (0 without cascade).
    """

    tier: str
    index: int
    reason: str
    rescore_tier: str | None = None
    rescore_index: int = -1
    top_k: int = 0


@dataclass(frozen=True)
class RequestContext:
    """What a policy may look at: request-level features and the parsed request parameters.

    Attributes:
        features: Request-level features (see :func:`request_features`).
        forced_tier: The request parameter ``tier``.
        latency_budget_ms: The request parameter ``latency_budget_ms``.
        gains: With ``learned``: the gate's predicted gain per candidate of each bigger tier.
        value: The request parameter ``value``: what the request is worth (1 by default); the
            learned policy weighs the predicted gain by it.
    """

    features: dict[str, float]
    forced_tier: str | None = None
    latency_budget_ms: float | None = None
    gains: tuple[float, ...] | None = None
    value: float = 1.0


def request_features(
    user_history: np.ndarray, num_candidates: int, history_length: int | None = None
) -> dict[str, float]:
    """Request-level features of a request, raw or preprocessed.

    ``history_length`` counts the ids the tiers see: those > 0 (0 and negative ids are missing)
    among the newest ``history_length`` (the preprocess step keeps no more).

    Args:
        user_history: History ids [1, H], oldest first: raw, or preprocessed (0 = padding).
        num_candidates: N.
        history_length: L, the history the tiers take; None: all of ``user_history``.
    """
    history = np.asarray(user_history)
    if history_length is not None:
        history = history[..., -history_length:]
    return {
        "history_length": float(np.count_nonzero(history > 0)),
        "num_candidates": float(num_candidates),
    }


@dataclass(frozen=True)
class Parameters:
    """The request parameters the router reads, parsed.

    Attributes:
        tier: The forced tier, or None.
        latency_budget_ms: The latency budget in ms, or None.
        value: What the request is worth (1 when absent).
    """

    tier: str | None = None
    latency_budget_ms: float | None = None
    value: float = 1.0


def _positive_number(parameters: dict[str, Any], key: str, expected: str) -> float | None:
    """A positive finite number given as a number or a string; None when absent."""
    raw = parameters.get(key)
    if raw is None:
        return None
    number = raw
    if isinstance(raw, str):
        try:
            number = float(raw)
        except ValueError:
            number = None
    valid = isinstance(number, int | float) and not isinstance(number, bool)
    if not valid or not math.isfinite(number) or number <= 0:
        raise RoutingError(f"request parameter {key!r}: expected {expected}, got {raw!r}")
    return float(number)


def parse_parameters(parameters: dict[str, Any], config: RouterConfig) -> Parameters:
    """Validate the request parameters; a parameter the router does not read is refused.

    Raises:
        RoutingError: a parameter is unknown, ``tier`` is not a known tier name, or
            ``latency_budget_ms`` or ``value`` is not a positive number.
    """
    if not isinstance(parameters, dict):
        raise RoutingError(f"request parameters: expected a mapping, got {type(parameters).__name__}")
    unknown = sorted(str(key) for key in parameters if key not in KNOWN_PARAMETERS)
    if unknown:
        raise RoutingError(
            f"request parameter {unknown[0]!r} is not known; the router reads {', '.join(KNOWN_PARAMETERS)}"
        )
    tier = parameters.get("tier")
    if tier is not None and (not isinstance(tier, str) or tier not in config.tiers):
        raise RoutingError(
            f"request parameter 'tier': unknown tier {tier!r}; expected one of {', '.join(config.tiers)}"
        )
    budget = _positive_number(parameters, "latency_budget_ms", "a positive number of milliseconds")
    value = _positive_number(parameters, "value", "a positive number (what the request is worth)")
    return Parameters(tier, budget, 1.0 if value is None else value)


def decide(config: RouterConfig, context: RequestContext) -> Decision:
    """Pick the tier for one request.

    A forced tier (request parameter ``tier``) always wins; then ``static`` serves the default tier,
    ``rules`` the tier of the first matching rule, else the default tier, and ``cascade`` scores
    with the default tier and re-scores its top candidates with the cascade tier (see
    :func:`top_candidates`).
    """
    if context.forced_tier is not None:
        return Decision(context.forced_tier, config.tiers.index(context.forced_tier), "forced")
    if config.policy == "cascade":
        return Decision(
            config.default_tier,
            config.tiers.index(config.default_tier),
            "cascade",
            config.cascade_tier,
            config.tiers.index(config.cascade_tier),
            config.cascade_top_k,
        )
    if config.policy == "learned":
        if context.gains is None:
            return Decision(config.default_tier, config.tiers.index(config.default_tier), "learned:no-gains")
        costs = [config.tier_costs[t] for t in config.tiers]
        n = int(context.features["num_candidates"])
        index = choose_tier(context.gains, n, costs, config.learned_lambda, context.value)
        return Decision(config.tiers[index], index, "learned")
    if config.policy == "rules":
        for i, rule in enumerate(config.rules):
            if rule.matches(context.features):
                return Decision(rule.tier, config.tiers.index(rule.tier), f"rule:{i}")
        return Decision(config.default_tier, config.tiers.index(config.default_tier), "default")
    return Decision(config.default_tier, config.tiers.index(config.default_tier), "static")


def top_candidates(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the ``k`` highest scores, best first; equal scores keep candidate order."""
    return np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")[: max(int(k), 0)]


def cascade_scores(
    first: np.ndarray, decision: Decision, rescore: Callable[[np.ndarray], np.ndarray]
) -> tuple[np.ndarray, np.ndarray]:
    """Final scores and per-candidate tier index of a cascade decision.

    Args:
        first: Scores [N] of ``decision.tier`` for every candidate.
        decision: A cascade decision.
        rescore: Scores of ``decision.rescore_tier`` for the candidates at the given indices.
    """
    scores = np.array(first, dtype=np.float32, copy=True)
    tiers = np.full(scores.shape, decision.index, dtype=np.int32)
    top = top_candidates(scores, decision.top_k)
    if len(top):
        scores[top] = np.asarray(rescore(top), dtype=np.float32)
        tiers[top] = decision.rescore_index
    return scores, tiers
