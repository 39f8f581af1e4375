"""Ranking-aware quality of served scores, request by request.

A request is a contiguous block of candidates: ``offsets`` (``[R + 1]`` integers rising from 0 to the
number of candidates C) gives request r the candidates ``offsets[r]:offsets[r + 1]``. Within a request
the candidates are ranked by score, highest first; equal scores keep their candidate order (a stable
sort), so every function here is deterministic.

- :func:`ndcg_at_k`: mean NDCG@k over the requests with at least one positive label.
- :func:`top_k_rows`: which candidates each request would show in its top k.
- :func:`top_k_quality`: NE, AUC and NDCG of the candidates that reach the top k, the part of a ranking
  an ads system actually serves.
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np

from toolkit.metrics import normalized_entropy, roc_auc

__all__ = ["ndcg_at_k", "top_k_quality", "top_k_rows"]


def _check_k(k: int) -> int:
    """Return ``k`` as an int, or raise ValueError unless it is an integer >= 1."""
    if isinstance(k, bool) or not isinstance(k, numbers.Integral):
        raise ValueError(f"k must be an integer >= 1, got {k!r}.")
    if k < 1:
        raise ValueError(f"k must be an integer >= 1, got {k}.")
    return int(k)


def _check_scores(scores: np.ndarray) -> np.ndarray:
    """Return ``scores`` as a non-empty, finite float64 vector, or raise ValueError."""
    values = np.asarray(scores, dtype=np.float64)
    if values.ndim != 1 or values.size == 0:
        raise ValueError(
            f"scores must be a non-empty 1-D array (one per candidate), got shape {values.shape}."
        )
    if not np.all(np.isfinite(values)):
        raise ValueError("scores must be finite.")
    return values


def _check_labels(labels: np.ndarray, num_candidates: int) -> np.ndarray:
    """Return ``labels`` as a float64 ``[C]`` vector of finite non-negative gains, or raise ValueError."""
    values = np.asarray(labels, dtype=np.float64)
    if values.shape != (num_candidates,):
        raise ValueError(
            f"labels must have the shape of scores ({num_candidates},) (one per candidate), "
            f"got {values.shape}."
        )
    if not np.all(np.isfinite(values)) or np.any(values < 0):
        raise ValueError("labels must be finite and non-negative.")
    return values


def _check_offsets(offsets: np.ndarray, num_candidates: int) -> np.ndarray:
    """Return ``offsets`` as int64 ``[R + 1]`` request bounds over ``num_candidates``, or raise ValueError."""
    bounds = np.asarray(offsets)
    if bounds.ndim != 1 or bounds.size < 2 or not np.issubdtype(bounds.dtype, np.integer):
        raise ValueError(
            f"offsets must be a 1-D integer array of [requests + 1] bounds, got shape {bounds.shape} "
            f"and dtype {bounds.dtype}."
        )
    if bounds[0] != 0 or bounds[-1] != num_candidates or np.any(np.diff(bounds) < 0):
        raise ValueError(
            f"offsets must rise from 0 to the number of candidates ({num_candidates}), "
            f"got {bounds[0]} .. {bounds[-1]} (or a decreasing step)."
        )
    return bounds.astype(np.int64)


def _ranked(scores: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rank every request's candidates by score.

    Returns:
        ``order``: candidate indices, request by request, each request's highest score first (equal
        scores in candidate order); ``request``: the request of each entry of ``order``; ``rank``: the
        0-based position of each entry of ``order`` within its request.
    """
    counts = np.diff(bounds)
    request_of = np.repeat(np.arange(counts.size), counts)
    # lexsort's last key is the primary one: request, then score descending, then candidate index.
    order = np.lexsort((np.arange(scores.size), -scores, request_of))
    # Sorting by request first keeps every request's block where offsets puts it.
    rank = np.arange(scores.size) - bounds[request_of]
    return order, request_of, rank


def _dcg(gains: np.ndarray, request: np.ndarray, rank: np.ndarray, k: int, num_requests: int) -> np.ndarray:
    """Per-request DCG@k of gains listed in rank order: ``sum gain / log2(rank + 1)``, 1-based ranks."""
    kept = rank < k
    discounted = gains[kept] / np.log2(rank[kept] + 2.0)
    return np.bincount(request[kept], weights=discounted, minlength=num_requests)


