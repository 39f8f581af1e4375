"""Unit tests of ``toolkit.serve.metrics`` against a small HTTP server that plays the metrics endpoint."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import http_endpoint

from toolkit.errors import ServerError
from toolkit.serve.metrics import router_events, router_tier_calls

LINES = [
    'toolkit_router_events_total{router="r",version="1",instance="r_0_0",event="tier",subject="xl"} 3',
    'toolkit_router_events_total{router="r",version="1",instance="r_0_1",event="tier",subject="xl"} 2',
    'toolkit_router_events_total{router="r",version="1",instance="r_0_0",event="folded_ids",subject=""} 7',
    'toolkit_router_tier_calls_total{router="r",version="1",instance="r_0_0",tier="xl",path="inprocess"} 5',
    "toolkit_router_tier_seconds_total{"
    + 'router="r",version="1",instance="r_0_0",tier="xl",path="inprocess"} 0.004',
    'nv_inference_count{model="xl",version="1"} 11',
]


class Endpoint:
    """Serves ``pages`` in turn (the last one for ever), as counters that are still being flushed."""

    def __init__(self, pages: list[str]) -> None:
        self.pages = pages
        self.reads = 0


@pytest.fixture
def endpoint() -> Iterator[tuple[str, Endpoint]]:
    state = Endpoint(["\n".join(LINES)])

    def answer(path: str) -> tuple[int, bytes]:
        page = state.pages[min(state.reads, len(state.pages) - 1)]
        state.reads += 1
        return 200, page.encode()

    with http_endpoint(answer) as url:
        yield f"{url}/metrics", state


def test_router_events_are_summed_over_instances_by_event_and_subject(endpoint) -> None:
    url, _ = endpoint

    assert router_events(url, settle=False) == {("tier", "xl"): 5.0, ("folded_ids", ""): 7.0}


def test_router_tier_calls_pair_each_count_with_its_seconds(endpoint) -> None:
    url, _ = endpoint

    assert router_tier_calls(url, settle=False) == {("xl", "inprocess"): (5.0, 0.004)}


def test_settled_read_waits_until_the_router_flushed_what_it_counted(endpoint) -> None:
    url, state = endpoint
    early = "\n".join(LINES[:1])
    state.pages = [early, early.replace("} 3", "} 4"), "\n".join(LINES)]

    assert router_events(url) == {("tier", "xl"): 5.0, ("folded_ids", ""): 7.0}
    assert state.reads >= 4


def test_unreadable_endpoint_is_named_in_the_error() -> None:
    with pytest.raises(ServerError, match="Cannot read the metrics at http://127.0.0.1:9/metrics"):
        router_events("http://127.0.0.1:9/metrics", timeout_s=1.0, settle=False)
