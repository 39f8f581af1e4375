"""``toolkit calibrate``: fit the learned policy's gate, export it to ONNX, price the tiers.

The gate learns each bigger tier's gain from the tiers' behaviour on requests they did not train
on (``routing.learned.fit_on``): a calibration set scored by every tier as deployed, or the training
requests scored by cross-fitted tier copies (:mod:`toolkit.train.crossfit`). With several targets
(``routing.learned.targets``), a 3-fold validation on those requests keeps the one whose gate routes
best (RouteLLM's APGR between the cheapest and the largest tier, on realised labels); the gate is
then fitted on all of them. Each tier's cost, and the gate's own, is its FLOPs for N candidates
counted from its ONNX graph; in cheapest-first mode a bigger tier also pays the cheapest one, which
always runs. ``lambda`` is set so that ``routing.learned.target_share`` of the requests go to the
largest tier (or they cost ``target_cost_mflop`` on average). The gate and ``calibration.json`` go to
``<artifacts>/<ensemble>_gate/``, where ``toolkit deploy`` takes them.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import __version__
from toolkit.data.demo import demo_gate_set
from toolkit.data.requests import REQUEST_TENSORS
from toolkit.evaluate.frontier import RequestLosses, apgr, score_curve
from toolkit.evaluate.offline import HeldOutScores, OfflineEnsemble, deployed_variants, score_requests
from toolkit.export.manifest import FP32, sha256_file
from toolkit.flops import flops_model
from toolkit.repository.gate import CALIBRATION, CALIBRATION_FORMAT, CHEAPEST_SCORE, GATE_OUTPUT, gate_folder
from toolkit.router.learned import calibrate_lambda, calibrate_lambda_to_cost, choose_tiers
from toolkit.spec.schema import Spec

StepFn = Callable[[str], None]

VALIDATION_FOLDS = 3
"""Folds of the validation that picks the gate's target."""

_SHARES = np.linspace(0.0, 1.0, 51)


@dataclass(frozen=True)
class GateFit:
    """A fitted gate and what it was fitted on.

    Attributes:
        gate: The torch gate (``toolkit.train.gate``).
        data: The requests it learned from (preprocessed, with out-of-sample tier scores).
        values: FP32 [R], what each of those requests is worth (ones without values).
        source: Where the out-of-sample tier scores come from, in words.
        fit_on: ``calibration`` or ``cross_fit``.
        target: The target it learned.
        validation: APGR of each target tried in the validation (empty with one target).
        epochs: Passes over the data per fit.
    """

    gate: Any
    data: Any
    values: np.ndarray
    source: str
    fit_on: str
    target: str
    validation: dict[str, float]
    epochs: int


def resolve_fit_on(spec: Spec) -> str:
    """``calibration`` or ``cross_fit``: what ``routing.learned.fit_on: auto`` means for this spec."""
    fit_on = spec.routing.learned.fit_on
    if fit_on != "auto":
        return fit_on
    files = spec.data.files
    return "cross_fit" if files is not None and not files.calibration else "calibration"


CROSS_FIT_REQUESTS = 20000
"""Training requests cross-fitting scores when ``routing.learned.calibration_requests`` is 0."""


def gate_requests(spec: Spec) -> int:
    """How many requests the gate learns from.

    ``routing.learned.calibration_requests``; without it, ``data.holdout_requests`` of a calibration
    set, or up to :data:`CROSS_FIT_REQUESTS` cross-fitted training requests.
    """
    learned = spec.routing.learned
    if learned.calibration_requests:
        return learned.calibration_requests
    return CROSS_FIT_REQUESTS if resolve_fit_on(spec) == "cross_fit" else spec.data.holdout_requests


def gate_epochs(requests: int) -> int:
    """Passes over ``requests`` gate requests: about 30,000 request visits, 3 to 20 passes."""
    return int(min(20, max(3, math.ceil(30000 / max(requests, 1)))))


def gate_data_of(held: HeldOutScores) -> Any:
    """Scored requests as :class:`toolkit.train.gate.GateData`."""
    import torch

    from toolkit.train.gate import GateData

    return GateData(
        {name: torch.from_numpy(np.ascontiguousarray(held.pre[name])) for name in REQUEST_TENSORS},
        held.requests.offsets,
        held.scores,
        held.requests.labels,
    )


