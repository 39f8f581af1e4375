"""``toolkit deploy``: write the Triton model repository atomically from the spec and the manifest."""

from __future__ import annotations

import compileall
import datetime as dt
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from toolkit import __version__
from toolkit.errors import ExportError, RepositoryError
from toolkit.export.manifest import FP32, Variant, read_manifest, verify_files
from toolkit.export.names import PREPROCESSED
from toolkit.layout import MARKER
from toolkit.repository import configs
from toolkit.repository.fuse import fuse_files
from toolkit.repository.gate import gate_path, read_calibration
from toolkit.repository.select import Selection, select_variants
from toolkit.router.policy import RouterConfig, RuleConfig
from toolkit.router.remote import RemoteTier
from toolkit.router.validate import InputSchema
from toolkit.spec.schema import Spec
from toolkit.spec.variants import GPU, VARIANTS

MARKER_FORMAT = 1
BACKENDS = ("onnxruntime", "python")
_PYTHON_MODELS = Path(__file__).resolve().parent / "python_models"
_ROUTER_PACKAGE = Path(__file__).resolve().parent.parent / "router"


@dataclass(frozen=True)
class DeployResult:
    """What ``deploy`` wrote.

    Attributes:
        repository: The repository folder.
        backend: Backend of the tiers and the preprocess step.
        models: Model names written, entry point first.
        selections: Variant deployed per tier, and why.
        replaced: Whether an earlier repository was replaced.
        target: ``cpu`` or ``gpu``.
        replaced_older: When the replaced repository was written in another repository format,
            what wrote it (``toolkit <version>, repository format <n>``); empty otherwise.
        pools: With ``pools`` in the spec: each pool's repository (``repository`` is then the folder
            that holds them and ``target`` is empty).
        unfused: CPU tiers deployed without the preprocess step fused in (they take preprocessed
            tensors, which the router computes), and why the fusion failed.
        notes: Things the user should know that did not stop the deploy (a TensorRT plan that could
            not be checked against the serving image).
    """

    repository: Path
    backend: str
    models: tuple[str, ...]
    selections: dict[str, Selection]
    replaced: bool
    target: str = "cpu"
    replaced_older: str = ""
    pools: tuple[PoolRepository, ...] = ()
    unfused: dict[str, str] = field(default_factory=dict)
    notes: tuple[str, ...] = ()

    @property
    def variants(self) -> dict[str, str]:
        """Variant name deployed per tier."""
        return {tier: s.variant for tier, s in self.selections.items()}


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
        tier_timeout_ms=spec.triton.tier_timeout_ms,
        remote_tiers=dict(remote_tiers or {}),
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


