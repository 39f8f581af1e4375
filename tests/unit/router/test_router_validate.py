"""The router's request validation: every bad request is refused naming its culprit, nothing else raises."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from toolkit.router import InputSchema, RoutingError, validate_request

SCHEMA = InputSchema(
    user_dense=3,
    ad_dense=2,
    user_vocab=(("segment", 10), ("geo", 5)),
    ad_vocab=(("ad_id", 100), ("category", 7)),
    history_length=6,
    history_vocab=7,
    history_table="category",
    max_candidates=16,
)
NAMES = ("user_dense", "user_sparse", "user_history", "ad_dense", "ad_sparse")


def valid(n: int = 4) -> dict[str, np.ndarray]:
    return {
        "user_dense": np.zeros((1, 3), np.float32),
        "user_sparse": np.array([[1, 4]], np.int64),
        "user_history": np.array([[0, 0, 1, 2, 6, 3]], np.int64),
        "ad_dense": np.ones((n, 2), np.float32),
        "ad_sparse": np.tile(np.array([[99, 6]], np.int64), (n, 1)),
    }


def changed(name: str, value: Callable[[np.ndarray], np.ndarray] | None) -> dict[str, object]:
    arrays: dict[str, object] = dict(valid())
    if value is None:
        del arrays[name]
    else:
        arrays[name] = value(arrays[name].copy())
    return arrays


def _set(index: tuple[int, int], x: float) -> Callable[[np.ndarray], np.ndarray]:
    def apply(a: np.ndarray) -> np.ndarray:
        a[index] = x
        return a

    return apply


BAD = {
    "missing ad_sparse": (changed("ad_sparse", None), ["'ad_sparse'", "missing"]),
    "user_dense float64": (
        changed("user_dense", lambda a: a.astype(np.float64)),
        ["'user_dense'", "float32"],
    ),
    "ad_sparse int32": (changed("ad_sparse", lambda a: a.astype(np.int32)), ["'ad_sparse'", "int64"]),
    "ad_dense rank 3": (changed("ad_dense", lambda a: a[..., None]), ["'ad_dense'", "2 dimensions"]),
    "ad_dense width 3": (
        changed("ad_dense", lambda a: np.ones((4, 3), np.float32)),
        ["'ad_dense'", "[N, 2]"],
    ),
    "user_dense two rows": (changed("user_dense", lambda a: np.zeros((2, 3), np.float32)), ["'user_dense'"]),
    "ad_sparse not an array": (changed("ad_sparse", lambda a: a.tolist()), ["'ad_sparse'", "array"]),
    "candidate counts differ": (
        changed("ad_sparse", lambda a: a[:3]),
        ["'ad_dense'", "'ad_sparse'", "4 vs 3"],
    ),
    "no candidates": ({**valid(0)}, ["'ad_dense'", "0 candidates"]),
    "too many candidates": ({**valid(17)}, ["'ad_dense'", "17", "16"]),
    "NaN in ad_dense": (changed("ad_dense", _set((1, 0), np.nan)), ["'ad_dense'", "NaN", "row 1"]),
    "Inf in user_dense": (changed("user_dense", _set((0, 2), np.inf)), ["'user_dense'", "column 2"]),
    "negative ad id": (changed("ad_sparse", _set((2, 0), -3)), ["'ad_sparse'", "'ad_id'", "-3", "row 2"]),
    "negative user id": (changed("user_sparse", _set((0, 1), -1)), ["'user_sparse'", "'geo'"]),
    "negative history id": (changed("user_history", _set((0, 4), -9)), ["'user_history'", "position 4"]),
    "history too long": (
        changed("user_history", lambda a: np.ones((1, 7), np.int64)),
        ["'user_history'", "7", "at most 6"],
    ),
}


def test_a_valid_request_passes_with_nothing_to_report() -> None:
    found = validate_request(valid(), SCHEMA)

    assert found.folded_ids == 0 and not found.truncated_history


@pytest.mark.parametrize("case", sorted(BAD))
def test_a_bad_request_is_refused_with_a_message_naming_the_culprit(case: str) -> None:
    arrays, fragments = BAD[case]

    with pytest.raises(RoutingError) as raised:
        validate_request(arrays, SCHEMA)

    for fragment in fragments:
        assert fragment in str(raised.value)


def test_out_of_range_ids_are_counted_when_folded_and_refused_when_the_policy_rejects() -> None:
    arrays = valid()
    arrays["ad_sparse"][0, 0] = 100
    arrays["user_history"][0, 5] = 7
    arrays["user_sparse"][0, 0] = 10**12

    assert validate_request(arrays, SCHEMA).folded_ids == 3
    strict = dataclasses.replace(SCHEMA, out_of_range_ids="reject")
    with pytest.raises(RoutingError, match="'user_sparse', column 0 \\('segment'\\).*vocabulary size 10"):
        validate_request(arrays, strict)


def test_a_long_history_is_truncated_and_counted_when_the_policy_allows_it() -> None:
    arrays = changed("user_history", lambda a: np.ones((1, 9), np.int64))

    assert validate_request(arrays, dataclasses.replace(SCHEMA, long_history="truncate")).truncated_history


def test_the_schema_survives_its_json_round_trip() -> None:
    import json

    assert InputSchema.from_dict(json.loads(json.dumps(SCHEMA.to_dict()))) == SCHEMA


DTYPES = st.sampled_from([np.float32, np.float64, np.int64, np.int32, np.int8, np.bool_, np.uint64])
ARRAYS = st.one_of(
    hnp.arrays(DTYPES, hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=20)),
    st.none(),
    st.integers(),
    st.text(max_size=3),
)


@settings(max_examples=400, deadline=None, derandomize=True, database=None)
@given(st.fixed_dictionaries({}, optional={name: ARRAYS for name in NAMES}))
def test_validation_never_raises_anything_but_a_routing_error_whatever_it_is_fed(arrays: dict) -> None:
    try:
        validate_request(arrays, SCHEMA)
    except RoutingError as exc:
        assert str(exc)


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(
    n=st.integers(min_value=1, max_value=16),
    dense=hnp.arrays(np.float32, (16, 2), elements=st.floats(width=32)),
    ids=hnp.arrays(np.int64, (16, 2), elements=st.integers(min_value=-(2**63), max_value=2**63 - 1)),
)
def test_validation_of_well_shaped_requests_refuses_exactly_the_bad_values(
    n: int, dense: np.ndarray, ids: np.ndarray
) -> None:
    arrays = {**valid(n), "ad_dense": dense[:n], "ad_sparse": ids[:n]}
    bad = not np.isfinite(dense[:n]).all() or (ids[:n] < 0).any()
    try:
        found = validate_request(arrays, SCHEMA)
    except RoutingError:
        assert bad
    else:
        assert not bad
        assert found.folded_ids == int((ids[:n, 0] >= 100).sum() + (ids[:n, 1] >= 7).sum())
