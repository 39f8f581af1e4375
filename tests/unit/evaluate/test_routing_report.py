"""Pieces of calibrate and evaluate: value-weighted NE, cost-counted CPT, costs, where the gate learns."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from toolkit.evaluate.calibrate import gate_epochs, resolve_fit_on, routed_costs
from toolkit.evaluate.frontier import RequestLosses
from toolkit.evaluate.report import cost_cpt, value_weighted
from toolkit.spec import Spec
from toolkit.spec.schema import LogColumns, LogFiles


def test_value_weighted_losses_give_the_value_weighted_ne_when_requests_carry_values() -> None:
    rng = np.random.default_rng(0)
    loss = rng.uniform(0.1, 3.0, (50, 3))
    candidates = rng.integers(1, 9, 50)
    values = rng.lognormal(0.0, 1.0, 50)
    losses = RequestLosses(loss, candidates, 0.4)
    valued = value_weighted(losses, values)
    assignment = rng.integers(0, 3, 50)
    chosen = loss[np.arange(50), assignment]
    expected = (values * chosen).sum() / ((values * candidates).sum() * 0.4)
    assert valued.ne(assignment) == pytest.approx(expected, rel=1e-12)
    assert value_weighted(losses, np.ones(50)).ne(assignment) == pytest.approx(losses.ne(assignment))


def test_cost_cpt_interpolates_the_cost_where_pgr_reaches_the_target_when_the_curve_crosses_it() -> None:
    curve = {"ne": [1.0, 0.8, 0.6, 0.5], "flops_per_request": [10.0, 30.0, 50.0, 110.0]}
    assert cost_cpt(curve, 0.8, 1.0, 0.5, 10.0, 110.0) == pytest.approx(0.4)
    assert cost_cpt(curve, 0.6, 1.0, 0.5, 10.0, 110.0) == pytest.approx(0.3)
    assert cost_cpt({"ne": [1.0, 0.9], "flops_per_request": [10.0, 20.0]}, 0.8, 1.0, 0.5, 10.0, 110.0) is None


def test_cost_cpt_counts_overhead_the_router_pays_on_every_request() -> None:
    plain = {"ne": [1.0, 0.5], "flops_per_request": [10.0, 110.0]}
    taxed = {"ne": [1.0, 0.5], "flops_per_request": [15.0, 115.0]}
    assert cost_cpt(plain, 0.8, 1.0, 0.5, 10.0, 110.0) == pytest.approx(0.8)
    assert cost_cpt(taxed, 0.8, 1.0, 0.5, 10.0, 110.0) == pytest.approx(0.85)


def test_routed_costs_add_the_cheapest_tier_to_bigger_ones_when_it_runs_first() -> None:
    own = [[0.1, 0.01], [1.0, 0.1], [5.0, 0.5]]
    assert routed_costs(own, cheapest_first=False) == own
    np.testing.assert_allclose(
        routed_costs(own, cheapest_first=True), [[0.1, 0.01], [1.1, 0.11], [5.1, 0.51]]
    )


def with_learned(spec: Spec, files: LogFiles | None = None, **learned: object) -> Spec:
    routing = dataclasses.replace(spec.routing, learned=dataclasses.replace(spec.routing.learned, **learned))
    return dataclasses.replace(spec, routing=routing, data=dataclasses.replace(spec.data, files=files))


def test_resolve_fit_on_picks_cross_fitting_only_when_logs_have_no_calibration_file(tiny_spec: Spec) -> None:
    columns = LogColumns(
        user_dense=("u0", "u1", "u2"),
        user_sparse=("s0", "s1"),
        ad_dense=("a0", "a1"),
        ad_sparse=("i0", "i1", "i2"),
    )
    plain = LogFiles(format="parquet", train="t.parquet", holdout="h.parquet", columns=columns)
    calibrated = dataclasses.replace(plain, calibration="c.parquet")
    assert resolve_fit_on(with_learned(tiny_spec)) == "calibration"
    assert resolve_fit_on(with_learned(tiny_spec, plain)) == "cross_fit"
    assert resolve_fit_on(with_learned(tiny_spec, calibrated)) == "calibration"
    assert resolve_fit_on(with_learned(tiny_spec, calibrated, fit_on="cross_fit")) == "cross_fit"
    assert resolve_fit_on(with_learned(tiny_spec, plain, fit_on="calibration")) == "calibration"


@pytest.mark.parametrize(("requests", "epochs"), [(100, 20), (2000, 15), (6000, 5), (14000, 3), (10**6, 3)])
def test_gate_epochs_visit_about_30000_requests_within_3_to_20_passes(requests: int, epochs: int) -> None:
    assert gate_epochs(requests) == epochs
