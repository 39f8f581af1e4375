"""A real embedded tritonserver on the session's deployed repository."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import free_port_options

from toolkit.errors import ServerError
from toolkit.serve import TritonServer, find_tritonserver


@pytest.fixture(scope="session")
def server(pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    try:
        find_tritonserver(None)
    except ServerError as exc:
        pytest.skip(f"no tritonserver on this machine: {exc}")
    log = tmp_path_factory.mktemp("server") / "tritonserver.log"
    options = free_port_options(pipeline.repository, log)
    with TritonServer(options) as running:
        yield running