def ndcg_at_k(labels: np.ndarray, scores: np.ndarray, offsets: np.ndarray, k: int) -> float:
    """Mean over requests of NDCG@k.

    Each request's candidates are ranked by ``scores`` (highest first, equal scores in candidate order).
    DCG@k sums ``label / log2(rank + 1)`` over ranks 1..k (linear gain, so graded labels count by their
    value); the ideal DCG@k ranks the same candidates by label. NDCG@k is their ratio.

    Requests whose labels are all 0 (including requests with no candidates) have no ideal ranking and
    are skipped: they count neither in the numerator nor in the number of requests averaged over.

    Args:
        labels: ``[C]`` non-negative gains (0/1 clicks or graded relevance).
        scores: ``[C]`` finite scores; higher ranks first.
        offsets: ``[R + 1]`` integers rising from 0 to C; request r owns ``offsets[r]:offsets[r + 1]``.
        k: Number of top ranks that count, >= 1.

    Returns:
        The mean NDCG@k over requests with a positive label, or NaN if there is none.

    Raises:
        ValueError: If the shapes, labels, scores, offsets or ``k`` are invalid.
    """
    k = _check_k(k)
    s = _check_scores(scores)
    y = _check_labels(labels, s.size)
    bounds = _check_offsets(offsets, s.size)
    num_requests = bounds.size - 1
    order, request, rank = _ranked(s, bounds)
    dcg = _dcg(y[order], request, rank, k, num_requests)
    # The ideal order: by label, highest first, within each request (ties do not change the DCG).
    ideal = np.lexsort((-y, request))
    idcg = _dcg(y[ideal], request, rank, k, num_requests)
    relevant = idcg > 0
    if not np.any(relevant):
        return float("nan")
    return float(np.mean(dcg[relevant] / idcg[relevant]))


def top_k_rows(scores: np.ndarray, offsets: np.ndarray, k: int) -> np.ndarray:
    """Indices of each request's k highest-scoring candidates (all of them when it has fewer).

    Args:
        scores: ``[C]`` finite scores; higher ranks first, equal scores in candidate order.
        offsets: ``[R + 1]`` integers rising from 0 to C; request r owns ``offsets[r]:offsets[r + 1]``.
        k: Candidates kept per request, >= 1.

    Returns:
        int64 indices into the flat candidate arrays: request 0's top candidates in rank order, then
        request 1's, and so on; ``sum(min(k, N_r))`` entries.

    Raises:
        ValueError: If the shapes, scores, offsets or ``k`` are invalid.
    """
    k = _check_k(k)
    s = _check_scores(scores)
    bounds = _check_offsets(offsets, s.size)
    order, _, rank = _ranked(s, bounds)
    return order[rank < k].astype(np.int64)


def top_k_quality(
    labels: np.ndarray, scores: np.ndarray, offsets: np.ndarray, k: int, ctr: float | None = None
) -> dict[str, Any]:
    """Quality of the candidates that reach each request's top k.

    NE is normalised by a background CTR that does not depend on which rows reach the top k (``ctr``,
    or else the CTR of all ``labels``), so NE values of different policies, or different k, on the same
    data stay comparable.

    Args:
        labels: ``[C]`` 0/1 click labels.
        scores: ``[C]`` click probabilities in ``[0, 1]``; they rank the candidates and are scored.
        offsets: ``[R + 1]`` integers rising from 0 to C; request r owns ``offsets[r]:offsets[r + 1]``.
        k: Candidates kept per request, >= 1.
        ctr: Background CTR in ``[0, 1]`` for NE; the mean of all ``labels`` when omitted.

    Returns:
        ``{"ne": float, "auc": float, "ndcg": float, "k": int, "rows": int}``: NE and ROC AUC of the top-k
        rows (AUC is NaN when they hold one class only), :func:`ndcg_at_k` of all the requests, k, and
        the number of top-k rows.

    Raises:
        ValueError: If the shapes, labels, scores, offsets, ``k`` or ``ctr`` are invalid.
    """
    k = _check_k(k)
    s = _check_scores(scores)
    y = _check_labels(labels, s.size)
    if not np.all((y == 0) | (y == 1)):
        raise ValueError("labels must be 0 or 1 (clicks) for NE and AUC.")
    if np.any(s < 0) or np.any(s > 1):
        raise ValueError("scores must be click probabilities in [0, 1] for NE.")
    if ctr is None:
        background = float(np.mean(y))
    else:
        background = float(ctr)
        if not 0.0 <= background <= 1.0:
            raise ValueError(f"ctr must be a click-through rate in [0, 1], got {ctr}.")
    rows = top_k_rows(s, offsets, k)
    return {
        "ne": normalized_entropy(y[rows], s[rows], background_ctr=background),
        "auc": roc_auc(y[rows], s[rows]),
        "ndcg": ndcg_at_k(y, s, offsets, k),
        "k": k,
        "rows": int(rows.size),
    }
