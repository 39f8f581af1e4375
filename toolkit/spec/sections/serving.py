"""The Triton repository and server (``triton``) and the router's input checks (``validation``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from toolkit.router.policy import LOCAL_TIERS
from toolkit.spec.sections.common import KeyedValueError
from toolkit.spec.variants import TARGETS, check_variant

ADMISSIONS = ("router", "batcher")
"""Who turns away requests that waited past ``triton.queue_timeout_ms``."""


@dataclass(frozen=True)
class TritonSpec:
    """Settings of the generated Triton repository and of the server that runs it.

    Attributes:
        backend: Backend of the tier and preprocess models: ``onnxruntime`` (NGC tritonserver),
            ``python`` (an ONNX Runtime runner in the python backend, for servers without the
            onnxruntime backend, such as the embedded one) or ``auto`` (pick by the server).
        max_candidates: Largest N a request may carry.
        router_instances: Instances of the router model (>= 2; each runs one request at a time).
        queue_timeout_ms: The queue wait past which requests are turned away with UNAVAILABLE (the
            router's queue is the ensemble's only one); a client's request ``timeout`` can only
            shorten it; 0 means no bound.
        admission: Who turns requests away: ``router`` (no dynamic batcher in front of the router;
            it sheds, at the cost of a refusal, while the requests it starts have waited longer
            than ``queue_timeout_ms``) or ``batcher`` (Triton's dynamic batcher with a queue policy
            rejects each request that waited that long, without running it, but adds a thread hop
            to every request and, on the 2.51 server, can hold a request up to 0.5 s when it arrives
            while every router instance is busy). ``router`` answers more requests at every load up
            to its capacity; ``batcher`` holds latency at loads beyond what the router can refuse
            (see the overload figures under Benchmarks).
        tier_instances: Instances of each tier model.
        tier_threads: ONNX Runtime intra-op threads of each CPU tier session: per instance of the
            tier, preprocess and gate models, and per session the router runs in its own process
            (``local_tiers: inprocess``). More threads shorten one large request and compete with
            other instances for the cores; ``toolkit tune`` measures which pays.
        tier_timeout_ms: Deadline of each of the router's tier calls: past it the router gives up
            and the next cheaper tier answers; a tier (other than the cheapest) whose recent calls
            (``routing.budget.percentile``) take longer is not called until its slow calls age out
            (``routing.budget.max_age_s``); 0: no deadline. A tier the router runs in its own
            process (``local_tiers: inprocess``) is not cut off mid-call; only its slow calls count.
        local_tiers: How the router calls the tiers it serves beside it on the CPU (and the gate):
            ``inprocess`` runs an ONNX Runtime session on the file Triton serves in the router's own
            process (no second hop); ``bls`` calls the tier model through BLS. GPU tiers, TensorRT
            plans and other pools' tiers are called through BLS or gRPC either way.
        host: Address the server binds to.
        grpc_port: gRPC port.
        http_port: HTTP port.
        metrics_port: Metrics port.
        target: Hardware the deployed tiers run on: ``cpu`` (ONNX variants on CPU instances) or
            ``gpu`` (TensorRT engines, or ONNX Runtime with the TensorRT accelerator, on GPU
            instances of an NGC tritonserver).
        pin: Variant to deploy per tier, instead of the fastest one that passed the acceptance check.
    """

    backend: Literal["auto", "onnxruntime", "python"] = "auto"
    max_candidates: int = 1024
    router_instances: int = 2
    queue_timeout_ms: float = 100.0
    admission: Literal["router", "batcher"] = "router"
    tier_instances: int = 1
    tier_threads: int = 1
    tier_timeout_ms: float = 1000.0
    local_tiers: Literal["inprocess", "bls"] = "inprocess"
    host: str = "127.0.0.1"
    grpc_port: int = 8001
    http_port: int = 8000
    metrics_port: int = 8002
    target: Literal["cpu", "gpu"] = "cpu"
    pin: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise KeyedValueError("target", f"expected one of {', '.join(TARGETS)}, got {self.target!r}")
        for tier, variant in self.pin.items():
            if not isinstance(variant, str):
                raise KeyedValueError(f"pin.{tier}", f"expected a variant name, got {variant!r}")
            try:
                check_variant(variant)
            except ValueError as exc:
                raise KeyedValueError(f"pin.{tier}", str(exc)) from None
        if self.local_tiers not in LOCAL_TIERS:
            raise KeyedValueError(
                "local_tiers", f"expected one of {', '.join(LOCAL_TIERS)}, got {self.local_tiers!r}"
            )
        if self.max_candidates < 1:
            raise KeyedValueError("max_candidates", f"must be positive, got {self.max_candidates}")
        if self.router_instances < 2:
            raise KeyedValueError(
                "router_instances",
                f"must be at least 2 (one instance runs one request at a time), got {self.router_instances}",
            )
        if self.tier_instances < 1:
            raise KeyedValueError("tier_instances", f"must be positive, got {self.tier_instances}")
        if self.tier_threads < 1:
            raise KeyedValueError("tier_threads", f"must be positive, got {self.tier_threads}")
        if not math.isfinite(self.tier_timeout_ms) or self.tier_timeout_ms < 0:
            raise KeyedValueError("tier_timeout_ms", f"must be a number >= 0, got {self.tier_timeout_ms}")
        if not math.isfinite(self.queue_timeout_ms) or self.queue_timeout_ms < 0:
            raise KeyedValueError("queue_timeout_ms", f"must be a number >= 0, got {self.queue_timeout_ms}")
        if self.admission not in ADMISSIONS:
            raise KeyedValueError(
                "admission", f"expected one of {', '.join(ADMISSIONS)}, got {self.admission!r}"
            )
        for port in (self.grpc_port, self.http_port, self.metrics_port):
            if not 1 <= port <= 65535:
                raise ValueError(f"ports must lie in 1..65535, got {port}")


@dataclass(frozen=True)
class ValidationSpec:
    """What the router does with requests that are well-formed but outside the schema's ranges.

    Negative ids, non-finite dense features, a candidate count of 0 or above
    ``triton.max_candidates`` and disagreeing candidate counts are always refused.

    Attributes:
        out_of_range_ids: An id at or above its table's vocabulary: ``fold`` it into the table as
            the preprocess step does (and count it), or ``reject`` the request.
        long_history: A history longer than ``features.history.length``: ``reject`` the request, or
            ``truncate`` it to its newest L ids (and count it).
    """

    out_of_range_ids: Literal["fold", "reject"] = "fold"
    long_history: Literal["reject", "truncate"] = "reject"
