"""``toolkit evaluate``: routing policies on held-out requests, quality against cost, as JSON, markdown, PNG.

Every tier scores every held-out request with the variant the repository serves (run offline with
the same files and routing code, see :mod:`toolkit.evaluate.offline`). From those scores the
quality of any assignment of requests to tiers is exact: each tier alone, the spec's policy (and
its rules), the learned gate's curve between the smallest and the largest tier, the random line,
and two ceilings: the oracle (the largest tier for the requests it helps most, in hindsight) and a
gate that knew the largest tier's predictions (the label-free KL between the two tiers). Cost is
counted in FLOPs per request (from the ONNX graphs) and in measured milliseconds per request
(export's latency at each request's N), the gate's own cost and, cheapest first, the cheapest
tier's included. Besides NE over all candidates, each point reports what the shown ads get: NDCG@K
and NE/AUC of each request's top K by the served scores. When the requests carry values, NE and
the curves are also value-weighted.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import __version__
from toolkit.data.demo import demo_holdout_set
from toolkit.evaluate.bootstrap import bootstrap_frontier, within_noise_of_random
from toolkit.evaluate.frontier import (
    RequestLosses,
    apgr,
    assignment_at_share,
    cost_saved_at_equal_quality,
    cpt,
    oracle_curve,
    pgr,
    random_curve,
    score_curve,
)
from toolkit.evaluate.offline import HeldOutScores, OfflineEnsemble, deployed_variants, score_requests
from toolkit.evaluate.ranking import top_k_quality
from toolkit.evaluate.render import plot, render_markdown
from toolkit.export.manifest import read_manifest
from toolkit.flops import flops_model
from toolkit.machine import machine_facts
from toolkit.metrics import normalized_entropy, roc_auc
from toolkit.router.policy import RequestContext, decide, top_candidates
from toolkit.spec.schema import Spec

SHARES = np.linspace(0.0, 1.0, 101)
"""Shares of requests on the largest tier at which the curves are drawn."""

TOP_K = 5
"""Default K of the ranking metrics: the ads a request shows."""

StepFn = Callable[[str], None]
CostFn = Callable[[np.ndarray], np.ndarray]
Costs = dict[str, np.ndarray]
_EPS = 1e-7


def _interpolator(timed: dict[str, float] | dict[int, float]) -> CostFn:
    """Ms as a function of N from timings at some N, keyed by N or its text (NaN without any)."""
    points = sorted((int(k), float(v)) for k, v in timed.items())
    counts = [n for n, _ in points]
    values = [ms for _, ms in points]
    if not counts:
        return lambda n: np.full(np.shape(n), np.nan)
    return lambda n: np.interp(n, counts, values)


def _cost_functions(spec: Spec, artifacts: Path, variants: dict[str, str]) -> dict[str, list[CostFn]]:
    """Per tier, cost of a request as a function of N: FLOPs from the graph, ms from export's timing."""
    manifest = read_manifest(artifacts)
    out: dict[str, list[CostFn]] = {"flops": [], "ms": []}
    for tier in spec.tier_names:
        model = flops_model(artifacts / tier / variants[tier] / "model.onnx")
        out["flops"].append(lambda n, model=model: np.asarray(model.at(n), dtype=np.float64))
        timed = manifest.variant(tier, variants[tier]).latency("cpu")
        out["ms"].append(_interpolator(timed))
    return out


def _costs(functions: dict[str, list[CostFn]], n: np.ndarray) -> Costs:
    """Cost of each request on each tier [R, T]."""
    return {key: np.stack([f(n) for f in fns], axis=1) for key, fns in functions.items()}


@dataclass(frozen=True)
class Quality:
    """What every point and curve is measured with.

    Attributes:
        held: Every tier's scores on the held-out requests.
        losses: Per-request log losses of every tier.
        valued: The same weighted by each request's value (None when the requests carry none).
        top_k: K of the ranking metrics.
    """

    held: HeldOutScores
    losses: RequestLosses
    valued: RequestLosses | None
    top_k: int


def value_weighted(losses: RequestLosses, values: np.ndarray) -> RequestLosses:
    """Losses whose NE is the value-weighted NE, ``sum_r v_r loss_r / (sum_r v_r N_r H)``.

    Each request's losses are scaled by its value (and all by ``sum N / sum v N``), so every frontier
    function measures value-weighted quality as it is.
    """
    v = np.asarray(values, dtype=np.float64)
    scale = float(losses.candidates.sum()) / float((v * losses.candidates).sum())
    return RequestLosses(losses.loss * (v * scale)[:, None], losses.candidates, losses.entropy_per_candidate)


