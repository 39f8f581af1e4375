"""Train the tiers of a spec on its training requests and measure them on held-out ones.

Generated data is trained on in memory. Request logs (``data.files``) are streamed: one pass counts
the requests and fits the dense statistics, then every epoch reads the training file again chunk by
chunk, shuffling requests within a chunk, so memory stays bounded whatever the file size.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from toolkit.data.demo import demo_holdout_set, demo_train_set, train_chunks
from toolkit.data.logs import concat_requests, summarize
from toolkit.data.requests import RequestSet, candidate_rows
from toolkit.errors import DataError
from toolkit.metrics import normalized_entropy, roc_auc
from toolkit.models.base import RankingModel
from toolkit.models.preprocess import Preprocess
from toolkit.models.registry import build_tier
from toolkit.spec.schema import Spec
from toolkit.train.checkpoints import save_preprocess, save_tier, tier_path

log = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int, float], None]
"""Called as ``progress(tier, step, total_steps, loss)`` during training."""


@dataclass(frozen=True)
class Prepared:
    """A request set after the preprocess step, as torch tensors, with its labels."""

    user_dense: torch.Tensor
    user_sparse: torch.Tensor
    user_history: torch.Tensor
    ad_dense: torch.Tensor
    ad_sparse: torch.Tensor
    labels: torch.Tensor
    offsets: np.ndarray
    informative: np.ndarray

    @property
    def num_requests(self) -> int:
        """Number of requests."""
        return int(self.user_dense.shape[0])


def prepare(preprocess: Preprocess, requests: RequestSet) -> Prepared:
    """Run ``preprocess`` over a whole request set."""
    with torch.no_grad():
        ud, us, uh, ad, asp = preprocess(
            torch.from_numpy(requests.user_dense),
            torch.from_numpy(requests.user_sparse),
            torch.from_numpy(requests.user_history),
            torch.from_numpy(requests.ad_dense),
            torch.from_numpy(requests.ad_sparse),
        )
    return Prepared(
        ud, us, uh, ad, asp, torch.from_numpy(requests.labels), requests.offsets, requests.informative
    )


def _batch(data: Prepared, requests: np.ndarray) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
    rows = torch.from_numpy(candidate_rows(data.offsets, requests))
    counts = data.offsets[requests + 1] - data.offsets[requests]
    request_index = torch.from_numpy(np.repeat(np.arange(len(requests)), counts))
    req = torch.from_numpy(requests)
    inputs = (
        data.user_dense[req],
        data.user_sparse[req],
        data.user_history[req],
        data.ad_dense[rows],
        data.ad_sparse[rows],
        request_index,
    )
    return inputs, data.labels[rows]


def predict(model: RankingModel, data: Prepared, batch_requests: int = 512) -> np.ndarray:
    """Click probabilities of every candidate of ``data``, in row order."""
    model.eval()
    out = []
    with torch.no_grad():
        for start in range(0, data.num_requests, batch_requests):
            requests = np.arange(start, min(start + batch_requests, data.num_requests))
            inputs, _ = _batch(data, requests)
            out.append(torch.sigmoid(model.logits(*inputs)).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


@dataclass(frozen=True)
class StreamedRequests:
    """Training requests read from ``data.files.train`` chunk by chunk, each chunk preprocessed as read.

    Attributes:
        spec: The spec whose ``data.files.train`` is streamed.
        preprocess: The fitted preprocess step applied to every chunk.
        num_requests: Requests in the file (from a first pass), which fixes the steps per epoch.
        ctr: Click rate of the file, the models' prior.
        skip: ``(k, K, total)`` to leave out fold ``k`` of ``K`` (cross-fitting: the requests at
            positions ``p`` with ``p * K // total == k``); None trains on every request.
    """

    spec: Spec
    preprocess: Preprocess
    num_requests: int
    ctr: float
    skip: tuple[int, int, int] | None = None


def _epoch(
    data: Prepared | StreamedRequests, rng: np.random.Generator, batch_requests: int
) -> Iterator[tuple[Prepared, np.ndarray]]:
    """One epoch's batches as (prepared requests, indices of a batch's requests in them).

    A streamed chunk's requests are shuffled; the ones that do not fill a whole batch are carried
    into the next chunk, so only the epoch's last batch can be short.
    """
    if isinstance(data, Prepared):
        order = rng.permutation(data.num_requests)
        for start in range(0, data.num_requests, batch_requests):
            yield data, order[start : start + batch_requests]
        return
    leftover: RequestSet | None = None
    position = 0
    for chunk in train_chunks(data.spec):
        if data.skip is not None:
            from toolkit.train.crossfit import fold_of

            k, folds, total = data.skip
            positions = np.arange(position, position + chunk.num_requests)
            position += chunk.num_requests
            chunk = chunk.subset(np.flatnonzero(fold_of(positions, total, folds) != k))
        if leftover is not None:
            chunk = concat_requests([leftover, chunk])
        order = rng.permutation(chunk.num_requests)
        full = chunk.num_requests - chunk.num_requests % batch_requests
        if full:
            prepared = prepare(data.preprocess, chunk.subset(order[:full]))
            for start in range(0, full, batch_requests):
                yield prepared, np.arange(start, start + batch_requests)
        leftover = chunk.subset(order[full:]) if full < chunk.num_requests else None
    if leftover is not None:
        yield prepare(data.preprocess, leftover), np.arange(leftover.num_requests)


def _schedule(optimizer: torch.optim.Optimizer, rate: float, total: int) -> Any:
    """One-cycle learning rate, its warm-up at least two steps; a constant rate for under four steps."""
    if total < 4:
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _step: 1.0)
    return torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=rate, total_steps=total, pct_start=max(0.1, 2.0 / total)
    )


def fit(
    model: RankingModel,
    data: Prepared | StreamedRequests,
    spec: Spec,
    name: str,
    progress: ProgressFn | None = None,
) -> None:
    """Train ``model`` in place with Adam on binary cross-entropy, batches of whole requests.

    Args:
        model: The tier's model.
        data: Preprocessed requests in memory, or requests streamed from the training log.
        spec: The spec (training settings and seed).
        name: Tier name, passed to ``progress``.
        progress: Optional per-step callback.

    Raises:
        DataError: The streamed training file holds more requests than its first pass counted.
    """
    cfg = spec.training
    rng = np.random.default_rng([spec.seed, 3])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    steps_per_epoch = -(-data.num_requests // cfg.batch_requests)
    total = steps_per_epoch * cfg.epochs
    schedule = _schedule(optimizer, cfg.learning_rate, total)
    model.set_prior(float(data.labels.mean()) if isinstance(data, Prepared) else data.ctr)
    model.train()
    step = 0
    for _ in range(cfg.epochs):
        for batch_data, requests in _epoch(data, rng, cfg.batch_requests):
            if step == total:
                raise DataError(
                    f"{spec.data.files.train if spec.data.files else 'training data'}: holds more "
                    f"requests than the {data.num_requests} counted before training; did it change?"
                )
            inputs, labels = _batch(batch_data, requests)
            loss = loss_fn(model.logits(*inputs), labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if progress is not None:
                progress(name, step, total, loss.item())
    model.eval()


@dataclass(frozen=True)
class TierMetrics:
    """Held-out quality of one tier: overall, on informative requests and on the rest."""

    ne: float
    auc: float
    ne_informative: float
    ne_other: float
    auc_informative: float
    auc_other: float
    train_seconds: float
    parameters: int


def measure(scores: np.ndarray, data: Prepared) -> dict[str, float]:
    """NE and AUC of ``scores`` on ``data``: overall, informative requests, other requests.

    Every NE uses the background CTR of the whole set, so the three are comparable. A subset without
    requests gets NaN: data read from logs has no informative flag, so its informative subset is
    empty and its "other" subset is the whole set.
    """
    labels = data.labels.numpy()
    ctr = float(labels.mean())
    counts = np.diff(data.offsets)
    informative = np.repeat(data.informative, counts)
    out = {"ne": normalized_entropy(labels, scores, ctr), "auc": roc_auc(labels, scores)}
    for suffix, mask in (("informative", informative), ("other", ~informative)):
        out[f"ne_{suffix}"] = (
            normalized_entropy(labels[mask], scores[mask], ctr) if mask.any() else float("nan")
        )
        out[f"auc_{suffix}"] = roc_auc(labels[mask], scores[mask]) if mask.any() else float("nan")
    return out


USER_MODEL_SKIPPED = "user model, not trained"
"""Why ``train`` skips a tier the user brings (``model:`` instead of ``architecture:``)."""


@dataclass
class TrainingReport:
    """What ``toolkit train`` measured, also written to ``<checkpoints>/training.json``.

    The file also keeps the earlier entries of tiers not trained this time, measured on the same
    data, whose checkpoints are still there (see :func:`train`).

    Attributes:
        holdout_ctr: Click rate of the held-out requests.
        holdout_requests: Held-out requests the metrics are measured on.
        train_requests: Requests trained on per epoch.
        tiers: Metrics of each trained tier.
        skipped: Tiers not trained, with the reason.
    """

    holdout_ctr: float
    holdout_requests: int
    train_requests: int
    tiers: dict[str, TierMetrics] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict:
        """Plain-data form; NaN metrics (such as the informative subset of logs) become None."""
        return _finite(
            {
                "holdout_ctr": self.holdout_ctr,
                "holdout_requests": self.holdout_requests,
                "train_requests": self.train_requests,
                "tiers": {k: vars(v) for k, v in self.tiers.items()},
                "skipped": dict(self.skipped),
            }
        )


def _finite(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def train(
    spec: Spec,
    checkpoints: Path,
    tiers: tuple[str, ...] | None = None,
    progress: ProgressFn | None = None,
) -> TrainingReport:
    """Fit the preprocess step, train each tier, save checkpoints and held-out metrics.

    Generated data (no ``data.files``) is generated and trained on in memory. With ``data.files``,
    a first pass over ``files.train`` counts its requests and fits the dense statistics, every
    epoch streams the file again in chunks, and the held-out requests are the first
    ``data.holdout_requests`` of ``files.holdout``. Tiers the user brings are skipped.

    Args:
        spec: The ensemble spec.
        checkpoints: Folder to write ``<tier>.pt``, ``preprocess.pt`` and ``training.json`` into.
            ``training.json`` keeps the entries of the spec's tiers not trained now, where the
            earlier file measured them on the same data and their checkpoints are still there.
        tiers: Tiers to train (default: all).
        progress: Optional per-step callback.

    Returns:
        Held-out metrics per trained tier, and the skipped tiers.

    Raises:
        DataError: A log is missing, unreadable or invalid.
    """
    torch.manual_seed(spec.seed)
    train_data: Prepared | StreamedRequests
    if spec.data.files is None:
        train_set = demo_train_set(spec)
        holdout = demo_holdout_set(spec)
        preprocess = Preprocess.fit(spec.features, train_set.user_dense, train_set.ad_dense)
        train_data = prepare(preprocess, train_set)
    else:
        holdout = demo_holdout_set(spec)
        summary = summarize(spec, spec.data.files.train)
        preprocess = Preprocess(
            spec.features, summary.user_mean, summary.user_std, summary.ad_mean, summary.ad_std
        )
        train_data = StreamedRequests(spec, preprocess, summary.requests, summary.ctr)
    holdout_data = prepare(preprocess, holdout)
    save_preprocess(checkpoints, spec, preprocess)
    report = TrainingReport(
        holdout_ctr=float(holdout.labels.mean()),
        holdout_requests=holdout.num_requests,
        train_requests=train_data.num_requests,
    )
    for name in tiers or spec.tier_names:
        if not spec.tier(name).trainable:
            report.skipped[name] = USER_MODEL_SKIPPED
            log.info("skipped %s: %s", name, USER_MODEL_SKIPPED)
            continue
        torch.manual_seed(spec.seed)
        model = build_tier(spec, spec.tier(name))
        started = time.perf_counter()
        fit(model, train_data, spec, name, progress)
        seconds = time.perf_counter() - started
        metrics = measure(predict(model, holdout_data), holdout_data)
        params = sum(p.numel() for p in model.parameters())
        report.tiers[name] = TierMetrics(train_seconds=seconds, parameters=params, **metrics)
        save_tier(checkpoints, spec, name, model)
        log.info("trained %s in %.1fs: NE %.4f AUC %.4f", name, seconds, metrics["ne"], metrics["auc"])
    path = checkpoints / "training.json"
    written = _with_earlier_tiers(report.to_json(), path, spec)
    path.write_text(json.dumps(written, indent=2, allow_nan=False) + "\n")
    return report


def _with_earlier_tiers(data: dict, path: Path, spec: Spec) -> dict:
    """``data`` with the earlier ``training.json``'s entries of the spec's tiers not trained now.

    Training some tiers (``--tier``) leaves the others' checkpoints in place, so their metrics stay
    in the file, as long as they were measured on the same data (the same held-out click rate and
    request counts) and their checkpoints are still there; otherwise they are dropped.
    """
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return data
    same = isinstance(earlier, dict) and all(
        earlier.get(key) == data[key] for key in ("holdout_ctr", "holdout_requests", "train_requests")
    )
    if not same or not isinstance(earlier.get("tiers"), dict):
        return data
    now = data["tiers"]
    kept = {
        name: earlier["tiers"][name]
        for name in spec.tier_names
        if name not in now
        and name not in data["skipped"]
        and name in earlier["tiers"]
        and tier_path(path.parent, name).is_file()
    }
    order = [name for name in spec.tier_names if name in now or name in kept]
    return {**data, "tiers": {name: now.get(name, kept.get(name)) for name in order}}