def _cross_fitted(spec: Spec, count: int, step: StepFn) -> tuple[Any, np.ndarray, str]:
    import torch

    from toolkit.train.checkpoints import load_preprocess
    from toolkit.train.crossfit import cross_fit
    from toolkit.train.gate import GateData
    from toolkit.train.trainer import prepare

    preprocess = load_preprocess(Path(spec.paths.checkpoints), spec)
    folds = spec.routing.learned.folds
    result = cross_fit(spec, preprocess, folds, count, step)
    prepared = prepare(preprocess, result.requests)
    tensors = {name: getattr(prepared, name) for name in REQUEST_TENSORS}
    data = GateData(
        {k: torch.as_tensor(v) for k, v in tensors.items()},
        result.requests.offsets,
        result.scores,
        result.requests.labels,
    )
    where = "data.files.train" if spec.data.files is not None else "the generated training requests"
    source = (
        f"{result.requests.num_requests} requests of {where}, each scored by tier copies trained on the "
        f"other {folds - 1} of {folds} folds"
    )
    return data, result.requests.value_weights(), source


def gather(
    spec: Spec, ensemble: OfflineEnsemble, count: int, step: StepFn
) -> tuple[Any, np.ndarray, str, str]:
    """The gate's requests with out-of-sample tier scores, their values, where from, and how.

    Raises:
        DataError: Cross-fitting cannot retrain a tier (see :func:`toolkit.train.crossfit.cross_fit`).
    """
    fit_on = resolve_fit_on(spec)
    if fit_on == "cross_fit":
        data, values, source = _cross_fitted(spec, count, step)
        return data, values, source, fit_on
    requests = demo_gate_set(spec, count)
    step(f"scoring {requests.num_requests} calibration requests with every tier")
    held = score_requests(ensemble, requests)
    files = spec.data.files
    where = (
        f"the first {requests.num_requests} requests of {files.calibration}"
        if files is not None
        else f"{requests.num_requests} generated calibration requests (a seed of their own)"
    )
    source = f"{where}, scored by every tier as deployed"
    return gate_data_of(held), requests.value_weights(), source, fit_on


def _routing_apgr(data: Any, predicted: np.ndarray) -> float:
    """APGR of routing ``data``'s requests between the cheapest and the largest tier by ``predicted``.

    NaN where it is undefined: the largest tier is not better, or the labels are not clicks (0/1).
    """
    try:
        losses = RequestLosses.from_scores(
            data.labels, data.scores[[0, -1]].astype(np.float64), np.asarray(data.offsets, dtype=np.int64)
        )
    except ValueError:
        return float("nan")
    weak, strong = losses.ne_of_tier(0), losses.ne_of_tier(1)
    if not weak > strong:
        return float("nan")
    return apgr(score_curve(losses, predicted, _SHARES), weak, strong)


def validate_targets(spec: Spec, data: Any, epochs: int, step: StepFn) -> dict[str, float]:
    """APGR of a gate fitted on each target, out of fold (:data:`VALIDATION_FOLDS` blocks in order)."""
    from toolkit.train.crossfit import fold_of
    from toolkit.train.gate import predict, train_gate

    learned = spec.routing.learned
    n = np.diff(data.offsets)
    block = fold_of(np.arange(data.num_requests), data.num_requests, VALIDATION_FOLDS)
    out = {}
    for target in learned.targets:
        step(f"validating the gate's target {target!r} ({VALIDATION_FOLDS} folds)")
        predicted = np.empty(data.num_requests)
        for k in range(VALIDATION_FOLDS):
            gate = train_gate(
                data.subset(np.flatnonzero(block != k)),
                spec.features,
                learned.gate,
                target,
                learned.cheapest_first,
                seed=spec.seed,
                epochs=epochs,
            )
            held = np.flatnonzero(block == k)
            predicted[held] = predict(gate, data.subset(held), learned.cheapest_first)[:, -1] * n[held]
        out[target] = _routing_apgr(data, predicted)
    return out


