"""Unit tests of toolkit.router: decisions, request parameters, request features and router.json."""

from __future__ import annotations

import ast
import dataclasses
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import toolkit.router
from toolkit.router import (
    Decision,
    Parameters,
    RequestContext,
    RouterConfig,
    RoutingError,
    RuleConfig,
    cascade_scores,
    decide,
    parse_parameters,
    request_features,
    top_candidates,
)

ROUTER_DIR = Path(toolkit.router.__file__).resolve().parent
TIERS = ("small", "medium", "large")


def config(policy: str = "rules", rules: tuple[RuleConfig, ...] | None = None, **kw: Any) -> RouterConfig:
    if rules is None:
        rules = (
            RuleConfig("history_length", ">=", 8, "large"),
            RuleConfig("num_candidates", ">", 100, "medium"),
            RuleConfig("history_length", ">=", 2, "medium"),
        )
    return RouterConfig(
        tiers=TIERS, policy=policy, default_tier=kw.pop("default_tier", "small"), rules=rules, **kw
    )


def context(history: float = 0, candidates: float = 10, forced: str | None = None) -> RequestContext:
    return RequestContext({"history_length": float(history), "num_candidates": float(candidates)}, forced)


def test_decide_serves_the_forced_tier_when_the_parameter_names_one() -> None:
    decision = decide(config(), context(history=20, forced="small"))

    assert decision == Decision("small", 0, "forced")


def test_decide_serves_the_forced_tier_when_the_policy_is_static() -> None:
    decision = decide(config("static"), context(forced="large"))

    assert decision == Decision("large", 2, "forced")


@pytest.mark.parametrize(
    ("history", "candidates", "expected"),
    [
        (20, 500, Decision("large", 2, "rule:0")),  # rules 0, 1 and 2 all match: the first wins
        (8, 10, Decision("large", 2, "rule:0")),
        (7, 500, Decision("medium", 1, "rule:1")),
        (3, 10, Decision("medium", 1, "rule:2")),
        (1, 100, Decision("small", 0, "default")),
        (0, 1, Decision("small", 0, "default")),
    ],
)
def test_decide_serves_the_first_matching_rule_when_several_rules_are_given(
    history: int, candidates: int, expected: Decision
) -> None:
    assert decide(config(), context(history, candidates)) == expected


def test_decide_serves_the_first_matching_rule_when_rules_are_reordered() -> None:
    rules = (RuleConfig("history_length", ">=", 2, "medium"), RuleConfig("history_length", ">=", 8, "large"))

    assert decide(config(rules=rules), context(history=20)) == Decision("medium", 1, "rule:0")


@pytest.mark.parametrize(
    ("op", "value", "matches"),
    [
        ("<", 5, [True, False, False]),
        ("<=", 5, [True, True, False]),
        (">", 5, [False, False, True]),
        (">=", 5, [False, True, True]),
        ("==", 5, [False, True, False]),
        ("!=", 5, [True, False, True]),
    ],
)
def test_decide_applies_the_operator_when_a_rule_compares_a_feature(
    op: str, value: float, matches: list[bool]
) -> None:
    cfg = config(rules=(RuleConfig("history_length", op, value, "large"),))

    got = [decide(cfg, context(history=h)).tier == "large" for h in (4, 5, 6)]

    assert got == matches


def test_decide_serves_the_default_tier_when_the_policy_is_static() -> None:
    cfg = config("static", default_tier="medium")

    assert decide(cfg, context(history=50, candidates=500)) == Decision("medium", 1, "static")


def test_decide_serves_the_default_tier_when_no_rules_are_given() -> None:
    assert decide(config(rules=()), context(history=50)) == Decision("small", 0, "default")


def test_parse_parameters_gives_none_and_a_value_of_one_when_no_parameter_is_set() -> None:
    assert parse_parameters({}, config()) == Parameters(None, None, 1.0)


