"""Unit tests of the router's calls to tiers of other pools (``remote_tiers``), without a network.

The router model is loaded as deploy writes it, against the fake python backend of
``test_router_model``; the gRPC client class of ``tritonclient.grpc.aio`` is replaced by a fake that
records each call and answers or raises per address (the real ``InferInput`` and
``InferRequestedOutput`` are kept, so dtype and shape mismatches still fail). The address books'
clocks and the router's ``perf_counter`` are injected, so nothing here sleeps.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import json
import sys
import types
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc.aio as real_grpc_aio
from test_router_model import (
    INPUTS,
    FakeBackend,
    FakeInferenceResponse,
    FakeRequest,
    make_request,
    outputs,
    tier_score,
)
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

from toolkit.repository.plan import router_settings
from toolkit.repository.writer import write_router
from toolkit.router import DEADLINE_EXCEEDED, RETRYABLE, AddressBook, RemoteTier, RouterConfig, grpc_status
from toolkit.spec import Spec

A1, A2 = "10.0.0.1:8001", "10.0.0.2:8001"
TIMEOUT_MS = 200.0
RETRY_AFTER_MS = 1000.0
REMOTE = {
    "xl": {"pool": "big", "addresses": [A1, A2], "timeout_ms": TIMEOUT_MS, "retry_after_ms": RETRY_AFTER_MS}
}
MODULE_NAME = "deployed_remote_router_model_under_test"


def grpc_error(code: str) -> InferenceServerException:
    """What ``tritonclient.grpc.aio`` raises for a failed call with gRPC status ``code``."""
    return InferenceServerException(f"fake {code.lower()} from the server", status=f"StatusCode.{code}")


def remote_score(inputs: dict[str, np.ndarray]) -> np.ndarray:
    """What the fake remote tier answers: distinct from the local fake tiers, and float64 on purpose."""
    return tier_score(inputs).astype(np.float64) / 2.0


class RecordingInput(real_grpc_aio.InferInput):
    """The real ``InferInput`` (it checks dtype and shape) that also keeps the array it was given."""

    def set_data_from_numpy(self, input_tensor: np.ndarray) -> Any:
        self.array = np.array(input_tensor, copy=True)
        return super().set_data_from_numpy(input_tensor)


@dataclass
class RemoteCall:
    address: str
    model_name: str
    inputs: list[RecordingInput]
    outputs: list[str]
    client_timeout: float | None


class FakeResult:
    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self._arrays = arrays

    def as_numpy(self, name: str) -> np.ndarray | None:
        return self._arrays.get(name)


@dataclass
class FakeRemote:
    """The servers of the pool ``big``: every call recorded, an exception per failing address."""

    calls: list[RemoteCall] = field(default_factory=list)
    clients: list[tuple[str, Any]] = field(default_factory=list)
    failures: dict[str, BaseException] = field(default_factory=dict)
    on_call: Callable[[RemoteCall], None] | None = None

    def module(self) -> types.SimpleNamespace:
        """A stand-in for ``tritonclient.grpc.aio`` with the fake client class."""
        remote = self

        class FakeClient:
            def __init__(self, url: str, channel_args: Any = None, **_: Any) -> None:
                self.url = url
                remote.clients.append((url, channel_args))

            async def infer(
                self,
                model_name: str,
                inputs: list[RecordingInput],
                outputs: list[Any] | None = None,
                client_timeout: float | None = None,
                **_: Any,
            ) -> FakeResult:
                call = RemoteCall(
                    self.url, model_name, list(inputs), [o.name() for o in outputs or []], client_timeout
                )
                remote.calls.append(call)
                if remote.on_call is not None:
                    remote.on_call(call)
                if self.url in remote.failures:
                    raise remote.failures[self.url]
                return FakeResult({"score": remote_score({i.name(): i.array for i in inputs})})

        return types.SimpleNamespace(
            InferenceServerClient=FakeClient,
            InferInput=RecordingInput,
            InferRequestedOutput=real_grpc_aio.InferRequestedOutput,
        )

    @property
    def addresses(self) -> list[str]:
        return [c.address for c in self.calls]


@dataclass
class FakeMetrics:
    """A fake ``pb_utils.MetricFamily``: the families made and each metric's total by its labels."""

    families: list[dict[str, Any]] = field(default_factory=list)
    totals: Counter[tuple[tuple[str, str], ...]] = field(default_factory=Counter)

    def family_class(self) -> type:
        metrics = self

        class FakeMetric:
            def __init__(self, labels: dict[str, str], family: str) -> None:
                extra = {} if family == "toolkit_router_events_total" else {"family": family}
                self.key = tuple(sorted({**labels, **extra}.items()))
                metrics.totals[self.key] += 0

            def increment(self, value: float) -> None:
                metrics.totals[self.key] += value

        class FakeMetricFamily:
            COUNTER, GAUGE, HISTOGRAM = "COUNTER", "GAUGE", "HISTOGRAM"

            def __init__(self, name: str, description: str, kind: str) -> None:
                self.name = name
                metrics.families.append({"name": name, "description": description, "kind": kind})

            def Metric(self, labels: dict[str, str]) -> FakeMetric:  # noqa: N802 (pb_utils' name)
                return FakeMetric(labels, self.name)

        return FakeMetricFamily

    def total(self, router: str, event: str, subject: str) -> float:
        wanted = {"router": router, "event": event, "subject": subject}
        return sum(n for key, n in self.totals.items() if wanted.items() <= dict(key).items())


