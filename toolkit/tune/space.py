"""The serving knobs ``toolkit tune`` searches, and the spec overlay a configuration becomes."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from toolkit.router.policy import LOCAL_TIERS
from toolkit.spec.schema import Spec
from toolkit.spec.sections.serving import ADMISSIONS
from toolkit.spec.variants import TARGETS

KNOBS = (
    "router_instances",
    "local_tiers",
    "tier_threads",
    "tier_instances",
    "queue_timeout_ms",
    "admission",
)
"""The ``triton`` keys a configuration sets, in the order coordinate descent visits them (the ones
that move throughput most on CPU first, so that a search cut short by its budget has tried them)."""

KNOB_LABELS = dict(
    zip(KNOBS, ("routers", "local", "threads", "tier inst", "queue ms", "admission"), strict=True)
)
"""Each ``triton`` knob's short name, for table headers and plot legends."""

TIER_KNOB = "instances."
"""The prefix of a per-tier knob: ``instances.xl`` is tier ``xl``'s own instance count."""

KIND_KNOB = "kind."
"""The prefix of a per-tier kind knob: ``kind.lite`` is where tier ``lite``'s instances run (``cpu`` or
``gpu``, ``tiers[].instance_kind``)."""

_LOCAL_TIERS_SORTED = tuple(sorted(LOCAL_TIERS))
_ADMISSIONS_SORTED = tuple(sorted(ADMISSIONS))

Value = float | int | str


def knob_label(knob: str) -> str:
    """A knob's short name: ``routers`` for ``router_instances``, ``xl inst`` for ``instances.xl``."""
    if knob.startswith(TIER_KNOB):
        return f"{knob.removeprefix(TIER_KNOB)} inst"
    if knob.startswith(KIND_KNOB):
        return f"{knob.removeprefix(KIND_KNOB)} kind"
    return KNOB_LABELS[knob]


def _ordered(per_tier: Sequence[str], kinds: Sequence[str] = ()) -> tuple[str, ...]:
    """The knobs in the order coordinate descent visits them, per-tier ones after ``tier_instances``."""
    at = KNOBS.index("tier_instances") + 1
    return (
        *KNOBS[:at],
        *(TIER_KNOB + tier for tier in per_tier),
        *(KIND_KNOB + tier for tier in kinds),
        *KNOBS[at:],
    )


