"""``toolkit data``: write generated requests as request logs, and check the logs a spec reads."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.common import fmt, load, output_console, results_table, spec_option


@click.group("data")
def command() -> None:
    """Request logs: the files `data.files` in a spec points at.

    Tiers train and are evaluated on generated requests unless the spec's data.files names request
    logs (Criteo TSV, Parquet or CSV; see docs/request-logs.md). `write` turns generated
    requests into such a file (to see the layout, or to test a pipeline on files); `check` reads
    the files a spec names from end to end and reports what it found.
    """


@command.command("write")
@spec_option
@click.option(
    "--format",
    "fmt_",
    type=click.Choice(["parquet", "csv", "criteo"]),
    default="parquet",
    show_default=True,
    help="File format.",
)
@click.option(
    "--split",
    type=click.Choice(["train", "holdout"]),
    default="train",
    show_default=True,
    help="Which generated requests: the training ones or the held-out ones (another seed).",
)
@click.option(
    "--requests",
    type=click.IntRange(min=1),
    default=None,
    help="Requests to write (default: the spec's data.train_requests or data.holdout_requests).",
)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True, help="File to write.")
def write(spec_path: Path, fmt_: str, split: str, requests: int | None, out: Path) -> None:
    """Write the spec's generated requests as a log file, and print the data.files columns for it.

    Parquet and CSV hold one row per candidate with a request_id column and the user columns and
    the request's value repeated on each row; Criteo holds label, I1..I13 and C1..C26 (hex ids), one
    request per row, and no values.
    """
    import dataclasses

    import yaml

    from toolkit.data.demo import generated_split
    from toolkit.data.logs import default_columns, write_requests

    spec = load(spec_path)
    count = requests or (spec.data.train_requests if split == "train" else spec.data.holdout_requests)
    generated = generated_split(spec, split, count)
    write_requests(generated, spec, out, fmt_)
    console = output_console()
    console.print(
        f"wrote {generated.num_requests} requests ({generated.num_candidates} rows) to {out}", highlight=False
    )
    if spec.data.files is None:
        columns = {
            k: list(v) if isinstance(v, tuple) else v
            for k, v in dataclasses.asdict(
                default_columns(spec, fmt_, values=generated.values is not None)
            ).items()
            if v
        }
        snippet = yaml.safe_dump(
            {"data": {"files": {"format": fmt_, split: str(out), "columns": columns}}},
            default_flow_style=None,
            sort_keys=False,
            width=100,
        )
        console.print(
            f"to read it, add to the spec:\n{snippet}", highlight=False, soft_wrap=True, markup=False
        )


@command.command("check")
@spec_option
def check(spec_path: Path) -> None:
    """Read every file the spec's data.files names, end to end, and print what each holds.

    Exits 1 with a one-line error naming the file and column at the first problem (a column
    missing, a value that does not parse, user columns that disagree within a request).
    """
    from toolkit.data.logs import summarize
    from toolkit.errors import SpecError

    spec = load(spec_path)
    files = spec.data.files
    if files is None:
        raise SpecError(f"{spec_path}: key 'data.files' is not set; the spec uses generated data")
    table = results_table(
        f"{files.format} logs of {spec_path}",
        ["split", "file", "requests", "candidates", "per request", "CTR"],
        left=2,
    )
    splits = {"train": files.train, "holdout": files.holdout}
    if files.calibration:
        splits["calibration"] = files.calibration
    for split, path in splits.items():
        summary = summarize(spec, path)
        table.add_row(
            split,
            path,
            f"{summary.requests:,}",
            f"{summary.candidates:,}",
            fmt(summary.candidates / max(summary.requests, 1), 2),
            f"{summary.ctr:.2%}",
        )
    output_console().print(table)


@command.command("movielens")
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("logs/movielens"),
    show_default=True,
    help="Folder for train.parquet, calibration.parquet, holdout.parquet and PROVENANCE.json.",
)
@click.option(
    "--session-size",
    type=click.IntRange(min=1),
    default=5,
    show_default=True,
    help="Consecutive ratings of a user that make one request.",
)
@click.option(
    "--negatives",
    type=(click.IntRange(min=0), click.IntRange(min=0)),
    default=(5, 25),
    show_default=True,
    help="Range of movies the user never rated added to each request (drawn by popularity so far).",
)
@click.option(
    "--history-length",
    type=click.IntRange(min=1),
    default=50,
    show_default=True,
    help="Newest rated movies kept as each request's history (features.history.length).",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the negative sampling.")
def movielens(
    out: Path, session_size: int, negatives: tuple[int, int], history_length: int, seed: int
) -> None:
    """Turn MovieLens-100k's ratings into request logs: real traffic for routing.

    Reads the ratings, users and movies that RecBole's wheel ships (pip install --no-deps
    recbole==1.2.1; nothing is downloaded). A user's ratings in time order are cut into sessions;
    a session is a request whose candidates are its movies (label 1 when rated 4 or 5) and movies
    the user never rated (label 0), with the user's earlier movies as history. Requests are split
    in time: 70% train, 10% calibration, 20% held out. examples/movielens/spec.yaml reads them.
    MovieLens-100k is GroupLens's (research use only, not to be redistributed); PROVENANCE.json
    says where it comes from and how to cite it.
    """
    from toolkit.data.movielens import MovieLensOptions, write_movielens
    from toolkit.errors import SpecError

    low, high = negatives
    if high < low:
        raise SpecError(f"--negatives: the range must rise, got {low} {high}")
    options = MovieLensOptions(session_size=session_size, negatives=(low, high), seed=seed)
    console = output_console()
    with console.status("reading MovieLens-100k and building requests"):
        info = write_movielens(out, options, history_length)
    table = results_table(
        f"MovieLens-100k request logs in {out}",
        ["split", "requests", "candidates", "CTR", "from", "to"],
        left=1,
    )
    for split, size in info["splits"].items():
        table.add_row(
            split,
            f"{size['requests']:,}",
            f"{size['candidates']:,}",
            f"{size['ctr']:.2%}",
            size["from"],
            size["to"],
        )
    console.print(table)
    console.print(f"source: {info['source']}", highlight=False, soft_wrap=True)
