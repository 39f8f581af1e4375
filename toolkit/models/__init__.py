"""The demo tiers (registered by name) and the preprocess step."""

from toolkit.models.base import RankingModel
from toolkit.models.preprocess import Preprocess
from toolkit.models.registry import (
    architectures,
    build_from_params,
    build_tier,
    config_dict,
    register,
    tier_config,
)

__all__ = [
    "Preprocess",
    "RankingModel",
    "architectures",
    "build_from_params",
    "build_tier",
    "config_dict",
    "register",
    "tier_config",
]
