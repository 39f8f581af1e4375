"""Ensemble specs: one YAML file per ensemble, validated into typed, frozen objects."""

from toolkit.spec.load import DEFAULT_SPEC, load_spec, spec_from_dict
from toolkit.spec.schema import (
    CandidateRange,
    DataSpec,
    ExportSpec,
    Features,
    GateSpec,
    HistoryFeature,
    PathsSpec,
    RoutingSpec,
    Rule,
    SparseFeature,
    Spec,
    TensorRTSpec,
    TierSpec,
    Tolerance,
    TrainingSpec,
    TritonSpec,
)

__all__ = [
    "DEFAULT_SPEC",
    "CandidateRange",
    "DataSpec",
    "ExportSpec",
    "Features",
    "GateSpec",
    "HistoryFeature",
    "PathsSpec",
    "RoutingSpec",
    "Rule",
    "SparseFeature",
    "Spec",
    "TensorRTSpec",
    "TierSpec",
    "Tolerance",
    "TrainingSpec",
    "TritonSpec",
    "load_spec",
    "spec_from_dict",
]
