"""``toolkit tune``: search the serving configuration that meets a p99 SLO at the highest throughput."""

from __future__ import annotations

import hashlib
import sys
import time
from pathlib import Path
from typing import Any

import click

from toolkit.cli.common import (
    fmt,
    folder,
    load,
    output_console,
    parse_candidates,
    parse_pins,
    results_table,
    shown,
    spec_option,
)


def _values(value: str | None, flag: str, kind: type) -> tuple[Any, ...] | None:
    if value is None:
        return None
    try:
        values = tuple(kind(v.strip()) for v in value.split(",") if v.strip())
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a comma-separated list", param_hint=flag) from None
    if not values:
        raise click.BadParameter(f"{value!r}: give at least one value", param_hint=flag)
    return tuple(sorted(set(values)))


def _per_tier(
    entries: tuple[str, ...], tiers: tuple[str, ...], flag: str, kind: type = int
) -> tuple[tuple[str, tuple[Any, ...]], ...]:
    """Per-tier flag entries (``1,2`` for every tier, ``xl=1,2,4`` for one) per tier."""
    every: tuple[Any, ...] | None = None
    named: dict[str, tuple[Any, ...]] = {}
    for entry in entries:
        tier, sep, values = entry.rpartition("=")
        if not sep:
            if every is not None:
                raise click.BadParameter(f"{entry!r}: a list for every tier is given twice", param_hint=flag)
            every = _values(values, flag, kind)
            continue
        tier = tier.strip()
        if tier not in tiers:
            raise click.BadParameter(
                f"{entry!r}: {tier!r} is not a tier of the spec ({', '.join(tiers)})", param_hint=flag
            )
        if tier in named:
            raise click.BadParameter(f"{entry!r}: tier {tier!r} was already given", param_hint=flag)
        named[tier] = _values(values, flag, kind)
    return tuple((t, named.get(t, every)) for t in tiers if t in named or every is not None)


CONFIRM_TOP = 3
"""Configurations measured again after the search, the start included."""


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else ""


def _minutes(seconds: float) -> str:
    return f"{seconds / 60:.1f} min"


