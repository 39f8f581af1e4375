"""Bad requests against the real embedded Triton: each gets a clear error, the next valid one succeeds.

Requests go through ``tritonclient`` directly (not ``toolkit.client``, which checks inputs itself), so
the server sees exactly what a careless client would send. At the end the server process is still
the one the session started.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from toolkit.data import demo_holdout_set

pytestmark = pytest.mark.e2e

INVALID = "StatusCode.INVALID_ARGUMENT"
_DTYPES = {np.float32: "FP32", np.float64: "FP64", np.int64: "INT64", np.int32: "INT32"}

Arrays = dict[str, np.ndarray]


Change = Callable[[Arrays, int], Arrays]
"""Makes a bad request from a valid one; the int is the spec's ``triton.max_candidates``."""


def _with(name: str, make: Callable[[np.ndarray], np.ndarray | None]) -> Change:
    def change(arrays: Arrays, _limit: int) -> Arrays:
        value = make(arrays[name].copy())
        changed = {k: v for k, v in arrays.items() if k != name}
        if value is not None:
            changed[name] = value
        return changed

    return change


def _at(index: tuple[int, int], value: float) -> Callable[[np.ndarray], np.ndarray]:
    def put(array: np.ndarray) -> np.ndarray:
        array[index] = value
        return array

    return put


def _candidates(n: int | None) -> Change:
    """A request with ``n`` candidates (None: one more than the spec allows)."""

    def change(arrays: Arrays, limit: int) -> Arrays:
        rows = np.arange(limit + 1 if n is None else n) % arrays["ad_dense"].shape[0]
        return {**arrays, "ad_dense": arrays["ad_dense"][rows], "ad_sparse": arrays["ad_sparse"][rows]}

    return change


def _same(arrays: Arrays, _limit: int) -> Arrays:
    return arrays


CASES: dict[str, tuple[Change, dict, list[str]]] = {
    "wrong dtype: ad_sparse INT32": (
        _with("ad_sparse", lambda a: a.astype(np.int32)),
        {},
        ["'ad_sparse'", "INT64"],
    ),
    "wrong dtype: user_dense FP64": (
        _with("user_dense", lambda a: a.astype(np.float64)),
        {},
        ["'user_dense'", "FP32"],
    ),
    "wrong width: ad_dense": (
        _with("ad_dense", lambda a: np.ones((a.shape[0], a.shape[1] + 1), np.float32)),
        {},
        ["'ad_dense'"],
    ),
    "wrong rank: ad_dense 3-d": (_with("ad_dense", lambda a: a[..., None]), {}, ["'ad_dense'"]),
    "user first dim 2": (_with("user_dense", lambda a: np.repeat(a, 2, axis=0)), {}, ["'user_dense'"]),
    "missing tensor: user_history": (_with("user_history", lambda a: None), {}, ["'user_history'"]),
    "N = 0": (_candidates(0), {}, ["'ad_dense'", "0 candidates"]),
    "N above the maximum": (_candidates(None), {}, ["'ad_dense'", "{over} candidates", "at most {limit}"]),
    "N differs between candidate tensors": (
        _with("ad_sparse", lambda a: a[:-1]),
        {},
        ["'ad_dense'", "'ad_sparse'", "disagree"],
    ),
    "NaN in ad_dense": (_with("ad_dense", _at((0, 1), np.nan)), {}, ["'ad_dense'", "NaN", "row 0"]),
    "Inf in user_dense": (_with("user_dense", _at((0, 0), np.inf)), {}, ["'user_dense'", "infinite"]),
    "negative ad id": (_with("ad_sparse", _at((0, 0), -7)), {}, ["'ad_sparse'", "-7", "negative"]),
    "negative history id": (_with("user_history", _at((0, 0), -1)), {}, ["'user_history'", "negative"]),
    "history longer than L": (
        _with("user_history", lambda a: np.ones((1, a.shape[1] + 1), np.int64)),
        {},
        ["'user_history'", "at most"],
    ),
    "unknown tier": (_same, {"tier": "platinum"}, ["'tier'", "platinum"]),
    "latency budget negative": (_same, {"latency_budget_ms": -3}, ["'latency_budget_ms'", "-3"]),
    "latency budget not a number": (_same, {"latency_budget_ms": "soon"}, ["'latency_budget_ms'", "soon"]),
    "value negative": (_same, {"value": -2.0}, ["'value'", "-2"]),
    "value zero": (_same, {"value": 0}, ["'value'", "0"]),
    "value NaN": (_same, {"value": float("nan")}, ["'value'"]),
    "value not a number": (_same, {"value": "lots"}, ["'value'", "lots"]),
    "unknown parameter": (_same, {"tire": "xl"}, ["'tire'"]),
}


def _infer(grpc: grpcclient.InferenceServerClient, model: str, arrays: Arrays, params: dict) -> np.ndarray:
    inputs = []
    for name, value in arrays.items():
        tensor = grpcclient.InferInput(name, list(value.shape), _DTYPES[value.dtype.type])
        tensor.set_data_from_numpy(value)
        inputs.append(tensor)
    return grpc.infer(model, inputs, parameters=params or None).as_numpy("score")


@pytest.fixture(scope="module")
def grpc(server):
    client = grpcclient.InferenceServerClient(server.grpc_url)
    yield client
    client.close()


@pytest.fixture(scope="module")
def started(server) -> int:
    return server.pid


@pytest.mark.parametrize("case", list(CASES))
def test_bad_request_gets_invalid_argument_naming_the_culprit_and_the_next_valid_one_succeeds(
    pipeline, server, grpc, started, case
) -> None:
    valid = dict(demo_holdout_set(pipeline.spec, 4).request(3))
    change, params, fragments = CASES[case]
    limit = pipeline.spec.triton.max_candidates

    with pytest.raises(InferenceServerException) as refused:
        _infer(grpc, pipeline.spec.name, change(valid, limit), params)

    assert refused.value.status() == INVALID
    for fragment in fragments:
        assert fragment.format(limit=limit, over=limit + 1) in refused.value.message(), (
            refused.value.message()
        )
    scores = _infer(grpc, pipeline.spec.name, valid, {})
    assert scores.shape == (valid["ad_dense"].shape[0],) and np.isfinite(scores).all()
    assert server.running and server.pid == started
