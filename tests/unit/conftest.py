"""Fixtures of the unit tests: the tiny spec (``helpers.tiny_spec_dict``) as a dict and validated."""

from __future__ import annotations

from typing import Any

import pytest
from helpers import tiny_spec_dict as make_tiny_spec_dict

from toolkit.spec import Spec, spec_from_dict


@pytest.fixture
def tiny_spec_dict() -> dict[str, Any]:
    """A fresh, mutable copy of the tiny spec as parsed YAML would give it."""
    return make_tiny_spec_dict()


@pytest.fixture(scope="session")
def tiny_spec() -> Spec:
    """The tiny spec, validated (frozen, so one instance serves every test)."""
    return spec_from_dict(make_tiny_spec_dict(), source="tiny.yaml")