@dataclass(frozen=True)
class ServingConfig:
    """One serving configuration: the values of the spec keys ``toolkit tune`` searches.

    The defaults are the spec's.

    Attributes:
        router_instances: Instances of the router model (each runs one request at a time).
        local_tiers: ``inprocess`` (the router runs the CPU tiers in its own process) or ``bls``
            (it calls the tier models, whose instances then do the work).
        tier_threads: ONNX Runtime intra-op threads of each CPU tier session.
        tier_instances: Instances of each tier model without a count of its own.
        queue_timeout_ms: How long a request may wait in the router's queue before it is rejected.
        admission: Who rejects it: ``router`` (the router sheds, no dynamic batcher) or ``batcher``
            (Triton's queue policy in a dynamic batcher in front of the router).
        tier_counts: Tiers with their own instance count (``tiers[].instances``), as
            ``((tier, count), ...)``; the other tiers take ``tier_instances``.
        tier_kinds: Tiers whose instance kind is set (``tiers[].instance_kind``), as
            ``((tier, "cpu"), ...)``; the other tiers run on the target's.
    """

    router_instances: int = 2
    local_tiers: str = "inprocess"
    tier_threads: int = 1
    tier_instances: int = 1
    queue_timeout_ms: float = 100.0
    admission: str = "router"
    tier_counts: tuple[tuple[str, int], ...] = ()
    tier_kinds: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_spec(cls, spec: Spec, tiers: Sequence[str] = (), kinds: Sequence[str] = ()) -> ServingConfig:
        """The configuration the spec deploys as it is (the search's starting point).

        Args:
            spec: The spec.
            tiers: Tiers whose instance counts are searched on their own; each gets the count the
                spec gives it (``Spec.tier_instances``).
            kinds: Tiers whose instance kind is searched; each gets the kind the spec gives it (its
                ``instance_kind``, else ``triton.target``).
        """
        counts = tuple((tier, spec.tier_instances(tier)) for tier in tiers)
        placed = tuple((tier, spec.tier_kind(tier)) for tier in kinds)
        return cls(
            **{knob: getattr(spec.triton, knob) for knob in KNOBS}, tier_counts=counts, tier_kinds=placed
        )

    @classmethod
    def from_values(cls, values: Mapping[str, Value]) -> ServingConfig:
        """The configuration with these knob values (``instances.<tier>`` and ``kind.<tier>`` per tier)."""
        fixed = {k: v for k, v in values.items() if not k.startswith((TIER_KNOB, KIND_KNOB))}
        counts = tuple(
            (k.removeprefix(TIER_KNOB), int(v)) for k, v in values.items() if k.startswith(TIER_KNOB)
        )
        kinds = tuple(
            (k.removeprefix(KIND_KNOB), str(v)) for k, v in values.items() if k.startswith(KIND_KNOB)
        )
        return cls(**fixed, tier_counts=counts, tier_kinds=kinds)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ServingConfig:
        """The configuration from its ``dataclasses.asdict`` form read back from JSON."""
        counts = tuple((str(tier), int(count)) for tier, count in data.get("tier_counts", ()))
        kinds = tuple((str(tier), str(kind)) for tier, kind in data.get("tier_kinds", ()))
        return cls(**{**data, "tier_counts": counts, "tier_kinds": kinds})

    @property
    def knobs(self) -> tuple[str, ...]:
        """This configuration's knobs: the ``triton`` keys, then ``instances.<tier>``, ``kind.<tier>``."""
        return _ordered([tier for tier, _ in self.tier_counts], [tier for tier, _ in self.tier_kinds])

    def value(self, knob: str) -> Value:
        """The value of ``knob``.

        Raises:
            KeyError: No such knob in this configuration.
        """
        if knob.startswith(TIER_KNOB):
            return dict(self.tier_counts)[knob.removeprefix(TIER_KNOB)]
        if knob.startswith(KIND_KNOB):
            return dict(self.tier_kinds)[knob.removeprefix(KIND_KNOB)]
        if knob not in KNOBS:
            raise KeyError(knob)
        return getattr(self, knob)

    def with_value(self, knob: str, value: Value) -> ServingConfig:
        """This configuration with ``knob`` set to ``value``."""
        if knob.startswith(TIER_KNOB):
            tier = knob.removeprefix(TIER_KNOB)
            return dataclasses.replace(
                self, tier_counts=tuple((t, int(value) if t == tier else n) for t, n in self.tier_counts)
            )
        if knob.startswith(KIND_KNOB):
            tier = knob.removeprefix(KIND_KNOB)
            return dataclasses.replace(
                self, tier_kinds=tuple((t, str(value) if t == tier else k) for t, k in self.tier_kinds)
            )
        return dataclasses.replace(self, **{knob: value})

    @property
    def key(self) -> str:
        """A stable name, ``router_instances=2,local_tiers=inprocess,...,admission=router``.

        Per-tier counts and kinds follow, ``...,instances.xl=2,kind.lite=cpu``.
        """
        names = (
            *KNOBS,
            *(TIER_KNOB + tier for tier, _ in self.tier_counts),
            *(KIND_KNOB + tier for tier, _ in self.tier_kinds),
        )
        return ",".join(f"{knob}={knob_text(self.value(knob))}" for knob in names)

    def overlay(self) -> dict[str, dict[str, Value]]:
        """The ``triton:`` section that deploys this configuration (per tier: see :meth:`apply`)."""
        return {"triton": {knob: getattr(self, knob) for knob in KNOBS}}

    def apply(self, spec: Spec) -> Spec:
        """``spec`` with this configuration's ``triton`` keys, tier counts and kinds (validated as loaded).

        Raises:
            KeyError: A per-tier count or kind names a tier the spec does not have.
        """
        counts, kinds = dict(self.tier_counts), dict(self.tier_kinds)
        for tier in (*counts, *kinds):
            spec.tier(tier)
        tiers = [
            dataclasses.replace(
                t,
                instances=counts.get(t.name, t.instances),
                instance_kind=kinds.get(t.name, t.instance_kind),
            )
            for t in spec.tiers
        ]
        triton = dataclasses.replace(spec.triton, **self.overlay()["triton"])
        return dataclasses.replace(spec, triton=triton, tiers=tuple(tiers))

    def changes(self, other: ServingConfig) -> dict[str, tuple[Value | None, Value | None]]:
        """The knobs whose values differ from ``other``'s: knob -> (other's value, this one's).

        A per-tier knob only one of them has reads None on the other side.
        """
        knobs = dict.fromkeys([*other.knobs, *self.knobs])
        return {
            knob: (_get(other, knob), _get(self, knob))
            for knob in knobs
            if _get(other, knob) != _get(self, knob)
        }


def _get(config: ServingConfig, knob: str) -> Value | None:
    try:
        return config.value(knob)
    except KeyError:
        return None


