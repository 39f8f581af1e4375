"""The serving knobs ``toolkit tune`` searches, and the spec overlay a configuration becomes."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

from toolkit.router.policy import LOCAL_TIERS
from toolkit.spec.schema import Spec

KNOBS = ("router_instances", "local_tiers", "tier_threads", "tier_instances", "queue_timeout_ms")
"""The ``triton`` keys a configuration sets, in the order coordinate descent visits them (the ones
that move throughput most on CPU first, so that a search cut short by its budget has tried them)."""

KNOB_LABELS = dict(zip(KNOBS, ("routers", "local", "threads", "tier inst", "queue ms"), strict=True))
"""Each knob's short name, for table headers and plot legends."""

_LOCAL_TIERS_SORTED = tuple(sorted(LOCAL_TIERS))


@dataclass(frozen=True)
class ServingConfig:
    """One serving configuration: the values of the ``triton`` keys ``toolkit tune`` searches.

    The defaults are the spec's.

    Attributes:
        router_instances: Instances of the router model (each runs one request at a time).
        local_tiers: ``inprocess`` (the router runs the CPU tiers in its own process) or ``bls``
            (it calls the tier models, whose instances then do the work).
        tier_threads: ONNX Runtime intra-op threads of each CPU tier session.
        tier_instances: Instances of each tier model.
        queue_timeout_ms: How long a request may wait in the router's queue before it is rejected.
    """

    router_instances: int = 2
    local_tiers: str = "inprocess"
    tier_threads: int = 1
    tier_instances: int = 1
    queue_timeout_ms: float = 100.0

    @classmethod
    def from_spec(cls, spec: Spec) -> ServingConfig:
        """The configuration the spec deploys as it is (the search's starting point)."""
        return cls(**{knob: getattr(spec.triton, knob) for knob in KNOBS})

    @property
    def key(self) -> str:
        """A stable name, ``router_instances=2,local_tiers=inprocess,...,queue_timeout_ms=100``."""
        return ",".join(f"{knob}={knob_text(getattr(self, knob))}" for knob in KNOBS)

    def overlay(self) -> dict[str, dict[str, float | int | str]]:
        """The spec overlay that deploys this configuration: a ``triton:`` section with its keys."""
        return {"triton": {knob: getattr(self, knob) for knob in KNOBS}}

    def apply(self, spec: Spec) -> Spec:
        """``spec`` with this configuration's ``triton`` keys (validated as the loader would)."""
        return dataclasses.replace(spec, triton=dataclasses.replace(spec.triton, **self.overlay()["triton"]))

    def changes(self, other: ServingConfig) -> dict[str, tuple[float | int | str, float | int | str]]:
        """The knobs whose values differ from ``other``'s: knob -> (other's value, this one's)."""
        return {
            knob: (getattr(other, knob), getattr(self, knob))
            for knob in KNOBS
            if getattr(other, knob) != getattr(self, knob)
        }


def knob_text(value: float | int | str) -> str:
    """A knob's value as names and tables show it: ``100`` for 100.0, ``bls`` as it is."""
    if isinstance(value, str):
        return value
    return str(int(value)) if float(value).is_integer() else str(value)


@dataclass(frozen=True)
class SearchSpace:
    """The values each knob may take, in rising order.

    Attributes:
        router_instances: Router instance counts to try.
        local_tiers: How the router calls its CPU tiers (``bls``, ``inprocess``).
        tier_threads: ONNX Runtime intra-op thread counts to try.
        tier_instances: Tier instance counts to try.
        queue_timeout_ms: Queue timeouts to try.
    """

    router_instances: tuple[int, ...] = (2, 3, 4)
    local_tiers: tuple[str, ...] = _LOCAL_TIERS_SORTED
    tier_threads: tuple[int, ...] = (1, 2)
    tier_instances: tuple[int, ...] = (1, 2)
    queue_timeout_ms: tuple[float, ...] = (50.0, 100.0, 200.0)

    def __post_init__(self) -> None:
        for knob in KNOBS:
            values = getattr(self, knob)
            if not values or list(values) != sorted(set(values)):
                raise ValueError(f"{knob}: expected distinct values in rising order, got {values!r}")
        if min(self.router_instances) < 2:
            raise ValueError(f"router_instances: at least 2, got {self.router_instances!r}")
        for knob in ("tier_threads", "tier_instances"):
            if min(getattr(self, knob)) < 1:
                raise ValueError(f"{knob}: at least 1, got {getattr(self, knob)!r}")
        if min(self.queue_timeout_ms) < 0:
            raise ValueError(f"queue_timeout_ms: at least 0, got {self.queue_timeout_ms!r}")
        unknown = sorted(set(self.local_tiers) - set(LOCAL_TIERS))
        if unknown:
            raise ValueError(f"local_tiers: {unknown[0]!r} is not one of {', '.join(LOCAL_TIERS)}")

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
            yield ServingConfig(**dict(zip(KNOBS, values, strict=True)))

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
