"""A set of ranking requests held as flat arrays: one user row per request, N candidate rows each."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from toolkit.errors import DataError

if TYPE_CHECKING:
    from toolkit.spec.schema import Features

REQUEST_TENSORS = ("user_dense", "user_sparse", "user_history", "ad_dense", "ad_sparse")
"""Input tensor names of one request, in the order every model takes them."""


@dataclass(frozen=True)
class RequestSet:
    """Many requests, request-centric.

    User arrays have one row per request, candidate arrays one row per candidate; ``offsets`` says
    which candidate rows belong to which request.

    Attributes:
        user_dense: FP32 [R, Du].
        user_sparse: INT64 [R, Su], raw ids.
        user_history: INT64 [R, L], raw ids, 0 = padding, newest last.
        ad_dense: FP32 [T, Da].
        ad_sparse: INT64 [T, Sa], raw ids.
        labels: FP32 [T], 1 = click.
        offsets: INT64 [R + 1]; request r owns candidate rows ``offsets[r]:offsets[r + 1]``.
        informative: BOOL [R], whether the generator gave the user a long, informative history
            (ground truth for evaluation; all False for data read from logs).
        values: FP32 [R], what each request is worth (e.g. an ad auction's expected revenue), for
            value-aware routing and value-weighted evaluation; finite and positive. None: every
            request is worth 1 (see :meth:`value_weights`). Other float arrays are cast to FP32.
    """

    user_dense: np.ndarray
    user_sparse: np.ndarray
    user_history: np.ndarray
    ad_dense: np.ndarray
    ad_sparse: np.ndarray
    labels: np.ndarray
    offsets: np.ndarray
    informative: np.ndarray
    values: np.ndarray | None = None

    def __post_init__(self) -> None:
        r = self.user_dense.shape[0]
        t = self.ad_dense.shape[0]
        checks = {
            "user_sparse": self.user_sparse.shape[0] == r,
            "user_history": self.user_history.shape[0] == r,
            "informative": self.informative.shape[0] == r,
            "offsets": self.offsets.shape == (r + 1,) and self.offsets[0] == 0 and self.offsets[-1] == t,
            "ad_sparse": self.ad_sparse.shape[0] == t,
            "labels": self.labels.shape == (t,),
        }
        if self.values is not None:
            object.__setattr__(self, "values", np.asarray(self.values, dtype=np.float32))
            checks["values"] = self.values.shape == (r,)
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise DataError(f"request set is inconsistent: {', '.join(bad)} do not match the other arrays")
        if self.values is not None:
            wrong = np.flatnonzero(~(np.isfinite(self.values) & (self.values > 0)))
            if wrong.size:
                i = int(wrong[0])
                raise DataError(
                    f"request set values must be finite and positive; request {i} is worth {self.values[i]:g}"
                )

    @property
    def num_requests(self) -> int:
        """R, the number of requests."""
        return int(self.user_dense.shape[0])

    @property
    def num_candidates(self) -> int:
        """T, the total number of candidates over all requests."""
        return int(self.ad_dense.shape[0])

    @property
    def candidates_per_request(self) -> np.ndarray:
        """N of each request, INT64 [R]."""
        return np.diff(self.offsets)

    def request_index(self) -> np.ndarray:
        """INT64 [T]: the request each candidate row belongs to."""
        return np.repeat(np.arange(self.num_requests), self.candidates_per_request)

    def value_weights(self) -> np.ndarray:
        """FP32 [R]: what each request is worth; ones when the set carries no ``values``."""
        if self.values is None:
            return np.ones(self.num_requests, dtype=np.float32)
        return self.values

    def request(self, r: int) -> dict[str, np.ndarray]:
        """The five input tensors of request ``r``: user tensors [1, ...], candidate tensors [N, ...]."""
        lo, hi = int(self.offsets[r]), int(self.offsets[r + 1])
        return {
            "user_dense": self.user_dense[r : r + 1],
            "user_sparse": self.user_sparse[r : r + 1],
            "user_history": self.user_history[r : r + 1],
            "ad_dense": self.ad_dense[lo:hi],
            "ad_sparse": self.ad_sparse[lo:hi],
        }

    def request_labels(self, r: int) -> np.ndarray:
        """Labels of request ``r``'s candidates."""
        return self.labels[int(self.offsets[r]) : int(self.offsets[r + 1])]

    def subset(self, requests: np.ndarray) -> RequestSet:
        """A new set holding only the given requests, in the given order."""
        requests = np.asarray(requests, dtype=np.int64)
        counts = self.candidates_per_request[requests]
        rows = candidate_rows(self.offsets, requests)
        return RequestSet(
            user_dense=self.user_dense[requests],
            user_sparse=self.user_sparse[requests],
            user_history=self.user_history[requests],
            ad_dense=self.ad_dense[rows],
            ad_sparse=self.ad_sparse[rows],
            labels=self.labels[rows],
            offsets=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            informative=self.informative[requests],
            values=None if self.values is None else self.values[requests],
        )


def candidate_rows(offsets: np.ndarray, requests: np.ndarray) -> np.ndarray:
    """Candidate row indices of the given requests, concatenated in order."""
    starts = offsets[requests]
    counts = offsets[requests + 1] - starts
    total = int(counts.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64)
    run_starts = np.repeat(starts - np.concatenate([[0], np.cumsum(counts)[:-1]]), counts)
    return (np.arange(total) + run_starts).astype(np.int64)


def request_dims(features: Features, raw: bool) -> dict[str, tuple[str, list[int]]]:
    """Data type and dims of each request tensor (``-1`` = any size).

    Args:
        features: The request schema.
        raw: Whether the tensors are what clients send (history of any length) or what the tiers
            take (history of exactly L).
    """
    history = -1 if raw else features.history.length
    return {
        "user_dense": ("FP32", [1, features.user_dense]),
        "user_sparse": ("INT64", [1, len(features.user_sparse)]),
        "user_history": ("INT64", [1, history]),
        "ad_dense": ("FP32", [-1, features.ad_dense]),
        "ad_sparse": ("INT64", [-1, len(features.ad_sparse)]),
    }


def candidate_inputs(features: Features) -> tuple[str, ...]:
    """Tier inputs whose first dimension is the candidate count N (the others are [1, D])."""
    return tuple(k for k, (_, shape) in request_dims(features, raw=False).items() if shape[0] == -1)
