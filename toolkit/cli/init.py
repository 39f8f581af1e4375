"""``toolkit init``: write a starter spec and the examples into a project folder."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import click

from toolkit.errors import ToolkitError
from toolkit.extras import DISTRIBUTION

_FOLDERS = ("ensembles", "examples")
_SKIP = {"__init__.py", "__pycache__"}


def starter_files() -> dict[Path, bytes]:
    """The files ``toolkit init`` writes, by path relative to the project folder."""
    root = resources.files("toolkit.templates")
    out: dict[Path, bytes] = {}

    def walk(node: resources.abc.Traversable, relative: Path) -> None:
        for child in sorted(node.iterdir(), key=lambda c: c.name):
            if child.name in _SKIP or child.name.endswith(".pyc"):
                continue
            if child.is_dir():
                walk(child, relative / child.name)
            else:
                out[relative / child.name] = child.read_bytes()

    for folder in _FOLDERS:
        walk(root / folder, Path(folder))
    return out


@click.command("init")
@click.argument("directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."))
@click.option("--force", is_flag=True, help="Overwrite files that already exist.")
def command(directory: Path, force: bool) -> None:
    """Write a starter spec and the examples into DIRECTORY (default: here), then print what to run.

    Writes ensembles/ads_ranking.yaml (the default spec every command reads: three tiers on generated
    data, routed by request context) and examples/ (bring your own model, MovieLens logs, tier pools).
    Paths in the specs are relative to the folder the commands run in, so run them from DIRECTORY.
    Existing files are left alone unless --force is given.
    """
    files = starter_files()
    clashes = [path for path in files if (directory / path).exists()]
    if clashes and not force:
        raise ToolkitError(
            f"{directory / clashes[0]} already exists ({len(clashes)} of the {len(files)} files do); "
            "pass --force to overwrite them."
        )
    for path, data in files.items():
        target = directory / path
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        except OSError as exc:
            raise ToolkitError(f"cannot write {target}: {exc.strerror or exc}") from None
    spec = Path("ensembles") / "ads_ranking.yaml"
    click.echo(f"wrote {len(files)} files into {directory}/: {spec} (the default spec) and examples/")
    cd = f"cd {directory} && " if directory.resolve() != Path.cwd().resolve() else ""
    click.echo(f"next, with the export and serve extras (pip install '{DISTRIBUTION}[export,serve]'):")
    click.echo(f"  {cd}toolkit train && toolkit export && toolkit deploy && toolkit demo")
    click.echo("edit the tiers, features and routing in the spec (the docs' Spec reference lists every key).")
    if shutil.which("toolkit") is None:
        click.echo("note: `toolkit` is not on PATH; run `python -m toolkit` instead.")
