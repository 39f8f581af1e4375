"""The serving knobs ``toolkit tune`` searches, and the spec overlay a configuration becomes."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from toolkit.spec.schema import Spec

KNOBS = ("router_instances", "tier_instances", "queue_timeout_ms")
"""The ``triton`` keys a configuration sets, in the order coordinate descent visits them."""


@dataclass(frozen=True)
class ServingConfig:
    """One serving configuration: the values of the ``triton`` keys ``toolkit tune`` searches.

    Attributes:
        router_instances: Instances of the router model (each runs the CPU tiers in its process).
        tier_instances: Instances of each tier model.
        queue_timeout_ms: How long a request may wait in the router's queue before it is rejected.
    """

    router_instances: int
    tier_instances: int
    queue_timeout_ms: float

    @classmethod
    def from_spec(cls, spec: Spec) -> ServingConfig:
        """The configuration the spec deploys as it is (the search's starting point)."""
        return cls(**{knob: getattr(spec.triton, knob) for knob in KNOBS})

    @property
    def key(self) -> str:
        """A stable name, ``router_instances=2,tier_instances=1,queue_timeout_ms=100``."""
        return ",".join(f"{knob}={_text(getattr(self, knob))}" for knob in KNOBS)

    def overlay(self) -> dict[str, dict[str, float | int]]:
        """The spec overlay that deploys this configuration: a ``triton:`` section with its keys."""
        return {"triton": {knob: getattr(self, knob) for knob in KNOBS}}

    def apply(self, spec: Spec) -> Spec:
        """``spec`` with this configuration's ``triton`` keys (validated as the loader would)."""
        return dataclasses.replace(spec, triton=dataclasses.replace(spec.triton, **self.overlay()["triton"]))


def _text(value: float | int) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class SearchSpace:
    """The values each knob may take, in rising order.

    Attributes:
        router_instances: Router instance counts to try.
        tier_instances: Tier instance counts to try.
        queue_timeout_ms: Queue timeouts to try.
    """

    router_instances: tuple[int, ...] = (2, 3, 4)
    tier_instances: tuple[int, ...] = (1, 2)
    queue_timeout_ms: tuple[float, ...] = (50.0, 100.0, 200.0)

    def __post_init__(self) -> None:
        for knob in KNOBS:
            values = getattr(self, knob)
            if not values or list(values) != sorted(set(values)):
                raise ValueError(f"{knob}: expected distinct values in rising order, got {values!r}")
        if min(self.router_instances) < 2:
            raise ValueError(f"router_instances: at least 2, got {self.router_instances!r}")

    @property
    def size(self) -> int:
        """How many configurations the space holds."""
        count = 1
        for knob in KNOBS:
            count *= len(getattr(self, knob))
        return count

    def __iter__(self) -> Iterator[ServingConfig]:
        """Every configuration, first knob slowest."""
        for values in itertools.product(*(getattr(self, knob) for knob in KNOBS)):
            yield ServingConfig(*values)

    def with_start(self, start: ServingConfig) -> SearchSpace:
        """This space with ``start``'s values added, so that the search can begin there."""
        return SearchSpace(
            **{knob: tuple(sorted({*getattr(self, knob), getattr(start, knob)})) for knob in KNOBS}
        )

    def neighbours(self, config: ServingConfig, knob: str) -> list[ServingConfig]:
        """``config`` with ``knob`` one step down and one step up in this space (where those exist)."""
        values = getattr(self, knob)
        index = values.index(getattr(config, knob))
        steps = [i for i in (index - 1, index + 1) if 0 <= i < len(values)]
        return [dataclasses.replace(config, **{knob: values[i]}) for i in steps]
