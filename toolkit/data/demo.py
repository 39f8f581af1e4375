"""The demo data sets of a spec: training and held-out requests from one generated world."""

from __future__ import annotations

from toolkit.data.generator import generate_requests
from toolkit.data.requests import RequestSet
from toolkit.spec.schema import Spec


def demo_train_set(spec: Spec) -> RequestSet:
    """The generated training requests of ``spec`` (same every time for the same spec)."""
    return _generate(spec, spec.data.train_requests, salt=1)


def demo_holdout_set(spec: Spec, num_requests: int | None = None) -> RequestSet:
    """The generated held-out requests of ``spec``: same world as training, different traffic."""
    return _generate(spec, num_requests or spec.data.holdout_requests, salt=2)


def demo_quantization_set(spec: Spec) -> RequestSet:
    """``export.calibration_requests`` generated requests that calibrate static quantization."""
    return _generate(spec, spec.export.calibration_requests, salt=3)


def demo_gate_set(spec: Spec, num_requests: int) -> RequestSet:
    """Generated requests the learned routing gate is fitted on (never the held-out ones)."""
    return _generate(spec, num_requests, salt=4)


def _generate(spec: Spec, num_requests: int, salt: int) -> RequestSet:
    return generate_requests(
        spec.features,
        num_requests,
        (spec.data.candidates.min, spec.data.candidates.max),
        spec.data.informative_share,
        seed=spec.seed * 1000 + salt,
        world_seed=spec.seed,
    )
