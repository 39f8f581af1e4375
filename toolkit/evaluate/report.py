"""``toolkit evaluate``: routing policies on held-out requests, quality against cost, as JSON, markdown, PNG.

Every tier scores every held-out request with the variant the repository serves (run offline with
the same files and routing code, see :mod:`toolkit.evaluate.offline`). From those scores the
quality of any assignment of requests to tiers is exact: each tier alone, the random mix of the
smallest and largest tier, the spec's policy, and the oracle (the largest tier for the requests it
helps most, in hindsight). Cost is counted in FLOPs per request (from the ONNX graphs) and in
measured milliseconds per request (export's latency at each request's N).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import __version__
from toolkit.data.demo import demo_holdout_set
from toolkit.evaluate.flops import flops_model
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
from toolkit.evaluate.metrics import normalized_entropy, roc_auc
from toolkit.evaluate.offline import (
    HeldOutScores,
    OfflineEnsemble,
    deployed_variants,
    features_array,
    score_requests,
)
from toolkit.export.manifest import read_manifest
from toolkit.machine import machine_facts
from toolkit.router.policy import RequestContext, decide, top_candidates
from toolkit.spec.schema import Spec

SHARES = np.linspace(0.0, 1.0, 101)
"""Shares of requests on the largest tier at which the curves are drawn."""

StepFn = Callable[[str], None]


CostFn = Callable[[np.ndarray], np.ndarray]


def _cost_functions(spec: Spec, artifacts: Path, variants: dict[str, str]) -> dict[str, list[CostFn]]:
    """Per tier, cost of a request as a function of N: FLOPs from the graph, ms from export's timing."""
    manifest = read_manifest(artifacts)
    out: dict[str, list[CostFn]] = {"flops": [], "ms": []}
    for tier in spec.tier_names:
        model = flops_model(artifacts / tier / variants[tier] / "model.onnx")
        out["flops"].append(lambda n, model=model: np.asarray(model.at(n), dtype=np.float64))
        timed = manifest["tiers"][tier]["variants"][variants[tier]].get("latency_ms", {}).get("cpu", {})
        counts = sorted(int(k) for k in timed)
        values = [timed[str(c)] for c in counts]
        out["ms"].append(
            (lambda n, c=counts, v=values: np.interp(n, c, v))
            if counts
            else (lambda n: np.full(np.shape(n), np.nan))
        )
    return out


def _costs(functions: dict[str, list[CostFn]], n: np.ndarray) -> dict[str, np.ndarray]:
    """Cost of each request on each tier [R, T]."""
    return {key: np.stack([f(n) for f in fns], axis=1) for key, fns in functions.items()}


def _cascade_point(spec: Spec, held: HeldOutScores, functions: dict[str, list[CostFn]]) -> dict[str, Any]:
    """Quality and cost of the cascade policy: every tier's scores are known, so it is exact."""
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
    return {
        "policy": f"cascade policy (top {k} re-scored by {tiers[second]})",
        "shares": {
            t: (1.0 - share if i == first else share if i == second else 0.0) for i, t in enumerate(tiers)
        },
        "strong_share": share if second == len(tiers) - 1 else 0.0,
        "ne": normalized_entropy(labels, np.clip(final, 1e-7, 1 - 1e-7), float(labels.mean())),
        "auc": roc_auc(labels, final),
        "flops_per_request": float(
            (functions["flops"][first](n) + functions["flops"][second](np.minimum(n, k))).mean()
        ),
        "ms_per_request": float(
            (functions["ms"][first](n) + functions["ms"][second](np.minimum(n, k))).mean()
        ),
        "note": "shares are of candidates, not requests",
    }