@dataclass
class RemoteRouter:
    model: Any
    module: types.ModuleType
    backend: FakeBackend
    remote: FakeRemote
    config: RouterConfig
    now: list[float]

    def execute(self, *requests: FakeRequest) -> list[FakeInferenceResponse]:
        responses = asyncio.run(self.model.execute(list(requests)))
        assert len(responses) == len(requests)
        return responses

    @property
    def counts(self) -> Counter[str]:
        return self.model.counts.counts

    @property
    def book(self) -> AddressBook:
        return self.model.books["big"]


@contextlib.contextmanager
def loaded_router_module(folder: Path, backend: FakeBackend) -> Iterator[Any]:
    """Import the router's model.py with the fake backend; sys.modules and sys.path restored after."""
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "triton_python_backend_utils", backend.module)
        patch.setattr(sys, "path", list(sys.path))  # the model prepends its own folder
        try:
            found = importlib.util.spec_from_file_location(MODULE_NAME, folder / "1" / "model.py")
            assert found is not None and found.loader is not None
            module = importlib.util.module_from_spec(found)
            found.loader.exec_module(module)
            yield module, patch
        finally:
            for name in set(sys.modules) - before:
                if name == MODULE_NAME or name.split(".")[0] == "toolkit_router":
                    del sys.modules[name]


def initialize_args(folder: Path) -> dict[str, str]:
    return {
        "model_repository": str(folder),
        "model_version": "1",
        "model_name": folder.name,
        "model_config": json.dumps({"max_batch_size": 1}),
    }


@contextlib.contextmanager
def remote_router(
    directory: Path,
    spec: Spec,
    metrics: FakeMetrics | None = None,
    remote_tiers: dict | None = None,
    preprocessed_tiers: tuple[str, ...] = (),
) -> Iterator[RemoteRouter]:
    """The router with xl in the pool ``big`` (two addresses), its gRPC client and clock faked."""
    remote_tiers = REMOTE if remote_tiers is None else remote_tiers
    write_router(
        directory,
        spec,
        router_settings(spec, remote_tiers=remote_tiers, preprocessed_tiers=preprocessed_tiers),
    )
    folder = directory / spec.router_model
    backend = FakeBackend()
    if metrics is not None:
        backend.module.MetricFamily = metrics.family_class()
    with loaded_router_module(folder, backend) as (module, _):
        model = module.TritonPythonModel()
        model.initialize(initialize_args(folder))
        assert model._grpc is real_grpc_aio  # initialize imported the real client module
        remote = FakeRemote()
        model._grpc = remote.module()
        now = [1000.0]
        for book in model.books.values():
            book._clock = lambda: now[0]
        config = router_settings(spec, remote_tiers=remote_tiers)
        yield RemoteRouter(model, module, backend, remote, config, now)


@pytest.fixture
def router(tmp_path: Path, tiny_spec: Spec) -> Iterator[RemoteRouter]:
    with remote_router(tmp_path, tiny_spec) as deployed:
        yield deployed


