"""A real embedded tritonserver on the session's deployed repository."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from helpers import serving

from toolkit.serve import TritonServer


@pytest.fixture(scope="session")
def server(pipeline, tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonServer]:
    with serving(pipeline.repository, tmp_path_factory.mktemp("server")) as running:
        yield running
