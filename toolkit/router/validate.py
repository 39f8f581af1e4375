"""Request validation: the router's check of the raw request before any tier runs.

Triton itself refuses a request to the ensemble with a missing tensor, a wrong data type or a wrong
fixed dimension, and names the tensor. What its config cannot say is checked here, on the raw
tensors the client sent: the candidate count (at least 1, at most the maximum, the same in every
candidate tensor), finite dense features, ids within their tables, the history's length. The same
function also re-checks names, dtypes and shapes, so it is safe on any input (the router model may
be called directly, and the property tests feed it anything).

Plain Python and numpy, like the rest of this package: it runs inside the router model.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from .policy import RoutingError

ID_POLICIES = ("fold", "reject")
"""What happens to an id at or above its table's vocabulary: folded into the table, or refused."""

HISTORY_POLICIES = ("reject", "truncate")
"""What happens to a history longer than L: refused, or its newest L ids kept."""


@dataclass(frozen=True)
class InputSchema:
    """What a valid raw request looks like, written by ``toolkit deploy`` into ``router.json``.

    Attributes:
        user_dense: Width of ``user_dense`` [1, Du].
        ad_dense: Width of ``ad_dense`` [N, Da].
        user_vocab: Per column of ``user_sparse`` [1, Su], its feature name and vocabulary.
        ad_vocab: Per column of ``ad_sparse`` [N, Sa], its feature name and vocabulary.
        history_length: L, the history slots the tiers see.
        history_vocab: Vocabulary of the table the history ids index.
        history_table: Name of that table's feature.
        max_candidates: Largest N.
        out_of_range_ids: ``fold`` or ``reject`` (see :data:`ID_POLICIES`).
        long_history: ``reject`` or ``truncate`` (see :data:`HISTORY_POLICIES`).
    """

    user_dense: int
    ad_dense: int
    user_vocab: tuple[tuple[str, int], ...]
    ad_vocab: tuple[tuple[str, int], ...]
    history_length: int
    history_vocab: int
    history_table: str = "history"
    max_candidates: int = 1024
    out_of_range_ids: str = "fold"
    long_history: str = "reject"

    def __post_init__(self) -> None:
        if self.out_of_range_ids not in ID_POLICIES or self.long_history not in HISTORY_POLICIES:
            raise ValueError(
                f"out_of_range_ids must be one of {ID_POLICIES} and long_history one of "
                f"{HISTORY_POLICIES}, got {self.out_of_range_ids!r} and {self.long_history!r}"
            )

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (lists where the fields hold tuples, as JSON gives them back)."""
        data = asdict(self)
        for key in ("user_vocab", "ad_vocab"):
            data[key] = [list(pair) for pair in data[key]]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> InputSchema:
        """The inverse of :meth:`to_dict`."""
        values = dict(data)
        for key in ("user_vocab", "ad_vocab"):
            values[key] = tuple((str(name), int(vocab)) for name, vocab in values[key])
        return cls(**values)


@dataclass
class Findings:
    """What a valid request carried that the policies let through, for the router's counters."""

    folded_ids: int = 0
    truncated_history: bool = False


_DTYPES = {
    "user_dense": np.float32,
    "user_sparse": np.int64,
    "user_history": np.int64,
    "ad_dense": np.float32,
    "ad_sparse": np.int64,
}


def _array(arrays: dict[str, Any], name: str) -> np.ndarray:
    value = arrays.get(name)
    if value is None:
        raise RoutingError(f"input tensor {name!r} is missing")
    if not isinstance(value, np.ndarray):
        raise RoutingError(f"input tensor {name!r}: expected an array, got {type(value).__name__}")
    expected = np.dtype(_DTYPES[name])
    if value.dtype != expected:
        raise RoutingError(f"input tensor {name!r}: expected {expected.name}, got {value.dtype}")
    if value.ndim != 2:
        raise RoutingError(f"input tensor {name!r}: expected 2 dimensions, got shape {list(value.shape)}")
    return value


def _shape(name: str, value: np.ndarray, rows: int | None, width: int | None) -> None:
    if (rows is not None and value.shape[0] != rows) or (width is not None and value.shape[1] != width):
        want = f"[{'N' if rows is None else rows}, {'L' if width is None else width}]"
        raise RoutingError(f"input tensor {name!r}: expected shape {want}, got {list(value.shape)}")