def wishes_xl(spec: Spec, seed: int = 0, n: int = 3) -> FakeRequest:
    """A request the rules send to xl (its history is long enough)."""
    request = make_request(spec, history_items=spec.features.history.length, n=n, seed=seed)
    assert spec.routing.rules[0].tier == "xl" and spec.features.history.length >= spec.routing.rules[0].value
    return request


def request_arrays(request: FakeRequest) -> dict[str, np.ndarray]:
    """The request's tensors without the router's batch dimension (what the tiers get)."""
    return {name: t.as_numpy()[0] for name, t in request.tensors.items()}


def assert_served_remotely(
    router: RemoteRouter, request: FakeRequest, response: FakeInferenceResponse
) -> None:
    out = {k: v[0] for k, v in outputs(response).items()}
    np.testing.assert_allclose(out["score"], remote_score(request_arrays(request)).astype(np.float32))
    assert out["score"].dtype == np.float32
    assert out["tier"].tolist() == [router.config.tiers.index("xl")] * len(out["score"])
    assert "xl" not in [c.model_name for c in router.backend.calls]  # never through BLS


def assert_served_by_standard(
    router: RemoteRouter, request: FakeRequest, response: FakeInferenceResponse
) -> None:
    out = {k: v[0] for k, v in outputs(response).items()}
    np.testing.assert_array_equal(out["score"], tier_score(request_arrays(request)))
    assert out["tier"].tolist() == [router.config.tiers.index("standard")] * len(out["score"])
    assert router.backend.calls[-1].model_name == "standard"


# --- the router calling a remote tier, through execute ---


def test_remote_tier_scores_the_request_sending_the_raw_tensors_when_it_answers(
    router: RemoteRouter, tiny_spec: Spec
) -> None:
    request = wishes_xl(tiny_spec, seed=2, n=4)

    (response,) = router.execute(request)

    assert_served_remotely(router, request, response)
    (call,) = router.remote.calls
    assert call.address == A1 and call.model_name == "xl" and call.outputs == ["score"]
    assert call.client_timeout is not None and 0 < call.client_timeout <= TIMEOUT_MS / 1000.0
    assert [i.name() for i in call.inputs] == list(INPUTS)
    assert router.backend.preprocessed == []
    for item in call.inputs:
        expected = request_arrays(request)[item.name()]
        np.testing.assert_array_equal(item.array, expected)
        assert item.shape() == list(expected.shape)
        assert triton_to_np_dtype(item.datatype()) == expected.dtype
    assert {i.name(): i.datatype() for i in call.inputs} == {
        "user_dense": "FP32",
        "user_sparse": "INT64",
        "user_history": "INT64",
        "ad_dense": "FP32",
        "ad_sparse": "INT64",
    }
    assert router.counts[f"remote_ok:{A1}"] == 1 and router.counts["tier:xl"] == 1
    assert router.book.resting() == []


def test_remote_tier_deployed_without_the_preprocess_step_gets_the_preprocessed_tensors(
    tmp_path: Path, tiny_spec: Spec
) -> None:
    request = wishes_xl(tiny_spec, seed=2, n=4)

    with remote_router(tmp_path, tiny_spec, preprocessed_tiers=("xl",)) as router:
        (response,) = router.execute(request)

        assert_served_remotely(router, request, response)
        (call,) = router.remote.calls
        (preprocess,) = router.backend.preprocessed
        assert list(preprocess.requested_output_names) == [f"{k}_pre" for k in INPUTS]
        for item in call.inputs:
            np.testing.assert_array_equal(item.array, preprocess.inputs[item.name()])


def test_router_keeps_one_client_per_address_with_round_robin_channels_when_called_again(
    router: RemoteRouter, tiny_spec: Spec
) -> None:
    router.execute(*(wishes_xl(tiny_spec, seed=s) for s in range(4)))

    assert router.remote.addresses == [A1, A2, A1, A2]  # each call starts one further along
    assert [url for url, _ in router.remote.clients] == [A1, A2]
    for _, channel_args in router.remote.clients:
        assert ("grpc.lb_policy_name", "round_robin") in channel_args
    assert router.counts[f"remote_ok:{A1}"] == 2 and router.counts[f"remote_ok:{A2}"] == 2