def fit_gate(spec: Spec, ensemble: OfflineEnsemble, count: int, step: StepFn | None = None) -> GateFit:
    """Gather the gate's requests, pick its target by validation and fit it on all of them.

    The validation needs 10 requests per fold; with fewer, or where no target's APGR is defined, the
    first of ``routing.learned.targets`` is used.
    """
    from toolkit.train.gate import train_gate

    step = step or (lambda _message: None)
    learned = spec.routing.learned
    data, values, source, fit_on = gather(spec, ensemble, count, step)
    epochs = gate_epochs(data.num_requests)
    validation: dict[str, float] = {}
    target = learned.targets[0]
    if len(learned.targets) > 1 and data.num_requests >= 10 * VALIDATION_FOLDS:
        validation = validate_targets(spec, data, epochs, step)
        ranked = [t for t in learned.targets if not math.isnan(validation[t])]
        if ranked:
            target = max(ranked, key=lambda t: validation[t])
    step(f"fitting the {learned.gate} gate on {data.num_requests} requests (target {target!r})")
    gate = train_gate(
        data, spec.features, learned.gate, target, learned.cheapest_first, seed=spec.seed, epochs=epochs
    )
    return GateFit(gate, data, values, source, fit_on, target, validation, epochs)


def export_gate(spec: Spec, gate: Any, path: Path) -> None:
    """Export the gate for one request, N dynamic.

    Inputs: the preprocessed request tensors (and, cheapest first, the cheapest tier's scores
    ``cheapest_score`` [N]); output ``gains`` [1, T - 1].
    """
    import torch

    from toolkit.export.onnx_export import export_module

    f = spec.features
    n = 3
    example = (
        torch.zeros(1, f.user_dense),
        torch.ones(1, len(f.user_sparse), dtype=torch.int64),
        torch.ones(1, f.history.length, dtype=torch.int64),
        torch.zeros(n, f.ad_dense),
        torch.ones(n, len(f.ad_sparse), dtype=torch.int64),
    )
    names = list(REQUEST_TENSORS)
    candidates = torch.export.Dim("num_candidates", min=1, max=1 << 20)
    shapes: dict[str, Any] = {name: None for name in names}
    shapes.update(ad_dense={0: candidates}, ad_sparse={0: candidates})
    if spec.routing.learned.cheapest_first:
        example = (*example, torch.full((n,), 0.1))
        names.append(CHEAPEST_SCORE)
        shapes[CHEAPEST_SCORE] = {0: candidates}
    export_module(gate.eval(), example, path, [GATE_OUTPUT], shapes, spec.export.opset, input_names=names)


def time_gate(spec: Spec, path: Path, counts: tuple[int, ...]) -> dict[str, float]:
    """Median ms of one gate call with ONNX Runtime (1 thread) at each candidate count."""
    from toolkit.export.parity import cpu_session
    from toolkit.export.timing import measure

    session = cpu_session(str(path))
    f = spec.features
    rng = np.random.default_rng(0)
    out = {}
    for n in counts:
        feed = {
            "user_dense": rng.normal(size=(1, f.user_dense)).astype(np.float32),
            "user_sparse": np.ones((1, len(f.user_sparse)), dtype=np.int64),
            "user_history": np.ones((1, f.history.length), dtype=np.int64),
            "ad_dense": rng.normal(size=(n, f.ad_dense)).astype(np.float32),
            "ad_sparse": np.ones((n, len(f.ad_sparse)), dtype=np.int64),
        }
        if spec.routing.learned.cheapest_first:
            feed[CHEAPEST_SCORE] = np.full(n, 0.1, dtype=np.float32)
        out[str(n)] = measure(lambda feed=feed: session.run([GATE_OUTPUT], feed)).median_ms
    return out


def gate_facts(spec: Spec, gate: Any, path: Path) -> dict[str, Any]:
    """What the exported gate at ``path`` costs.

    MFLOP ``[a, b]`` (``a + b * N``) from its graph, ms at the spec's timing candidate counts,
    parameters and bytes.
    """
    model = flops_model(path)
    return {
        "gate_cost_mflop": [model.per_request / 1e6, model.per_candidate / 1e6],
        "gate_ms": time_gate(spec, path, tuple(spec.export.timing_candidates)),
        "gate_parameters": int(sum(p.numel() for p in gate.parameters())),
        "gate_bytes": path.stat().st_size,
    }


