"""What ``toolkit deploy`` will write, decided before anything is written.

:func:`plan_deploy` reads the spec, the export manifest and (with the learned policy) the gate's
calibration, and decides per tier which variant goes where and why, what the router is told, and
which pool holds what. It writes nothing; :func:`toolkit.repository.writer.write_repository` turns a
:class:`DeployPlan` into files. Errors about an option carry its field name of
:class:`DeployOptions` (``RepositoryError.option``), which the command line shows as its flag.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import ExportError, RepositoryError
from toolkit.export.manifest import FP32, Variant, read_manifest, verify_files
from toolkit.export.names import PREPROCESSED
from toolkit.repository.gate import read_calibration
from toolkit.repository.select import Selection, select_variants
from toolkit.router.policy import RouterConfig, RuleConfig
from toolkit.router.remote import RemoteTier
from toolkit.router.validate import InputSchema
from toolkit.spec.schema import Spec
from toolkit.spec.variants import GPU, VARIANTS

BACKENDS = ("onnxruntime", "python")
"""Backends of the tiers and the preprocess step on the CPU (GPU tiers always use onnxruntime)."""


@dataclass(frozen=True)
class DeployOptions:
    """What a deploy may choose beyond the spec.

    Attributes:
        backend: ``onnxruntime`` or ``python`` for the CPU tiers and the preprocess step (the GPU
            target needs ``onnxruntime``).
        target: ``cpu`` or ``gpu``; None: the spec's ``triton.target``, or with pools each pool's
            ``hardware`` (a target given applies to every pool, for example to try GPU pools on a
            CPU machine). A tier's ``instance_kind`` beats it for that tier.
        pins: Variant per tier, beating the spec's ``triton.pin`` and the choice by speed.
        pool_addresses: With pools, gRPC addresses per pool that beat the spec's.
    """

    backend: str
    target: str | None = None
    pins: Mapping[str, str] = field(default_factory=dict)
    pool_addresses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


@dataclass(frozen=True)
class TierPlan:
    """One tier as it will be deployed.

    Attributes:
        name: The tier.
        pool: The pool that serves it ("" without pools).
        target: ``cpu`` or ``gpu``.
        selection: The variant and why it was chosen.
        variant: The variant's manifest entry (files, timings, engine).
        remote: How the entry pool's router calls it when another pool serves it.
    """

    name: str
    pool: str
    target: str
    selection: Selection
    variant: Variant
    remote: RemoteTier | None = None

    @property
    def latency_prior_ms(self) -> dict[str, float]:
        """The variant's measured latency by candidate count on its target, the router's first estimate."""
        return {str(n): ms for n, ms in self.variant.latency(self.target).items()}

    @property
    def is_plan(self) -> bool:
        """Whether it is deployed as a TensorRT plan."""
        return self.target == GPU and VARIANTS[self.selection.variant].engine == "tensorrt"


@dataclass(frozen=True)
class PoolPlan:
    """One pool's repository as it will be deployed (specs with ``pools``).

    Attributes:
        name: The pool.
        target: ``cpu`` or ``gpu``.
        backend: Backend of its tiers (and, in the entry pool, of the preprocess step).
        models: Models it holds, entry point first in the entry pool.
        tiers: Tiers it serves.
        entry: Whether it is the entry pool (ensemble, router, preprocess, gate).
        addresses: For other pools: where the entry pool's router calls it.
    """

    name: str
    target: str
    backend: str
    models: tuple[str, ...]
    tiers: tuple[str, ...]
    entry: bool
    addresses: tuple[str, ...] = ()


@dataclass(frozen=True)
class DeployPlan:
    """Everything deploy decided, before writing.

    Attributes:
        spec: The ensemble spec.
        artifacts: The export output the files come from.
        backend: Backend of the CPU tiers and the preprocess step.
        target: The deployment's target without pools (tiers with an ``instance_kind`` of their
            own may differ: see each tier's); "" with pools (each pool has its own).
        tiers: Each tier's plan, cheapest first.
        preprocess: The preprocess step's manifest entry.
        learned: With the learned policy, the gate's calibration (``calibration.json``).
        pools: With pools, each pool's plan, the entry pool first.
        notes: What the user should know that does not stop the deploy.
    """

    spec: Spec
    artifacts: Path
    backend: str
    target: str
    tiers: dict[str, TierPlan]
    preprocess: Variant
    learned: dict[str, Any] | None = None
    pools: tuple[PoolPlan, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def selections(self) -> dict[str, Selection]:
        """The variant chosen per tier, and why."""
        return {name: tier.selection for name, tier in self.tiers.items()}

    @property
    def engines(self) -> dict[str, dict[str, Any]]:
        """Per tier deployed as a TensorRT plan, what its engine was built with (the manifest's record)."""
        return plan_engines(self.tiers)

    @property
    def preprocessed_tiers(self) -> tuple[str, ...]:
        """Tiers that take preprocessed tensors (GPU tiers, deployed as exported)."""
        return tuple(name for name, tier in self.tiers.items() if tier.target == GPU)

    def router(self, unfused: tuple[str, ...] = ()) -> RouterConfig:
        """The router's configuration.

        Args:
            unfused: CPU tiers the writer could not fuse the preprocess step into.
        """
        return router_settings(
            self.spec,
            {name: tier.latency_prior_ms for name, tier in self.tiers.items() if tier.latency_prior_ms},
            self.learned,
            {name: tier.remote.to_dict() for name, tier in self.tiers.items() if tier.remote is not None},
            tuple(name for name in self.tiers if name in self.preprocessed_tiers or name in unfused),
        )


def plan_deploy(spec: Spec, artifacts: Path, options: DeployOptions) -> DeployPlan:
    """Decide what deploy writes for ``spec`` from the exported artifacts; nothing is written.

    Per tier, the variant is the one pinned (``options.pins``, then the spec's ``triton.pin``) or
    the fastest on its target that passed the acceptance check (see
    :func:`~toolkit.repository.select.select_variant`). Each chosen file is checked against the
    manifest's digest, and TensorRT plans against the serving image's TensorRT.

    Raises:
        RepositoryError: An option is invalid (``option`` names its field), the manifest lacks a
            tier or a passing variant, a file changed since export, or a plan cannot run on the image.
    """
    from toolkit.k8s.fleet import pool_addresses as addresses_of

    if options.backend not in BACKENDS:
        raise RepositoryError(f"{options.backend!r} is not one of {', '.join(BACKENDS)}", option="backend")
    called = [p.name for p in spec.pools[1:]]
    if options.pool_addresses and not spec.pools:
        raise RepositoryError("given, but the spec has no pools", option="pool_addresses")
    unknown = sorted(set(options.pool_addresses) - set(called))
    if unknown:
        raise RepositoryError(
            f"{unknown[0]}=...: not a pool the router calls ({', '.join(called) or 'none'})",
            option="pool_addresses",
        )
    if spec.pools:
        hardware = {pool.name: options.target or pool.hardware for pool in spec.pools}
        targets = {tier: hardware[spec.tier_pool(tier)] for tier in spec.tier_names}
    else:
        everywhere = options.target or spec.triton.target
        targets = {tier: spec.tier_kind(tier, everywhere) for tier in spec.tier_names}
    if (
        GPU in (options.target, *([] if spec.pools else targets.values()))
        and options.backend != "onnxruntime"
    ):
        raise RepositoryError(
            f"gpu needs the onnxruntime backend (an NGC tritonserver with TensorRT), not {options.backend!r}",
            option="target",
        )
    try:
        manifest = read_manifest(artifacts)
        if manifest.ensemble != spec.name:
            raise RepositoryError(
                f"{artifacts}: manifest is for ensemble {manifest.ensemble!r}, not {spec.name!r}"
            )
        preprocess = manifest.preprocess.variant(FP32)
        verify_files(artifacts, preprocess, spec.preprocess_model)
        selections: dict[str, Selection] = {}
        for one in sorted(set(targets.values())):
            chosen = tuple(t for t in spec.tier_names if targets[t] == one)
            selections.update(select_variants(spec, manifest, one, dict(options.pins), chosen))
        tiers = {
            name: TierPlan(
                name,
                spec.tier_pool(name),
                targets[name],
                selections[name],
                manifest.variant(name, selections[name].variant),
                _remote_tier(spec, name, options.pool_addresses) if name in spec.remote_tiers else None,
            )
            for name in spec.tier_names
        }
        for name, tier in tiers.items():
            verify_files(artifacts, tier.variant, f"tier {name!r} ({tier.selection.variant})")
    except ExportError as exc:
        raise RepositoryError(str(exc)) from None
    engines = plan_engines(tiers)
    notes = check_plans(spec, engines, {name: tiers[name].selection.variant for name in engines})
    learned = read_calibration(spec, artifacts) if spec.routing.policy == "learned" else None
    pools = tuple(
        PoolPlan(
            name=pool.name,
            target=hardware[pool.name],
            backend="onnxruntime" if hardware[pool.name] == GPU else options.backend,
            models=(
                *(spec.entry_models if pool.name == spec.entry_pool else ()),
                *spec.pool_tiers(pool.name),
            ),
            tiers=spec.pool_tiers(pool.name),
            entry=pool.name == spec.entry_pool,
            addresses=()
            if pool.name == spec.entry_pool
            else addresses_of(spec, pool.name, options.pool_addresses),
        )
        for pool in spec.pools
    )
    return DeployPlan(
        spec,
        artifacts,
        options.backend,
        "" if spec.pools else everywhere,
        tiers,
        preprocess,
        learned,
        pools,
        notes,
    )


def plan_engines(tiers: Mapping[str, TierPlan]) -> dict[str, dict[str, Any]]:
    """Per tier deployed as a TensorRT plan, what its engine was built with (the manifest's record)."""
    return {name: tier.variant.engine for name, tier in tiers.items() if tier.is_plan}


def router_settings(
    spec: Spec,
    latency_prior_ms: dict[str, dict[str, float]] | None = None,
    learned: dict[str, Any] | None = None,
    remote_tiers: dict[str, dict[str, Any]] | None = None,
    preprocessed_tiers: tuple[str, ...] = (),
) -> RouterConfig:
    """The router's configuration (``router.json``) derived from the spec.

    Args:
        spec: The ensemble spec.
        latency_prior_ms: Per tier, the deployed variant's measured latency by candidate count.
        learned: With the learned policy, ``toolkit calibrate``'s ``calibration.json``.
        remote_tiers: Tiers of other pools and where to call them (see
            :class:`~toolkit.router.remote.RemoteTier`).
        preprocessed_tiers: Tiers deployed without the preprocess step fused in (GPU tiers).
    """
    learned = learned or {}
    return RouterConfig(
        tiers=spec.tier_names,
        policy=spec.routing.policy,
        default_tier=spec.default_tier,
        rules=tuple(RuleConfig(r.feature, r.op, r.value, r.tier) for r in spec.routing.rules),
        max_candidates=spec.triton.max_candidates,
        cascade_tier=spec.routing.cascade.tier if spec.routing.policy == "cascade" else "",
        cascade_top_k=spec.routing.cascade.top_k if spec.routing.policy == "cascade" else 0,
        default_budget_ms=spec.routing.budget.default_ms,
        budget_percentile=spec.routing.budget.percentile,
        budget_window=spec.routing.budget.window,
        budget_max_age_s=spec.routing.budget.max_age_s,
        latency_prior_ms=dict(latency_prior_ms or {}),
        gate_model=spec.gate_model if learned else "",
        cheapest_first=bool(learned.get("cheapest_first", False)),
        learned_lambda=float(learned.get("lambda", 0.0)),
        tier_costs={t: list(c) for t, c in learned.get("tier_costs_mflop", {}).items()},
        inputs=input_schema(spec).to_dict(),
        preprocess_model=spec.preprocess_model,
        preprocess_outputs=dict(PREPROCESSED),
        preprocessed_tiers=tuple(t for t in spec.tier_names if t in preprocessed_tiers),
        local_tiers=spec.triton.local_tiers,
        local_threads=spec.triton.tier_threads,
        tier_timeout_ms=spec.triton.tier_timeout_ms,
        remote_tiers=dict(remote_tiers or {}),
        slo_ms=spec.routing.slo_ms,
        stats_url=f"http://127.0.0.1:{spec.triton.http_port}",
        queue_timeout_ms=spec.triton.queue_timeout_ms if spec.triton.admission == "router" else 0.0,
    )


def input_schema(spec: Spec) -> InputSchema:
    """What a valid raw request to ``spec``'s ensemble looks like, for the router's validation."""
    features = spec.features
    return InputSchema(
        user_dense=features.user_dense,
        ad_dense=features.ad_dense,
        user_vocab=tuple((f.name, f.vocab) for f in features.user_sparse),
        ad_vocab=tuple((f.name, f.vocab) for f in features.ad_sparse),
        history_length=features.history.length,
        history_vocab=features.history_vocab,
        history_table=features.history.table,
        max_candidates=spec.triton.max_candidates,
        out_of_range_ids=spec.validation.out_of_range_ids,
        long_history=spec.validation.long_history,
    )


def remote_timeout_ms(spec: Spec, pool: str) -> float:
    """Deadline of the router's calls to ``pool``: its own, else ``triton.tier_timeout_ms``, else 1 s."""
    return spec.pool(pool).timeout_ms or spec.triton.tier_timeout_ms or 1000.0


def _remote_tier(spec: Spec, tier: str, overrides: Mapping[str, tuple[str, ...]]) -> RemoteTier:
    """Where and how the router calls ``tier``, which another pool serves."""
    from toolkit.k8s.fleet import pool_addresses

    pool = spec.tier_pool(tier)
    return RemoteTier(
        tier,
        pool,
        pool_addresses(spec, pool, dict(overrides)),
        remote_timeout_ms(spec, pool),
        spec.pool(pool).retry_after_ms,
    )


def check_plans(spec: Spec, engines: dict[str, dict[str, Any]], variants: dict[str, str]) -> tuple[str, ...]:
    """Refuse TensorRT plans that the spec's serving image cannot load (:func:`toolkit.ngc.check_plan`).

    Args:
        spec: The ensemble spec; its image is ``kubernetes.image`` (or the default NGC image) and its
            TensorRT version ``kubernetes.image_tensorrt`` (or the NGC release table's).
        engines: Per tier deployed as a plan, the export manifest's ``engine`` record.
        variants: Variant per tier in ``engines``.

    Returns:
        Notes for plans that could not be checked (an image the table does not list, a plan whose
        TensorRT the manifest does not record).

    Raises:
        RepositoryError: A plan was built by another TensorRT than the image's.
    """
    from toolkit.k8s.fleet import cluster_image
    from toolkit.ngc import check_plans as check

    built = {
        f"tier {tier} ({variants[tier]})": engine.get("tensorrt_version") for tier, engine in engines.items()
    }
    return check(built, cluster_image(spec), spec.kubernetes.image_tensorrt)