def test_router_serves_cheap_tiers_through_bls_without_calling_the_remote_pool(
    router: RemoteRouter, tiny_spec: Spec
) -> None:
    request = make_request(tiny_spec, history_items=0)

    (response,) = router.execute(request)

    assert outputs(response)["tier"][0].tolist() == [0, 0, 0]
    assert router.backend.calls[-1].model_name == "lite"
    assert router.remote.calls == []


@pytest.mark.parametrize("status", sorted(RETRYABLE))
def test_router_tries_the_next_address_and_rests_the_first_when_it_refuses(
    router: RemoteRouter, tiny_spec: Spec, status: str
) -> None:
    router.remote.failures[A1] = grpc_error(status.removeprefix("StatusCode."))
    request = wishes_xl(tiny_spec)

    (response,) = router.execute(request)

    assert_served_remotely(router, request, response)
    assert router.remote.addresses == [A1, A2]
    first, second = router.remote.calls
    assert second.client_timeout is not None and second.client_timeout <= first.client_timeout
    assert router.counts["retry:xl"] == 1
    assert router.counts[f"remote_unavailable:{A1}"] == 1 and router.counts[f"remote_ok:{A2}"] == 1
    assert router.counts["error:xl"] == 0 and router.counts["fallback:xl"] == 0
    assert router.book.resting() == [A1]
    (again,) = router.execute(wishes_xl(tiny_spec, seed=1))  # A1 rests: only A2 is called
    assert outputs(again)["tier"][0, 0] == router.config.tiers.index("xl")
    assert router.remote.addresses == [A1, A2, A2]
    assert router.counts["retry:xl"] == 1


def test_router_falls_back_rests_every_address_and_skips_the_pool_until_retry_after_when_all_refuse(
    router: RemoteRouter, tiny_spec: Spec
) -> None:
    for address in (A1, A2):
        router.remote.failures[address] = grpc_error("UNAVAILABLE")
    first = wishes_xl(tiny_spec, seed=1)

    (response,) = router.execute(first)

    assert_served_by_standard(router, first, response)
    assert router.remote.addresses == [A1, A2]
    assert router.counts[f"remote_unavailable:{A1}"] == 1 and router.counts[f"remote_unavailable:{A2}"] == 1
    assert router.counts["retry:xl"] == 1
    assert router.counts["error:xl"] == 1 and router.counts["fallback:xl"] == 1
    assert router.counts["tier:standard"] == 1 and router.counts["tier:xl"] == 0
    assert sorted(router.book.resting()) == [A1, A2]
    assert router.book.seconds_to_retry() == pytest.approx(RETRY_AFTER_MS / 1000.0)

    router.now[0] += RETRY_AFTER_MS / 1000.0 - 0.001
    second = wishes_xl(tiny_spec, seed=2)
    (resting,) = router.execute(second)

    assert_served_by_standard(router, second, resting)
    assert len(router.remote.calls) == 2  # no call while every address rests
    assert router.counts["remote_resting:big"] == 1
    assert router.counts["error:xl"] == 2 and router.counts["fallback:xl"] == 2

    router.remote.failures.clear()
    router.now[0] += 0.002
    third = wishes_xl(tiny_spec, seed=3)
    (back,) = router.execute(third)

    assert_served_remotely(router, third, back)
    assert len(router.remote.calls) == 3
    tried = router.remote.calls[-1].address
    assert router.counts[f"remote_ok:{tried}"] == 1
    assert router.counts["remote_resting:big"] == 1
    assert tried not in router.book.resting()


def test_router_answers_unavailable_when_the_remote_pool_and_every_cheaper_tier_fail(
    router: RemoteRouter, tiny_spec: Spec
) -> None:
    for address in (A1, A2):
        router.remote.failures[address] = grpc_error("UNAVAILABLE")
    router.backend.failing.update({"standard": "not loaded", "lite": "not loaded"})

    (response,) = router.execute(wishes_xl(tiny_spec))

    assert response.has_error()
    message = response.error().message()
    assert "pool 'big'" in message and A1 in message and A2 in message
    assert router.counts["unavailable"] == 1


def test_router_gives_up_on_the_pool_without_a_second_address_when_a_call_exceeds_the_deadline(
    router: RemoteRouter, tiny_spec: Spec
) -> None:
    router.remote.failures[A1] = grpc_error(DEADLINE_EXCEEDED.removeprefix("StatusCode."))
    request = wishes_xl(tiny_spec)

    (response,) = router.execute(request)

    assert_served_by_standard(router, request, response)
    assert router.remote.addresses == [A1]
    assert router.counts[f"remote_timeout:{A1}"] == 1 and router.counts["timeout:xl"] == 1
    assert router.counts["retry:xl"] == 0
    assert router.counts["error:xl"] == 1 and router.counts["fallback:xl"] == 1
    assert router.book.resting() == [A1]