def routed_costs(tier_costs: list[list[float]], cheapest_first: bool) -> list[list[float]]:
    """What serving each tier costs the router, ``[a, b]`` MFLOP per tier.

    In cheapest-first mode the cheapest tier runs on every request, so a bigger tier costs its own
    FLOPs plus the cheapest one's.
    """
    if not cheapest_first:
        return [list(c) for c in tier_costs]
    first = tier_costs[0]
    return [list(first)] + [[a + first[0], b + first[1]] for a, b in tier_costs[1:]]


def calibrate(spec: Spec, artifacts: Path, step: StepFn | None = None) -> dict[str, Any]:
    """Fit, export and price the learned gate; write ``calibration.json``.

    Returns:
        What was written to ``calibration.json``.

    Raises:
        RepositoryError: The exported tiers are missing or no variant passed the acceptance check.
        DataError: The gate's requests cannot be read or cross-fitted.
    """
    from toolkit.train.gate import predict

    step = step or (lambda _message: None)
    learned = spec.routing.learned
    variants = deployed_variants(spec, artifacts, None)
    ensemble = OfflineEnsemble(spec, artifacts, variants, routed=False)
    fit = fit_gate(spec, ensemble, gate_requests(spec), step)
    step("counting each tier's FLOPs")
    costs = []
    for tier in spec.tier_names:
        model = flops_model(artifacts / tier / variants[tier] / "model.onnx")
        costs.append([model.per_request / 1e6, model.per_candidate / 1e6])
    routed = routed_costs(costs, learned.cheapest_first)
    gains = predict(fit.gate, fit.data, learned.cheapest_first)
    n = np.diff(fit.data.offsets)
    if learned.target_cost_mflop > 0:
        lam = calibrate_lambda_to_cost(gains, n, routed, learned.target_cost_mflop, fit.values)
    else:
        lam = calibrate_lambda(gains, n, routed, learned.target_share, fit.values)
    chosen = choose_tiers(gains, n, routed, lam, fit.values)
    shares = np.bincount(chosen, minlength=len(costs)) / len(n)
    cost = np.array(routed)
    folder = gate_folder(spec, artifacts)
    staging = folder.with_name(f".{folder.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    step("exporting the gate to ONNX")
    try:
        model_path = staging / FP32 / "model.onnx"
        export_gate(spec, fit.gate, model_path)
        step("counting and timing the gate")
        facts = gate_facts(spec, fit.gate, model_path)
        a, b = facts["gate_cost_mflop"]
        mean_mflop = float((cost[chosen, 0] + cost[chosen, 1] * n).mean() + np.mean(a + b * n))
        result = {
            "format": CALIBRATION_FORMAT,
            "toolkit_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "ensemble": spec.name,
            "tiers": list(spec.tier_names),
            "variants": variants,
            "gate": learned.gate,
            "cheapest_first": learned.cheapest_first,
            "fit_on": fit.fit_on,
            "source": fit.source,
            "target": fit.target,
            "validation_apgr": fit.validation,
            "epochs": fit.epochs,
            "calibration_requests": fit.data.num_requests,
            "target_share": learned.target_share if not learned.target_cost_mflop else None,
            "target_cost_mflop": learned.target_cost_mflop or None,
            "mean_mflop": mean_mflop,
            "lambda": lam,
            "shares": {t: float(s) for t, s in zip(spec.tier_names, shares, strict=True)},
            "tier_costs_mflop": {t: c for t, c in zip(spec.tier_names, routed, strict=True)},
            "own_costs_mflop": {t: c for t, c in zip(spec.tier_names, costs, strict=True)},
            **facts,
            "gate_sha256": sha256_file(model_path),
        }
        (staging / CALIBRATION).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        old = folder.with_name(f".{folder.name}.old-{os.getpid()}")
        if folder.exists():
            os.replace(folder, old)
        os.replace(staging, folder)
        shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return result
