"""The Triton model repository: configs as protobuf messages, written atomically by deploy.

Names are imported on first use, so that serving a repository (``toolkit.repository.object_store``)
does not pull in what writing one needs.
"""

from __future__ import annotations

from toolkit.lazy import lazy_attributes

_EXPORTS = {
    "TIER_OUTPUT": "toolkit.repository.configs",
    "ensemble_config": "toolkit.repository.configs",
    "preprocess_config": "toolkit.repository.configs",
    "router_config": "toolkit.repository.configs",
    "tier_config": "toolkit.repository.configs",
    "BACKENDS": "toolkit.repository.plan",
    "MARKER": "toolkit.layout",
    "DeployResult": "toolkit.repository.writer",
    "deploy": "toolkit.repository.writer",
    "router_settings": "toolkit.repository.plan",
    "DeployOptions": "toolkit.repository.plan",
    "DeployPlan": "toolkit.repository.plan",
    "plan_deploy": "toolkit.repository.plan",
    "write_repository": "toolkit.repository.writer",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
