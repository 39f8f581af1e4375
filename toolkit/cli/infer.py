"""``toolkit infer``: one generated request through the deployed ensemble."""

from __future__ import annotations

from pathlib import Path

import click

from toolkit.cli.common import load, output_console, results_table, spec_option


@click.command("infer")
@spec_option
@click.option(
    "--url", help="gRPC address host:port of the server (default: the spec's triton host and grpc_port)."
)
@click.option("--model", help="Model to call (default: the ensemble, named after the spec).")
@click.option(
    "--candidates",
    type=click.IntRange(min=1),
    default=16,
    show_default=True,
    help="N, the number of candidate ads in the request.",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="Seed of the generated request (same seed, same request).",
)
@click.option(
    "--history",
    type=click.Choice(["any", "long", "short"]),
    default="any",
    show_default=True,
    help="User kind: long (an informative history, which the rules policy routes to the large "
    "tier), short (a new user), or any.",
)
@click.option("--tier", help="Force this tier by name (request parameter `tier`).")
@click.option(
    "--latency-budget-ms",
    type=click.FloatRange(min=0, min_open=True),
    help="This request's latency budget (request parameter `latency_budget_ms`).",
)
@click.option(
    "--value",
    type=click.FloatRange(min=0, min_open=True),
    help="What this request is worth (request parameter `value`, default 1): the learned policy "
    "weighs its predicted gain by it.",
)
@click.option("--top", type=click.IntRange(min=1), default=10, show_default=True, help="Candidates to print.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=10.0,
    show_default=True,
    help="Seconds to wait for the answer before giving up.",
)
def command(
    spec_path: Path,
    url: str | None,
    model: str | None,
    candidates: int,
    seed: int,
    history: str,
    tier: str | None,
    latency_budget_ms: float | None,
    value: float | None,
    top: int,
    timeout: float,
) -> None:
    """Send one generated request (one user, N candidate ads, raw ids) to the ensemble over gRPC.

    Prints the candidates ranked by score and the tier that scored them. The server must be running
    (`toolkit serve`). Exits 1 with the server's message when the request is refused.
    """
    import numpy as np

    from toolkit.client import ClientError, RankingClient
    from toolkit.data import generate_requests

    spec = load(spec_path)
    share = {"any": spec.data.informative_share, "long": 1.0, "short": 0.0}[history]
    requests = generate_requests(
        spec.features, 1, (candidates, candidates), share, seed=seed, world_seed=spec.seed
    )
    arrays = requests.request(0)
    address = url or f"{spec.triton.host}:{spec.triton.grpc_port}"
    try:
        with RankingClient(
            address, model or spec.name, timeout_s=timeout, tier_names=spec.tier_names
        ) as client:
            ranking = client.rank(tier=tier, latency_budget_ms=latency_budget_ms, value=value, **arrays)
    except ClientError as exc:
        raise click.ClickException(f"{address}: {exc}") from None
    served = sorted(set(ranking.tier_names))
    history_len = int(np.count_nonzero(arrays["user_history"]))
    click.echo(
        f"request: 1 user (history of {history_len} ids), {candidates} candidates "
        f"-> served by {', '.join(served)}"
    )
    table = results_table("", ["rank", "candidate", "score", "tier", "ad ids (raw, first digits)"], left=0)
    order = np.argsort(-ranking.scores, kind="stable")[:top]
    for rank, i in enumerate(order, start=1):
        ids = ",".join(str(x)[:8] + "…" for x in arrays["ad_sparse"][i])
        table.add_row(str(rank), str(int(i)), f"{ranking.scores[i]:.5f}", ranking.tier_names[i], ids)
    output_console().print(table)
