"""Adaptive ranking toolkit: tiered ads-ranking models served on Triton with per-request routing."""

__version__ = "0.1.0"
