"""Cross-fitting: every tier's out-of-sample scores on its own training requests.

A tier's scores on the requests it trained on are in-sample: better than it will do on new traffic,
and better in the places it memorised. A routing gate fitted on them learns to send traffic where a
tier overfits. Cross-fitting removes that: the training requests are cut into ``K`` folds of
consecutive requests (blocks in log order, so in time order for a time-ordered log), ``K`` copies
of every tier are trained, copy ``k`` on every fold but ``k``, and each fold's requests are scored
only by the copy that never saw them. The copies train as ``toolkit train`` does (same spec, same
settings, on ``(K - 1) / K`` of the data) and score in PyTorch fp32.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from toolkit.data.demo import demo_train_set, train_chunks
from toolkit.data.logs import concat_requests, summarize
from toolkit.data.requests import RequestSet, candidate_rows
from toolkit.errors import DataError
from toolkit.models.preprocess import Preprocess
from toolkit.models.registry import build_tier
from toolkit.spec.schema import Spec
from toolkit.train import trainer

StepFn = Callable[[str], None]


def fold_of(positions: np.ndarray, total: int, folds: int) -> np.ndarray:
    """The fold of each request, by its position in the training data: ``K`` blocks of consecutive requests.

    Args:
        positions: INT64 positions (0-based) of requests in the training data.
        total: Requests in the training data.
        folds: K (>= 2).
    """
    if folds < 2 or total < folds:
        raise ValueError(
            f"cross-fitting needs at least 2 folds and as many requests, got {folds} and {total}"
        )
    return (np.asarray(positions, dtype=np.int64) * folds) // total


@dataclass(frozen=True)
class CrossFit:
    """Out-of-sample scores of every tier on requests of the training data.

    Attributes:
        requests: The scored requests (raw ids), fold by fold, each fold's first ones.
        positions: INT64 [R], each one's position in the training data.
        folds: INT64 [R], each one's fold: the copies of fold ``k`` never trained on it.
        scores: FP32 [T, C], tier t's score of candidate c, by the copy of the candidate's fold.
    """

    requests: RequestSet
    positions: np.ndarray
    folds: np.ndarray
    scores: np.ndarray


def _read_positions(spec: Spec, wanted: np.ndarray) -> RequestSet:
    """The requests at positions ``wanted`` (rising) of the streamed training log."""
    parts, start = [], 0
    for chunk in train_chunks(spec):
        rows = wanted[(wanted >= start) & (wanted < start + chunk.num_requests)] - start
        if len(rows):
            parts.append(chunk.subset(rows))
        start += chunk.num_requests
    return concat_requests(parts)


def cross_fit(
    spec: Spec,
    preprocess: Preprocess,
    folds: int,
    max_requests: int,
    step: StepFn | None = None,
) -> CrossFit:
    """Train ``folds`` copies of every tier and score each fold with the copy that did not see it.

    Args:
        spec: The spec (its training data: generated, or ``data.files.train`` streamed).
        preprocess: The fitted preprocess step the deployed tiers use.
        folds: K.
        max_requests: Requests to score in all (split evenly over the folds).
        step: Optional progress callback.

    Raises:
        DataError: A tier is not trainable here (a model the user brings), or the data is too small.
    """
    step = step or (lambda _message: None)
    fixed = [t.name for t in spec.tiers if not t.trainable]
    if fixed:
        raise DataError(
            f"cross-fitting retrains every tier, but {', '.join(repr(t) for t in fixed)} is a model you "
            "bring; fit the gate on a calibration set instead (routing.learned.fit_on: calibration)"
        )
    generated = spec.data.files is None
    if generated:
        train_set = demo_train_set(spec)
        total = train_set.num_requests
    else:
        summary = summarize(spec, spec.data.files.train)
        total = summary.requests
    if total < 2 * folds:
        raise DataError(
            f"cross-fitting in {folds} folds needs at least {2 * folds} training requests, got {total}"
        )
    per_fold = max(1, max_requests // folds)
    every = fold_of(np.arange(total), total, folds)
    wanted = np.concatenate([np.flatnonzero(every == k)[:per_fold] for k in range(folds)])
    scored = train_set.subset(wanted) if generated else _read_positions(spec, wanted)
    fold = every[wanted]
    scores = np.empty((len(spec.tier_names), scored.num_candidates), dtype=np.float32)
    for k in range(folds):
        mine = np.flatnonzero(fold == k)
        held = trainer.prepare(preprocess, scored.subset(mine))
        rows = candidate_rows(scored.offsets, mine)
        data: trainer.Prepared | trainer.StreamedRequests
        if generated:
            data = trainer.prepare(preprocess, train_set.subset(np.flatnonzero(every != k)))
        else:
            data = trainer.StreamedRequests(
                spec, preprocess, int((every != k).sum()), summary.ctr, skip=(k, folds, total)
            )
        for t, name in enumerate(spec.tier_names):
            step(f"cross-fitting: fold {k + 1} of {folds}, training {name} on the other folds")
            torch.manual_seed(spec.seed + 1000 * (k + 1))
            model = build_tier(spec, spec.tier(name))
            trainer.fit(model, data, spec, name)
            scores[t, rows] = trainer.predict(model, held)
    return CrossFit(scored, wanted, fold, scores)
