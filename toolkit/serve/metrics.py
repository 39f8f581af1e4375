"""Read what a running Triton's router counted, from its Prometheus metrics endpoint."""

from __future__ import annotations

import re
import urllib.error
import urllib.request

from toolkit.errors import ServerError

ROUTER_EVENTS = "toolkit_router_events_total"
"""The router's counter, one series per (event, subject): (``fallback``, ``xl``), (``remote_ok``, address)."""

_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def router_events(metrics_url: str, timeout_s: float = 5.0) -> dict[tuple[str, str], float]:
    """The router's event counts by ``(event, subject)``, summed over routers and instances.

    Args:
        metrics_url: The server's metrics URL, such as ``http://127.0.0.1:8002/metrics``.
        timeout_s: Seconds to wait for the endpoint.

    Raises:
        ServerError: The endpoint cannot be read.
    """
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(metrics_url, timeout=timeout_s) as reply:
            text = reply.read().decode("utf-8", errors="replace")
    except (urllib.error.URLError, OSError) as exc:
        raise ServerError(f"Cannot read the metrics at {metrics_url}: {exc}.") from None
    events: dict[tuple[str, str], float] = {}
    for line in text.splitlines():
        if not line.startswith(ROUTER_EVENTS + "{"):
            continue
        labels = dict(_LABEL.findall(line[len(ROUTER_EVENTS) + 1 : line.rindex("}")]))
        key = (labels.get("event", ""), labels.get("subject", ""))
        events[key] = events.get(key, 0.0) + float(line.rsplit(" ", 1)[1])
    return events