def test_parse_parameters_refuses_an_unknown_parameter_naming_it() -> None:
    with pytest.raises(RoutingError, match="'colour'.*tier, latency_budget_ms, value"):
        parse_parameters({"colour": "red", "tier": "large"}, config())
    assert parse_parameters({"tier": "large"}, config()) == Parameters("large", None, 1.0)


@pytest.mark.parametrize("tier", ["huge", "", "Small", 3, True, ["small"]])
def test_parse_parameters_raises_routing_error_naming_tier_when_the_tier_is_not_known(tier: Any) -> None:
    with pytest.raises(RoutingError, match="'tier'"):
        parse_parameters({"tier": tier}, config())


@pytest.mark.parametrize(
    "budget", [0, 0.0, -1, -0.5, float("nan"), float("inf"), "abc", "", "nan", True, False, [5]]
)
def test_parse_parameters_raises_routing_error_naming_the_budget_when_it_is_not_a_positive_number(
    budget: Any,
) -> None:
    with pytest.raises(RoutingError, match="'latency_budget_ms'"):
        parse_parameters({"latency_budget_ms": budget}, config())


@pytest.mark.parametrize(("budget", "expected"), [("12.5", 12.5), ("3", 3.0), (7, 7.0), (0.25, 0.25)])
def test_parse_parameters_gives_a_float_budget_when_it_is_a_positive_number_or_numeric_string(
    budget: Any, expected: float
) -> None:
    parsed = parse_parameters({"latency_budget_ms": budget}, config())

    assert parsed.tier is None
    assert isinstance(parsed.latency_budget_ms, float)
    assert parsed.latency_budget_ms == expected


@pytest.mark.parametrize(
    "value", [0, 0.0, -1, -0.5, float("nan"), float("inf"), "abc", "", "nan", "-2", True, False, [5]]
)
def test_parse_parameters_raises_routing_error_naming_the_value_when_it_is_not_a_positive_number(
    value: Any,
) -> None:
    with pytest.raises(RoutingError, match="'value'"):
        parse_parameters({"value": value}, config())


@pytest.mark.parametrize(("value", "expected"), [("2.5", 2.5), ("3", 3.0), (7, 7.0), (0.25, 0.25)])
def test_parse_parameters_gives_a_float_value_when_it_is_a_positive_number_or_numeric_string(
    value: Any, expected: float
) -> None:
    parsed = parse_parameters({"value": value}, config())

    assert isinstance(parsed.value, float) and parsed.value == expected


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_request_features_counts_non_zero_history_ids_when_given_a_history(seed: int) -> None:
    rng = np.random.default_rng(seed)
    history = np.where(rng.random((1, 32)) < 0.4, rng.integers(1, 99, size=(1, 32)), 0)
    expected = sum(1 for v in history.ravel() if v != 0)

    features = request_features(history, 17)

    assert features == {"history_length": float(expected), "num_candidates": 17.0}


def test_request_features_gives_zero_when_the_history_is_all_padding() -> None:
    assert request_features(np.zeros((1, 8), np.int64), 1)["history_length"] == 0.0


def test_router_config_survives_a_json_round_trip_when_serialised() -> None:
    original = dataclasses.replace(config(max_candidates=77), local_threads=3)

    restored = RouterConfig.from_json(original.to_json())

    assert restored == original
    assert restored.rules[1] == RuleConfig("num_candidates", ">", 100, "medium")


def test_router_config_round_trip_keeps_decisions_when_serialised() -> None:
    original = config()
    restored = RouterConfig.from_json(original.to_json())

    for history in range(0, 12):
        for candidates in (1, 100, 101):
            ctx = context(history, candidates)
            assert decide(restored, ctx) == decide(original, ctx)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"policy": "learned"}, "policy"),
        ({"default_tier": "huge"}, "huge"),
        ({"rules": (RuleConfig("history_length", ">=", 1, "huge"),)}, "huge"),
        ({"rules": (RuleConfig("history_length", "=~", 1, "large"),)}, "=~"),
        ({"local_threads": 0}, "local_threads"),
    ],
    ids=["policy", "default_tier", "rule_tier", "rule_op", "local_threads"],
)
def test_router_config_raises_value_error_when_a_field_is_invalid(
    kwargs: dict[str, Any], fragment: str
) -> None:
    values: dict[str, Any] = {"tiers": TIERS, "policy": "rules", "default_tier": "small", **kwargs}

    with pytest.raises(ValueError, match=fragment):
        RouterConfig(**values)


