"""Options and helpers shared by the CLI commands."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from toolkit.spec.load import DEFAULT_SPEC

if TYPE_CHECKING:
    from toolkit.spec.schema import Spec


def spec_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """``--spec PATH``: the ensemble spec file."""
    return click.option(
        "--spec",
        "spec_path",
        type=click.Path(dir_okay=False, path_type=Path),
        default=DEFAULT_SPEC,
        show_default=True,
        help="Ensemble spec file (YAML). Paths in it are relative to the working directory.",
    )(func)


def load(spec_path: Path) -> Spec:
    """Load the spec (errors become one line through the CLI's error handling)."""
    from toolkit.spec import load_spec

    return load_spec(spec_path)


def folder(given: Path | None, default: str) -> Path:
    """A folder from a flag, else from the spec's ``paths`` section."""
    return given if given is not None else Path(default)


def shown(path: Path) -> str:
    """A path as messages show it: relative to the working directory when it lies below it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def fmt(value: float | None, digits: int = 4) -> str:
    """A number for a table cell; blank for None or NaN."""
    if value is None or value != value:
        return "-"
    return f"{value:.{digits}f}"


def output_console(width: int = 120) -> Any:
    """A rich console for results on stdout: ``width`` columns wide when stdout is not a terminal."""
    import sys

    from rich.console import Console

    return Console(width=None if sys.stdout.isatty() else width)


def results_table(title: str, columns: list[str], left: int = 1) -> Any:
    """A compact rich table; the first ``left`` columns are left-aligned, the rest right-aligned."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, title_justify="left")
    for i, column in enumerate(columns):
        table.add_column(column, justify="left" if i < left else "right", no_wrap=True)
    return table


def parse_pins(values: tuple[str, ...]) -> dict[str, str]:
    """``--pin TIER=VARIANT`` values as a mapping (a malformed one is a usage error naming it)."""
    pins: dict[str, str] = {}
    for value in values:
        tier, sep, variant = value.partition("=")
        if not sep or not tier.strip() or not variant.strip():
            raise click.BadParameter(f"{value!r} is not TIER=VARIANT", param_hint="--pin")
        pins[tier.strip()] = variant.strip()
    return pins


def parse_candidates(value: str | None) -> tuple[int, int] | None:
    """``--candidates MIN:MAX`` (or ``N``) as bounds; None when not given."""
    if value is None:
        return None
    low, sep, high = value.partition(":")
    try:
        bounds = (int(low), int(high or low))
    except ValueError:
        raise click.BadParameter(f"{value!r} is not MIN:MAX", param_hint="--candidates") from None
    if not 1 <= bounds[0] <= bounds[1]:
        raise click.BadParameter(f"{value!r}: need 1 <= MIN <= MAX", param_hint="--candidates")
    return bounds
