"""Training of the demo tiers and their checkpoints."""

from toolkit.train.checkpoints import load_preprocess, load_tier, save_preprocess, save_tier
from toolkit.train.trainer import Prepared, TrainingReport, measure, predict, prepare, train

__all__ = [
    "Prepared",
    "TrainingReport",
    "load_preprocess",
    "load_tier",
    "measure",
    "predict",
    "prepare",
    "save_preprocess",
    "save_tier",
    "train",
]
