"""The evaluation as markdown and as a plot (see :mod:`toolkit.evaluate.report`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or value != value else format(value, spec)


def _interval(s: dict[str, Any], key: str, spec: str) -> str:
    interval = s.get("interval", {}).get(key)
    if not interval:
        return ""
    low, _, high = interval
    return f" [{_fmt(low, spec)}, {_fmt(high, spec)}]"


def _curve_lines(summary: dict[str, Any], strong: str) -> list[str]:
    lines = []
    for name, s in summary.items():
        if not isinstance(s, dict) or "apgr" not in s:
            continue
        level = s.get("interval", {}).get("level")
        note = f" ({level:.0%} bootstrap intervals over requests)" if level else ""
        lines.append(
            f"- {name}: APGR {s['apgr']:.3f}{_interval(s, 'apgr', '.3f')}, "
            f"CPT(50%) {_fmt(s['cpt50'], '.1%')}{_interval(s, 'cpt50', '.1%')}, "
            f"CPT(80%) {_fmt(s['cpt80'], '.1%')}{_interval(s, 'cpt80', '.1%')} of requests on {strong}{note}"
        )
        if "cost_cpt80_flops_per_request" in s:
            lines.append(
                f"  - priced by cost as the learned policy does (gain per extra FLOP or ms), with its own "
                f"cost counted, 80% of the gain costs "
                f"{_fmt(s['cost_cpt80_flops_per_request'], '.1%')} of {strong}'s extra FLOPs and "
                f"{_fmt(s.get('cost_cpt80_ms_per_request'), '.1%')} of its extra ms"
            )
    return lines


def render_markdown(result: dict[str, Any]) -> str:
    """The evaluation as markdown tables and summary lines."""
    tiers = list(result["variants"])
    summary = result["summary"]
    k = summary.get("top_k", 5)
    valued = result.get("valued", False)
    lines = [
        f"# Routing evaluation: {result['ensemble']}",
        "",
        f"{result['requests']} held-out requests ({result['candidates']} candidates); tiers served as "
        + ", ".join(f"{t} {v}" for t, v in result["variants"].items())
        + ". NE: normalized entropy over all candidates, lower is better. PGR: share of the NE gap between "
        f"{summary['weak']} and {summary['strong']} that a policy recovers. NDCG@{k}, top-{k} NE and "
        f"top-{k} AUC: each request's {k} best candidates by the served scores, what a page shows."
        + (" Value NE: NE with each request weighted by its value." if valued else ""),
        "",
        "| policy | "
        + " | ".join(f"{t} share" for t in tiers)
        + " | NE | AUC | PGR | "
        + ("value NE | " if valued else "")
        + f"NDCG@{k} | top-{k} NE | top-{k} AUC | MFLOP/request | ms/request |",
        "|---|" + "---|" * (len(tiers) + 8 + (1 if valued else 0)),
    ]
    for p in result["points"]:
        lines.append(
            f"| {p['policy']} | "
            + " | ".join(f"{p['shares'][t]:.0%}" for t in tiers)
            + f" | {p['ne']:.4f} | {p['auc']:.4f} | {_fmt(p.get('pgr'), '.3f')} | "
            + (f"{_fmt(p.get('value_ne'), '.4f')} | " if valued else "")
            + f"{_fmt(p.get('ndcg'), '.4f')} | {_fmt(p.get('top_ne'), '.4f')} | "
            f"{_fmt(p.get('top_auc'), '.4f')} | "
            f"{p['flops_per_request'] / 1e6:.2f} | {_fmt(p['ms_per_request'], '.3f')} |"
        )
    gate = result.get("gate", {})
    lines += ["", "Routing between the smallest and the largest tier, request by request:", ""]
    lines += _curve_lines(summary, summary["strong"])
    if "value_weighted" in summary:
        lines += ["", "Value-weighted (the gate ranks requests by value times predicted gain):", ""]
        lines += _curve_lines(summary["value_weighted"], summary["strong"])
    if gate:
        cost = gate.get("gate_cost_mflop") or [0.0, 0.0]
        ms = gate.get("gate_ms") or {}
        validation = gate.get("validation_apgr") or {}
        lines += [
            "",
            f"- the learned gate ({gate.get('origin')}): design {gate.get('gate')!r}"
            + (", cheapest tier first" if gate.get("cheapest_first") else "")
            + f", target {gate.get('target')!r}"
            + (
                " (validation APGR " + ", ".join(f"{t} {_fmt(v, '.3f')}" for t, v in validation.items()) + ")"
                if validation
                else ""
            )
            + f", fitted on {gate.get('source')}",
            f"- its cost: {cost[0]:.4f} + {cost[1]:.4f} * N MFLOP, "
            + ", ".join(f"{_fmt(v, '.3f')} ms at N={n}" for n, v in ms.items())
            + (f", {gate['gate_parameters']:,} parameters" if gate.get("gate_parameters") else "")
            + (f", {gate['gate_bytes'] / 1e6:.2f} MB" if gate.get("gate_bytes") else ""),
        ]
    for key, what in (("flops_per_request", "FLOPs"), ("ms_per_request", "ms")):
        saved, strong = summary.get(f"policy_saves_{key}"), summary["strong"]
        lines.append(
            f"- at {strong}'s quality or better, the policy saves {_fmt(saved, '.1%')} of {strong}'s {what}"
            if saved is not None
            else f"- the policy does not reach {strong}'s quality: no {what} saved at equal quality"
        )
    for warning in result.get("warnings", []):
        lines.append(f"- WARNING: {warning}")
    return "\n".join(lines) + "\n"


def plot(result: dict[str, Any], path: Path) -> None:
    """NE against FLOPs and against ms per request: tiers, the policy, the gate, ceilings and random."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    for ax, key, label in (
        (axes[0], "flops_per_request", "MFLOP per request"),
        (axes[1], "ms_per_request", "ms per request (ONNX Runtime CPU, 1 thread)"),
    ):
        scale = 1e6 if key == "flops_per_request" else 1.0
        for curve, style in zip(result["curves"], ("-", "--", "-.", ":"), strict=False):
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
