"""What ``toolkit tune`` writes: the chosen configuration, a report, a plot, a Model Analyzer config.

The chosen configuration is written as a spec overlay and as a full spec; the report has every
point; the plot shows throughput against p99; the Model Analyzer config asks the same question.
"""

from __future__ import annotations

import importlib.util
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from toolkit.data.requests import RequestSet
from toolkit.spec.schema import Spec
from toolkit.tune.search import Point, SearchResult, luck, wins_needed
from toolkit.tune.space import ServingConfig, knob_label, knob_text

STOPPED = {
    None: "the search ran to its end",
    "budget": "the time budget ran out before the search ended",
    "interrupted": "the search was interrupted (Ctrl-C); run the same command again to resume it",
    "max_points": "the search reached its point limit",
}
"""Why a search ended, as the report says it."""


@dataclass(frozen=True)
class Verdict:
    """The chosen configuration against the starting one.

    Attributes:
        chosen: The chosen point (None when no point met the SLO).
        baseline: The starting configuration's point (None when it was not measured).
        gain: Chosen throughput over the baseline's (NaN when either is missing or the baseline
            met no load level).
        text: One paragraph saying what was chosen and why.
    """

    chosen: Point | None
    baseline: Point | None
    gain: float
    text: str


def verdict(result: SearchResult, slo_ms: float, margin: float) -> Verdict:
    """Explain the search's outcome: what was chosen, what it changed, what it gained, why it stopped."""
    chosen, baseline = result.best, result.baseline
    why = STOPPED.get(result.stopped, result.stopped or "")
    if chosen is None:
        text = (
            f"No configuration met p99 <= {slo_ms:g} ms without failures at any load step "
            f"({len(result.points)} measured; {why}). Raise --slo-ms or lower the first load step."
        )
        return Verdict(None, baseline, math.nan, text)
    gain = math.nan
    if baseline is not None and baseline.meets_slo:
        gain = chosen.throughput / baseline.throughput
    head = (
        f"Chosen: {chosen.config.key}: {chosen.throughput:.1f} requests/s at p99 {chosen.p99_ms:.1f} ms "
        f"(SLO {slo_ms:g} ms)."
    )
    changes = chosen.config.changes(result.start) if result.start is not None else {}
    if result.confirmed:
        runs = min(len(v) for v in result.confirmed.values())
        medians = "; ".join(
            f"{_label(config, result.start)} {result.score(config).throughput:.1f} "
            f"({_spread(result.confirmed[config])})"
            for config in result.confirmed
        )
        how = (
            f"Measured again after the search, {runs} times each and alternating, the "
            f"{len(result.confirmed)} best configurations had median throughputs (requests/s; the runs' "
            f"range in brackets) of: {medians}; the figures here are those medians. A configuration "
            f"replaces the start only if its median beats the start's by more than {margin:.0%} and it "
            f"beat the start in {_rounds_needed(runs)}, so that chance alone would pass one no faster "
            f"than the start {luck(runs):.1%} of the time."
        )
    else:
        how = "The figures are the search's measurements."
    if baseline is None:
        body = "The starting configuration was not measured."
    elif not baseline.meets_slo:
        body = (
            "The starting configuration met the SLO at no load step; "
            f"the chosen one changes {_moves(changes)}."
        )
    elif not changes:
        body = (
            f"It is the starting configuration: no other configuration beat it by more than {margin:.0%} "
            "at the same SLO."
        )
    else:
        body = (
            f"Against the starting configuration ({baseline.throughput:.1f} requests/s at p99 "
            f"{baseline.p99_ms:.1f} ms) it changes {_moves(changes)}: {gain:.2f}x the throughput."
        )
    idle = ""
    if result.skipped:
        idle = (
            f" Not searched from where the router called none of their models, so that their "
            f"instances did no work: {', '.join(result.skipped)}."
        )
    text = f"{head} {body} {how} Search: {len(result.points)} points; {why}.{idle}"
    return Verdict(chosen, baseline, gain, text)


