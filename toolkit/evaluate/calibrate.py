"""``toolkit calibrate``: fit the learned policy's gate, export it to ONNX, price the tiers.

The gate is fitted on generated calibration requests (their own seed; never the held-out ones),
scored offline by every tier as deployed. Each tier's cost is its FLOPs for N candidates counted
from its ONNX graph. ``lambda`` is set so that ``routing.learned.target_share`` of the calibration
requests go to the largest tier. The gate and ``calibration.json`` go to
``<artifacts>/<ensemble>_gate/``, where ``toolkit deploy`` takes them.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from toolkit import __version__
from toolkit.data.demo import demo_gate_set
from toolkit.evaluate.flops import flops_model
from toolkit.evaluate.offline import (
    HeldOutScores,
    OfflineEnsemble,
    deployed_variants,
    features_array,
    score_requests,
)
from toolkit.export.manifest import FP32, sha256_file
from toolkit.repository.gate import CALIBRATION, GATE_INPUT, GATE_OUTPUT, gate_folder
from toolkit.router.learned import calibrate_lambda, calibrate_lambda_to_cost, choose_tiers
from toolkit.spec.schema import Spec

StepFn = Callable[[str], None]


def fit_gate(spec: Spec, ensemble: OfflineEnsemble, count: int) -> tuple[Any, HeldOutScores]:
    """Fit the routing gate on ``count`` gate-split requests scored by every tier of ``ensemble``.

    Returns:
        The gate and the scored requests it was fitted on.
    """
    from toolkit.train.gate import gate_targets, train_gate

    requests = demo_gate_set(spec, count)
    scored = score_requests(ensemble, requests)
    gate = train_gate(features_array(scored), gate_targets(scored.scores, requests.offsets), seed=spec.seed)
    return gate, scored


def calibrate(spec: Spec, artifacts: Path, step: StepFn | None = None) -> dict[str, Any]:
    """Fit, export and price the learned gate; write ``calibration.json``.

    Returns:
        What was written to ``calibration.json``.

    Raises:
        RepositoryError: The exported tiers are missing or no variant passed the gate.
    """
    import torch

    from toolkit.export.onnx_export import export_module
    from toolkit.train.gate import predict

    step = step or (lambda _message: None)
    variants = deployed_variants(spec, artifacts, None)
    ensemble = OfflineEnsemble(spec, artifacts, variants, routed=False)
    count = spec.routing.learned.calibration_requests or spec.data.holdout_requests
    step(f"scoring {count} calibration requests with every tier, fitting the gate")
    gate, scored = fit_gate(spec, ensemble, count)
    requests = scored.requests
    features = features_array(scored)
    step("counting each tier's FLOPs")
    costs = []
    for tier in spec.tier_names:
        model = flops_model(artifacts / tier / variants[tier] / "model.onnx")
        costs.append([model.per_request / 1e6, model.per_candidate / 1e6])
    gains = predict(gate, features)
    n = np.diff(requests.offsets)
    learned = spec.routing.learned
    if learned.target_cost_mflop > 0:
        lam = calibrate_lambda_to_cost(gains, n, costs, learned.target_cost_mflop)
    else:
        lam = calibrate_lambda(gains, n, costs, learned.target_share)
    chosen = choose_tiers(gains, n, costs, lam)
    shares = np.bincount(chosen, minlength=len(costs)) / len(n)
    cost = np.array(costs)
    mean_mflop = float((cost[chosen, 0] + cost[chosen, 1] * n).mean())
    folder = gate_folder(spec, artifacts)
    staging = folder.with_name(f".{folder.name}.staging-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    step("exporting the gate to ONNX")
    try:
        export_module(
            gate,
            (torch.zeros(2, features.shape[1]),),
            staging / FP32 / "model.onnx",
            [GATE_OUTPUT],
            {GATE_INPUT: {0: torch.export.Dim("requests", min=1, max=1 << 20)}},
            spec.export.opset,
            input_names=[GATE_INPUT],
        )
        result = {
            "format": 1,
            "toolkit_version": __version__,
            "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "ensemble": spec.name,
            "tiers": list(spec.tier_names),
            "variants": variants,
            "calibration_requests": count,
            "target_share": learned.target_share if not learned.target_cost_mflop else None,
            "target_cost_mflop": learned.target_cost_mflop or None,
            "mean_mflop": mean_mflop,
            "lambda": lam,
            "shares": {t: float(s) for t, s in zip(spec.tier_names, shares, strict=True)},
            "tier_costs_mflop": {t: c for t, c in zip(spec.tier_names, costs, strict=True)},
            "features": int(features.shape[1]),
            "gate_sha256": sha256_file(staging / FP32 / "model.onnx"),
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