def _served(assignment: np.ndarray, held: HeldOutScores) -> np.ndarray:
    """The score each candidate gets when request r is served by tier ``assignment[r]``."""
    per_candidate = np.repeat(assignment, np.diff(held.requests.offsets))
    return held.scores[per_candidate, np.arange(held.scores.shape[1])]


def _ranking(quality: Quality, served: np.ndarray) -> dict[str, float]:
    """What the shown ads get: NDCG@K and NE/AUC of each request's top K by the served scores."""
    labels = quality.held.requests.labels
    top = top_k_quality(
        labels, np.clip(served, 0.0, 1.0), quality.held.requests.offsets, quality.top_k, float(labels.mean())
    )
    return {"ndcg": top["ndcg"], "top_ne": top["ne"], "top_auc": top["auc"]}


def _point(
    name: str, assignment: np.ndarray, quality: Quality, costs: Costs, overhead: Costs | None = None
) -> dict[str, Any]:
    """Quality and cost of one assignment of requests to tiers (plus what the router pays besides)."""
    held = quality.held
    rows = np.arange(len(assignment))
    served = _served(assignment, held)
    shares = np.bincount(assignment, minlength=len(held.tiers)) / len(assignment)
    extra = overhead or {key: np.zeros(len(assignment)) for key in costs}
    point = {
        "policy": name,
        "shares": {t: float(s) for t, s in zip(held.tiers, shares, strict=True)},
        "strong_share": float(shares[-1]),
        "ne": quality.losses.ne(assignment),
        "auc": roc_auc(held.requests.labels, served),
        "flops_per_request": float((costs["flops"][rows, assignment] + extra["flops"]).mean()),
        "ms_per_request": float((costs["ms"][rows, assignment] + extra["ms"]).mean()),
        **_ranking(quality, served),
    }
    if quality.valued is not None:
        point["value_ne"] = quality.valued.ne(assignment)
    return point


def _cascade_point(spec: Spec, quality: Quality, functions: dict[str, list[CostFn]]) -> dict[str, Any]:
    """Quality and cost of the cascade policy: every tier's scores are known, so it is exact."""
    held = quality.held
    tiers = list(spec.tier_names)
    first, second = tiers.index(spec.default_tier), tiers.index(spec.routing.cascade.tier)
    k = spec.routing.cascade.top_k
    offsets = held.requests.offsets
    final = held.scores[first].astype(np.float64)
    rescored = np.zeros(final.shape, dtype=bool)
    for r in range(held.requests.num_requests):
        lo, hi = offsets[r], offsets[r + 1]
        top = top_candidates(held.scores[first, lo:hi], k) + lo
        final[top] = held.scores[second, top]
        rescored[top] = True
    labels = held.requests.labels
    n = np.diff(offsets)
    share = float(rescored.mean())
    point = {
        "policy": f"cascade policy (top {k} re-scored by {tiers[second]})",
        "shares": {
            t: (1.0 - share if i == first else share if i == second else 0.0) for i, t in enumerate(tiers)
        },
        "strong_share": share if second == len(tiers) - 1 else 0.0,
        "ne": normalized_entropy(labels, np.clip(final, _EPS, 1 - _EPS), float(labels.mean())),
        "auc": roc_auc(labels, final),
        "flops_per_request": float(
            (functions["flops"][first](n) + functions["flops"][second](np.minimum(n, k))).mean()
        ),
        "ms_per_request": float(
            (functions["ms"][first](n) + functions["ms"][second](np.minimum(n, k))).mean()
        ),
        "note": "shares are of candidates, not requests",
        **_ranking(quality, final),
    }
    if quality.valued is not None:
        served = RequestLosses.from_scores(labels, final[None, :], offsets)
        point["value_ne"] = value_weighted(served, held.requests.value_weights()).ne(np.zeros(len(n), int))
    return point


