"""The deployed ensemble, run offline: the same ONNX files and the same routing code as the server.

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
from toolkit.export.onnx_export import SCORE
from toolkit.export.parity import cpu_session
from toolkit.repository.gate import GATE_INPUT, GATE_OUTPUT, gate_path, read_calibration
from toolkit.repository.select import select_variants
from toolkit.repository.writer import MARKER, router_settings
from toolkit.router.learned import gate_features
from toolkit.router.policy import (
    Decision,
    RequestContext,
    RouterConfig,
    cascade_scores,
    decide,
    request_features,
)
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
        if routed:
            learned = read_calibration(spec, artifacts) if spec.routing.policy == "learned" else None
            self.settings = router_settings(spec, learned=learned)
            if learned is not None:
                self._gate = cpu_session(str(gate_path(spec, artifacts)))
        try:
            manifest = read_manifest(artifacts)
            pre = manifest["preprocess"]["variants"][FP32]
            verify_files(artifacts, pre, spec.preprocess_model)
            for tier, variant in variants.items():
                verify_files(artifacts, manifest["tiers"][tier]["variants"][variant], f"tier {tier!r}")
        except (ExportError, KeyError) as exc:
            raise RepositoryError(f"{artifacts}: cannot load the exported models: {exc}") from None
        self._pre = cpu_session(str(artifacts / spec.preprocess_model / FP32 / "model.onnx"))
        self._tiers = {
            tier: cpu_session(str(artifacts / tier / variant / "model.onnx"))
            for tier, variant in variants.items()
        }

    def preprocessed(self, raw: Inputs) -> Inputs:
        """The preprocess model's outputs for one raw request, by request tensor name."""
        return dict(zip(REQUEST_TENSORS, self._pre.run(None, raw), strict=True))

    def score(self, pre: Inputs, tier: str) -> np.ndarray:
        """Scores [N] of ``tier`` for one preprocessed request."""
        return self._tiers[tier].run([SCORE], pre)[0]

    def gate_gains(self, features: np.ndarray) -> np.ndarray | None:
        """The deployed gate's gains [R, T - 1] for gate features [R, F]; None without a gate."""
        if self._gate is None:
            return None
        return self._gate.run([GATE_OUTPUT], {GATE_INPUT: features.astype(np.float32)})[0]

    def decide(self, pre: Inputs, forced_tier: str | None = None) -> Decision:
        """The router's decision for one preprocessed request (with the gate's gains if learned)."""
        if self.settings is None:
            raise RepositoryError("this offline ensemble was opened without routing")
        features = request_features(pre["user_history"], int(pre["ad_dense"].shape[0]))
        gains = None
        if self._gate is not None and forced_tier is None:
            history = np.array([features["history_length"]])
            feats = gate_features(pre["user_dense"], history, np.array([features["num_candidates"]]))
            gains = tuple(float(g) for g in self._gate.run([GATE_OUTPUT], {GATE_INPUT: feats})[0][0])
        context = RequestContext(features=features, forced_tier=forced_tier, gains=gains)
        return decide(self.settings, context)

    def route(self, raw: Inputs, forced_tier: str | None = None) -> tuple[Decision, np.ndarray, np.ndarray]:
        """The router's decision for one raw request, the scores it returns and each one's tier index."""
        pre = self.preprocessed(raw)
        decision = self.decide(pre, forced_tier)
        scores = self.score(pre, decision.tier)
        if decision.rescore_tier is None:
            return decision, scores, np.full(scores.shape, decision.index, dtype=np.int32)

        def rescore(top: np.ndarray) -> np.ndarray:
            subset = {**pre, "ad_dense": pre["ad_dense"][top], "ad_sparse": pre["ad_sparse"][top]}
            return self.score(subset, decision.rescore_tier)

        scores, tiers = cascade_scores(scores, decision, rescore)
        return decision, scores, tiers


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
        user_dense: FP32 [R, Du], the preprocessed dense user features the router sees.
    """

    requests: RequestSet
    tiers: tuple[str, ...]
    variants: dict[str, str]
    scores: np.ndarray
    features: list[dict[str, float]]
    decisions: np.ndarray
    user_dense: np.ndarray


def score_requests(
    ensemble: OfflineEnsemble, requests: RequestSet, progress: Callable[[int], None] | None = None
) -> HeldOutScores:
    """Run every tier on every request (and the policy's decision), for offline evaluation."""
    tiers = ensemble.spec.tier_names
    scores = np.empty((len(tiers), requests.num_candidates), dtype=np.float32)
    features, decisions = [], np.empty(requests.num_requests, dtype=np.int64)
    user_dense = np.empty(requests.user_dense.shape, dtype=np.float32)
    for r in range(requests.num_requests):
        pre = ensemble.preprocessed(requests.request(r))
        user_dense[r] = pre["user_dense"][0]
        lo, hi = requests.offsets[r], requests.offsets[r + 1]
        for t, tier in enumerate(tiers):
            scores[t, lo:hi] = ensemble.score(pre, tier)
        features.append(request_features(pre["user_history"], int(hi - lo)))
        decisions[r] = ensemble.decide(pre).index if ensemble.settings is not None else -1
        if progress is not None:
            progress(r)
    return HeldOutScores(requests, tiers, dict(ensemble.variants), scores, features, decisions, user_dense)


def features_array(held: HeldOutScores) -> np.ndarray:
    """The learned gate's inputs for every request of ``held`` (see ``toolkit.train.gate``)."""
    history = np.array([f["history_length"] for f in held.features])
    candidates = np.array([f["num_candidates"] for f in held.features])
    return gate_features(held.user_dense, history, candidates)