def _finite(name: str, value: np.ndarray) -> None:
    if np.isfinite(value).all():
        return
    bad = ~np.isfinite(value)
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        raise RoutingError(
            f"input tensor {name!r}: {int(bad.sum())} value(s) are NaN or infinite, the first "
            f"({value[row, column]}) at row {row}, column {column}; dense features must be finite"
        )


def _ids(name: str, ids: np.ndarray, where: str, feature: str, size: int, policy: str) -> int:
    """Check one column of ids; return how many lie at or above ``size`` (to be folded)."""
    negative = ids < 0
    if negative.any():
        at = int(np.argmax(negative))
        raise RoutingError(
            f"input tensor {name!r}{where}: id {int(ids[at])} at {_position(name, at)} is negative; "
            "ids must be >= 0 (0 means missing)"
        )
    high = ids >= size
    if high.any() and policy == "reject":
        at = int(np.argmax(high))
        raise RoutingError(
            f"input tensor {name!r}{where}: id {int(ids[at])} at {_position(name, at)} is not below the "
            f"vocabulary size {size} of {feature!r}"
        )
    return int(high.sum())


def _position(name: str, index: int) -> str:
    return f"position {index}" if name == "user_history" else f"row {index}"


@functools.lru_cache(maxsize=64)
def _sizes(vocab: tuple[tuple[str, int], ...]) -> np.ndarray:
    return np.array([size for _, size in vocab], dtype=np.int64)


def _columns(name: str, value: np.ndarray, vocab: tuple[tuple[str, int], ...], policy: str) -> int:
    if value.size == 0:
        return 0
    high = value >= _sizes(vocab)
    if value.min() >= 0 and (policy != "reject" or not high.any()):
        return int(np.count_nonzero(high))
    return sum(
        _ids(name, value[:, column], f", column {column} ({feature!r})", feature, size, policy)
        for column, (feature, size) in enumerate(vocab)
    )


def validate_request(arrays: dict[str, Any], schema: InputSchema) -> Findings:
    """Check one raw request against ``schema``.

    Args:
        arrays: The request tensors by name, as the client sent them.
        schema: What a valid request looks like.

    Returns:
        What the policies let through (folded ids, a truncated history).

    Raises:
        RoutingError: The request is invalid; the message names the tensor (and column, row) at fault
            and what was expected.
    """
    found = Findings()
    user_dense = _array(arrays, "user_dense")
    user_sparse = _array(arrays, "user_sparse")
    history = _array(arrays, "user_history")
    ad_dense = _array(arrays, "ad_dense")
    ad_sparse = _array(arrays, "ad_sparse")
    _shape("user_dense", user_dense, 1, schema.user_dense)
    _shape("user_sparse", user_sparse, 1, len(schema.user_vocab))
    _shape("user_history", history, 1, None)
    _shape("ad_dense", ad_dense, None, schema.ad_dense)
    _shape("ad_sparse", ad_sparse, None, len(schema.ad_vocab))
    n = ad_dense.shape[0]
    if ad_sparse.shape[0] != n:
        raise RoutingError(
            "input tensors 'ad_dense' and 'ad_sparse' disagree on the number of candidates: "
            f"{n} vs {ad_sparse.shape[0]}"
        )
    if n < 1:
        raise RoutingError("input tensor 'ad_dense' has 0 candidates; a request needs at least 1")
    if n > schema.max_candidates:
        raise RoutingError(
            f"input tensor 'ad_dense' has {n} candidates; at most {schema.max_candidates} are allowed"
        )
    if history.shape[1] > schema.history_length:
        if schema.long_history == "reject":
            raise RoutingError(
                f"input tensor 'user_history': {history.shape[1]} ids, at most {schema.history_length} "
                "(features.history.length) are allowed"
            )
        found.truncated_history = True
    _finite("user_dense", user_dense)
    _finite("ad_dense", ad_dense)
    policy = schema.out_of_range_ids
    found.folded_ids += _columns("user_sparse", user_sparse, schema.user_vocab, policy)
    found.folded_ids += _columns("ad_sparse", ad_sparse, schema.ad_vocab, policy)
    table, size = schema.history_table, schema.history_vocab
    ids = history[0]
    if ids.size and (ids.min() < 0 or ids.max() >= size):
        found.folded_ids += _ids("user_history", ids, "", table, size, policy)
    return found
