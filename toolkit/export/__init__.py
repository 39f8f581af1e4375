"""Export: tiers and the preprocess step to ONNX, checked against PyTorch, recorded in a manifest.

Names are imported on first use, so that ``toolkit.export.names`` and the manifest readers do not pull
in PyTorch (the ``export`` extra) for commands that only read what export wrote.
"""

from __future__ import annotations

from toolkit.lazy import lazy_attributes

_EXPORTS = {
    "FP32": "toolkit.export.manifest",
    "read_manifest": "toolkit.export.manifest",
    "verify_files": "toolkit.export.manifest",
    "PREPROCESSED": "toolkit.export.names",
    "SCORE": "toolkit.export.names",
    "export_preprocess": "toolkit.export.onnx_export",
    "export_tier": "toolkit.export.onnx_export",
    "ParityReport": "toolkit.export.parity",
    "check_parity": "toolkit.export.parity",
    "cpu_session": "toolkit.export.parity",
    "run_export": "toolkit.export.pipeline",
    "ExportOptions": "toolkit.export.pipeline",
}

__all__ = sorted(_EXPORTS)

__getattr__ = lazy_attributes(__name__, _EXPORTS)
