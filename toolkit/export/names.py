"""Tensor names shared by the exported models, the repository and the router (no heavy imports)."""

from __future__ import annotations

from toolkit.data.requests import REQUEST_TENSORS

SCORE = "score"
"""Output of every tier: click probability per candidate, FP32 [N]."""

PREPROCESSED = {name: f"{name}_pre" for name in REQUEST_TENSORS}
"""Output names of the preprocess model, by the request tensor they transform."""