def _curve_points(
    label: str,
    router_scores: np.ndarray,
    losses: RequestLosses,
    costs: Costs,
    overhead: Costs | None = None,
    strong_overhead: Costs | None = None,
) -> dict[str, Any]:
    """A router's curve over SHARES between the smallest and largest tier: NE and both costs.

    Args:
        label: Name of the router.
        router_scores: [R], higher = sent to the strong tier first.
        losses: Per-request losses.
        costs: Cost of each request on each tier [R, T].
        overhead: What the router pays on every request (the gate).
        strong_overhead: What it pays besides on a request it sends to the strong tier (the cheapest
            tier, which ran first in cheapest-first mode).
    """
    weak, strong = 0, losses.num_tiers - 1
    rows = np.arange(losses.num_requests)
    zero = {key: np.zeros(losses.num_requests) for key in costs}
    overhead, strong_overhead = overhead or zero, strong_overhead or zero
    out: dict[str, list[float]] = {
        "strong_share": [],
        "ne": [],
        "flops_per_request": [],
        "ms_per_request": [],
    }
    for share in SHARES:
        routed = assignment_at_share(router_scores, share)
        assignment = np.where(routed, strong, weak)
        out["strong_share"].append(float(routed.mean()))
        out["ne"].append(losses.ne(assignment))
        for key in ("flops", "ms"):
            cost = costs[key][rows, assignment] + overhead[key] + np.where(routed, strong_overhead[key], 0.0)
            out[f"{key}_per_request"].append(float(cost.mean()))
    return {"label": label, **out}


def cost_cpt(
    curve: dict[str, Any],
    target: float,
    ne_weak: float,
    ne_strong: float,
    weak_cost: float,
    strong_cost: float,
    key: str = "flops_per_request",
) -> float | None:
    """CPT with the router's own cost counted, as a share of the strong tier's extra cost.

    Where PGR first reaches ``target`` on the curve (linear between points), its cost above the weak
    tier alone, divided by the strong tier's cost above the weak tier's. Without overhead and with a
    constant N this equals CPT; the gate's cost (and, cheapest first, the cheapest tier's) raises it.
    """
    ne = np.asarray(curve["ne"], dtype=np.float64)
    cost = np.asarray(curve[key], dtype=np.float64)
    recovered = (ne_weak - ne) / (ne_weak - ne_strong)
    reached = np.flatnonzero(recovered >= target)
    if not reached.size or not strong_cost > weak_cost:
        return None
    i = int(reached[0])
    at = cost[i]
    if i > 0 and recovered[i] > recovered[i - 1]:
        fraction = (target - recovered[i - 1]) / (recovered[i] - recovered[i - 1])
        at = cost[i - 1] + fraction * (cost[i] - cost[i - 1])
    return float((at - weak_cost) / (strong_cost - weak_cost))


@dataclass(frozen=True)
class GateView:
    """The learned gate on the held-out requests.

    Attributes:
        gains: [R, T - 1] predicted gain per candidate of each bigger tier.
        info: Where it comes from (deployed or fitted here), design, mode, target, cost and speed.
        flops: [R] its FLOPs on each request.
        ms: [R] its ms on each request (ONNX Runtime, 1 thread).
    """

    gains: np.ndarray
    info: dict[str, Any]
    flops: np.ndarray
    ms: np.ndarray


def _gate_view(
    spec: Spec, artifacts: Path, ensemble: OfflineEnsemble, held: HeldOutScores, step: StepFn
) -> GateView:
    """The deployed gate (``routing.policy: learned``), else one fitted here.

    A gate fitted here learns as ``toolkit calibrate`` would (the spec's ``routing.learned``), from
    requests that are never the held-out ones.
    """
    from toolkit.evaluate.calibrate import export_gate, fit_gate, gate_data_of, gate_facts, gate_requests
    from toolkit.repository.gate import read_calibration
    from toolkit.train.gate import predict

    offsets = held.requests.offsets
    n = np.diff(offsets)
    keys = ("gate", "cheapest_first", "target", "fit_on", "source", "validation_apgr")
    costs = ("gate_cost_mflop", "gate_ms", "gate_parameters", "gate_bytes")
    if spec.routing.policy == "learned":
        calibration = read_calibration(spec, artifacts)
        gains = np.stack(
            [
                ensemble.gate_gains(held.preprocessed(r), held.scores[0, offsets[r] : offsets[r + 1]])
                for r in range(held.requests.num_requests)
            ]
        )
        info = {"origin": "deployed"} | {k: calibration.get(k) for k in keys + costs}
    else:
        learned = spec.routing.learned
        fit = fit_gate(spec, ensemble, gate_requests(spec), step)
        gains = predict(fit.gate, gate_data_of(held), learned.cheapest_first)
        with tempfile.TemporaryDirectory(prefix="toolkit-gate-") as folder:
            path = Path(folder) / "model.onnx"
            export_gate(spec, fit.gate, path)
            facts = gate_facts(spec, fit.gate, path)
        info = {"origin": "fitted here", "gate": learned.gate, "cheapest_first": learned.cheapest_first}
        info |= {"target": fit.target, "fit_on": fit.fit_on, "source": fit.source}
        info |= {"validation_apgr": fit.validation, **facts}
    a, b = info["gate_cost_mflop"]
    flops = (a + b * n.astype(np.float64)) * 1e6
    return GateView(gains, info, flops, _interpolator(info.get("gate_ms") or {})(n))


