"""Export: tiers and the preprocess step to ONNX, checked against PyTorch, recorded in a manifest."""

from toolkit.export.manifest import FP32, read_manifest, verify_files
from toolkit.export.onnx_export import PREPROCESSED, SCORE, export_preprocess, export_tier
from toolkit.export.parity import ParityReport, check_parity, cpu_session
from toolkit.export.pipeline import run_export

__all__ = [
    "FP32",
    "PREPROCESSED",
    "SCORE",
    "ParityReport",
    "check_parity",
    "cpu_session",
    "export_preprocess",
    "export_tier",
    "read_manifest",
    "run_export",
    "verify_files",
]