def _rounds_needed(rounds: int) -> str:
    needed = wins_needed(rounds)
    return "every round" if needed == rounds else f"{needed} of the {rounds} rounds"


def _spread(runs: list[Point]) -> str:
    values = [p.slo_throughput for p in runs]
    return f"{min(values):.1f} to {max(values):.1f}"


def _label(config: ServingConfig, start: ServingConfig | None) -> str:
    if start is None:
        return config.key
    changes = config.changes(start)
    if not changes:
        return "the start"
    return ", ".join(f"{knob} {knob_text(new)}" for knob, (_, new) in changes.items())


def _moves(changes: dict[str, tuple[Any, Any]]) -> str:
    return ", ".join(f"{knob} {knob_text(old)} -> {knob_text(new)}" for knob, (old, new) in changes.items())


def point_rows(result: SearchResult) -> list[dict[str, Any]]:
    """One row per measurement in the order measured, the start and the chosen configuration marked.

    The search's points come first, then the confirmation runs, each marked with its round.
    """
    best = result.best
    measured = [(point, "") for point in result.points]
    rounds = max((len(runs) for runs in result.confirmed.values()), default=0)
    for r in range(rounds):
        measured += [(runs[r], f"confirm {r + 1}") for runs in result.confirmed.values() if r < len(runs)]
    rows = []
    for i, (point, tag) in enumerate(measured, 1):
        role = [tag] if tag else []
        if not tag and point.config == result.start:
            role.append("start")
        if not tag and best is not None and point.config == best.config:
            role.append("chosen")
        rows.append(
            {
                "point": i,
                **{knob: point.config.value(knob) for knob in point.config.knobs},
                "requests_per_s": round(point.throughput, 1),
                "p99_ms": None if math.isnan(point.p99_ms) else point.p99_ms,
                "meets_slo": point.meets_slo,
                "steps": len(point.curve),
                "seconds": round(point.seconds, 1),
                "role": ", ".join(role),
            }
        )
    return rows


def overlay_text(config: ServingConfig, header: str) -> str:
    """The ``triton:`` section that deploys ``config``, with a comment saying where it came from.

    Per-tier instance counts and kinds belong in the spec's ``tiers:`` list, so they follow as comment
    lines naming the tier and the ``instances`` and ``instance_kind`` values to set there
    (``spec.yaml`` has them set).
    """
    text = _commented(header, config.overlay())
    per_tier = _per_tier_keys(config)
    if per_tier:
        text += "# and in the spec's tiers: list (tiers[].instances, tiers[].instance_kind):\n"
        text += "".join(
            f"#   {tier}: " + ", ".join(f"{key}: {value}" for key, value in keys.items()) + "\n"
            for tier, keys in per_tier.items()
        )
    return text


def _per_tier_keys(config: ServingConfig) -> dict[str, dict[str, Any]]:
    """Per tier, the ``tiers[]`` keys ``config`` sets: ``instances`` and ``instance_kind``."""
    keys: dict[str, dict[str, Any]] = {}
    for tier, count in config.tier_counts:
        keys.setdefault(tier, {})["instances"] = count
    for tier, kind in config.tier_kinds:
        keys.setdefault(tier, {})["instance_kind"] = kind
    return keys


def merged_spec_text(spec_path: Path, config: ServingConfig, header: str) -> str:
    """The spec file with ``config``'s ``triton`` keys and per-tier keys set: deployable as it is.

    Raises:
        OSError: The spec file cannot be read.
    """
    data = yaml.safe_load(spec_path.read_text(encoding="utf-8")) or {}
    data["triton"] = {**(data.get("triton") or {}), **config.overlay()["triton"]}
    per_tier = _per_tier_keys(config)
    for tier in data.get("tiers") or []:
        if isinstance(tier, dict) and tier.get("name") in per_tier:
            tier.update(per_tier[tier["name"]])
    return _commented(header, data)


