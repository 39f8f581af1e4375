"""The Triton model repository: configs as protobuf messages, written atomically by deploy."""

from toolkit.repository.configs import (
    TIER_OUTPUT,
    ensemble_config,
    preprocess_config,
    router_config,
    tier_config,
)
from toolkit.repository.writer import BACKENDS, MARKER, DeployResult, deploy, router_settings

__all__ = [
    "BACKENDS",
    "MARKER",
    "TIER_OUTPUT",
    "DeployResult",
    "deploy",
    "ensemble_config",
    "preprocess_config",
    "router_config",
    "router_settings",
    "tier_config",
]