def _point(
    name: str,
    assignment: np.ndarray,
    held: HeldOutScores,
    losses: RequestLosses,
    costs: dict[str, np.ndarray],
) -> dict[str, Any]:
    """Quality and cost of one assignment of requests to tiers."""
    rows = np.arange(len(assignment))
    per_candidate = np.repeat(assignment, np.diff(held.requests.offsets))
    scores = held.scores[per_candidate, np.arange(held.scores.shape[1])]
    shares = np.bincount(assignment, minlength=len(held.tiers)) / len(assignment)
    return {
        "policy": name,
        "shares": {t: float(s) for t, s in zip(held.tiers, shares, strict=True)},
        "strong_share": float(shares[-1]),
        "ne": losses.ne(assignment),
        "auc": roc_auc(held.requests.labels, scores),
        "flops_per_request": float(costs["flops"][rows, assignment].mean()),
        "ms_per_request": float(costs["ms"][rows, assignment].mean()),
    }


def _curve_points(
    label: str, router_scores: np.ndarray, losses: RequestLosses, costs: dict[str, np.ndarray]
) -> dict[str, Any]:
    """A router's curve over SHARES: NE and both costs at each share."""
    weak, strong = 0, losses.num_tiers - 1
    rows = np.arange(losses.num_requests)
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
        out["flops_per_request"].append(float(costs["flops"][rows, assignment].mean()))
        out["ms_per_request"].append(float(costs["ms"][rows, assignment].mean()))
    return {"label": label, **out}


def _learned_scores(spec: Spec, ensemble: OfflineEnsemble, held: HeldOutScores, count: int) -> np.ndarray:
    """The largest tier's predicted gain on every request of ``held``.

    From the deployed gate (``toolkit calibrate``) when the policy is learned, else from a gate
    fitted here on a separate generated split: fresh traffic from the same world (its own seed),
    scored by every tier offline, never overlapping the held-out requests the curve is measured on.
    """
    from toolkit.evaluate.calibrate import fit_gate
    from toolkit.train.gate import predict

    deployed = ensemble.gate_gains(features_array(held))
    if deployed is not None:
        return deployed[:, -1]
    gate, _ = fit_gate(spec, ensemble, count)
    return predict(gate, features_array(held))[:, -1]


