"""Train the tiers of a spec on generated requests and measure them on held-out ones."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from toolkit.data.demo import demo_holdout_set, demo_train_set
from toolkit.data.requests import RequestSet, candidate_rows
from toolkit.evaluate.metrics import normalized_entropy, roc_auc
from toolkit.models.base import RankingModel
from toolkit.models.preprocess import Preprocess
from toolkit.models.registry import build_tier
from toolkit.spec.schema import Spec
from toolkit.train.checkpoints import save_preprocess, save_tier

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


def fit(
    model: RankingModel, data: Prepared, spec: Spec, name: str, progress: ProgressFn | None = None
) -> None:
    """Train ``model`` in place with Adam on binary cross-entropy, batches of whole requests."""
    cfg = spec.training
    rng = np.random.default_rng([spec.seed, 3])
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    steps_per_epoch = -(-data.num_requests // cfg.batch_requests)
    total = steps_per_epoch * cfg.epochs
    schedule = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=cfg.learning_rate, total_steps=total, pct_start=0.1
    )
    model.set_prior(float(data.labels.mean()))
    model.train()
    step = 0
    for _ in range(cfg.epochs):
        order = rng.permutation(data.num_requests)
        for start in range(0, data.num_requests, cfg.batch_requests):
            inputs, labels = _batch(data, order[start : start + cfg.batch_requests])
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

    Every NE uses the background CTR of the whole set, so the three are comparable.
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


@dataclass
class TrainingReport:
    """What ``toolkit train`` measured, also written to ``<checkpoints>/training.json``."""

    holdout_ctr: float
    holdout_requests: int
    train_requests: int
    tiers: dict[str, TierMetrics] = field(default_factory=dict)

    def to_json(self) -> dict:
        """Plain-data form."""
        return {
            "holdout_ctr": self.holdout_ctr,
            "holdout_requests": self.holdout_requests,
            "train_requests": self.train_requests,
            "tiers": {k: vars(v) for k, v in self.tiers.items()},
        }


def train(
    spec: Spec,
    checkpoints: Path,
    tiers: tuple[str, ...] | None = None,
    progress: ProgressFn | None = None,
) -> TrainingReport:
    """Generate the demo data, fit the preprocess step, train each tier, save checkpoints.

    Args:
        spec: The ensemble spec.
        checkpoints: Folder to write ``<tier>.pt``, ``preprocess.pt`` and ``training.json`` into.
        tiers: Tiers to train (default: all).
        progress: Optional per-step callback.

    Returns:
        Held-out metrics per tier.
    """
    torch.manual_seed(spec.seed)
    train_set = demo_train_set(spec)
    holdout = demo_holdout_set(spec)
    preprocess = Preprocess.fit(spec.features, train_set.user_dense, train_set.ad_dense)
    train_data = prepare(preprocess, train_set)
    holdout_data = prepare(preprocess, holdout)
    save_preprocess(checkpoints, spec, preprocess)
    report = TrainingReport(
        holdout_ctr=float(holdout.labels.mean()),
        holdout_requests=holdout.num_requests,
        train_requests=train_set.num_requests,
    )
    for name in tiers or spec.tier_names:
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
    (checkpoints / "training.json").write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report
