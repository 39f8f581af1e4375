"""The deployed ensemble, run offline: the same ONNX files and the same routing engine as the server.

``toolkit evaluate`` scores held-out requests here; the end-to-end tests compare these decisions
and scores with the real Triton server's, request by request.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from toolkit.data.requests import REQUEST_TENSORS, RequestSet
from toolkit.errors import ExportError, RepositoryError
from toolkit.export.manifest import FP32, read_manifest, verify_files
from toolkit.export.names import SCORE
from toolkit.export.parity import cpu_session
from toolkit.layout import MARKER
from toolkit.repository.gate import CHEAPEST_SCORE, GATE_OUTPUT, gate_path, read_calibration
from toolkit.repository.plan import router_settings
from toolkit.repository.select import select_variants
from toolkit.router.engine import RoutingEngine, complete
from toolkit.router.policy import Decision, RequestContext, RouterConfig, request_features
from toolkit.spec.schema import Spec

Inputs = dict[str, np.ndarray]


def deployed_variants(spec: Spec, artifacts: Path, repository: Path | None = None) -> dict[str, str]:
    """The variant of each tier the repository serves, or the one ``toolkit deploy`` would choose.

    Reads ``toolkit-repository.json`` when ``repository`` holds one for this ensemble; otherwise
    applies deploy's selection (CPU target, the spec's pins) to the manifest.

    Raises:
        RepositoryError: The manifest is missing or a tier has no passing variant.
    """
    marker = repository / MARKER if repository is not None else None
    if marker is not None and marker.is_file():
        try:
            data = json.loads(marker.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise RepositoryError(f"{marker}: not readable ({exc})") from None
        if data.get("ensemble") == spec.name and set(data.get("variants", {})) == set(spec.tier_names):
            return {t: data["variants"][t] for t in spec.tier_names}
    try:
        manifest = read_manifest(artifacts)
    except ExportError as exc:
        raise RepositoryError(str(exc)) from None
    return {t: s.variant for t, s in select_variants(spec, manifest, "cpu").items()}


class OfflineEnsemble:
    """Preprocess, route and score requests locally, as the deployed ensemble does.

    Args:
        spec: The ensemble spec.
        artifacts: Export output with ``manifest.json``.
        variants: Variant per tier (see :func:`deployed_variants`).
        routed: Whether to route too (with the learned policy this needs ``toolkit calibrate``'s
            gate); without, only :meth:`preprocessed` and :meth:`score` are available.
    """

    def __init__(self, spec: Spec, artifacts: Path, variants: dict[str, str], routed: bool = True) -> None:
        self.spec = spec
        self.variants = variants
        self.settings: RouterConfig | None = None
        self._gate = None
        self.cheapest_first = False
        if routed:
            learned = read_calibration(spec, artifacts) if spec.routing.policy == "learned" else None
            self.settings = router_settings(spec, learned=learned)
            if learned is not None:
                self._gate = cpu_session(str(gate_path(spec, artifacts)))
                self.cheapest_first = self.settings.cheapest_first
        try:
            manifest = read_manifest(artifacts)
            verify_files(artifacts, manifest.preprocess.variant(FP32), spec.preprocess_model)
            for tier, variant in variants.items():
                verify_files(artifacts, manifest.variant(tier, variant), f"tier {tier!r}")
        except (ExportError, KeyError) as exc:
            raise RepositoryError(f"{artifacts}: cannot load the exported models: {exc}") from None
        self._pre = cpu_session(str(artifacts / spec.preprocess_model / FP32 / "model.onnx"))
        self._tiers = {
            tier: cpu_session(str(artifacts / tier / variant / "model.onnx"))
            for tier, variant in variants.items()
        }
        self._engine = RoutingEngine(self.settings, _OnnxBackend(self)) if self.settings is not None else None
        self._last: tuple[Inputs, Inputs] | None = None

    def preprocessed(self, raw: Inputs) -> Inputs:
        """The preprocess model's outputs for one raw request, by request tensor name."""
        if self._last is not None and self._last[0] is raw:
            return self._last[1]
        pre = dict(zip(REQUEST_TENSORS, self._pre.run(None, raw), strict=True))
        self._last = (raw, pre)
        return pre

    def score(self, pre: Inputs, tier: str) -> np.ndarray:
        """Scores [N] of ``tier`` for one preprocessed request."""
        return self._tiers[tier].run([SCORE], pre)[0]

    def gate_gains(self, pre: Inputs, cheapest: np.ndarray | None = None) -> np.ndarray | None:
        """The deployed gate's gains [T - 1] for one preprocessed request; None without a gate.

        Args:
            pre: The preprocessed request.
            cheapest: In cheapest-first mode, the cheapest tier's scores [N] (scored here if None).
        """
        if self._gate is None:
            return None
        feed = dict(pre)
        if self.cheapest_first:
            feed[CHEAPEST_SCORE] = (
                cheapest if cheapest is not None else self.score(pre, self.spec.tier_names[0])
            )
        return self._gate.run([GATE_OUTPUT], feed)[0][0]

    def _context(self, raw: Inputs, forced_tier: str | None, value: float) -> RequestContext:
        if self._engine is None:
            raise RepositoryError("this offline ensemble was opened without routing")
        parameters: dict[str, object] = {"value": value}
        if forced_tier is not None:
            parameters["tier"] = forced_tier
        return self._engine.parse(raw, parameters)

    def decide(
        self,
        raw: Inputs,
        forced_tier: str | None = None,
        value: float = 1.0,
        cheapest: np.ndarray | None = None,
    ) -> Decision:
        """The router's decision for one raw request (with the gate's gains if learned).

        Args:
            raw: The raw request.
            forced_tier: The request parameter ``tier``, if any.
            value: The request parameter ``value`` (1 if absent).
            cheapest: In cheapest-first mode, the cheapest tier's scores if already known.
        """
        context = self._context(raw, forced_tier, value)
        return complete(self._engine.decide(raw, context, cheapest))

    def route(
        self, raw: Inputs, forced_tier: str | None = None, value: float = 1.0
    ) -> tuple[Decision, np.ndarray, np.ndarray]:
        """The router's decision for one raw request, the scores it returns and each one's tier index.

        The routing engine the deployed router runs, with these ONNX files as its tiers: in
        cheapest-first mode the cheapest tier scores the request before the gate runs, and its
        scores are the answer when the gate keeps the request there.
        """
        context = self._context(raw, forced_tier, value)
        routed = complete(self._engine.route(raw, context))
        return routed.decision, routed.scores, routed.tiers