def evaluate(
    spec: Spec,
    artifacts: Path,
    repository: Path | None,
    out: Path,
    num_requests: int | None = None,
    step: StepFn | None = None,
) -> dict[str, Any]:
    """Evaluate the tiers and routing policies on held-out requests and write the report.

    Args:
        spec: The ensemble spec.
        artifacts: Export output with ``manifest.json``.
        repository: Deployed repository whose variants to evaluate (None: deploy's choice).
        out: Folder for ``evaluation.json``, ``evaluation.md`` and ``evaluation.png``.
        num_requests: Held-out requests to use (default: all of ``data.holdout_requests``).
        step: Optional callback told about each step.

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
    n = np.diff(requests.offsets)
    step("counting FLOPs per request")
    functions = _cost_functions(spec, artifacts, variants)
    costs = _costs(functions, n)
    weak, strong = 0, len(spec.tier_names) - 1
    ne_weak, ne_strong = losses.ne_of_tier(weak), losses.ne_of_tier(strong)
    points = [
        _point(f"{tier} alone", np.full(requests.num_requests, t), held, losses, costs)
        for t, tier in enumerate(spec.tier_names)
    ]
    if spec.routing.policy == "cascade":
        policy = _cascade_point(spec, held, functions)
    else:
        policy = _point(f"{spec.routing.policy} policy", held.decisions, held, losses, costs)
    if spec.routing.policy != "rules" and spec.routing.rules:
        rules = dataclasses.replace(ensemble.settings, policy="rules")
        chosen = np.array([decide(rules, RequestContext(features=f)).index for f in held.features])
        points.append(_point("rules (the spec's rules)", chosen, held, losses, costs))
    points.append(policy)
    gain = losses.loss[:, weak] - losses.loss[:, strong]
    rng = np.random.default_rng(spec.seed)
    step("learned gate: its predicted gains")
    learned = _learned_scores(spec, ensemble, held, requests.num_requests)
    curves = [
        _curve_points("oracle", gain, losses, costs),
        _curve_points("learned gate", learned, losses, costs),
        _curve_points("random", rng.permutation(requests.num_requests).astype(float), losses, costs),
    ]
    exact = {
        "oracle": oracle_curve(losses, SHARES),
        "learned gate": score_curve(losses, learned, SHARES, label="learned gate"),
        "random": random_curve(losses, SHARES),
    }
    summary: dict[str, Any] = {"weak": spec.tier_names[weak], "strong": spec.tier_names[strong]}
    if ne_weak > ne_strong:
        for name, curve in exact.items():
            summary[name] = {
                "apgr": apgr(curve, ne_weak, ne_strong),
                "cpt50": cpt(curve, 0.5, ne_weak, ne_strong),
                "cpt80": cpt(curve, 0.8, ne_weak, ne_strong),
            }
        for point in points:
            point["pgr"] = pgr(point["ne"], ne_weak, ne_strong)
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
    result = {
        "evaluation": 1,
        "toolkit_version": __version__,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "ensemble": spec.name,
        "spec": spec.source,
        "machine": machine_facts(),
        "requests": requests.num_requests,
        "candidates": requests.num_candidates,
        "variants": variants,
        "points": points,
        "curves": curves,
        "summary": summary,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "evaluation.md").write_text(render_markdown(result), encoding="utf-8")
    step("drawing the plot")
    plot(result, out / "evaluation.png")
    return result


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def render_markdown(result: dict[str, Any]) -> str:
    """The evaluation as a markdown table and summary lines."""
    tiers = list(result["variants"])
    lines = [
        f"# Routing evaluation: {result['ensemble']}",
        "",
        f"{result['requests']} held-out requests ({result['candidates']} candidates); tiers served as "
        + ", ".join(f"{t} {v}" for t, v in result["variants"].items())
        + ". NE: normalized entropy, lower is better. PGR: share of the NE gap between "
        f"{result['summary']['weak']} and {result['summary']['strong']} that a policy recovers.",
        "",
        "| policy | "
        + " | ".join(f"{t} share" for t in tiers)
        + " | NE | AUC | PGR | MFLOP/request | ms/request |",
        "|---|" + "---|" * (len(tiers) + 5),
    ]
    for p in result["points"]:
        lines.append(
            f"| {p['policy']} | "
            + " | ".join(f"{p['shares'][t]:.0%}" for t in tiers)
            + f" | {p['ne']:.4f} | {p['auc']:.4f} | {_fmt(p.get('pgr'), '.3f')} | "
            f"{p['flops_per_request'] / 1e6:.2f} | {_fmt(p['ms_per_request'], '.3f')} |"
        )
    summary = result["summary"]
    lines.append("")
    for name in ("oracle", "learned gate", "random"):
        if name in summary:
            s = summary[name]
            lines.append(
                f"- {name}: APGR {s['apgr']:.3f}, CPT(50%) {_fmt(s['cpt50'], '.1%')}, "
                f"CPT(80%) {_fmt(s['cpt80'], '.1%')} of requests on {summary['strong']}"
            )
    for key, what in (("flops_per_request", "FLOPs"), ("ms_per_request", "ms")):
        saved, strong = summary.get(f"policy_saves_{key}"), summary["strong"]
        lines.append(
            f"- at {strong}'s quality or better, the policy saves {_fmt(saved, '.1%')} of {strong}'s {what}"
            if saved is not None
            else f"- the policy does not reach {strong}'s quality: no {what} saved at equal quality"
        )
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """NE against FLOPs and against ms per request: tiers, the policy, oracle and random curves."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, key, label in (
        (axes[0], "flops_per_request", "MFLOP per request"),
        (axes[1], "ms_per_request", "ms per request (ONNX Runtime CPU, 1 thread)"),
    ):
        scale = 1e6 if key == "flops_per_request" else 1.0
        for curve, style in zip(result["curves"], ("-", "--", ":", "-."), strict=False):
            ax.plot(np.array(curve[key]) / scale, curve["ne"], style, label=curve["label"])
        for p in result["points"]:
            marker = "*" if "policy" in p["policy"] else "o"
            ax.plot(p[key] / scale, p["ne"], marker, markersize=11 if marker == "*" else 7, label=p["policy"])
        ax.set_xlabel(label)
        ax.set_ylabel("NE (lower is better)")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result['ensemble']}: quality against cost on {result['requests']} held-out requests")
    fig.savefig(path, dpi=110)
    plt.close(fig)