@click.command("tune")
@spec_option
@click.option(
    "--slo-ms",
    type=click.FloatRange(min=0, min_open=True),
    required=True,
    help="The p99 latency (ms) a load step must meet, with no failed request, to count.",
)
@click.option(
    "--budget-minutes",
    type=click.FloatRange(min=0, min_open=True),
    default=20.0,
    show_default=True,
    help="Start no configuration that would not finish within this time (estimated from the ones "
    "measured so far); the search then ends with the best found.",
)
@click.option(
    "--search",
    type=click.Choice(["quick", "brute"]),
    default="quick",
    show_default=True,
    help="quick: coordinate descent from the spec's configuration, one knob a step at a time while "
    "throughput improves by more than --margin; brute: every configuration of the space.",
)
@click.option(
    "--margin",
    type=click.FloatRange(min=0),
    default=0.05,
    show_default=True,
    help="Share of throughput a quick-search move must gain (measurements move by a few percent).",
)
@click.option(
    "--confirm",
    "confirm_runs",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help=f"After the search, measure the {CONFIRM_TOP} best configurations (the start among them) this "
    "many more times each, alternating, and choose by the medians; another configuration replaces "
    "the start only if it also beat it in every round (of up to 5; 5 of 6, 6 of 7, ...). "
    "0: take the search's best.",
)
@click.option("--router-instances", metavar="N1,N2,...", help="Router instance counts [2,3,4].")
@click.option("--local-tiers", metavar="MODE,...", help="How the router calls its CPU tiers [bls,inprocess].")
@click.option(
    "--tier-threads", metavar="N1,N2,...", help="ONNX Runtime intra-op threads per tier session [1,2]."
)
@click.option(
    "--tier-instances",
    metavar="N1,N2,...",
    help="Instances of each tier model without a count of its own (triton.tier_instances) [1,2].",
)
@click.option(
    "--per-tier-instances",
    "per_tier",
    multiple=True,
    metavar="[TIER=]N1,N2,...",
    help="Also search each tier's own instance count (tiers[].instances) over these values: "
    "'1,2' for every tier, 'xl=1,2,4' for one tier (repeatable). Off by default.",
)
@click.option(
    "--per-tier-kind",
    "per_tier_kind",
    multiple=True,
    metavar="[TIER=]KIND,...",
    help="GPU targets: also search where each tier's instances run (tiers[].instance_kind): "
    "'cpu,gpu' for every tier, 'lite=cpu,gpu' for one (repeatable). A tier on cpu runs its fastest "
    "passing ONNX variant on the server's CPU cores. Off by default.",
)
@click.option("--queue-timeout-ms", metavar="MS1,MS2,...", help="Router queue timeouts [50,100,200].")
@click.option(
    "--admission",
    metavar="WHO,...",
    help="Who rejects requests that waited past the queue timeout (triton.admission) [batcher,router].",
)
@click.option(
    "--concurrency",
    metavar="C1,C2,...",
    default="1,2,4,8,16,32,64",
    show_default=True,
    help="Closed-loop load steps per configuration; the climb stops at the first that misses the SLO "
    "or fails a request, or after two steps without a 3% throughput gain.",
)
@click.option(
    "--window-s", type=click.FloatRange(min=0.05), default=1.0, show_default=True, help="Window length."
)
@click.option(
    "--max-windows",
    type=click.IntRange(min=3),
    default=6,
    show_default=True,
    help="Windows per step at most.",
)
@click.option(
    "--requests",
    "pool",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Requests the load cycles through: generated, or the held-out log's with data.files.",
)
@click.option(
    "--candidates",
    metavar="MIN:MAX",
    help="Candidates per generated request (default: the spec's traffic: its data, or the held-out log "
    "with data.files).",
)
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    help="Export output to deploy from (default: the spec's paths.artifacts).",
)
@click.option(
    "--backend",
    type=click.Choice(["auto", "onnxruntime", "python"]),
    help="Tier backend, as toolkit deploy's (default: the spec's triton.backend).",
)
@click.option("--pin", "pins", multiple=True, metavar="TIER=VARIANT", help="As toolkit deploy's --pin.")
@click.option(
    "--tritonserver",
    type=click.Path(dir_okay=False, path_type=Path),
    help="tritonserver binary (default: the one toolkit serve runs).",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder for the record and the report (default: <artifacts>/tune).",
)
@click.option(
    "--restart", is_flag=True, help="Forget the record of an earlier run and measure every point again."
)
def command(
    spec_path: Path,
    slo_ms: float,
    budget_minutes: float,
    search: str,
    margin: float,
    confirm_runs: int,
    router_instances: str | None,
    local_tiers: str | None,
    tier_threads: str | None,
    tier_instances: str | None,
    per_tier: tuple[str, ...],
    per_tier_kind: tuple[str, ...],
    queue_timeout_ms: str | None,
    admission: str | None,
    concurrency: str,
    window_s: float,
    max_windows: int,
    pool: int,
    candidates: str | None,
    artifacts: Path | None,
    backend: str | None,
    pins: tuple[str, ...],
    tritonserver: Path | None,
    out: Path | None,
    restart: bool,
) -> None:
    """Find the serving configuration with the highest throughput whose p99 meets --slo-ms.

    Each configuration (router instances, how the router calls its CPU tiers, ONNX Runtime threads,
    tier instances, queue timeout, who sheds: the spec's triton keys; with --per-tier-instances each
    tier's own instance count too, and on a GPU target with --per-tier-kind where each tier's
    instances run) is deployed from the export's artifacts into a scratch repository, served by a
    fresh tritonserver and loaded with toolkit bench's closed-loop steps on the spec's traffic,
    rising until a step misses the SLO or fails a request. A configuration scores the highest
    throughput of a step that met it.

    Every measured point goes to OUT/tune.json as soon as it is measured: the same command run again
    (same spec, SLO and load) resumes without measuring them twice. Ctrl-C, or the end of
    --budget-minutes, ends the search with the best configuration found so far.

    Writes OUT/triton.yaml (the chosen triton: section), OUT/spec.yaml (the spec with it, deployable
    with toolkit deploy --spec), OUT/tune.md and tune-points.json (every point, the choice
    explained), OUT/tune.png (throughput against p99, the SLO as a line) and OUT/model_analyzer.yaml
    with perf_analyzer_data.json (the same question for Model Analyzer, where perf_analyzer runs).
    """
    from rich.console import Console

    from toolkit.bench.load import bench_requests
    from toolkit.errors import RepositoryError, ToolkitError
    from toolkit.repository.plan import DeployOptions, plan_deploy
    from toolkit.serve.backends import resolve_backend
    from toolkit.tune.measure import LoadPlan, idle_instances, server_measure
    from toolkit.tune.report import point_rows, write_report
    from toolkit.tune.search import (
        Measure,
        Point,
        SearchResult,
        SearchStopError,
        brute_force,
        confirm,
        quick_search,
    )
    from toolkit.tune.space import KIND_KNOB, TIER_KNOB, SearchSpace, ServingConfig, knob_label, knob_text
    from toolkit.tune.store import PointStore

    spec = load(spec_path)
    if spec.pools:
        raise ToolkitError(
            f"{spec_path}: pools: toolkit tune measures one server; tune each pool's spec on its own",
            option="pools",
        )
    given = {
        "router_instances": _values(router_instances, "--router-instances", int),
        "local_tiers": _values(local_tiers, "--local-tiers", str),
        "tier_threads": _values(tier_threads, "--tier-threads", int),
        "tier_instances": _values(tier_instances, "--tier-instances", int),
        "queue_timeout_ms": _values(queue_timeout_ms, "--queue-timeout-ms", float),
        "admission": _values(admission, "--admission", str),
    }
    counts = _per_tier(per_tier, spec.tier_names, "--per-tier-instances")
    kinds = _per_tier(per_tier_kind, spec.tier_names, "--per-tier-kind", str)
    if kinds and spec.triton.target != "gpu":
        raise click.BadParameter(
            f"{spec_path}: triton.target is {spec.triton.target}: every tier runs on CPU instances; "
            "the instance kind is searched on GPU targets",
            param_hint="--per-tier-kind",
        )
    searched = {tier for tier, _ in counts}
    if not [t for t in spec.tier_names if t not in searched and not spec.tier(t).instances]:
        if given["tier_instances"] is not None:
            raise click.BadParameter(
                "every tier has an instance count of its own (tiers[].instances or --per-tier-instances), "
                "so triton.tier_instances changes nothing",
                param_hint="--tier-instances",
            )
        given["tier_instances"] = (spec.triton.tier_instances,)
    try:
        space = SearchSpace(
            **{knob: values for knob, values in given.items() if values is not None},
            tier_counts=counts,
            tier_kinds=kinds,
        )
    except ValueError as exc:
        knob = str(exc).partition(":")[0]
        hint = (
            "--per-tier-instances"
            if knob.startswith(TIER_KNOB)
            else "--per-tier-kind"
            if knob.startswith(KIND_KNOB)
            else "--" + knob.replace("_", "-")
        )
        raise click.BadParameter(str(exc), param_hint=hint) from None
    levels = _values(concurrency, "--concurrency", int)
    if levels[0] < 1:
        raise click.BadParameter(f"{concurrency!r}: levels must be >= 1", param_hint="--concurrency")
    bounds = parse_candidates(candidates)
    plan = LoadPlan(
        concurrencies=levels, window_s=window_s, max_windows=max_windows, requests=pool, candidates=bounds
    )
    artifacts_dir = folder(artifacts, spec.paths.artifacts)
    chosen_backend = resolve_backend(backend or spec.triton.backend, tritonserver)
    options = DeployOptions(chosen_backend, pins=parse_pins(pins))
    plan_deploy(spec, artifacts_dir, options)  # the export, the pins and the backend, before any server
    start = ServingConfig.from_spec(spec, [tier for tier, _ in counts], [tier for tier, _ in kinds])
    for tier, values in kinds:
        for kind in values:
            if kind == start.value(KIND_KNOB + tier):
                continue  # planned just above
            try:
                plan_deploy(start.with_value(KIND_KNOB + tier, kind).apply(spec), artifacts_dir, options)
            except RepositoryError as exc:
                raise click.BadParameter(f"{tier}={kind}: {exc}", param_hint="--per-tier-kind") from None
    target = folder(out, str(artifacts_dir / "tune"))
    space = space.with_start(start)
    context = {
        "spec": _digest(spec_path),
        "manifest": _digest(artifacts_dir / "manifest.json"),
        "slo_ms": slo_ms,
        "load": {
            "concurrency": list(levels),
            "window_s": window_s,
            "max_windows": max_windows,
            "requests": pool,
            "candidates": list(bounds) if bounds else None,
        },
        "backend": chosen_backend,
        "pins": dict(sorted(options.pins.items())),
    }
    record = target / "tune.json"
    if restart and record.exists():
        record.unlink()
    store = PointStore(record, context)
    console = Console(stderr=True, width=None if sys.stderr.isatty() else 160, log_path=False)
    resumed = len(store.points)
    if resumed:
        console.log(f"resuming from {shown(record)}: {resumed} points already measured")
    console.log(
        f"{search} search over {space.size} configurations, start {start.key}; "
        f"SLO p99 <= {slo_ms:g} ms; budget {budget_minutes:g} min"
    )
    budget_s = budget_minutes * 60.0
    began = time.perf_counter()
    durations: list[float] = [p.seconds for p in store.points.values() if p.seconds > 0]
    requests = bench_requests(spec, pool, bounds)
    measured = server_measure(
        spec,
        artifacts_dir,
        target / "work",
        slo_ms,
        options,
        plan,
        progress=lambda line: status.update(f"{current}: {line}"),
        tritonserver=tritonserver,
        requests=requests,
    )
    current = ""
    count = 0
    phase = "search"

    def guarded(config: ServingConfig) -> Point:
        nonlocal current, count
        elapsed = time.perf_counter() - began
        each = sum(durations) / len(durations) if durations else 0.0
        reserve = each * CONFIRM_TOP * confirm_runs if phase == "search" else 0.0
        if count and elapsed + each + reserve > budget_s:
            raise SearchStopError("budget")
        count += 1
        label = f"point {len(store.search_points) + 1}" if phase == "search" else phase
        current = f"{label} ({config.key})"
        try:
            point = measured(config)
        except KeyboardInterrupt:
            raise SearchStopError("interrupted") from None
        durations.append(point.seconds)
        elapsed = time.perf_counter() - began
        each = sum(durations) / len(durations)
        left = max(budget_s - elapsed, 0.0)
        console.log(
            f"{label}: {config.key}: "
            + (
                f"{point.throughput:.1f} req/s at p99 {point.p99_ms:.1f} ms"
                if point.meets_slo
                else "no load step met the SLO"
            )
            + f" ({point.seconds:.0f} s); {_minutes(elapsed)} of {budget_minutes:g} min used, "
            f"~{each:.0f} s a point, room for about {int(left // each) if each else 0} more"
        )
        return point

    def confirmation(r: int) -> Measure:
        nonlocal phase
        phase = f"confirmation {r + 1} of {confirm_runs}"
        return store.measured(guarded, tag=f"confirm{r + 1}")

    with console.status("starting") as status:
        try:
            if search == "quick":
                result = quick_search(
                    space, start, store.measured(guarded), margin=margin, idle=idle_instances
                )
            else:
                result = brute_force(space, store.measured(guarded), start=start)
            confirm(result, confirmation, confirm_runs, top=CONFIRM_TOP, margin=margin)
        except KeyboardInterrupt:
            result = SearchResult(store.search_points, start, None, "interrupted")
    meta = {
        "spec": spec_path.name,
        "search": search,
        "backend": chosen_backend,
        "load": f"closed loop, concurrency {','.join(map(str, levels))}, {window_s:g} s windows, "
        f"{pool} requests"
        + (f" of {bounds[0]} to {bounds[1]} candidates" if bounds else " (the spec's traffic)"),
        "measured this run": count,
        "from the record": resumed,
    }
    said, written = write_report(result, target, slo_ms, margin, spec, spec_path, requests, meta)
    rows = point_rows(result)
    varying = [knob for knob in start.knobs if len({row[knob] for row in rows}) > 1]
    same = ", ".join(
        f"{knob_label(knob)} {knob_text(rows[0][knob] if rows else start.value(knob))}"
        for knob in start.knobs
        if knob not in varying
    )
    table = results_table(
        f"{spec.name}: {len(result.points)} configurations, SLO p99 <= {slo_ms:g} ms"
        + (f"; in every one: {same}" if same else ""),
        ["#", *(knob_label(knob) for knob in varying), "req/s", "p99 ms", "steps", "s", ""],
        left=1,
    )
    for row in rows:
        table.add_row(
            str(row["point"]),
            *(knob_text(row[knob]) for knob in varying),
            fmt(row["requests_per_s"], 1) if row["meets_slo"] else "-",
            fmt(row["p99_ms"], 1),
            str(row["steps"]),
            f"{row['seconds']:.0f}",
            row["role"],
        )
    output_console().print(table)
    click.echo(said.text)
    click.echo("wrote " + ", ".join(shown(p) for p in [record, *written]))
    if said.chosen is not None:
        click.echo(f"deploy it: toolkit deploy --spec {shown(target / 'spec.yaml')}")
    if result.stopped == "interrupted":
        sys.exit(130)
    if said.chosen is None:
        sys.exit(1)