class _OnnxBackend:
    """The routing engine's tiers and gate offline: preprocess, then the exported ONNX files."""

    def __init__(self, ensemble: OfflineEnsemble) -> None:
        self.ensemble = ensemble

    async def score(self, tier: str, tensors: Inputs) -> np.ndarray:
        return self.ensemble.score(self.ensemble.preprocessed(tensors), tier)

    async def gains(self, tensors: Inputs, cheapest: np.ndarray | None) -> np.ndarray:
        return self.ensemble.gate_gains(self.ensemble.preprocessed(tensors), cheapest)


@dataclass(frozen=True)
class HeldOutScores:
    """Every tier's scores on every held-out candidate, and each request's routing features.

    Attributes:
        requests: The raw requests.
        tiers: Tier names, cheapest first.
        variants: Variant scored per tier.
        scores: FP32 [T, C]: tier t's score of candidate c.
        features: Per request, the features the router computes.
        decisions: Per request, the index of the tier the spec's policy picks.
        pre: The preprocessed request tensors the tiers and the gate see, by request tensor name:
            user tensors [R, ...], candidate tensors [C, ...].
    """

    requests: RequestSet
    tiers: tuple[str, ...]
    variants: dict[str, str]
    scores: np.ndarray
    features: list[dict[str, float]]
    decisions: np.ndarray
    pre: dict[str, np.ndarray]

    def preprocessed(self, r: int) -> Inputs:
        """The preprocessed tensors of request ``r``."""
        lo, hi = int(self.requests.offsets[r]), int(self.requests.offsets[r + 1])
        return {
            name: self.pre[name][r : r + 1] if name.startswith("user_") else self.pre[name][lo:hi]
            for name in REQUEST_TENSORS
        }


def score_requests(
    ensemble: OfflineEnsemble, requests: RequestSet, progress: Callable[[int], None] | None = None
) -> HeldOutScores:
    """Run every tier on every request (and the policy's decision), for offline evaluation."""
    tiers = ensemble.spec.tier_names
    scores = np.empty((len(tiers), requests.num_candidates), dtype=np.float32)
    features, decisions = [], np.empty(requests.num_requests, dtype=np.int64)
    pre_all: dict[str, np.ndarray] = {}
    values = requests.value_weights()
    for r in range(requests.num_requests):
        raw = requests.request(r)
        pre = ensemble.preprocessed(raw)
        lo, hi = requests.offsets[r], requests.offsets[r + 1]
        if not pre_all:
            pre_all = {
                name: np.empty(
                    (requests.num_requests if name.startswith("user_") else requests.num_candidates,)
                    + pre[name].shape[1:],
                    dtype=pre[name].dtype,
                )
                for name in REQUEST_TENSORS
            }
        for name in REQUEST_TENSORS:
            if name.startswith("user_"):
                pre_all[name][r] = pre[name][0]
            else:
                pre_all[name][lo:hi] = pre[name]
        for t, tier in enumerate(tiers):
            scores[t, lo:hi] = ensemble.score(pre, tier)
        features.append(request_features(pre["user_history"], int(hi - lo)))
        if ensemble.settings is not None:
            decisions[r] = ensemble.decide(raw, value=float(values[r]), cheapest=scores[0, lo:hi]).index
        else:
            decisions[r] = -1
        if progress is not None:
            progress(r)
    return HeldOutScores(requests, tiers, dict(ensemble.variants), scores, features, decisions, pre_all)
