"""A real embedded tritonserver on the session's deployed repository."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from toolkit.errors import ServerError
from toolkit.serve import ServerOptions, TritonServer, find_tritonserver, free_port


@pytest.fixture(scope="session")
def server(pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    try:
        find_tritonserver(None)
    except ServerError as exc:
        pytest.skip(f"no tritonserver on this machine: {exc}")
    log = tmp_path_factory.mktemp("server") / "tritonserver.log"
    options = ServerOptions(
        repository=pipeline.repository,
        grpc_port=free_port(),
        http_port=free_port(),
        metrics_port=free_port(),
        log_file=log,
    )
    with TritonServer(options) as running:
        yield running