def write_config(folder: Path, config: mc.ModelConfig) -> None:
    """Write ``config.pbtxt`` with protobuf text format."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.pbtxt").write_text(text_format.MessageToString(config), encoding="utf-8")


def _copy_files(artifacts: Path, variant: Variant, dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    for entry in variant.files:
        shutil.copy2(artifacts / entry.path, dest / Path(entry.path).name)


def _write_onnx_model(
    staging: Path, artifacts: Path, variant: Variant, config: mc.ModelConfig, backend: str
) -> None:
    folder = staging / config.name
    write_config(folder, config)
    _copy_files(artifacts, variant, folder / "1")
    if backend == "python":
        shutil.copy2(_PYTHON_MODELS / "onnx_runner.py", folder / "1" / "model.py")


def _write_fused_model(
    staging: Path, preprocess: Path, model: Path, config: mc.ModelConfig, backend: str
) -> None:
    """A CPU model (a tier or the gate) with the preprocess step fused in front (see :mod:`.fuse`)."""
    folder = staging / config.name
    write_config(folder, config)
    fuse_files(preprocess, model, folder / "1" / "model.onnx")
    if backend == "python":
        shutil.copy2(_PYTHON_MODELS / "onnx_runner.py", folder / "1" / "model.py")


def _model_file(artifacts: Path, variant: Variant) -> Path:
    return artifacts / variant.file(".onnx")


def _write_router(
    staging: Path,
    spec: Spec,
    latency_prior_ms: dict[str, dict[str, float]] | None = None,
    learned: dict[str, Any] | None = None,
    remote_tiers: dict[str, dict[str, Any]] | None = None,
    preprocessed_tiers: tuple[str, ...] = (),
) -> None:
    folder = staging / spec.router_model
    write_config(folder, configs.router_config(spec))
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copy2(_PYTHON_MODELS / "router.py", version / "model.py")
    shutil.copytree(_ROUTER_PACKAGE, version / "toolkit_router", ignore=shutil.ignore_patterns("__pycache__"))
    settings = router_settings(spec, latency_prior_ms, learned, remote_tiers, preprocessed_tiers)
    (version / "router.json").write_text(settings.to_json(), encoding="utf-8")


def _check_replaceable(out: Path) -> tuple[bool, str]:
    """Whether ``out`` holds a repository to replace, and what wrote it when that was not this format."""
    if not out.exists():
        return False, ""
    if not out.is_dir():
        raise RepositoryError(f"{out}: exists and is not a folder; refusing to replace it")
    entries = [p for p in out.iterdir() if p.name not in (".gitkeep",)]
    if not entries:
        return False, ""
    if not (out / MARKER).is_file():
        raise RepositoryError(
            f"{out}: is not empty and was not written by `toolkit deploy` (no {MARKER}); "
            "refusing to replace it: choose another --out or remove it"
        )
    try:
        marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
        fmt, version = marker.get("format"), marker.get("toolkit_version", "unknown")
    except (OSError, ValueError, AttributeError) as exc:
        raise RepositoryError(
            f"{out / MARKER}: unreadable ({exc}); refusing to replace a repository that may not be "
            "the toolkit's: choose another --out or remove it"
        ) from None
    if fmt != MARKER_FORMAT:
        return True, f"toolkit {version}, repository format {fmt}"
    return True, ""


@dataclass(frozen=True)
class PoolRepository:
    """The repository of one pool, as ``deploy`` wrote it for a spec with ``pools``.

    Attributes:
        name: The pool.
        repository: Its folder, ``<out>/<name>``.
        target: ``cpu`` or ``gpu`` (the pool's hardware).
        backend: Backend of its tiers (and, in the entry pool, of the preprocess step).
        models: Models it holds, entry point first in the entry pool.
        tiers: Tiers it serves.
        entry: Whether it is the entry pool (ensemble, router, preprocess, gate).
        addresses: For other pools: where the entry pool's router calls it.
    """

    name: str
    repository: Path
    target: str
    backend: str
    models: tuple[str, ...]
    tiers: tuple[str, ...]
    entry: bool
    addresses: tuple[str, ...] = ()


def remote_timeout_ms(spec: Spec, pool: str) -> float:
    """Deadline of the router's calls to ``pool``: its own, else ``triton.tier_timeout_ms``, else 1 s."""
    return spec.pool(pool).timeout_ms or spec.triton.tier_timeout_ms or 1000.0


def deploy(
    spec: Spec,
    artifacts: Path,
    out: Path,
    backend: str,
    target: str | None = None,
    pins: dict[str, str] | None = None,
    pool_addresses: dict[str, tuple[str, ...]] | None = None,
) -> DeployResult:
    """Write the model repository for ``spec`` from the exported artifacts.

    Per tier, the variant deployed is the one pinned (``pins``, then the spec's ``triton.pin``) or
    the fastest on ``target`` that passed the acceptance check (see
    :func:`~toolkit.repository.select.select_variant`). The repository is written beside ``out``
    and renamed into place, so a failed deploy leaves the previous repository as it was.

    With ``pools`` in the spec, ``out`` holds one repository per pool, ``<out>/<pool>``: the entry
    pool's has the ensemble, the router, the preprocess step (and the gate) and its own tiers; every
    other pool's has only its tiers, each deployed for the pool's hardware (a ``gpu`` pool with the
    ``onnxruntime`` backend). The router calls those tiers over gRPC at the pool's addresses
    (``pool_addresses``, else the spec's, else the pool's Kubernetes Service).

    Args:
        spec: The ensemble spec.
        artifacts: Export output (with ``manifest.json``).
        out: Repository folder to (re)place.
        backend: ``onnxruntime`` or ``python`` for the tiers and the preprocess step (the GPU
            target needs ``onnxruntime``).
        target: ``cpu`` or ``gpu`` (default: the spec's ``triton.target``); with pools, every
            pool's (default: each pool's ``hardware``), for example to try GPU pools on a CPU machine.
        pins: Variant per tier that overrides the choice.
        pool_addresses: With pools: gRPC addresses per pool that beat the spec's.

    Raises:
        RepositoryError: The manifest lacks a tier or a passing variant, a pin is invalid, a file
            changed since export, ``out`` holds something the toolkit did not write, or (with
            pools) an address is for a pool the router does not call.
    """
    from toolkit.k8s.fleet import pool_addresses as addresses_of

    if backend not in BACKENDS:
        raise RepositoryError(f"backend {backend!r} is not one of {', '.join(BACKENDS)}")
    pool_addresses = pool_addresses or {}
    if spec.pools:
        unknown = sorted(set(pool_addresses) - {p.name for p in spec.pools[1:]})
        if unknown:
            raise RepositoryError(
                f"--pool-address {unknown[0]}=...: not a pool the router calls "
                f"({', '.join(p.name for p in spec.pools[1:]) or 'none'})"
            )
        hardware = {pool.name: target or pool.hardware for pool in spec.pools}
        targets = {tier: hardware[spec.tier_pool(tier)] for tier in spec.tier_names}
    else:
        if pool_addresses:
            raise RepositoryError("--pool-address needs a spec with pools")
        target = target or spec.triton.target
        targets = dict.fromkeys(spec.tier_names, target)
    if target == GPU and backend != "onnxruntime":
        raise RepositoryError(
            f"--target gpu needs --backend onnxruntime (an NGC tritonserver with TensorRT), not {backend!r}"
        )
    try:
        manifest = read_manifest(artifacts)
        if manifest.ensemble != spec.name:
            raise RepositoryError(
                f"{artifacts}: manifest is for ensemble {manifest.ensemble!r}, not {spec.name!r}"
            )
        pre_variant = manifest.preprocess.variant(FP32)
        verify_files(artifacts, pre_variant, spec.preprocess_model)
        selections: dict[str, Selection] = {}
        for one in sorted(set(targets.values())):
            tiers = tuple(t for t in spec.tier_names if targets[t] == one)
            selections.update(select_variants(spec, manifest, one, pins, tiers))
        selections = {name: selections[name] for name in spec.tier_names}
        entries = {name: manifest.variant(name, s.variant) for name, s in selections.items()}
        for name, entry in entries.items():
            verify_files(artifacts, entry, f"tier {name!r} ({selections[name].variant})")
    except ExportError as exc:
        raise RepositoryError(str(exc)) from None
    engines = {
        name: entry.engine
        for name, entry in entries.items()
        if targets[name] == GPU and VARIANTS[selections[name].variant].engine == "tensorrt"
    }
    notes = check_plans(spec, engines, {name: selections[name].variant for name in engines})
    learned = read_calibration(spec, artifacts) if spec.routing.policy == "learned" else None
    priors = {
        name: {str(n): ms for n, ms in entry.latency(targets[name]).items()}
        for name, entry in entries.items()
    }
    remote = {tier: _remote_tier(spec, tier, pool_addresses) for tier in spec.remote_tiers}
    pre_file = _model_file(artifacts, pre_variant)

    unfused: dict[str, str] = {}

    def write_tiers(folder: Path, tiers: tuple[str, ...]) -> None:
        for name in tiers:
            entry = entries[name]
            if targets[name] == GPU:
                digest = entry.files[0].sha256 if entry.files else ""
                config = configs.gpu_tier_config(spec, name, selections[name].variant, model_sha256=digest)
                write_config(folder / name, config)
                _copy_files(artifacts, entry, folder / name / "1")
            else:
                config = configs.tier_config(spec, name, backend)
                try:
                    _write_fused_model(folder, pre_file, _model_file(artifacts, entry), config, backend)
                except RepositoryError as exc:
                    shutil.rmtree(folder / name, ignore_errors=True)
                    unfused[name] = str(exc)
                    _write_onnx_model(
                        folder, artifacts, entry, configs.tier_config(spec, name, backend, raw=False), backend
                    )

    def write_entry(folder: Path) -> None:
        _write_onnx_model(folder, artifacts, pre_variant, configs.preprocess_config(spec, backend), backend)
        _write_router(
            folder,
            spec,
            {name: p for name, p in priors.items() if p},
            learned,
            {tier: r.to_dict() for tier, r in remote.items()},
            tuple(t for t in spec.tier_names if targets[t] == GPU or t in unfused),
        )
        if learned is not None:
            config = configs.gate_config(spec, backend, bool(learned["cheapest_first"]))
            _write_fused_model(folder, pre_file, gate_path(spec, artifacts), config, backend)
        write_config(folder / spec.name, configs.ensemble_config(spec))
        (folder / spec.name / "1").mkdir()

    entry_models = spec.entry_models
    marker = {
        "format": MARKER_FORMAT,
        "toolkit_version": __version__,
        "ensemble": spec.name,
        "spec": spec.source,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    out = out.resolve()
    pools: list[PoolRepository] = []
    if spec.pools:
        for pool in spec.pools:
            tiers = spec.pool_tiers(pool.name)
            entry = pool.name == spec.entry_pool
            pools.append(
                PoolRepository(
                    name=pool.name,
                    repository=out / pool.name,
                    target=hardware[pool.name],
                    backend="onnxruntime" if hardware[pool.name] == GPU else backend,
                    models=(*(entry_models if entry else ()), *tiers),
                    tiers=tiers,
                    entry=entry,
                    addresses=() if entry else addresses_of(spec, pool.name, pool_addresses),
                )
            )

    def write(staging: Path) -> None:
        if not spec.pools:
            write_tiers(staging, spec.tier_names)
            write_entry(staging)
            _write_marker(staging, {**marker, "backend": backend, "target": target}, selections, engines)
            return
        for pool in pools:
            (staging / pool.name).mkdir()
            write_tiers(staging / pool.name, pool.tiers)
        for pool in pools:
            folder = staging / pool.name
            if pool.entry:
                write_entry(folder)
            extra = {"backend": pool.backend, "target": pool.target, "pool": pool.name, "entry": pool.entry}
            _write_marker(folder, {**marker, **extra}, {t: selections[t] for t in pool.tiers}, engines)
        pools_marker = {p.name: {"tiers": list(p.tiers), "target": p.target, "entry": p.entry} for p in pools}
        _write_marker(staging, {**marker, "backend": backend, "pools": pools_marker}, selections)

    def write_and_compile(staging: Path) -> None:
        write(staging)
        _compile_python(staging, out)

    replacing, older = _replace(out, write_and_compile)
    models = (*entry_models[:3], *spec.tier_names, *entry_models[3:])
    return DeployResult(
        out, backend, models, selections, replacing, target or "", older, tuple(pools), dict(unfused), notes
    )


def _remote_tier(spec: Spec, tier: str, overrides: dict[str, tuple[str, ...]]) -> RemoteTier:
    """Where and how the router calls ``tier``, which another pool serves."""
    from toolkit.k8s.fleet import pool_addresses

    pool = spec.tier_pool(tier)
    return RemoteTier(
        tier,
        pool,
        pool_addresses(spec, pool, overrides),
        remote_timeout_ms(spec, pool),
        spec.pool(pool).retry_after_ms,
    )


def _compile_python(staging: Path, out: Path) -> None:
    """Write the bytecode of the python models now, as their folders will hold it when served.

    The python backend caches the bytecode of ``model.py`` (and of the router's package) in the
    model's version folder when it first loads it; a server polling the repository takes that new
    ``__pycache__`` for a changed model and loads it again. Written here, by the Python that runs the
    embedded server's stubs, it is already current and nothing changes (a stub of another Python
    version still writes its own).
    """
    compileall.compile_dir(str(staging), ddir=str(out), quiet=2, workers=1)


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


def _write_marker(
    folder: Path,
    marker: dict[str, Any],
    selections: dict[str, Selection],
    engines: dict[str, dict[str, Any]] | None = None,
) -> None:
    marker = {
        **marker,
        "variants": {name: s.variant for name, s in selections.items()},
        "selection": {name: s.reason for name, s in selections.items()},
    }
    engines = {name: engines[name] for name in selections if engines and engines.get(name)}
    if engines:
        marker["engines"] = {
            name: {key: engine.get(key) for key in ("tensorrt_version", "device", "compute_capability")}
            for name, engine in engines.items()
        }
    (folder / MARKER).write_text(json.dumps(marker, indent=2) + "\n", encoding="utf-8")


def _replace(out: Path, write: Callable[[Path], None]) -> tuple[bool, str]:
    """Write a repository with ``write`` into a staging folder beside ``out``, then rename it into place."""
    replacing, older = _check_replaceable(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = out.with_name(f".{out.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        staging.mkdir()
        write(staging)
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        if out.exists():
            os.replace(out, old)
        os.replace(staging, out)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        raise RepositoryError(f"{out}: writing the repository failed: {exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return replacing, older
