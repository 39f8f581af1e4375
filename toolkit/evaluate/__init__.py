"""Offline quality measurement of tiers and routing policies."""

from toolkit.metrics import log_loss, normalized_entropy, roc_auc

__all__ = ["log_loss", "normalized_entropy", "roc_auc"]