def test_router_shares_one_deadline_between_the_addresses_it_tries(
    router: RemoteRouter, tiny_spec: Spec
) -> None:
    clock = [50.0]
    router.module.time = types.SimpleNamespace(perf_counter=lambda: clock[0])

    def slow_refusal(call: RemoteCall) -> None:
        clock[0] += 0.15  # the first address takes 150 of the 200 ms before refusing

    router.remote.on_call = slow_refusal
    router.remote.failures[A1] = grpc_error("UNAVAILABLE")
    request = wishes_xl(tiny_spec)

    (response,) = router.execute(request)

    assert_served_remotely(router, request, response)
    first, second = router.remote.calls
    assert first.client_timeout == pytest.approx(TIMEOUT_MS / 1000.0)
    assert second.client_timeout == pytest.approx(TIMEOUT_MS / 1000.0 - 0.15)


def test_router_tries_no_further_address_once_the_deadline_is_spent(
    router: RemoteRouter, tiny_spec: Spec
) -> None:
    clock = [50.0]
    router.module.time = types.SimpleNamespace(perf_counter=lambda: clock[0])

    def slower_than_the_deadline(call: RemoteCall) -> None:
        clock[0] += TIMEOUT_MS / 1000.0

    router.remote.on_call = slower_than_the_deadline
    router.remote.failures[A1] = grpc_error("UNAVAILABLE")
    request = wishes_xl(tiny_spec)

    (response,) = router.execute(request)

    assert_served_by_standard(router, request, response)
    assert router.remote.addresses == [A1]
    assert router.counts["error:xl"] == 1 and router.counts["fallback:xl"] == 1


@pytest.mark.parametrize(
    "error",
    [grpc_error("INTERNAL"), grpc_error("INVALID_ARGUMENT"), RuntimeError("the fake client broke")],
    ids=["internal", "invalid-argument", "no-status"],
)
def test_router_counts_a_remote_error_without_retrying_or_resting_the_address_when_a_call_fails_otherwise(
    router: RemoteRouter, tiny_spec: Spec, error: BaseException
) -> None:
    router.remote.failures[A1] = error
    request = wishes_xl(tiny_spec)

    (response,) = router.execute(request)

    assert_served_by_standard(router, request, response)
    assert router.remote.addresses == [A1]
    assert router.counts[f"remote_error:{A1}"] == 1
    assert router.counts["retry:xl"] == 0 and router.counts[f"remote_unavailable:{A1}"] == 0
    assert router.counts["error:xl"] == 1 and router.counts["fallback:xl"] == 1
    assert router.book.resting() == []
    router.remote.failures.clear()
    again = router.execute(wishes_xl(tiny_spec, seed=1), wishes_xl(tiny_spec, seed=2))
    assert [outputs(r)["tier"][0, 0] for r in again] == [router.config.tiers.index("xl")] * 2
    assert router.remote.addresses == [A1, A2, A1]  # A1 was not left alone


