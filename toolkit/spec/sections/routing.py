"""How the router picks a tier (``routing``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from toolkit.router.policy import REQUEST_FEATURES
from toolkit.spec.sections.common import KeyedValueError

RuleOp = Literal["<", "<=", ">", ">=", "==", "!="]
RULE_FEATURES = REQUEST_FEATURES
"""Request-level features a rule may test: those the router computes."""


@dataclass(frozen=True)
class Rule:
    """Route to ``tier`` when ``feature op value`` holds for a request.

    Attributes:
        feature: A request-level feature the router computes: ``history_length`` (non-padding
            history ids after preprocessing) or ``num_candidates``.
        op: Comparison operator.
        value: Right-hand side.
        tier: Tier to use when the rule matches.
    """

    feature: str
    op: RuleOp
    value: float
    tier: str

    def __post_init__(self) -> None:
        if self.feature not in RULE_FEATURES:
            raise KeyedValueError(
                "feature", f"must be one of {', '.join(RULE_FEATURES)}, got {self.feature!r}"
            )


@dataclass(frozen=True)
class CascadeSpec:
    """The ``cascade`` policy: the default tier scores every candidate, ``tier`` re-scores the top.

    Attributes:
        tier: The bigger tier that re-scores the default tier's top candidates.
        top_k: How many top candidates it re-scores (all of them when N is smaller).
    """

    tier: str = ""
    top_k: int = 8

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise KeyedValueError("top_k", f"must be positive, got {self.top_k}")


@dataclass(frozen=True)
class BudgetSpec:
    """Latency budgets, applied on top of any policy.

    The router caps each request's tier at the most expensive one it expects to answer within the
    request's ``latency_budget_ms`` (or ``default_ms``).

    Attributes:
        default_ms: Budget of requests that give none; 0 means no budget.
        percentile: Percentile of the router's recent calls of a tier that estimates its latency.
        window: Recent calls kept per tier and candidate-count bucket.
        max_age_s: Calls older than this many seconds no longer count, so a tier stepped away from
            under load is probed again once the load has passed.
    """

    default_ms: float = 0.0
    percentile: float = 90.0
    window: int = 64
    max_age_s: float = 1.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.default_ms) or self.default_ms < 0:
            raise KeyedValueError("default_ms", f"must be a number >= 0, got {self.default_ms}")
        if not 0 < self.percentile <= 100:
            raise KeyedValueError("percentile", f"must lie in (0, 100], got {self.percentile}")
        if self.window < 1:
            raise KeyedValueError("window", f"must be positive, got {self.window}")
        if not math.isfinite(self.max_age_s) or self.max_age_s <= 0:
            raise KeyedValueError("max_age_s", f"must be a positive number, got {self.max_age_s}")


@dataclass(frozen=True)
class LearnedSpec:
    """The ``learned`` policy: a gate fitted by ``toolkit calibrate``, and its price.

    Attributes:
        target_share: Share of requests the largest tier should serve; ``toolkit calibrate`` picks
            the price ``lambda`` that gives it on the gate's requests.
        target_cost_mflop: Instead of a share: the mean MFLOP per request to spend (0: use
            ``target_share``).
        calibration_requests: Requests the gate is fitted and priced on (0: as many as
            ``data.holdout_requests`` from a calibration set, up to 20,000 cross-fitted).
        gate: ``request``: a small model of its own over the user's ids, the history's items and
            the candidates (embeddings, a pooled history, each candidate's attention over the
            history, candidate-set statistics); ``summary``: an MLP over the dense user features,
            history length and N only.
        cheapest_first: Run the cheapest tier on every request first and give its scores to the
            gate; a request the gate keeps on the cheapest tier is answered with them.
        fit_on: Where the gate learns the tiers' behaviour out of sample. ``calibration``:
            requests no tier trained on (generated ones with a seed of their own, or the first
            ``calibration_requests`` of ``data.files.calibration``); ``cross_fit``: the training
            requests, scored by tier copies trained on the other ``folds`` (every tier is
            retrained ``folds`` times); ``auto``: ``calibration`` for generated data and for logs
            with a calibration file, else ``cross_fit``.
        folds: Folds of ``cross_fit``.
        targets: What the gate may learn, per candidate: ``kl`` (label-free KL(p_big || p_small)),
            ``gain`` (the realised log-loss gain), ``blend`` (their mean). With more than one,
            ``toolkit calibrate`` keeps the one that routes best in a 3-fold validation.
    """

    target_share: float = 0.3
    target_cost_mflop: float = 0.0
    calibration_requests: int = 0
    gate: Literal["request", "summary"] = "request"
    cheapest_first: bool = False
    fit_on: Literal["auto", "calibration", "cross_fit"] = "auto"
    folds: int = 3
    targets: tuple[str, ...] = ("kl", "gain", "blend")

    def __post_init__(self) -> None:
        if not 0.0 <= self.target_share <= 1.0:
            raise KeyedValueError("target_share", f"must lie in [0, 1], got {self.target_share}")
        if not math.isfinite(self.target_cost_mflop) or self.target_cost_mflop < 0:
            raise KeyedValueError("target_cost_mflop", f"must be a number >= 0, got {self.target_cost_mflop}")
        if self.calibration_requests < 0:
            raise KeyedValueError("calibration_requests", f"must be >= 0, got {self.calibration_requests}")
        if self.folds < 2:
            raise KeyedValueError("folds", f"must be at least 2, got {self.folds}")
        known = ("kl", "gain", "blend")
        if not self.targets:
            raise KeyedValueError("targets", f"must name at least one of {', '.join(known)}")
        for i, target in enumerate(self.targets):
            if target not in known:
                raise KeyedValueError(
                    f"targets[{i}]", f"unknown target {target!r}; expected one of {', '.join(known)}"
                )
        if len(set(self.targets)) != len(self.targets):
            raise KeyedValueError("targets", f"names a target twice: {list(self.targets)}")


@dataclass(frozen=True)
class RoutingSpec:
    """The routing policy and its knobs.

    Attributes:
        policy: ``static`` serves ``default_tier`` always; ``rules`` serves the tier of the first
            matching rule, else ``default_tier``; ``cascade`` scores every candidate with
            ``default_tier`` and re-scores the top ``cascade.top_k`` with ``cascade.tier``;
            ``learned`` serves the tier whose predicted gain beats its cost (``toolkit calibrate``
            fits the gate). With any policy, the request parameter ``tier`` forces a tier by name.
        default_tier: Tier used when no rule matches (and the only tier of ``static``).
        rules: Ordered rules; the first that matches wins.
        cascade: Settings of the ``cascade`` policy.
        budget: Latency budgets, applied on top of any policy.
        learned: Settings of the ``learned`` policy.
        slo_ms: The p99 latency (ms) the router protects under load; 0: none. Requests without a
            budget of their own get this one, less the time requests now wait in the router's queue
            (read from Triton's statistics); and while that wait exceeds a fifth of it, or the
            router is busy more than 90% of the time, the router steps traffic down to cheaper tiers,
            a fraction of a tier at a time, and back up once the wait has fallen and it has room.
    """

    policy: Literal["static", "rules", "cascade", "learned"] = "rules"
    default_tier: str = ""
    rules: tuple[Rule, ...] = ()
    cascade: CascadeSpec = field(default_factory=CascadeSpec)
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    learned: LearnedSpec = field(default_factory=LearnedSpec)
    slo_ms: float = 0.0

    def __post_init__(self) -> None:
        if not math.isfinite(self.slo_ms) or self.slo_ms < 0:
            raise KeyedValueError("slo_ms", f"must be a number of milliseconds >= 0, got {self.slo_ms}")
