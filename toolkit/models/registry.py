"""Tier architectures registered by name; a tier spec names one and gives its size knobs."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from toolkit.errors import SpecError
from toolkit.spec.schema import Features, Spec, TierSpec


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: its config dataclass and its model class."""

    name: str
    config_class: type
    model_class: type


_REGISTRY: dict[str, Architecture] = {}


def register(name: str, config_class: type) -> Callable[[type], type]:
    """Class decorator: register a :class:`~toolkit.models.base.RankingModel` under ``name``.

    The model class is built as ``model_class(features, config_class(**params))``.
    """

    def wrap(model_class: type) -> type:
        if name in _REGISTRY:
            raise ValueError(f"architecture {name!r} is registered twice")
        _REGISTRY[name] = Architecture(name, config_class, model_class)
        return model_class

    return wrap


def architectures() -> dict[str, Architecture]:
    """Every registered architecture by name."""
    _load_builtin()
    return dict(_REGISTRY)


def _load_builtin() -> None:
    from toolkit.models import lite, standard, xl  # noqa: F401


def tier_config(spec: Spec, tier: TierSpec) -> Any:
    """Validate a tier's ``params`` into its architecture's config dataclass.

    Raises:
        SpecError: Unknown architecture, or a param is unknown or invalid (names the key).
    """
    from toolkit.spec.load import build_dataclass

    known = architectures()
    index = spec.tier_names.index(tier.name)
    if tier.architecture not in known:
        raise SpecError(
            f"{spec.source or '<spec>'}: key 'tiers[{index}].architecture': unknown architecture "
            f"{tier.architecture!r}; expected one of: {', '.join(sorted(known))}"
        )
    return build_dataclass(
        known[tier.architecture].config_class, tier.params, spec.source or "<spec>", f"tiers[{index}].params"
    )


def build_tier(spec: Spec, tier: TierSpec) -> Any:
    """Build the untrained model of ``tier`` (a :class:`~toolkit.models.base.RankingModel`)."""
    config = tier_config(spec, tier)
    return architectures()[tier.architecture].model_class(spec.features, config)


def config_dict(config: Any) -> dict[str, Any]:
    """A config dataclass as plain data (tuples as lists), for checkpoints and manifests."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()}


def build_from_params(features: Features, architecture: str, params: dict[str, Any]) -> Any:
    """Rebuild a model from a checkpoint's architecture name and resolved params."""
    entry = architectures()[architecture]
    fields = {f.name: f.type for f in dataclasses.fields(entry.config_class)}
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in params.items() if k in fields}
    return entry.model_class(features, entry.config_class(**kwargs))
