"""``toolkit deploy``: write the Triton model repository atomically from the spec and the manifest."""

from __future__ import annotations

import compileall
import datetime as dt
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as mc

from toolkit import __version__
from toolkit.errors import RepositoryError
from toolkit.export.manifest import Variant
from toolkit.layout import MARKER
from toolkit.repository import configs
from toolkit.repository.fuse import fuse_files
from toolkit.repository.gate import gate_path
from toolkit.repository.plan import (
    DeployOptions,
    DeployPlan,
    PoolPlan,
    plan_deploy,
)
from toolkit.repository.select import Selection
from toolkit.router.policy import RouterConfig
from toolkit.spec.schema import Spec
from toolkit.spec.variants import GPU

__all__ = [
    "MARKER",
    "MARKER_FORMAT",
    "DeployOptions",
    "DeployResult",
    "PoolRepository",
    "deploy",
    "write_config",
    "write_repository",
    "write_router",
]

MARKER_FORMAT = 1
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


def write_router(staging: Path, spec: Spec, settings: RouterConfig) -> None:
    """Write the router model: its config, ``model.py``, the routing package and ``router.json``."""
    folder = staging / spec.router_model
    write_config(folder, configs.router_config(spec))
    version = folder / "1"
    version.mkdir(parents=True, exist_ok=True)
    shutil.copy2(_PYTHON_MODELS / "router.py", version / "model.py")
    shutil.copytree(_ROUTER_PACKAGE, version / "toolkit_router", ignore=shutil.ignore_patterns("__pycache__"))
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
class PoolRepository(PoolPlan):
    """The repository of one pool as ``deploy`` wrote it (specs with ``pools``): its plan and folder.

    Attributes:
        repository: Its folder, ``<out>/<name>``.
    """

    repository: Path = Path()


def deploy(
    spec: Spec,
    artifacts: Path,
    out: Path,
    backend: str,
    target: str | None = None,
    pins: dict[str, str] | None = None,
    pool_addresses: dict[str, tuple[str, ...]] | None = None,
) -> DeployResult:
    """Plan the deploy of ``spec`` from the exported artifacts (:func:`~.plan.plan_deploy`) and write it.

    Arguments after ``out`` are the fields of :class:`~toolkit.repository.plan.DeployOptions`.

    Raises:
        RepositoryError: As :func:`~.plan.plan_deploy` and :func:`write_repository`.
    """
    options = DeployOptions(backend, target, dict(pins or {}), dict(pool_addresses or {}))
    return write_repository(plan_deploy(spec, artifacts, options), out)


def write_repository(plan: DeployPlan, out: Path) -> DeployResult:
    """Write the repository ``plan`` describes to ``out``, atomically.

    The repository is written beside ``out`` and renamed into place, so a failed write leaves the
    previous repository as it was. With pools, ``out`` holds one repository per pool,
    ``<out>/<pool>``: the entry pool's has the ensemble, the router, the preprocess step (and the
    gate) and its own tiers; every other pool's has only its tiers.

    Raises:
        RepositoryError: ``out`` holds something the toolkit did not write, or writing failed.
    """
    spec, artifacts, backend = plan.spec, plan.artifacts, plan.backend
    pre_file = _model_file(artifacts, plan.preprocess)
    unfused: dict[str, str] = {}

    def write_tiers(folder: Path, tiers: tuple[str, ...]) -> None:
        for name in tiers:
            tier = plan.tiers[name]
            if tier.target == GPU:
                digest = tier.variant.files[0].sha256 if tier.variant.files else ""
                config = configs.gpu_tier_config(spec, name, tier.selection.variant, model_sha256=digest)
                write_config(folder / name, config)
                _copy_files(artifacts, tier.variant, folder / name / "1")
                continue
            config = configs.tier_config(spec, name, backend)
            try:
                _write_fused_model(folder, pre_file, _model_file(artifacts, tier.variant), config, backend)
            except RepositoryError as exc:
                shutil.rmtree(folder / name, ignore_errors=True)
                unfused[name] = str(exc)
                raw = configs.tier_config(spec, name, backend, raw=False)
                _write_onnx_model(folder, artifacts, tier.variant, raw, backend)

    def write_entry(folder: Path) -> None:
        _write_onnx_model(
            folder, artifacts, plan.preprocess, configs.preprocess_config(spec, backend), backend
        )
        write_router(folder, spec, plan.router(tuple(unfused)))
        if plan.learned is not None:
            config = configs.gate_config(spec, backend, bool(plan.learned["cheapest_first"]))
            _write_fused_model(folder, pre_file, gate_path(spec, artifacts), config, backend)
        write_config(folder / spec.name, configs.ensemble_config(spec))
        (folder / spec.name / "1").mkdir()

    marker = {
        "format": MARKER_FORMAT,
        "toolkit_version": __version__,
        "ensemble": spec.name,
        "spec": spec.source,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    engines = plan.engines
    out = out.resolve()
    pools = tuple(
        PoolRepository(**{f.name: getattr(p, f.name) for f in fields(PoolPlan)}, repository=out / p.name)
        for p in plan.pools
    )
    selections = plan.selections

    def write(staging: Path) -> None:
        if not pools:
            write_tiers(staging, spec.tier_names)
            write_entry(staging)
            _write_marker(staging, {**marker, "backend": backend, "target": plan.target}, selections, engines)
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
    entry_models = spec.entry_models
    models = (*entry_models[:3], *spec.tier_names, *entry_models[3:])
    return DeployResult(
        out, backend, models, selections, replacing, plan.target, older, pools, dict(unfused), plan.notes
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
