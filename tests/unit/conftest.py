"""Shared fixtures of the unit tests: a tiny spec (small vocabularies, small tiers) built in code."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from toolkit.spec import Spec, spec_from_dict

# ad_id keeps 512 rows: the demo generator needs enough items (3/4 of the vocabulary) to fill each of
# its 32 categories; much smaller ad_id vocabularies make it fail (see the unit-test report).
TINY_SPEC: dict[str, Any] = {
    "name": "tiny",
    "seed": 3,
    "features": {
        "user_dense": 3,
        "ad_dense": 2,
        "user_sparse": [{"name": "user_segment", "vocab": 11}, {"name": "user_geo", "vocab": 7}],
        "ad_sparse": [
            {"name": "ad_id", "vocab": 512},
            {"name": "advertiser", "vocab": 13},
            {"name": "ad_category", "vocab": 9},
        ],
        "history": {"length": 6, "table": "ad_category"},
    },
    "data": {
        "train_requests": 40,
        "holdout_requests": 20,
        "candidates": {"min": 2, "max": 6},
        "informative_share": 0.5,
    },
    "tiers": [
        {"name": "lite", "architecture": "lite", "params": {"embedding_dim": 4, "hidden": [8, 4]}},
        {
            "name": "standard",
            "architecture": "standard",
            "params": {"embedding_dim": 4, "cross_layers": 2, "hidden": [8]},
        },
        {
            "name": "xl",
            "architecture": "xl",
            "params": {"embedding_dim": 8, "heads": 2, "layers": 1, "hidden": [8]},
        },
    ],
    "routing": {
        "policy": "rules",
        "default_tier": "lite",
        "rules": [{"feature": "history_length", "op": ">=", "value": 3, "tier": "xl"}],
    },
    "triton": {"max_candidates": 16, "router_instances": 2, "tier_instances": 1},
}


@pytest.fixture
def tiny_spec_dict() -> dict[str, Any]:
    """A fresh, mutable copy of the tiny spec as parsed YAML would give it."""
    return copy.deepcopy(TINY_SPEC)


@pytest.fixture(scope="session")
def tiny_spec() -> Spec:
    """The tiny spec, validated (frozen, so one instance serves every test)."""
    return spec_from_dict(copy.deepcopy(TINY_SPEC), source="tiny.yaml")