def test_router_exports_every_count_as_the_events_counter_when_the_backend_has_metrics(
    tmp_path: Path, tiny_spec: Spec
) -> None:
    metrics = FakeMetrics()
    with remote_router(tmp_path, tiny_spec, metrics) as router:
        router.remote.failures[A1] = grpc_error("UNAVAILABLE")
        router.execute(wishes_xl(tiny_spec, seed=1), make_request(tiny_spec, history_items=0))
        router.remote.failures[A2] = grpc_error("UNAVAILABLE")
        router.now[0] += RETRY_AFTER_MS / 1000.0  # A1 may be tried again
        router.execute(wishes_xl(tiny_spec, seed=2), wishes_xl(tiny_spec, seed=3))
        counts = dict(router.counts)
        labels = dict(router.model.counts._labels)
        router.model.finalize()

    name = labels["router"]
    assert name == tiny_spec.router_model
    assert set(labels) == {"router", "version", "instance"}
    assert [(f["name"], f["kind"]) for f in metrics.families] == [
        ("toolkit_router_events_total", "COUNTER"),
        ("toolkit_router_tier_calls_total", "COUNTER"),
        ("toolkit_router_tier_seconds_total", "COUNTER"),
        ("toolkit_router_queue_wait_ms", "GAUGE"),  # the queue timeout reads the queue from the start
        ("toolkit_router_tier_ceiling", "GAUGE"),
    ]
    assert counts[f"remote_ok:{A2}"] == 1 and counts[f"remote_unavailable:{A1}"] == 2
    assert counts["remote_resting:big"] == 1 and counts["fallback:xl"] == 2
    events = {key: total for key, total in metrics.totals.items() if "event" in dict(key)}
    exported = {(dict(key)["event"], dict(key)["subject"]): total for key, total in events.items()}
    assert {dict(key)["router"] for key in metrics.totals} == {name}
    timed = {
        (dict(key)["family"], dict(key)["tier"], dict(key)["path"]): total
        for key, total in metrics.totals.items()
        if "path" in dict(key)
    }
    calls = {(t, path): n for (family, t, path), n in timed.items() if family.endswith("calls_total")}
    seconds = {(t, path): n for (family, t, path), n in timed.items() if family.endswith("seconds_total")}
    served = {(t, "bls"): counts[f"tier:{t}"] for t in ("lite", "standard")}
    assert calls == {("xl", "remote"): counts[f"remote_ok:{A2}"], **served}
    assert set(seconds) == set(calls) and all(0 < t < 60 for t in seconds.values())
    expected = {tuple(key.split(":", 1)) if ":" in key else (key, ""): n for key, n in counts.items()}
    assert exported == expected
    assert metrics.total(name, "remote_ok", A2) == 1
    assert metrics.total(name, "remote_unavailable", A1) == 2
    assert metrics.total(name, "tier", "standard") == 2


def test_router_counts_without_prometheus_when_the_backend_has_no_metric_family(
    router: RemoteRouter, tiny_spec: Spec
) -> None:
    assert not hasattr(router.backend.module, "MetricFamily")
    router.remote.failures[A1] = grpc_error("UNAVAILABLE")

    router.execute(wishes_xl(tiny_spec))
    router.model.finalize()

    assert router.counts[f"remote_ok:{A2}"] == 1 and router.counts["retry:xl"] == 1
    assert f"'remote_ok:{A2}': 1" in router.backend.logs[-1]


def test_initialize_raises_runtime_error_naming_tritonclient_when_remote_tiers_cannot_be_called(
    tmp_path: Path, tiny_spec: Spec
) -> None:
    write_router(tmp_path, tiny_spec, router_settings(tiny_spec, remote_tiers=REMOTE))
    folder = tmp_path / tiny_spec.router_model
    with loaded_router_module(folder, FakeBackend()) as (module, patch):
        patch.setitem(sys.modules, "tritonclient.grpc.aio", None)  # import fails
        model = module.TritonPythonModel()
        with pytest.raises(RuntimeError) as info:
            model.initialize(initialize_args(folder))

    message = str(info.value)
    assert "tritonclient" in message and "xl" in message


def test_initialize_does_not_import_tritonclient_when_every_tier_is_local(
    tmp_path: Path, tiny_spec: Spec
) -> None:
    write_router(tmp_path, tiny_spec, router_settings(tiny_spec))
    folder = tmp_path / tiny_spec.router_model
    with loaded_router_module(folder, FakeBackend()) as (module, patch):
        patch.setitem(sys.modules, "tritonclient.grpc.aio", None)
        model = module.TritonPythonModel()
        model.initialize(initialize_args(folder))

        assert model.remote == {} and model.books == {} and model._grpc is None


def test_initialize_gives_tiers_of_one_pool_one_address_book(tmp_path: Path, tiny_spec: Spec) -> None:
    both = {
        "standard": {"pool": "big", "addresses": [A1, A2], "timeout_ms": 100.0, "retry_after_ms": 500.0},
        "xl": dict(REMOTE["xl"]),
    }
    with remote_router(tmp_path, tiny_spec, remote_tiers=both) as router:
        assert set(router.model.remote) == {"standard", "xl"}
        assert list(router.model.books) == ["big"]
        assert router.book.addresses == (A1, A2)
        assert router.model.remote["standard"].timeout_ms == 100.0


