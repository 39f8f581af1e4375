"""The acceptance check: a variant's held-out quality against the fp32 PyTorch model's."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.metrics import normalized_entropy, roc_auc
from toolkit.spec.schema import AcceptanceSpec


@dataclass(frozen=True)
class Reference:
    """The fp32 PyTorch model's scores on the held-out requests, the yardstick of every variant.

    Attributes:
        labels: Click labels of every held-out candidate, in request order.
        scores: PyTorch fp32 scores of the same candidates.
        ne: Normalized entropy of ``scores``.
        auc: ROC AUC of ``scores``.
    """

    labels: np.ndarray
    scores: np.ndarray
    ne: float
    auc: float

    @classmethod
    def from_scores(cls, labels: np.ndarray, scores: np.ndarray) -> Reference:
        """Compute the reference metrics of ``scores``."""
        ctr = float(labels.mean())
        return cls(labels, scores, normalized_entropy(labels, scores, ctr), roc_auc(labels, scores))


@dataclass(frozen=True)
class AcceptanceResult:
    """How one variant did on the held-out requests.

    Attributes:
        quality: NE/AUC of the variant and of fp32 PyTorch, and the relative deltas.
        max_abs_error: Largest |variant - PyTorch fp32| per output.
        max_rel_error: Largest relative difference per output.
        failures: Why the variant failed (empty when it passed).
    """

    quality: dict[str, float]
    max_abs_error: dict[str, float]
    max_rel_error: dict[str, float]
    failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        """The variant passed."""
        return not self.failures


def judge(
    reference: Reference, scores: np.ndarray, acceptance: AcceptanceSpec, output: str
) -> AcceptanceResult:
    """Compare a variant's held-out scores with the reference and apply the acceptance check.

    Args:
        reference: fp32 PyTorch on the same requests.
        scores: The variant's scores, aligned with ``reference.scores``.
        acceptance: Bounds on the NE rise and the AUC ratio.
        output: Output name, for the error dictionaries.
    """
    scores = np.asarray(scores, dtype=np.float64)
    want = reference.scores.astype(np.float64)
    failures: list[str] = []
    if scores.shape != want.shape:
        failures.append(f"held-out scores have shape {scores.shape}, PyTorch gives {want.shape}")
        nan = float("nan")
        return AcceptanceResult({}, {output: nan}, {output: nan}, tuple(failures))
    if not np.all(np.isfinite(scores)):
        bad = int((~np.isfinite(scores)).sum())
        failures.append(f"{bad} held-out scores are NaN or Inf")
        nan = float("nan")
        return AcceptanceResult({}, {output: nan}, {output: nan}, tuple(failures))
    diff = np.abs(scores - want)
    rel = diff / np.maximum(np.abs(want), 1e-12)
    ctr = float(reference.labels.mean())
    clipped = np.clip(scores, 1e-7, 1 - 1e-7)
    ne = normalized_entropy(reference.labels, clipped, ctr)
    auc = roc_auc(reference.labels, scores)
    quality = {
        "requests_candidates": int(scores.size),
        "ne": ne,
        "auc": auc,
        "torch_ne": reference.ne,
        "torch_auc": reference.auc,
        "ne_delta_rel": (ne - reference.ne) / reference.ne,
        "auc_ratio": auc / reference.auc,
    }
    if abs(quality["ne_delta_rel"]) > acceptance.max_ne_change:
        failures.append(
            f"NE {ne:.5f} is {quality['ne_delta_rel']:+.3%} against fp32 PyTorch {reference.ne:.5f} "
            f"(acceptance: within ±{acceptance.max_ne_change:.3%})"
        )
    if quality["auc_ratio"] < acceptance.min_auc_ratio:
        failures.append(
            f"AUC {auc:.5f} is {quality['auc_ratio']:.4%} of fp32 PyTorch {reference.auc:.5f} "
            f"(acceptance: at least {acceptance.min_auc_ratio:.2%})"
        )
    return AcceptanceResult(quality, {output: float(diff.max())}, {output: float(rel.max())}, tuple(failures))


def acceptance_dict(acceptance: AcceptanceSpec) -> dict[str, Any]:
    """The acceptance bounds as recorded in the manifest."""
    return {"max_ne_change": acceptance.max_ne_change, "min_auc_ratio": acceptance.min_auc_ratio}
