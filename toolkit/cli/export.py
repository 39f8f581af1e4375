"""``toolkit export``: every tier in every precision, checked against PyTorch, accepted or not, and timed."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.common import fmt, folder, load, output_console, results_table, spec_option
from toolkit.export.manifest import Manifest, Variant
from toolkit.spec.variants import VARIANTS

_VARIANT_HELP = "; ".join(f"{name}: {info.description}" for name, info in VARIANTS.items())


def _split(values: tuple[str, ...]) -> tuple[str, ...] | None:
    out = tuple(v.strip() for value in values for v in value.split(",") if v.strip())
    return out or None


@click.command("export", epilog=f"Variants: {_VARIANT_HELP}.")
@spec_option
@click.option(
    "--checkpoints",
    type=click.Path(file_okay=False, path_type=Path),
    help="Folder with the trained checkpoints (default: the spec's paths.checkpoints).",
)
@click.option(
    "--artifacts",
    type=click.Path(file_okay=False, path_type=Path),
    help="Output folder for <model>/<variant>/ and manifest.json (default: the spec's paths.artifacts).",
)
@click.option(
    "--tier",
    "tiers",
    multiple=True,
    metavar="NAME",
    help="Export only this tier; repeat or comma-separate for several. The manifest keeps the other "
    "tiers' entries.",
)
@click.option(
    "--precision",
    "precisions",
    multiple=True,
    metavar="VARIANT",
    help="Build only this variant (onnx-fp32 is always built: the others are made from it); repeat "
    "or comma-separate. Default: the spec's export.precisions.",
)
@click.option("--force", is_flag=True, help="Rebuild every variant, even those whose inputs did not change.")
def command(
    spec_path: Path,
    checkpoints: Path | None,
    artifacts: Path | None,
    tiers: tuple[str, ...],
    precisions: tuple[str, ...],
    force: bool,
) -> None:
    """Export every tier to ONNX and TensorRT variants; check, accept and time each one.

    onnx-fp32 is exported from PyTorch and must match it on held-out requests (plus a
    one-candidate request and a short history) within export.tolerance. Every other variant is
    made from it, scored on all held-out requests and compared with fp32 PyTorch: a variant whose
    NE changes more than export.acceptance.max_ne_change (either way), or whose AUC falls below
    export.acceptance.min_auc_ratio of fp32's, is FAILED with the numbers and never deployed. A variant
    this machine cannot build (no GPU, no tensorrt package, an unsupported operator) is SKIPPED with
    the reason. Passing variants are timed (ONNX Runtime CPU, 1 thread; GPU providers where
    present) at export.timing_candidates until three windows agree within 10%.

    Tiers given as user models (tiers[].model) are checked against their input mapping first: a
    factory that cannot be imported, a checkpoint that does not fit, an input the model needs but
    the mapping lacks (or the reverse), a dtype the model refuses or an output that is not one
    score per candidate stops the run with one line naming the tier. A per-pair model's line
    below the matrix says what recomputing its user side for every candidate costs.

    The status matrix (tier x variant -> OK / FAILED / SKIPPED, reason, errors, NE and AUC
    deltas, latency, size, sha256) is written to <artifacts>/manifest.json and printed. Variants
    whose inputs (checkpoints, spec sections, toolkit and library versions) did not change are
    reused. The command exits 1, changing nothing, only when a variant in export.required did
    not pass.
    """
    from rich.console import Console

    from toolkit.export import run_export
    from toolkit.export.pipeline import ExportOptions, RequiredVariantError

    spec = load(spec_path)
    out = folder(artifacts, spec.paths.artifacts)
    console = Console(stderr=True)
    try:
        with console.status("exporting") as status:

            def on_step(message: str) -> None:
                status.update(message)
                console.log(message)

            options = ExportOptions(_split(tiers), _split(precisions), force)
            manifest = run_export(spec, folder(checkpoints, spec.paths.checkpoints), out, options, on_step)
    except RequiredVariantError as exc:
        print_matrix(exc.manifest, spec.export.timing_candidates, f"status matrix (NOT written to {out}/)")
        raise
    print_matrix(manifest, spec.export.timing_candidates, f"status matrix, written to {out}/manifest.json")


def _row(model: str, name: str, variant: Variant, counts: list[int], targets: list[str]) -> list[str]:
    delta = variant.quality.get("ne_delta_rel")
    embeddings = variant.details.get("embeddings")
    errors = variant.max_abs_error
    status = variant.status.value
    cells = [
        model,
        name,
        f"{status}*" if variant.reused else status,
        f"{delta:+.3%}" if delta is not None else "-",
        fmt(variant.quality.get("auc_ratio"), 4),
        f"{max(errors.values()):.1e}" if errors else "-",
    ]
    for target in targets:
        latency = variant.latency(target)
        cells += [fmt(latency.get(n), 3) for n in counts]
    size = variant.bytes
    cells += [f"{size / 1e6:.2f}" if size else "-", f"{embeddings['ratio']:.1%}" if embeddings else "-"]
    return cells


def print_matrix(manifest: Manifest, timing_candidates: tuple[int, ...], title: str) -> None:
    """Print the manifest's status matrix as a table on stdout, with the reasons below it."""
    counts = list(timing_candidates)
    rows = manifest.rows()
    targets = [t for t in ("cpu", "gpu") if any(v.latency(t) for _, _, v in rows)] or ["cpu"]
    latency_columns = [f"{t} N={n}" for t in targets for n in counts]
    table = results_table(
        f"{title}\nΔNE and AUC/fp32 against fp32 PyTorch on the held-out requests; latency in ms per "
        "request; emb = embedding bytes against fp32; * = reused, inputs unchanged",
        ["model", "variant", "status", "ΔNE", "AUC/fp32", "max err", *latency_columns, "MB", "emb"],
        left=3,
    )
    for model, name, variant in rows:
        table.add_row(*_row(model, name, variant, counts, targets))
    console = output_console(width=170)
    console.print(table)
    reasons: dict[tuple[str, str], list[str]] = {}
    for model, name, variant in rows:
        if variant.reason:
            reasons.setdefault((variant.status.value, variant.reason), []).append(f"{model} {name}")
    for (status, reason), where in reasons.items():
        console.print(f"{status} {', '.join(where)}: {reason}", highlight=False, soft_wrap=True)
    bounds = manifest.acceptance
    if bounds:
        console.print(
            f"acceptance: NE within ±{bounds['max_ne_change']:.2%}, AUC >= "
            f"{bounds['min_auc_ratio']:.2%} of fp32 PyTorch",
            highlight=False,
        )
    for name, tier in manifest.tiers.items():
        if tier.per_pair:
            console.print(f"{name}: {tier.per_pair['note']}", highlight=False, soft_wrap=True)