# --- AddressBook ---


def make_book(addresses: tuple[str, ...] = ("a:1", "b:2", "c:3"), retry_after_s: float = 2.0):
    now = [0.0]
    return AddressBook(addresses, retry_after_s, clock=lambda: now[0]), now


def test_address_book_rotates_the_starting_address_with_each_call() -> None:
    book, _ = make_book()

    orders = [book.candidates() for _ in range(4)]

    assert orders == [
        ["a:1", "b:2", "c:3"],
        ["b:2", "c:3", "a:1"],
        ["c:3", "a:1", "b:2"],
        ["a:1", "b:2", "c:3"],
    ]


def test_address_book_skips_a_failed_address_until_retry_after_has_passed() -> None:
    book, now = make_book()
    book.failed("b:2")

    assert book.resting() == ["b:2"]
    assert book.candidates() == ["a:1", "c:3"]
    assert book.seconds_to_retry() == 0.0  # others are available
    now[0] = 1.999
    assert book.candidates() == ["c:3", "a:1"]
    now[0] = 2.0
    assert book.resting() == []
    assert book.candidates() == ["c:3", "a:1", "b:2"]


def test_address_book_is_empty_and_says_when_to_retry_when_every_address_rests() -> None:
    book, now = make_book(("a:1", "b:2"), retry_after_s=1.5)
    book.failed("a:1")
    now[0] = 0.5
    book.failed("b:2")

    assert book.candidates() == []
    assert book.seconds_to_retry() == pytest.approx(1.0)  # a:1 is back at 1.5
    now[0] = 1.5
    assert book.candidates() == ["a:1"]
    assert book.seconds_to_retry() == 0.0


def test_address_book_forgets_a_failure_when_a_call_succeeds() -> None:
    book, _ = make_book()
    book.failed("a:1")

    book.succeeded("a:1")
    book.succeeded("c:3")  # never failed: nothing to forget

    assert book.resting() == []
    assert book.candidates() == ["a:1", "b:2", "c:3"]


def test_address_book_uses_the_monotonic_clock_by_default() -> None:
    import time

    book = AddressBook(("a:1",), 1.0)

    assert book._clock is time.monotonic


# --- RemoteTier ---


def test_remote_tier_round_trips_through_its_dict_when_read_back() -> None:
    tier = RemoteTier("xl", "big", (A1, A2), 250.0, 750.0)

    data = tier.to_dict()

    assert data == {"pool": "big", "addresses": [A1, A2], "timeout_ms": 250.0, "retry_after_ms": 750.0}
    assert json.loads(json.dumps(data)) == data
    assert RemoteTier.from_dict("xl", data) == tier


def test_remote_tier_defaults_retry_after_to_one_second_when_it_is_missing() -> None:
    tier = RemoteTier.from_dict("xl", {"pool": "big", "addresses": [A1], "timeout_ms": 100})

    assert tier.retry_after_ms == 1000.0 and tier.addresses == (A1,)
    assert isinstance(tier.timeout_ms, float) and tier.timeout_ms == 100.0


def test_router_config_refuses_addresses_given_as_one_string_instead_of_splitting_it(tiny_spec: Spec) -> None:
    entry = {**REMOTE["xl"], "addresses": A1}

    with pytest.raises(ValueError, match="'addresses' must be a list"):
        router_settings(tiny_spec, remote_tiers={"xl": entry})