def knob_text(value: Value | None) -> str:
    """A knob's value as names and tables show it: ``100`` for 100.0, ``bls`` as it is, ``-`` for none."""
    if value is None:
        return "-"
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
        tier_instances: Instance counts to try for the tiers without their own.
        queue_timeout_ms: Queue timeouts to try.
        admission: Admissions to try (``batcher``, ``router``).
        tier_counts: Tiers whose own instance counts are searched, with the counts to try:
            ``((tier, (1, 2)), ...)``, in the order the search visits them.
        tier_kinds: Tiers whose instance kind is searched (GPU targets), with the kinds to try:
            ``((tier, ("cpu", "gpu")), ...)``.
    """

    router_instances: tuple[int, ...] = (2, 3, 4)
    local_tiers: tuple[str, ...] = _LOCAL_TIERS_SORTED
    tier_threads: tuple[int, ...] = (1, 2)
    tier_instances: tuple[int, ...] = (1, 2)
    queue_timeout_ms: tuple[float, ...] = (50.0, 100.0, 200.0)
    admission: tuple[str, ...] = _ADMISSIONS_SORTED
    tier_counts: tuple[tuple[str, tuple[int, ...]], ...] = ()
    tier_kinds: tuple[tuple[str, tuple[str, ...]], ...] = ()

    def __post_init__(self) -> None:
        for knob in self.knobs:
            values = self.values(knob)
            if not values or list(values) != sorted(set(values)):
                raise ValueError(f"{knob}: expected distinct values in rising order, got {values!r}")
        if min(self.router_instances) < 2:
            raise ValueError(f"router_instances: at least 2, got {self.router_instances!r}")
        for knob in ("tier_threads", "tier_instances", *(TIER_KNOB + t for t, _ in self.tier_counts)):
            if min(self.values(knob)) < 1:
                raise ValueError(f"{knob}: at least 1, got {self.values(knob)!r}")
        if min(self.queue_timeout_ms) < 0:
            raise ValueError(f"queue_timeout_ms: at least 0, got {self.queue_timeout_ms!r}")
        for knob, known in (("local_tiers", LOCAL_TIERS), ("admission", ADMISSIONS)):
            unknown = sorted(set(self.values(knob)) - set(known))
            if unknown:
                raise ValueError(f"{knob}: {unknown[0]!r} is not one of {', '.join(known)}")
        for tier, kinds in self.tier_kinds:
            unknown = sorted(set(kinds) - set(TARGETS))
            if unknown:
                raise ValueError(f"{KIND_KNOB}{tier}: {unknown[0]!r} is not one of {', '.join(TARGETS)}")
        for field_name, per_tier in (("tier_counts", self.tier_counts), ("tier_kinds", self.tier_kinds)):
            tiers = [tier for tier, _ in per_tier]
            if len(set(tiers)) != len(tiers):
                raise ValueError(f"{field_name}: a tier is given twice in {tiers!r}")

    @property
    def knobs(self) -> tuple[str, ...]:
        """The knobs, in the order coordinate descent visits them."""
        return _ordered([tier for tier, _ in self.tier_counts], [tier for tier, _ in self.tier_kinds])

    def values(self, knob: str) -> tuple[Value, ...]:
        """The values ``knob`` may take."""
        if knob.startswith(TIER_KNOB):
            return dict(self.tier_counts)[knob.removeprefix(TIER_KNOB)]
        if knob.startswith(KIND_KNOB):
            return dict(self.tier_kinds)[knob.removeprefix(KIND_KNOB)]
        return getattr(self, knob)

    @property
    def size(self) -> int:
        """How many configurations the space holds."""
        count = 1
        for knob in self.knobs:
            count *= len(self.values(knob))
        return count

    def __iter__(self) -> Iterator[ServingConfig]:
        """Every configuration, first knob slowest."""
        for values in itertools.product(*(self.values(knob) for knob in self.knobs)):
            yield ServingConfig.from_values(dict(zip(self.knobs, values, strict=True)))

    def with_start(self, start: ServingConfig) -> SearchSpace:
        """This space with ``start``'s values added, so that the search can begin there.

        Raises:
            ValueError: ``start`` has per-tier counts for other tiers than this space.
        """
        if start.knobs != self.knobs:
            raise ValueError(f"the start's knobs {start.knobs!r} are not the space's {self.knobs!r}")
        merged = {knob: tuple(sorted({*self.values(knob), start.value(knob)})) for knob in self.knobs}
        return SearchSpace(
            **{knob: merged[knob] for knob in KNOBS},
            tier_counts=tuple((tier, merged[TIER_KNOB + tier]) for tier, _ in self.tier_counts),
            tier_kinds=tuple((tier, merged[KIND_KNOB + tier]) for tier, _ in self.tier_kinds),
        )

    def neighbours(self, config: ServingConfig, knob: str) -> list[ServingConfig]:
        """``config`` with ``knob`` one step down and one step up in this space (where those exist)."""
        values = self.values(knob)
        index = values.index(config.value(knob))
        steps = [i for i in (index - 1, index + 1) if 0 <= i < len(values)]
        return [config.with_value(knob, values[i]) for i in steps]
