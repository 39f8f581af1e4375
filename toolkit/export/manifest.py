"""``artifacts/manifest.json``: what export produced, per model and variant, in a versioned format."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from toolkit.errors import ExportError
from toolkit.spec.variants import FP32

__all__ = ["FORMAT", "FP32", "MANIFEST", "file_entries", "read_manifest", "sha256_file", "write_manifest"]

FORMAT = 2
MANIFEST = "manifest.json"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def file_entries(root: Path, folder: Path) -> list[dict[str, Any]]:
    """Path (relative to ``root``), size and sha256 of every file under ``folder``."""
    return [
        {"path": str(p.relative_to(root)), "bytes": p.stat().st_size, "sha256": sha256_file(p)}
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    ]


def read_manifest(artifacts: Path) -> dict[str, Any]:
    """Read ``<artifacts>/manifest.json``.

    Raises:
        ExportError: Missing, not JSON, or of an unknown format.
    """
    path = artifacts / MANIFEST
    if not path.is_file():
        raise ExportError(f"{path}: manifest not found; run `toolkit export` first")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{path}: not a readable manifest ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise ExportError(f"{path}: manifest format {found!r} is not supported (expected {FORMAT})")
    return data


def write_manifest(artifacts: Path, manifest: dict[str, Any]) -> Path:
    """Write the manifest atomically (beside, then rename)."""
    path = artifacts / MANIFEST
    tmp = artifacts / f".{MANIFEST}.tmp-{os.getpid()}"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def verify_files(artifacts: Path, variant: dict[str, Any], what: str) -> None:
    """Check a variant's files exist with the recorded size and sha256.

    Raises:
        ExportError: A file is missing or changed since export.
    """
    for entry in variant.get("files", []):
        path = artifacts / entry["path"]
        if not path.is_file():
            raise ExportError(f"{path}: file of {what} is missing; run `toolkit export` again")
        if path.stat().st_size != entry["bytes"] or sha256_file(path) != entry["sha256"]:
            raise ExportError(f"{path}: file of {what} changed since export (sha256 differs)")