def _imports(path: Path) -> list[tuple[str, int]]:
    """(module, level) of every import statement in ``path``; level > 0 is a relative import."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            out += [(alias.name, 0) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            out.append((node.module or "", node.level))
    return out


def test_router_package_imports_only_stdlib_and_numpy_when_its_source_is_parsed() -> None:
    files = sorted(ROUTER_DIR.glob("*.py"))
    assert {p.name for p in files} >= {"__init__.py", "policy.py"}

    bad = []
    for path in files:
        for module, level in _imports(path):
            top = module.split(".")[0]
            if level == 0 and top not in sys.stdlib_module_names and top != "numpy":
                bad.append(f"{path.name}: {module}")

    assert not bad, f"toolkit/router must stay self-contained (deploy copies it into Triton): {bad}"


def test_request_context_holds_the_budget_when_one_is_parsed() -> None:
    parsed = parse_parameters({"tier": "medium", "latency_budget_ms": "40"}, config())
    ctx = RequestContext(request_features(np.array([[0, 3, 4]]), 2), parsed.tier, parsed.latency_budget_ms)

    assert ctx.forced_tier == "medium"
    assert ctx.latency_budget_ms is not None and math.isclose(ctx.latency_budget_ms, 40.0)
    assert decide(config(), ctx).reason == "forced"


def test_decide_scores_with_the_default_tier_and_names_the_rescore_tier_when_the_policy_is_cascade() -> None:
    cascade = config("cascade", rules=(), cascade_tier="large", cascade_top_k=3)
    decision = decide(cascade, context(history=30))
    assert (decision.tier, decision.index, decision.reason) == ("small", 0, "cascade")
    assert (decision.rescore_tier, decision.rescore_index, decision.top_k) == ("large", 2, 3)
    assert decide(cascade, context(forced="medium")).rescore_tier is None
    assert RouterConfig.from_json(cascade.to_json()) == cascade


def test_top_candidates_gives_the_k_best_first_and_keeps_candidate_order_on_ties() -> None:
    scores = np.array([0.2, 0.9, 0.5, 0.9, 0.1], dtype=np.float32)
    assert top_candidates(scores, 3).tolist() == [1, 3, 2]
    assert top_candidates(scores, 10).tolist() == [1, 3, 2, 0, 4]
    assert top_candidates(scores, 0).tolist() == []


def test_cascade_scores_replaces_exactly_the_top_k_with_the_rescore_tier() -> None:
    decision = decide(config("cascade", rules=(), cascade_tier="medium", cascade_top_k=2), context())
    first = np.array([0.3, 0.8, 0.1, 0.6], dtype=np.float32)
    asked = []

    def rescore(top: np.ndarray) -> np.ndarray:
        asked.append(top.tolist())
        return np.array([0.05, 0.95], dtype=np.float32)

    scores, tiers = cascade_scores(first, decision, rescore)
    assert asked == [[1, 3]]
    assert scores.tolist() == pytest.approx([0.3, 0.05, 0.1, 0.95])
    assert tiers.tolist() == [0, 1, 0, 1]
    assert first.tolist() == pytest.approx([0.3, 0.8, 0.1, 0.6])


@pytest.mark.parametrize(("tier", "k"), [("small", 3), ("nope", 3), ("large", 0)])
def test_router_config_refuses_a_cascade_without_a_distinct_tier_or_a_positive_k(tier: str, k: int) -> None:
    with pytest.raises(ValueError, match="cascade"):
        config("cascade", rules=(), cascade_tier=tier, cascade_top_k=k)