def _kl_ceiling(held: HeldOutScores) -> np.ndarray:
    """Per request, N times the mean KL(p_largest || p_smallest): a gate that knew the largest tier."""
    from toolkit.train.gate import candidate_targets

    kl = candidate_targets(held.scores[[0, -1]], held.requests.labels, "kl")[:, 0].astype(np.float64)
    return np.add.reduceat(kl, held.requests.offsets[:-1])


def _summaries(
    losses: RequestLosses, routers: dict[str, np.ndarray], seed: int, bootstrap: tuple[str, ...]
) -> dict[str, Any]:
    """APGR and CPT of the oracle, random and score routers; bootstrap intervals for some."""
    weak, strong = losses.ne_of_tier(0), losses.ne_of_tier(-1)
    out: dict[str, Any] = {}
    if not weak > strong:
        return out
    curves = {"oracle": oracle_curve(losses, SHARES), "random": random_curve(losses, SHARES)}
    curves |= {name: score_curve(losses, s, SHARES, label=name) for name, s in routers.items()}
    for name, curve in curves.items():
        out[name] = {
            "apgr": apgr(curve, weak, strong),
            "cpt50": cpt(curve, 0.5, weak, strong),
            "cpt80": cpt(curve, 0.8, weak, strong),
        }
    for name in bootstrap:
        interval = bootstrap_frontier(losses, routers[name], SHARES, seed=seed)
        out[name]["interval"] = {k: interval[k] for k in ("apgr", "cpt50", "cpt80", "resamples", "level")}
        out[name]["within_noise_of_random"] = within_noise_of_random(interval["apgr"])
    return out


