"""``artifacts/manifest.json``: what export produced, per model and variant, as typed objects.

The manifest is :class:`Manifest`: the preprocess step and each tier (:class:`ModelEntry`), each
with its variants (:class:`Variant`: status, why, files, quality, latency). On disk it is JSON with
a ``format`` number. :func:`read_manifest` migrates an older format it knows
(:data:`MIGRATIONS`) and refuses one it does not, naming the file and what to run.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any

from toolkit.errors import ExportError
from toolkit.spec.variants import FP32

__all__ = [
    "FORMAT",
    "FP32",
    "MANIFEST",
    "MIGRATIONS",
    "FileEntry",
    "Manifest",
    "ModelEntry",
    "Status",
    "Variant",
    "file_entries",
    "migrate",
    "read_manifest",
    "sha256_file",
    "verify_files",
    "write_manifest",
]

FORMAT = 3
"""The format :func:`write_manifest` writes."""

MANIFEST = "manifest.json"


class Status(StrEnum):
    """Outcome of one variant: built and accepted, failed, or not built here."""

    OK = "OK"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"


@dataclass(frozen=True)
class FileEntry:
    """One file of a variant.

    Attributes:
        path: Path relative to the artifacts folder.
        bytes: Size.
        sha256: Hex digest of the content.
    """

    path: str
    bytes: int
    sha256: str


_VARIANT_FIELDS = (
    "status",
    "reason",
    "fingerprint",
    "reused",
    "targets",
    "export_seconds",
    "files",
    "bytes",
    "latency_ms",
    "timing",
    "quality",
    "max_abs_error",
    "max_rel_error",
)


@dataclass
class Variant:
    """One exported variant of a model.

    Attributes:
        status: OK (built and accepted), FAILED or SKIPPED.
        reason: Why it failed or was skipped (empty when OK).
        fingerprint: Hash of everything it was built from; equal means reusable.
        reused: Whether the last export run kept it as it was.
        targets: Deploy targets it runs on (``cpu``, ``gpu``).
        export_seconds: Time its build and checks took.
        files: Its files, with sizes and digests.
        latency_ms: Median latency in ms per request by target, then by candidate count N.
        timing: How each target's timing went (provider, rounds, stability), by target.
        quality: Held-out NE and AUC against fp32 PyTorch (``ne_delta_rel``, ``auc_ratio``, ...).
        max_abs_error: Largest absolute error per output against the reference.
        max_rel_error: Largest relative error per output against the reference.
        details: What else its build recorded: ``embeddings`` (quantized table sizes), ``engine``
            (TensorRT version, GPU, compute capability), ``parity_requests``,
            ``quantization_requests``, ...
    """

    status: Status
    reason: str = ""
    fingerprint: str = ""
    reused: bool = False
    targets: tuple[str, ...] = ()
    export_seconds: float = 0.0
    files: tuple[FileEntry, ...] = ()
    latency_ms: dict[str, dict[int, float]] = field(default_factory=dict)
    timing: dict[str, dict[str, Any]] = field(default_factory=dict)
    quality: dict[str, float] = field(default_factory=dict)
    max_abs_error: dict[str, float] = field(default_factory=dict)
    max_rel_error: dict[str, float] = field(default_factory=dict)
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """Whether it was built and accepted."""
        return self.status is Status.OK

    @property
    def bytes(self) -> int:
        """Total size of its files."""
        return sum(f.bytes for f in self.files)

    @property
    def engine(self) -> dict[str, Any]:
        """What a TensorRT engine was built with (empty for other variants)."""
        return self.details.get("engine") or {}

    def latency(self, target: str) -> dict[int, float]:
        """Median ms per request by candidate count on ``target`` (empty when not timed there)."""
        return dict(self.latency_ms.get(target, {}))

    def mean_latency(self, target: str) -> float | None:
        """Mean of the median latencies over the timed candidate counts on ``target``."""
        values = list(self.latency_ms.get(target, {}).values())
        return sum(values) / len(values) if values else None

    def file(self, suffix: str) -> str:
        """Path (relative to the artifacts folder) of its first file ending with ``suffix``.

        Raises:
            ExportError: It has no such file.
        """
        for entry in self.files:
            if entry.path.endswith(suffix):
                return entry.path
        raise ExportError(f"the variant has no {suffix} file; run `toolkit export` again")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Variant:
        """Build from the JSON form (unknown keys go to ``details``)."""
        return cls(
            status=Status(data["status"]),
            reason=str(data.get("reason", "")),
            fingerprint=str(data.get("fingerprint", "")),
            reused=bool(data.get("reused", False)),
            targets=tuple(data.get("targets", ())),
            export_seconds=float(data.get("export_seconds", 0.0)),
            files=tuple(FileEntry(f["path"], int(f["bytes"]), f["sha256"]) for f in data.get("files", ())),
            latency_ms={
                target: {int(n): float(ms) for n, ms in by_n.items()}
                for target, by_n in data.get("latency_ms", {}).items()
            },
            timing=dict(data.get("timing", {})),
            quality=dict(data.get("quality", {})),
            max_abs_error=dict(data.get("max_abs_error", {})),
            max_rel_error=dict(data.get("max_rel_error", {})),
            details={k: v for k, v in data.items() if k not in _VARIANT_FIELDS},
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        out: dict[str, Any] = {"status": self.status.value, "reason": self.reason}
        if self.fingerprint:
            out["fingerprint"] = self.fingerprint
        out |= {"reused": self.reused, "targets": list(self.targets), "export_seconds": self.export_seconds}
        for name in ("quality", "max_abs_error", "max_rel_error"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        out |= self.details
        if self.latency_ms:
            out["latency_ms"] = {
                target: {str(n): ms for n, ms in by_n.items()} for target, by_n in self.latency_ms.items()
            }
        if self.timing:
            out["timing"] = self.timing
        if self.files:
            out["files"] = [{"path": f.path, "bytes": f.bytes, "sha256": f.sha256} for f in self.files]
            out["bytes"] = self.bytes
        return out


@dataclass
class ModelEntry:
    """The preprocess step or one tier, and its variants.

    Attributes:
        variants: Its variants by name, in catalogue order.
        name: Triton model name (the preprocess step's; tiers are keyed by name in the manifest).
        architecture: The tier's architecture, or its kind for a model you bring (``factory``, ``onnx``).
        layout: ``request`` or ``pair``.
        checkpoint: What the variants were made from: ``path`` and ``sha256`` (and a factory's source digest).
        reference: NE and AUC of fp32 PyTorch on the held-out requests.
        per_pair: For a per-pair tier, the user-side work it repeats per candidate.
    """

    variants: dict[str, Variant]
    name: str = ""
    architecture: str = ""
    layout: str = "request"
    checkpoint: dict[str, str] = field(default_factory=dict)
    reference: dict[str, float] = field(default_factory=dict)
    per_pair: dict[str, Any] | None = None

    def variant(self, name: str) -> Variant:
        """Return its variant ``name``.

        Raises:
            KeyError: No such variant was exported.
        """
        return self.variants[name]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelEntry:
        """Build from the JSON form."""
        return cls(
            variants={name: Variant.from_dict(v) for name, v in data.get("variants", {}).items()},
            name=str(data.get("model", "")),
            architecture=str(data.get("architecture", "")),
            layout=str(data.get("layout", "request")),
            checkpoint=dict(data.get("checkpoint", {})),
            reference=dict(data.get("reference", {})),
            per_pair=data.get("per_pair"),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form."""
        out: dict[str, Any] = {"model": self.name} if self.name else {}
        if self.architecture:
            out |= {
                "architecture": self.architecture,
                "layout": self.layout,
                "checkpoint": self.checkpoint,
                "reference": self.reference,
            }
        if self.per_pair:
            out["per_pair"] = self.per_pair
        out["variants"] = {name: v.to_dict() for name, v in self.variants.items()}
        return out


@dataclass
class Manifest:
    """What one export run left in the artifacts folder.

    Attributes:
        ensemble: The spec's name.
        preprocess: The preprocess step (one variant, ``onnx-fp32``).
        tiers: Each tier by name, cheapest first.
        spec: The spec file export read.
        created: When it was written (ISO 8601, UTC).
        toolkit_version: The toolkit that wrote it.
        machine: CPU, cores, GPU and library versions of the machine it was made on.
        acceptance: The acceptance bounds variants were checked against.
        format: The on-disk format (:data:`FORMAT` once read).
    """

    ensemble: str
    preprocess: ModelEntry
    tiers: dict[str, ModelEntry]
    spec: str = ""
    created: str = ""
    toolkit_version: str = ""
    machine: dict[str, Any] = field(default_factory=dict)
    acceptance: dict[str, float] = field(default_factory=dict)
    format: int = FORMAT

    def tier(self, name: str) -> ModelEntry:
        """Return tier ``name``.

        Raises:
            ExportError: The manifest has no such tier.
        """
        if name not in self.tiers:
            raise ExportError(f"tier {name!r} is not in the manifest; run `toolkit export`")
        return self.tiers[name]

    def variant(self, tier: str, variant: str) -> Variant:
        """Return ``variant`` of tier ``tier``.

        Raises:
            ExportError: The manifest has no such tier or variant.
        """
        entry = self.tier(tier)
        if variant not in entry.variants:
            raise ExportError(
                f"the manifest has no {variant} for tier {tier!r}; run "
                f"`toolkit export --tier {tier} --precision {variant}`"
            )
        return entry.variants[variant]

    def rows(self) -> list[tuple[str, str, Variant]]:
        """``(model, variant name, variant)`` of the preprocess step, then of every tier."""
        rows = [(self.preprocess.name, name, v) for name, v in self.preprocess.variants.items()]
        return rows + [(t, name, v) for t, entry in self.tiers.items() for name, v in entry.variants.items()]

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Manifest:
        """Build from the JSON form of the current :data:`FORMAT` (see :func:`migrate` for older ones)."""
        return cls(
            ensemble=str(data["ensemble"]),
            preprocess=ModelEntry.from_dict(data["preprocess"]),
            tiers={name: ModelEntry.from_dict(entry) for name, entry in data.get("tiers", {}).items()},
            spec=str(data.get("spec", "")),
            created=str(data.get("created", "")),
            toolkit_version=str(data.get("toolkit_version", "")),
            machine=dict(data.get("machine", {})),
            acceptance=dict(data.get("acceptance", {})),
            format=int(data.get("format", FORMAT)),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON form, in :data:`FORMAT`."""
        return {
            "format": FORMAT,
            "toolkit_version": self.toolkit_version,
            "ensemble": self.ensemble,
            "spec": self.spec,
            "created": self.created,
            "machine": self.machine,
            "acceptance": self.acceptance,
            "preprocess": self.preprocess.to_dict(),
            "tiers": {name: entry.to_dict() for name, entry in self.tiers.items()},
        }


def _from_2(data: dict[str, Any]) -> dict[str, Any]:
    """Format 2 named the acceptance bounds ``gate``."""
    out = {k: v for k, v in data.items() if k != "gate"}
    out.setdefault("acceptance", data.get("gate", {}))
    return out | {"format": 3}


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {2: _from_2}
"""For each older format, the step to the next one; :func:`migrate` chains them."""


def migrate(data: dict[str, Any], source: str = MANIFEST) -> dict[str, Any]:
    """Bring a manifest's JSON form to :data:`FORMAT`, one step per format.

    Raises:
        ExportError: The format is unknown (newer than this toolkit, or older than any migration).
    """
    found = data.get("format")
    while found != FORMAT:
        step = MIGRATIONS.get(found) if isinstance(found, int) else None
        if step is None:
            newer = isinstance(found, int) and found > FORMAT
            hint = "upgrade the toolkit" if newer else "run `toolkit export` again"
            raise ExportError(
                f"{source}: manifest format {found!r} is not supported (this toolkit reads "
                f"{', '.join(map(str, sorted(MIGRATIONS)))} and {FORMAT}); {hint}"
            )
        data = step(data)
        found = data.get("format")
    return data


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(root: Path, folder: Path) -> tuple[FileEntry, ...]:
    """Path (relative to ``root``), size and sha256 of every file under ``folder``."""
    return tuple(
        FileEntry(str(p.relative_to(root)), p.stat().st_size, sha256_file(p))
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    )


def read_manifest(artifacts: Path) -> Manifest:
    """Read ``<artifacts>/manifest.json``, migrating an older format.

    Raises:
        ExportError: Missing, not JSON, of an unknown format, or missing a key.
    """
    path = artifacts / MANIFEST
    if not path.is_file():
        raise ExportError(f"{path}: manifest not found; run `toolkit export` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: not a readable manifest ({exc})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: not a manifest (a JSON object is expected)")
    try:
        return Manifest.from_dict(migrate(data, str(path)))
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(
            f"{path}: manifest is damaged ({type(exc).__name__}: {exc}); run `toolkit export`"
        ) from None


def write_manifest(artifacts: Path, manifest: Manifest) -> Path:
    """Write the manifest atomically (beside, then rename)."""
    path = artifacts / MANIFEST
    tmp = artifacts / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def verify_files(artifacts: Path, variant: Variant, what: str) -> None:
    """Check a variant's files exist with the recorded size and sha256.

    Raises:
        ExportError: A file is missing or changed since export.
    """
    for entry in variant.files:
        path = artifacts / entry.path
        if not path.is_file():
            raise ExportError(f"{path}: file of {what} is missing; run `toolkit export` again")
        if path.stat().st_size != entry.bytes or sha256_file(path) != entry.sha256:
            raise ExportError(f"{path}: file of {what} changed since export (sha256 differs)")
