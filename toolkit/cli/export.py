"""``toolkit export``: tiers and the preprocess step to ONNX, checked against PyTorch."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.common import fmt, folder, load, output_console, results_table, spec_option


@click.command("export")
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
    help="Export only this tier; repeat for several. The manifest keeps the other tiers' entries.",
)
def command(
    spec_path: Path, checkpoints: Path | None, artifacts: Path | None, tiers: tuple[str, ...]
) -> None:
    """Export every tier and the preprocess step to ONNX (fp32, dynamic candidate dimension).

    Each exported model is checked against PyTorch on held-out requests (plus a one-candidate
    request and a short history): output names, then shapes, then values within the spec's
    export.tolerance; a model over it fails the export with the max difference per output, and
    nothing in the artifacts folder is changed. Each tier's held-out NE and AUC under ONNX Runtime
    and its latency per request at export.timing_candidates are recorded, with file sizes and
    sha256, in <artifacts>/manifest.json.
    """
    from rich.console import Console

    from toolkit.export import FP32, run_export

    spec = load(spec_path)
    out = folder(artifacts, spec.paths.artifacts)
    console = Console(stderr=True)
    with console.status("exporting") as status:

        def on_step(message: str) -> None:
            status.update(message)
            console.log(message)

        manifest = run_export(spec, folder(checkpoints, spec.paths.checkpoints), out, tiers or None, on_step)
    counts = [str(n) for n in spec.export.timing_candidates]
    table = results_table(
        f"exported to {out}/ (latency: ONNX Runtime CPU, 1 thread, ms per request)",
        ["model", "variant", "status", "max abs err", "NE", "AUC", *[f"N={n}" for n in counts], "MB"],
        left=3,
    )
    pre = manifest["preprocess"]["variants"][FP32]
    entries = [(spec.preprocess_model, pre)] + [
        (name, tier["variants"][FP32]) for name, tier in manifest["tiers"].items()
    ]
    for name, v in entries:
        quality = v.get("quality", {})
        size = sum(f["bytes"] for f in v.get("files", [])) / 1e6
        table.add_row(
            name,
            FP32,
            v["status"],
            f"{max(v['max_abs_error'].values(), default=0.0):.1e}",
            fmt(quality.get("ne")),
            fmt(quality.get("auc")),
            *[fmt(v["latency_ms"].get(n), 3) for n in counts],
            f"{size:.2f}",
        )
    output_console().print(table)
