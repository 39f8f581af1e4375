"""Quality metrics of click predictions: normalized entropy (NE) and ROC AUC."""

from __future__ import annotations

import numpy as np

_EPS = 1e-7


def log_loss(labels: np.ndarray, scores: np.ndarray) -> float:
    """Mean binary cross-entropy of probabilities ``scores`` against 0/1 ``labels``."""
    y = np.asarray(labels, dtype=np.float64)
    p = np.clip(np.asarray(scores, dtype=np.float64), _EPS, 1.0 - _EPS)
    return float(-np.mean(y * np.log(p) + (1.0 - y) * np.log(1.0 - p)))


def normalized_entropy(labels: np.ndarray, scores: np.ndarray, background_ctr: float | None = None) -> float:
    """NE: mean log loss divided by the entropy of the background CTR (lower is better, 1 = no skill).

    Args:
        labels: 0/1 click labels.
        scores: Predicted click probabilities.
        background_ctr: CTR whose entropy normalises the loss; the labels' mean when omitted.
    """
    ctr = float(np.mean(labels, dtype=np.float64)) if background_ctr is None else background_ctr
    return log_loss(labels, scores) / ctr_entropy(ctr)


def ctr_entropy(ctr: float) -> float:
    """Binary entropy (nats) of a click-through rate: the log loss of always predicting it."""
    ctr = min(max(ctr, _EPS), 1.0 - _EPS)
    return float(-(ctr * np.log(ctr) + (1.0 - ctr) * np.log(1.0 - ctr)))


def roc_auc(labels: np.ndarray, scores: np.ndarray) -> float:
    """Area under the ROC curve (Mann-Whitney form, ties counted half); NaN when one class is absent."""
    y = np.asarray(labels) > 0.5
    s = np.asarray(scores, dtype=np.float64)
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, dtype=np.float64)
    starts = np.flatnonzero(np.concatenate([[True], sorted_s[1:] != sorted_s[:-1]]))
    ends = np.concatenate([starts[1:], [s.size]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))