def _commented(header: str, data: dict[str, Any]) -> str:
    """``data`` as YAML in its own key order, below ``header`` as comment lines."""
    return "".join(f"# {line}\n" for line in header.splitlines()) + yaml.safe_dump(data, sort_keys=False)


def markdown(result: SearchResult, slo_ms: float, said: Verdict, meta: dict[str, Any]) -> str:
    """The report: the setting, the verdict and a table of every measured point."""
    lines = [
        f"# toolkit tune: {meta.get('model', '')}",
        "",
        f"- SLO: p99 <= {slo_ms:g} ms with no failed request",
        *(f"- {key}: {value}" for key, value in meta.items() if key != "model"),
        "",
        said.text,
        "",
    ]
    rows = point_rows(result)
    if rows:
        columns = list(rows[0])
        lines.append("| " + " | ".join(columns) + " |")
        lines.append("|" + "|".join("---" for _ in columns) + "|")
        for row in rows:
            cells = [_cell(row[c]) for c in columns]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".")
    return str(value)


def plot(result: SearchResult, path: Path, slo_ms: float) -> None:
    """Throughput against p99 for every point's load steps, the SLO as a line.

    The chosen and the starting configurations are drawn in colour, the others in grey.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(8, 5), constrained_layout=True)
    best = result.best
    for point in result.points:
        if not point.curve:
            continue
        x = [step[0] for step in point.curve]
        y = [step[1] for step in point.curve]
        if best is not None and point.config == best.config:
            role = "chosen (the start)" if point.config == result.start else "chosen"
            ax.plot(x, y, "o-", color="tab:green", linewidth=2.2, label=f"{role}: {_short(point.config)}")
        elif point.config == result.start:
            ax.plot(x, y, "s-", color="tab:blue", linewidth=1.8, label=f"start: {_short(point.config)}")
        else:
            ax.plot(x, y, ".-", color="grey", alpha=0.45, linewidth=1)
    ax.axhline(slo_ms, color="tab:red", linestyle="--", label=f"SLO p99 {slo_ms:g} ms")
    ax.set_xlabel("answered requests per second (closed-loop load steps)")
    ax.set_ylabel("p99 latency (ms)")
    ax.set_yscale("log")
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.grid(alpha=0.3)
    ax.set_title(f"{len(result.points)} configurations (grey: the others)")
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _short(config: ServingConfig) -> str:
    return ", ".join(f"{knob_label(knob)} {knob_text(config.value(knob))}" for knob in config.knobs)


def perf_analyzer_data(requests: RequestSet, count: int = 16) -> dict[str, Any]:
    """perf_analyzer's ``--input-data`` JSON for the router model: ``count`` of the requests.

    Each tensor's shape is the request's own, as the router takes it with ``triton.admission:
    router`` (``max_batch_size: 0``); with ``batcher`` (``max_batch_size: 1``) perf_analyzer adds the
    batch dimension to the same shapes.
    """
    data = []
    for r in range(min(count, requests.num_requests)):
        tensors = requests.request(r)
        data.append(
            {
                name: {"content": np.asarray(array).ravel().tolist(), "shape": list(array.shape)}
                for name, array in tensors.items()
            }
        )
    return {"data": data}


def model_analyzer_config(spec: Spec, slo_ms: float, repository: str, data_file: str) -> dict[str, Any]:
    """A Model Analyzer profile config for the same question, for users who have perf_analyzer.

    It profiles the router as a BLS model with its composing models (the tiers, the preprocess step
    and, with the learned policy, the gate) under the same p99 constraint with quick search, on the
    repository deployed from the tuned spec. Model Analyzer searches instance counts and batching,
    not the router's own settings (``local_tiers``, threads, queue timeout, admission): those stay
    as tuned.
    """
    composing = [*spec.tier_names, *(m for m in spec.entry_models if m not in (spec.name, spec.router_model))]
    return {
        "model_repository": repository,
        "run_config_search_mode": "quick",
        "triton_launch_mode": "local",
        "profile_models": {
            spec.router_model: {
                "constraints": {"perf_latency_p99": {"max": slo_ms}},
                "objectives": {"perf_throughput": 10},
            }
        },
        "bls_composing_models": ",".join(composing),
        "perf_analyzer_flags": {"input-data": data_file},
        "output_model_repository_path": "model_analyzer_output/repository",
        "export_path": "model_analyzer_output",
        "override_output_model_repository": True,
    }


def write_report(
    result: SearchResult,
    out: Path,
    slo_ms: float,
    margin: float,
    spec: Spec,
    spec_path: Path,
    requests: RequestSet,
    meta: dict[str, Any],
) -> tuple[Verdict, list[Path]]:
    """Write every output of a search into ``out`` (the record, ``tune.json``, is kept by the store).

    Writes ``tune.md`` and ``tune-points.json`` always; with a chosen configuration ``triton.yaml``
    (the overlay), ``spec.yaml`` (the spec with it applied), ``model_analyzer.yaml`` and
    ``perf_analyzer_data.json``; ``tune.png`` when matplotlib is installed.

    Returns:
        The verdict and the files written.
    """
    out.mkdir(parents=True, exist_ok=True)
    said = verdict(result, slo_ms, margin)
    written = []
    report = out / "tune.md"
    report.write_text(markdown(result, slo_ms, said, {"model": spec.name, **meta}), encoding="utf-8")
    points = out / "tune-points.json"
    summary = {
        "model": spec.name,
        "slo_ms": slo_ms,
        **meta,
        "stopped": result.stopped,
        "gain": None if math.isnan(said.gain) else said.gain,
        "chosen": said.chosen.config.key if said.chosen else None,
        "chosen_requests_per_s": said.chosen.throughput if said.chosen else None,
        "chosen_p99_ms": said.chosen.p99_ms if said.chosen else None,
        "start": result.start.key if result.start else None,
        "start_requests_per_s": said.baseline.throughput if said.baseline else None,
        "start_p99_ms": said.baseline.p99_ms if said.baseline else None,
        "confirmed": {c.key: len(runs) for c, runs in result.confirmed.items()},
        "knobs": list(result.start.knobs) if result.start else [],
        "verdict": said.text,
        "points": point_rows(result),
        "curves": {p.config.key: [list(step) for step in p.curve] for p in result.points},
    }
    points.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    written += [report, points]
    if said.chosen is not None:
        header = (
            f"toolkit tune --slo-ms {slo_ms:g} on {spec_path.name}: {said.chosen.throughput:.1f} requests/s "
            f"at p99 {said.chosen.p99_ms:.1f} ms"
        )
        overlay = out / "triton.yaml"
        overlay.write_text(overlay_text(said.chosen.config, header), encoding="utf-8")
        merged = out / "spec.yaml"
        merged.write_text(merged_spec_text(spec_path, said.chosen.config, header), encoding="utf-8")
        data = out / "perf_analyzer_data.json"
        data.write_text(json.dumps(perf_analyzer_data(requests)) + "\n", encoding="utf-8")
        analyzer = out / "model_analyzer.yaml"
        config = model_analyzer_config(spec, slo_ms, spec.paths.repository, str(data))
        how = (
            f"toolkit deploy --spec {merged} writes the repository; then, from the folder\n"
            f"toolkit tune ran in: model-analyzer profile -f {analyzer}"
        )
        analyzer.write_text(_commented(how, config), encoding="utf-8")
        written += [overlay, merged, data, analyzer]
    if importlib.util.find_spec("matplotlib") is not None and result.points:
        png = out / "tune.png"
        plot(result, png, slo_ms)
        written.append(png)
    return said, written