def evaluate(
    spec: Spec,
    artifacts: Path,
    repository: Path | None,
    out: Path,
    num_requests: int | None = None,
    step: StepFn | None = None,
    top_k: int = TOP_K,
) -> dict[str, Any]:
    """Evaluate the tiers and routing policies on held-out requests and write the report.

    Args:
        spec: The ensemble spec.
        artifacts: Export output with ``manifest.json``.
        repository: Deployed repository whose variants to evaluate (None: deploy's choice).
        out: Folder for ``evaluation.json``, ``evaluation.md`` and ``evaluation.png``.
        num_requests: Held-out requests to use (default: all of ``data.holdout_requests``).
        step: Optional callback told about each step.
        top_k: K of the ranking metrics (the ads a request shows).

    Returns:
        What was written to ``evaluation.json``.

    Raises:
        RepositoryError: The exported models are missing or do not match the manifest.
    """
    step = step or (lambda _message: None)
    variants = deployed_variants(spec, artifacts, repository)
    ensemble = OfflineEnsemble(spec, artifacts, variants)
    requests = demo_holdout_set(spec, num_requests)
    step(f"scoring {requests.num_requests} held-out requests with every tier")
    held = score_requests(ensemble, requests)
    losses = RequestLosses.from_scores(requests.labels, held.scores.astype(np.float64), requests.offsets)
    values = requests.values
    quality = Quality(held, losses, value_weighted(losses, values) if values is not None else None, top_k)
    n = np.diff(requests.offsets)
    step("counting FLOPs per request")
    functions = _cost_functions(spec, artifacts, variants)
    costs = _costs(functions, n)
    step("the learned gate: its predicted gains")
    gate = _gate_view(spec, artifacts, ensemble, held, step)
    cheapest_first = bool(gate.info.get("cheapest_first"))
    gate_cost = {"flops": gate.flops, "ms": gate.ms}
    first_cost = {key: costs[key][:, 0] for key in costs} if cheapest_first else None
    weak, strong = 0, len(spec.tier_names) - 1
    points = [
        _point(f"{tier} alone", np.full(requests.num_requests, t), quality, costs)
        for t, tier in enumerate(spec.tier_names)
    ]
    if spec.routing.policy == "cascade":
        policy = _cascade_point(spec, quality, functions)
    elif spec.routing.policy == "learned":
        extra = {
            key: gate_cost[key] + (np.where(held.decisions > 0, first_cost[key], 0.0) if first_cost else 0.0)
            for key in costs
        }
        policy = _point("learned policy", held.decisions, quality, costs, extra)
    else:
        policy = _point(f"{spec.routing.policy} policy", held.decisions, quality, costs)
    if spec.routing.policy != "rules" and spec.routing.rules:
        rules = dataclasses.replace(ensemble.settings, policy="rules")
        chosen = np.array([decide(rules, RequestContext(features=f)).index for f in held.features])
        points.append(_point("rules (the spec's rules)", chosen, quality, costs))
    points.append(policy)
    gained = gate.gains[:, -1] * n
    valued_weights = requests.value_weights().astype(np.float64)
    rng = np.random.default_rng(spec.seed)
    routers = {"learned gate": gained, f"gate that knew {spec.tier_names[-1]}": _kl_ceiling(held)}
    curves = [
        _curve_points("oracle", losses.loss[:, weak] - losses.loss[:, strong], losses, costs),
        _curve_points("learned gate", gained, losses, costs, gate_cost, first_cost),
        _curve_points(
            f"gate that knew {spec.tier_names[-1]}",
            routers[f"gate that knew {spec.tier_names[-1]}"],
            losses,
            costs,
        ),
        _curve_points("random", rng.permutation(requests.num_requests).astype(float), losses, costs),
    ]
    step("bootstrapping the learned gate's APGR and CPT over requests")
    summary: dict[str, Any] = {
        "weak": spec.tier_names[weak],
        "strong": spec.tier_names[strong],
        "top_k": top_k,
    }
    summary |= _summaries(losses, routers, spec.seed, ("learned gate",))
    ne_weak, ne_strong = losses.ne_of_tier(weak), losses.ne_of_tier(strong)
    if ne_weak > ne_strong:
        for point in points:
            point["pgr"] = pgr(point["ne"], ne_weak, ne_strong)
        for key, cost in (("flops_per_request", "flops"), ("ms_per_request", "ms")):
            extra = np.maximum(costs[cost][:, strong] - costs[cost][:, weak], 1e-12)
            priced = _curve_points("priced", gained / extra, losses, costs, gate_cost, first_cost)
            summary["learned gate"][f"cost_cpt80_{key}"] = cost_cpt(
                priced, 0.8, ne_weak, ne_strong, points[weak][key], points[strong][key], key
            )
    if values is not None and quality.valued.ne_of_tier(weak) > quality.valued.ne_of_tier(strong):
        valued_routers = {"learned gate": gained * valued_weights}
        summary["value_weighted"] = _summaries(quality.valued, valued_routers, spec.seed, ())
    strong_point = points[strong]
    for key in ("flops_per_request", "ms_per_request"):
        saved = cost_saved_at_equal_quality(
            np.array([policy[key]]), np.array([policy["ne"]]), strong_point[key], strong_point["ne"]
        )
        summary[f"policy_saves_{key}"] = saved
        oracle = curves[0]
        summary[f"oracle_saves_{key}"] = cost_saved_at_equal_quality(
            np.array(oracle[key]), np.array(oracle["ne"]), strong_point[key], strong_point["ne"]
        )
    warnings = []
    if summary.get("learned gate", {}).get("within_noise_of_random"):
        low, mid, high = summary["learned gate"]["interval"]["apgr"]
        warnings.append(
            f"the learned gate is within noise of random routing: its APGR {mid:.3f} has a "
            f"{summary['learned gate']['interval']['level']:.0%} interval of {low:.3f} to {high:.3f}, which "
            "holds 0.5; it does not find where the largest tier pays on these requests"
        )
    result = {
        "evaluation": 2,
        "toolkit_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ensemble": spec.name,
        "spec": spec.source,
        "machine": machine_facts(),
        "requests": requests.num_requests,
        "candidates": requests.num_candidates,
        "valued": values is not None,
        "variants": variants,
        "gate": gate.info,
        "points": points,
        "curves": curves,
        "summary": summary,
        "warnings": warnings,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "evaluation.md").write_text(render_markdown(result), encoding="utf-8")
    step("drawing the plot")
    plot(result, out / "evaluation.png")
    return result
