"""Read what a running Triton's router counted, from its Prometheus metrics endpoint."""

from __future__ import annotations

import re
import time
import urllib.error
import urllib.request

from toolkit.errors import ServerError

ROUTER_EVENTS = "toolkit_router_events_total"
"""The router's counter, one series per (event, subject): (``fallback``, ``xl``), (``remote_ok``, address)."""

ROUTER_TIER_CALLS = "toolkit_router_tier_calls_total"
"""The router's tier calls, one series per (tier, path): path ``inprocess``, ``bls`` or ``remote``."""

ROUTER_TIER_SECONDS = "toolkit_router_tier_seconds_total"
"""Seconds the router's tier calls took, one series per (tier, path)."""

ROUTER_FLUSH_S = 0.2
"""How often the router hands what it counted to these counters (they lag it by at most this)."""

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def router_events(
    metrics_url: str, timeout_s: float = 5.0, settle: bool = True
) -> dict[tuple[str, str], float]:
    """The router's event counts by ``(event, subject)``, summed over routers and instances.

    Args:
        metrics_url: The server's metrics URL, such as ``http://127.0.0.1:8002/metrics``.
        timeout_s: Seconds to wait for the endpoint.
        settle: Read again, :data:`ROUTER_FLUSH_S` apart, until two reads agree (at most a few
            seconds), so that what the router counted just before is included.

    Raises:
        ServerError: The endpoint cannot be read.
    """
    return _series(metrics_url, {ROUTER_EVENTS: ("event", "subject")}, timeout_s, settle)[ROUTER_EVENTS]


def router_tier_calls(
    metrics_url: str, timeout_s: float = 5.0, settle: bool = True, router: str | None = None
) -> dict[tuple[str, str], tuple[float, float]]:
    """The router's tier calls by ``(tier, path)``: how many, and the seconds they took in all.

    The path is ``inprocess`` (the router's own process), ``bls`` or ``remote`` (another pool).
    Arguments as :func:`router_events`; ``router``: only that router model's calls.

    Raises:
        ServerError: The endpoint cannot be read.
    """
    keys = ("tier", "path")
    found = _series(
        metrics_url, {ROUTER_TIER_CALLS: keys, ROUTER_TIER_SECONDS: keys}, timeout_s, settle, router
    )
    seconds = found[ROUTER_TIER_SECONDS]
    return {key: (n, seconds.get(key, 0.0)) for key, n in found[ROUTER_TIER_CALLS].items()}


Series = dict[str, dict[tuple[str, str], float]]


def _series(
    metrics_url: str,
    names: dict[str, tuple[str, str]],
    timeout_s: float,
    settle: bool,
    router: str | None = None,
) -> Series:
    """Each counter in ``names`` by its two labels, read from one page (until settled)."""
    found = _read(metrics_url, names, timeout_s, router)
    if not settle:
        return found
    deadline = time.monotonic() + max(10 * ROUTER_FLUSH_S, 2.0)
    while time.monotonic() < deadline:
        time.sleep(ROUTER_FLUSH_S * 1.5)
        again = _read(metrics_url, names, timeout_s, router)
        if again == found:
            break
        found = again
    return found


def _read(
    metrics_url: str, names: dict[str, tuple[str, str]], timeout_s: float, router: str | None
) -> Series:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(metrics_url, timeout=timeout_s) as reply:
            text = reply.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"Cannot read the metrics at {metrics_url}: {exc}.") from None
    found: Series = {name: {} for name in names}
    for line in text.splitlines():
        name, brace, _ = line.partition("{")
        if not brace or name not in names:
            continue
        labels = dict(_LABEL.findall(line[len(name) + 1 : line.rindex("}")]))
        if router is not None and labels.get("router") != router:
            continue
        first, second = names[name]
        key = (labels.get(first, ""), labels.get(second, ""))
        series = found[name]
        series[key] = series.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return found
