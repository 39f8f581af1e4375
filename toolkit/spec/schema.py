"""Typed, frozen objects that an ensemble spec file is validated into.

Each dataclass checks its own invariants in ``__post_init__`` and raises :class:`ValueError` with a
short statement of what was expected; :mod:`toolkit.spec.load` turns that into a
:class:`~toolkit.errors.SpecError` that names the file and the key.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from toolkit.spec.sections.common import (
    NAME_PATTERN,
    KeyedValueError,
    check_name,
)
from toolkit.spec.sections.data import (
    LOG_FORMATS,
    CandidateRange,
    DataSpec,
    Features,
    HistoryFeature,
    LogColumns,
    LogFiles,
    SparseFeature,
)
from toolkit.spec.sections.export import (
    AcceptanceSpec,
    ExportSpec,
    TensorRTSpec,
    Tolerance,
)
from toolkit.spec.sections.fleet import (
    POOL_NAME_PATTERN,
    KubernetesSpec,
    PoolSpec,
    check_address,
)
from toolkit.spec.sections.routing import (
    RULE_FEATURES,
    BudgetSpec,
    CascadeSpec,
    LearnedSpec,
    RoutingSpec,
    Rule,
    RuleOp,
)
from toolkit.spec.sections.serving import (
    TritonSpec,
    ValidationSpec,
)
from toolkit.spec.sections.tiers import (
    CANDIDATE_TENSORS,
    DENSE_TENSORS,
    MODEL_DTYPES,
    USER_TENSORS,
    ModelInput,
    TierSpec,
    TrainingSpec,
    UserModelSpec,
)

__all__ = [
    "AcceptanceSpec",
    "BudgetSpec",
    "CANDIDATE_TENSORS",
    "CandidateRange",
    "CascadeSpec",
    "DENSE_TENSORS",
    "DataSpec",
    "ExportSpec",
    "Features",
    "HistoryFeature",
    "KeyedValueError",
    "KubernetesSpec",
    "LOG_FORMATS",
    "LearnedSpec",
    "LogColumns",
    "LogFiles",
    "MODEL_DTYPES",
    "ModelInput",
    "NAME_PATTERN",
    "POOL_NAME_PATTERN",
    "PathsSpec",
    "PoolSpec",
    "RULE_FEATURES",
    "RoutingSpec",
    "Rule",
    "RuleOp",
    "SparseFeature",
    "Spec",
    "TensorRTSpec",
    "TierSpec",
    "Tolerance",
    "TrainingSpec",
    "TritonSpec",
    "USER_TENSORS",
    "UserModelSpec",
    "ValidationSpec",
    "check_address",
    "check_name",
]


@dataclass(frozen=True)
class PathsSpec:
    """Where each stage writes, relative to the working directory unless absolute.

    Attributes:
        checkpoints: ``toolkit train``'s checkpoints and training report.
        artifacts: ``toolkit export``'s variants and manifest, and the later stages' reports.
        repository: The Triton model repository ``toolkit deploy`` writes.
    """

    checkpoints: str = "checkpoints"
    artifacts: str = "artifacts"
    repository: str = "model_repository"


@dataclass(frozen=True)
class Spec:
    """A whole ensemble spec.

    Attributes:
        name: Ensemble name; the Triton model clients call.
        seed: Seed of the generated data and of training.
        features: The request schema.
        tiers: Tiers in order of rising cost; the first is the cheapest.
        data: Generated data sizes.
        training: Training settings.
        export: Export settings.
        routing: Routing policy.
        triton: Repository and server settings.
        validation: What the router does with out-of-range ids and long histories.
        paths: Output folders.
        pools: Where the tiers run, one Triton deployment per pool, the entry pool first (empty:
            one deployment serves everything).
        kubernetes: Settings of ``toolkit k8s``.
        source: File the spec was read from (empty when built in code).
    """

    name: str
    features: Features
    tiers: tuple[TierSpec, ...]
    seed: int = 7
    data: DataSpec = field(default_factory=DataSpec)
    training: TrainingSpec = field(default_factory=TrainingSpec)
    export: ExportSpec = field(default_factory=ExportSpec)
    routing: RoutingSpec = field(default_factory=RoutingSpec)
    triton: TritonSpec = field(default_factory=TritonSpec)
    validation: ValidationSpec = field(default_factory=ValidationSpec)
    paths: PathsSpec = field(default_factory=PathsSpec)
    pools: tuple[PoolSpec, ...] = ()
    kubernetes: KubernetesSpec = field(default_factory=KubernetesSpec)
    source: str = ""

    def __post_init__(self) -> None:
        check_name(self.name, "ensemble name")
        if not self.tiers:
            raise KeyedValueError("tiers", "at least one tier is needed")
        names = [t.name for t in self.tiers]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise KeyedValueError("tiers", f"tier names must be unique, repeated: {', '.join(dupes)}")
        reserved = {self.name, *self.reserved_model_names}
        clash = sorted(reserved & set(names))
        if clash:
            raise KeyedValueError(
                "tiers", f"tier names clash with the ensemble's own models: {', '.join(clash)}"
            )
        files = self.data.files
        if files is not None:
            sizes = {
                "user_dense": self.features.user_dense,
                "user_sparse": len(self.features.user_sparse),
                "ad_dense": self.features.ad_dense,
                "ad_sparse": len(self.features.ad_sparse),
            }
            for part, size in sizes.items():
                given = len(getattr(files.columns, part))
                if given != size:
                    raise KeyedValueError(
                        f"data.files.columns.{part}",
                        f"names {given} columns but features give {part} {size}",
                    )
        if self.routing.default_tier and self.routing.default_tier not in names:
            raise KeyedValueError(
                "routing.default_tier",
                f"expected one of the tiers ({', '.join(names)}), got {self.routing.default_tier!r}",
            )
        for tier in self.triton.pin:
            if tier not in names:
                raise KeyedValueError(
                    f"triton.pin.{tier}", f"expected one of the tiers ({', '.join(names)}) as key"
                )
        if self.routing.policy == "cascade":
            others = [n for n in names if n != self.default_tier]
            if self.routing.cascade.tier not in others:
                raise KeyedValueError(
                    "routing.cascade.tier",
                    f"expected a tier other than the default tier ({', '.join(others) or 'none'}), "
                    f"got {self.routing.cascade.tier!r}",
                )
        for i, rule in enumerate(self.routing.rules):
            if rule.tier not in names:
                raise KeyedValueError(
                    f"routing.rules[{i}].tier",
                    f"expected one of the tiers ({', '.join(names)}), got {rule.tier!r}",
                )
        self._check_pools()

    def _check_pools(self) -> None:
        pools = [p.name for p in self.pools]
        dupes = sorted({n for n in pools if pools.count(n) > 1})
        if dupes:
            raise KeyedValueError("pools", f"pool names must be unique, repeated: {', '.join(dupes)}")
        for i, tier in enumerate(self.tiers):
            if tier.instance_kind and pools:
                raise KeyedValueError(
                    f"tiers[{i}].instance_kind",
                    "with pools, a pool's hardware sets its tiers' instance kind; place the tier in a pool",
                )
            if tier.pool and not pools:
                raise KeyedValueError(f"tiers[{i}].pool", "names a pool, but the spec has no pools section")
            if tier.pool and tier.pool not in pools:
                raise KeyedValueError(
                    f"tiers[{i}].pool", f"expected one of the pools ({', '.join(pools)}), got {tier.pool!r}"
                )
        if not pools:
            return
        if self.tier_pool(self.tiers[0].name) != self.entry_pool:
            raise KeyedValueError(
                "tiers[0].pool",
                f"the cheapest tier {self.tiers[0].name!r} must run in the entry pool {self.entry_pool!r} "
                "(the first of pools): it answers when every other tier fails",
            )
        if self.triton.target != "cpu":
            raise KeyedValueError(
                "triton.target", "with pools, each pool's hardware is its target; leave triton.target out"
            )
        used = {self.tier_pool(t.name) for t in self.tiers}
        for i, pool in enumerate(self.pools):
            if pool.name not in used and i > 0:
                raise KeyedValueError(f"pools[{i}]", f"pool {pool.name!r} runs no tier")

    @property
    def default_tier(self) -> str:
        """The tier served when no rule matches: ``routing.default_tier`` or the cheapest tier."""
        return self.routing.default_tier or self.tiers[0].name

    @property
    def tier_names(self) -> tuple[str, ...]:
        """Tier names in order of rising cost."""
        return tuple(t.name for t in self.tiers)

    @property
    def preprocess_model(self) -> str:
        """Triton model name of the preprocess step."""
        return f"{self.name}_preprocess"

    @property
    def router_model(self) -> str:
        """Triton model name of the router."""
        return f"{self.name}_router"

    @property
    def gate_model(self) -> str:
        """Triton model name of the learned policy's gate."""
        return f"{self.name}_gate"

    @property
    def reserved_model_names(self) -> tuple[str, ...]:
        """Model names the ensemble itself uses besides the tiers."""
        return (self.preprocess_model, self.router_model, self.gate_model)

    @property
    def entry_models(self) -> tuple[str, ...]:
        """Models the entry pool (or the one repository) serves besides tiers, entry point first.

        The ensemble, the preprocess step, the router and, with the learned policy, the gate.
        """
        models = (self.name, self.preprocess_model, self.router_model)
        return (*models, self.gate_model) if self.routing.policy == "learned" else models

    @property
    def entry_pool(self) -> str:
        """The pool clients call (the first of ``pools``), or "" without pools."""
        return self.pools[0].name if self.pools else ""

    def tier_pool(self, name: str) -> str:
        """The pool tier ``name`` runs in ("" without pools)."""
        return self.tier(name).pool or self.entry_pool

    def pool(self, name: str) -> PoolSpec:
        """Return the pool called ``name``.

        Raises:
            KeyError: No pool has that name.
        """
        for pool in self.pools:
            if pool.name == name:
                return pool
        raise KeyError(name)

    def pool_tiers(self, name: str) -> tuple[str, ...]:
        """Tiers of pool ``name``, cheapest first."""
        return tuple(t.name for t in self.tiers if self.tier_pool(t.name) == name)

    @property
    def remote_tiers(self) -> tuple[str, ...]:
        """Tiers the router calls over gRPC: those outside the entry pool."""
        return tuple(t.name for t in self.tiers if self.tier_pool(t.name) != self.entry_pool)

    def tier_instances(self, name: str) -> int:
        """Instances of tier ``name``'s model: its own ``instances``, else ``triton.tier_instances``."""
        return self.tier(name).instances or self.triton.tier_instances

    def tier_kind(self, name: str, target: str | None = None) -> str:
        """Where tier ``name`` runs: its ``instance_kind``, else ``target``, else ``triton.target``."""
        return self.tier(name).instance_kind or target or self.triton.target

    def tier(self, name: str) -> TierSpec:
        """Return the tier called ``name``.

        Raises:
            KeyError: No tier has that name.
        """
        for tier in self.tiers:
            if tier.name == name:
                return tier
        raise KeyError(name)