@pytest.mark.parametrize(
    ("data", "fragment"),
    [
        ({"addresses": [A1], "timeout_ms": 100}, "'pool'"),
        ({"pool": "big", "timeout_ms": 100}, "'addresses'"),
        ({"pool": "big", "addresses": [A1]}, "'timeout_ms'"),
        ({"pool": "big", "addresses": [], "timeout_ms": 100}, "at least one address"),
        ({"pool": "", "addresses": [A1], "timeout_ms": 100}, "needs a pool"),
        ({"pool": "big", "addresses": [A1, ""], "timeout_ms": 100}, "at least one address"),
        ({"pool": "big", "addresses": [A1, 7], "timeout_ms": 100}, "at least one address"),
        ({"pool": "big", "addresses": A1, "timeout_ms": 100}, "'addresses' must be a list"),
        ({"pool": "big", "addresses": [A1], "timeout_ms": 0}, "timeout_ms must be > 0"),
        ({"pool": "big", "addresses": [A1], "timeout_ms": -5}, "timeout_ms must be > 0"),
        ({"pool": "big", "addresses": [A1], "timeout_ms": float("nan")}, "timeout_ms must be > 0"),
        ({"pool": "big", "addresses": [A1], "timeout_ms": 100, "retry_after_ms": 0}, "retry_after_ms"),
        (
            {"pool": "big", "addresses": [A1], "timeout_ms": 100, "retry_after_ms": float("inf")},
            "retry_after",
        ),
        ({"pool": "big", "addresses": [A1], "timeout_ms": None}, "'timeout_ms' must be a number"),
        ({"pool": "big", "addresses": [A1], "timeout_ms": "soon"}, "'timeout_ms' must be a number"),
        ({"pool": "big", "addresses": [A1], "timeout_ms": 1, "retry_after_ms": [1]}, "'retry_after_ms' must"),
        ([A1], "expected a mapping"),
    ],
    ids=[
        "no-pool",
        "no-addresses",
        "no-timeout",
        "empty-addresses",
        "empty-pool",
        "empty-address",
        "non-string-address",
        "address-string-not-list",
        "zero-timeout",
        "negative-timeout",
        "nan-timeout",
        "zero-retry-after",
        "infinite-retry-after",
        "null-timeout",
        "text-timeout",
        "list-retry-after",
        "not-a-mapping",
    ],
)
def test_remote_tier_refuses_an_invalid_entry_naming_the_tier(data: Any, fragment: str) -> None:
    with pytest.raises(ValueError) as info:
        RemoteTier.from_dict("xl", data)

    message = str(info.value)
    assert "'xl'" in message and fragment in message, message


# --- grpc_status ---


def test_grpc_status_reads_the_status_of_a_tritonclient_error() -> None:
    assert grpc_status(grpc_error("UNAVAILABLE")) == "StatusCode.UNAVAILABLE"
    assert grpc_status(grpc_error("DEADLINE_EXCEEDED")) == DEADLINE_EXCEEDED
    assert "StatusCode.UNAVAILABLE" in RETRYABLE and DEADLINE_EXCEEDED not in RETRYABLE


@pytest.mark.parametrize(
    "error",
    [
        RuntimeError("plain"),
        InferenceServerException("no status"),
        types.SimpleNamespace(status=None),
        types.SimpleNamespace(status=lambda: ""),
    ],
    ids=["plain", "status-none", "attribute-none", "empty"],
)
def test_grpc_status_is_empty_when_the_error_has_no_status(error: Any) -> None:
    assert grpc_status(error) == ""


def test_grpc_status_reads_a_status_attribute_and_survives_a_failing_status_method() -> None:
    def broken() -> str:
        raise RuntimeError("no status today")

    assert grpc_status(types.SimpleNamespace(status="StatusCode.NOT_FOUND")) == "StatusCode.NOT_FOUND"
    assert grpc_status(types.SimpleNamespace(status=broken)) == ""


# --- RouterConfig.remote_tiers ---


def test_router_config_round_trips_remote_tiers_through_json(tiny_spec: Spec) -> None:
    config = router_settings(tiny_spec, remote_tiers=REMOTE)

    back = RouterConfig.from_json(config.to_json())

    assert back == config
    assert back.remote_tiers == REMOTE
    assert json.loads(config.to_json())["remote_tiers"]["xl"]["addresses"] == [A1, A2]


@pytest.mark.parametrize(
    ("tier", "fragment"),
    [("lite", "'lite'"), ("huge", "'huge'")],
    ids=["cheapest", "unknown"],
)
def test_router_config_refuses_a_remote_tier_that_is_the_cheapest_or_unknown(
    tiny_spec: Spec, tier: str, fragment: str
) -> None:
    with pytest.raises(ValueError) as info:
        router_settings(tiny_spec, remote_tiers={tier: dict(REMOTE["xl"])})

    assert fragment in str(info.value) and "other than the cheapest" in str(info.value)


def test_router_config_refuses_an_invalid_remote_entry(tiny_spec: Spec) -> None:
    with pytest.raises(ValueError, match="timeout_ms must be > 0"):
        router_settings(tiny_spec, remote_tiers={"xl": {**REMOTE["xl"], "timeout_ms": 0}})
