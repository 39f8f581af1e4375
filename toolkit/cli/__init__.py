"""The ``toolkit`` command line: a thin click group, one module per command.

Commands are imported only when invoked, so ``toolkit --help`` stays instant.
"""

from __future__ import annotations

import importlib
import logging
import sys
import warnings

import click

from toolkit import __version__

_COMMANDS: dict[str, tuple[str, str]] = {
    "init": (
        "toolkit.cli.init",
        "Write a starter spec and the examples into a folder and print what to run.",
    ),
    "train": (
        "toolkit.cli.train",
        "Train the demo tiers on generated data or request logs and save checkpoints.",
    ),
    "data": ("toolkit.cli.data", "Write generated requests as request logs; check the logs a spec reads."),
    "export": (
        "toolkit.cli.export",
        "Export every tier in every precision; check each against PyTorch and time it.",
    ),
    "deploy": (
        "toolkit.cli.deploy",
        "Write the Triton model repository: tiers, preprocess, router, ensemble.",
    ),
    "k8s": (
        "toolkit.cli.k8s",
        "Write validated Kubernetes manifests for the spec's pools (Deployments, Services, HPAs).",
    ),
    "serve": ("toolkit.cli.serve", "Start Triton on a model repository and wait until it is ready."),
    "infer": ("toolkit.cli.infer", "Send one generated request through the ensemble over gRPC."),
    "demo": ("toolkit.cli.demo", "Serve the repository, send demo traffic, print what happened, stop."),
    "bench": (
        "toolkit.cli.bench",
        "Load a running Triton's ensemble step by step: throughput, latency percentiles, tier mix.",
    ),
    "calibrate": (
        "toolkit.cli.calibrate",
        "Fit the learned routing gate on generated requests and price the tiers (lambda).",
    ),
    "evaluate": (
        "toolkit.cli.evaluate",
        "Routing policies on held-out requests: quality against cost, JSON, markdown and a plot.",
    ),
    "tune": (
        "toolkit.cli.tune",
        "Find the serving configuration with the most throughput under a p99 SLO, on the real server.",
    ),
}


class _LazyGroup(click.Group):
    """A click group that imports a command's module only when that command runs."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        from toolkit.extras import explain

        try:
            module = importlib.import_module(_COMMANDS[cmd_name][0])
        except ModuleNotFoundError as exc:
            error = explain(exc, f"toolkit {cmd_name}")
            if error is None:
                raise
            raise error from None
        return module.command

    def resolve_command(
        self, ctx: click.Context, args: list[str]
    ) -> tuple[str | None, click.Command | None, list[str]]:
        """Resolve as click does, then stop with one line when the command's extra is missing.

        ``--help`` works without the extra, so a user can read what a command does before installing.
        """
        from toolkit.extras import require_for_command

        name, command, rest = super().resolve_command(ctx, args)
        if name is not None and not ctx.resilient_parsing and not {"-h", "--help"} & set(rest):
            require_for_command(name)
        return name, command, rest

    def invoke(self, ctx: click.Context) -> object:
        """Run the command; an import that fails for want of an extra becomes that extra's one line."""
        from toolkit.extras import explain

        try:
            return super().invoke(ctx)
        except ModuleNotFoundError as exc:
            error = explain(exc, f"toolkit {ctx.invoked_subcommand or ''}".strip())
            if error is None or (ctx.obj or {}).get("debug"):
                raise
            raise error from None

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [(name, help_text) for name, (_, help_text) in _COMMANDS.items()]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=_LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="toolkit")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
@click.option("--debug", is_flag=True, help="Show full tracebacks on errors.")
@click.pass_context
def cli(ctx: click.Context, verbose: int, debug: bool) -> None:
    """Serve tiered ads-ranking models on Triton with per-request routing.

    The pipeline runs one way: a spec (ensembles/NAME.yaml) -> train (demo data) -> export
    (ONNX, checked against PyTorch) -> deploy (Triton model repository) -> serve -> clients.
    Every command reads the spec given with --spec (default: ensembles/ads_ranking.yaml;
    `toolkit init` writes it). The base install runs init, infer and bench; the other commands
    need an extra (export, serve, fleet), and say which when it is missing.
    """
    level = logging.WARNING - 10 * min(verbose, 2)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    ctx.obj = {"debug": debug}


FLAGS = {
    "backend": "--backend",
    "target": "--target",
    "pins": "--pin",
    "pool_addresses": "--pool-address",
    "tiers": "--tier",
    "precisions": "--precision",
}
"""The flag of each library option that errors may name (``ToolkitError.option``)."""


def error_line(exc: Exception) -> str:
    """A toolkit error as the command line shows it: an option at fault is named by its flag."""
    option = getattr(exc, "option", "")
    if option:
        return f"{FLAGS.get(option, option)} {exc.detail}"  # type: ignore[attr-defined]
    return str(exc)


def _one_line_warning(message: Warning | str, *_args: object, **_kwargs: object) -> None:
    click.echo(f"warning: {message}", err=True)


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; turn toolkit errors into one line on stderr and exit code 1."""
    from toolkit.errors import ToolkitError

    debug = "--debug" in (argv if argv is not None else sys.argv[1:])
    warnings.showwarning = _one_line_warning
    try:
        cli.main(args=argv, prog_name="toolkit", standalone_mode=False)
    except ToolkitError as exc:
        if debug:
            raise
        click.echo(f"error: {error_line(exc)}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.UsageError as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except click.ClickException as exc:
        click.echo(f"error: {exc.format_message()}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
