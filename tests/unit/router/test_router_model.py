"""Unit tests of the BLS router model source as deploy writes it, against a fake python backend.

``triton_python_backend_utils`` is replaced by a small fake in ``sys.modules``; nothing here starts
Triton, so these tests check the router's own logic, not serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import json
import sys
import time
import types
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from helpers import http_endpoint

from toolkit.repository.plan import router_settings
from toolkit.repository.writer import write_router
from toolkit.router import RouterConfig
from toolkit.spec import Spec

INPUTS = ("user_dense", "user_sparse", "user_history", "ad_dense", "ad_sparse")


class FakeTensor:
    def __init__(self, name: str, array: Any) -> None:
        self._name = name
        self._array = np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class FakeTritonError(Exception):
    UNKNOWN, INTERNAL, NOT_FOUND, INVALID_ARG, UNAVAILABLE, UNSUPPORTED, ALREADY_EXISTS = range(7)

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self._message = message
        self._code = code

    def message(self) -> str:
        return self._message

    def code(self) -> int:
        return self._code


class FakeInferenceResponse:
    def __init__(
        self, output_tensors: list[FakeTensor] | None = None, error: FakeTritonError | None = None
    ) -> None:
        self._outputs = list(output_tensors or [])
        self._error = error

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> FakeTritonError | None:
        return self._error

    def output_tensors(self) -> list[FakeTensor]:
        return self._outputs


@dataclass
class FakeRequest:
    """What Triton hands the router's ``execute``: input tensors and JSON request parameters."""

    tensors: dict[str, FakeTensor]
    params: dict[str, Any] = field(default_factory=dict)

    def parameters(self) -> str:
        return json.dumps(self.params)


@dataclass
class BlsCall:
    model_name: str
    requested_output_names: list[str]
    inputs: dict[str, np.ndarray]


def tier_score(inputs: dict[str, np.ndarray]) -> np.ndarray:
    """What every fake tier answers: a deterministic probability per candidate."""
    return (1.0 / (1.0 + np.exp(-inputs["ad_dense"].sum(axis=1)))).astype(np.float32)


class FakeBackend:
    """The fake ``triton_python_backend_utils`` module, recording BLS calls and log lines."""

    def __init__(self) -> None:
        self.calls: list[BlsCall] = []
        self.logs: list[str] = []
        self.failing: dict[str, str] = {}
        self.raising: set[str] = set()
        self.preprocessed: list[BlsCall] = []
        self.hanging: set[str] = set()
        backend = self

        class FakeInferenceRequest:
            def __init__(
                self, model_name: str, requested_output_names: list[str], inputs: list[FakeTensor], **_: Any
            ):
                self.call = BlsCall(
                    model_name, list(requested_output_names), {t.name(): t.as_numpy() for t in inputs}
                )

            async def async_exec(self) -> FakeInferenceResponse:
                if self.call.model_name in backend.hanging:
                    backend.calls.append(self.call)
                    await asyncio.sleep(3600)
                return self.exec()

            def exec(self) -> FakeInferenceResponse:
                if self.call.model_name.endswith("_preprocess"):
                    backend.preprocessed.append(self.call)
                    if "preprocess" in backend.failing:
                        return FakeInferenceResponse(error=FakeTritonError(backend.failing["preprocess"]))
                    return FakeInferenceResponse(
                        [FakeTensor(f"{k}_pre", v) for k, v in self.call.inputs.items()]
                    )
                backend.calls.append(self.call)
                if self.call.model_name in backend.raising:
                    raise RuntimeError(f"Failed to execute the inference request: {self.call.model_name}")
                if self.call.model_name in backend.failing:
                    return FakeInferenceResponse(
                        error=FakeTritonError(backend.failing[self.call.model_name], FakeTritonError.INTERNAL)
                    )
                return FakeInferenceResponse([FakeTensor("score", tier_score(self.call.inputs))])

        class Logger:
            @staticmethod
            def log_info(message: str) -> None:
                backend.logs.append(message)

            log_warn = log_error = log_verbose = log_info

        module = types.ModuleType("triton_python_backend_utils")
        module.Tensor = FakeTensor
        module.TritonError = FakeTritonError
        module.InferenceRequest = FakeInferenceRequest
        module.InferenceResponse = FakeInferenceResponse
        module.Logger = Logger
        module.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
        module.get_output_tensor_by_name = lambda response, name: next(
            (t for t in response.output_tensors() if t.name() == name), None
        )
        self.module = module


@dataclass
class Router:
    model: Any
    backend: FakeBackend
    folder: Path
    config: RouterConfig

    def execute(self, *requests: FakeRequest) -> list[FakeInferenceResponse]:
        responses = asyncio.run(self.model.execute(list(requests)))
        assert len(responses) == len(requests)
        return responses


@contextlib.contextmanager
def deployed_router(
    directory: Path, spec: Spec, preprocessed_tiers: tuple[str, ...] = ()
) -> Iterator[Router]:
    """Write the router as deploy does, import its model.py with the fake backend, then clean up."""
    write_router(directory, spec, router_settings(spec, preprocessed_tiers=preprocessed_tiers))
    folder = directory / spec.router_model
    backend = FakeBackend()
    module_name = "deployed_router_model_under_test"
    before = set(sys.modules)
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(sys.modules, "triton_python_backend_utils", backend.module)
        patch.setattr(sys, "path", list(sys.path))  # the model prepends its own folder
        try:
            found = importlib.util.spec_from_file_location(module_name, folder / "1" / "model.py")
            assert found is not None and found.loader is not None
            module = importlib.util.module_from_spec(found)
            found.loader.exec_module(module)
            model = module.TritonPythonModel()
            model.initialize(
                {
                    "model_repository": str(folder),
                    "model_version": "1",
                    "model_name": folder.name,
                    "model_config": json.dumps({"max_batch_size": 1}),
                }
            )
            yield Router(model, backend, folder, router_settings(spec))
        finally:
            for name in set(sys.modules) - before:
                if name == module_name or name.split(".")[0] == "toolkit_router":
                    del sys.modules[name]


@pytest.fixture
def router(tmp_path: Path, tiny_spec: Spec) -> Iterator[Router]:
    with deployed_router(tmp_path, tiny_spec) as deployed:
        yield deployed


def make_request(
    spec: Spec, history_items: int, n: int = 3, params: dict[str, Any] | None = None, seed: int = 0
) -> FakeRequest:
    """A raw request with ``history_items`` non-padding history ids, as the ensemble hands it over.

    Every tensor carries the leading batch dimension of 1 that the router's ``max_batch_size: 1``
    adds; the fake preprocess model returns its inputs unchanged.
    """
    f = spec.features
    rng = np.random.default_rng(seed)
    history = np.zeros((1, f.history.length), np.int64)
    if history_items:
        history[0, -history_items:] = rng.integers(1, f.history_vocab, size=history_items)
    arrays = {
        "user_dense": rng.normal(size=(1, f.user_dense)).astype(np.float32),
        "user_sparse": np.ones((1, len(f.user_sparse)), np.int64),
        "user_history": history,
        "ad_dense": rng.normal(size=(n, f.ad_dense)).astype(np.float32),
        "ad_sparse": np.ones((n, len(f.ad_sparse)), np.int64),
    }
    return FakeRequest({k: FakeTensor(k, v[None]) for k, v in arrays.items()}, dict(params or {}))


def outputs(response: FakeInferenceResponse) -> dict[str, np.ndarray]:
    assert not response.has_error(), response.error().message()
    return {t.name(): t.as_numpy() for t in response.output_tensors()}


def assert_error(response: FakeInferenceResponse, code: int, *fragments: str) -> str:
    assert response.has_error()
    assert response.error().code() == code
    message = response.error().message()
    for fragment in fragments:
        assert fragment in message, message
    return message


def assert_served_by(
    router: Router, request: FakeRequest, response: FakeInferenceResponse, tier: str
) -> None:
    out = {k: v[0] for k, v in outputs(response).items()}
    n = request.tensors["ad_dense"].as_numpy().shape[1]
    expected = tier_score({k: t.as_numpy()[0] for k, t in request.tensors.items()})
    assert set(out) == {"score", "tier"}
    np.testing.assert_array_equal(out["score"], expected)
    assert out["score"].dtype == np.float32
    assert out["tier"].dtype == np.int32
    assert out["tier"].shape == (n,)
    assert set(out["tier"].tolist()) == {router.config.tiers.index(tier)}
    assert router.backend.calls[-1].model_name == tier


def test_write_router_lays_out_a_self_contained_model_when_deploying(router: Router, tmp_path: Path) -> None:
    version = router.folder / "1"

    assert (router.folder / "config.pbtxt").is_file()
    assert (version / "model.py").is_file()
    assert (version / "toolkit_router" / "policy.py").is_file()
    stored = RouterConfig.from_json((version / "router.json").read_text(encoding="utf-8"))
    assert stored == router.config
    imported = Path(sys.modules["toolkit_router"].__file__).resolve()
    assert imported.is_relative_to(tmp_path.resolve())  # the copy beside model.py, not toolkit.router


def test_router_serves_the_rules_tier_when_the_history_is_long(router: Router, tiny_spec: Spec) -> None:
    rule = tiny_spec.routing.rules[0]
    request = make_request(tiny_spec, history_items=int(rule.value) + 1)

    (response,) = router.execute(request)

    assert_served_by(router, request, response, rule.tier)
    assert router.backend.calls[-1].requested_output_names == ["score"]


def test_router_serves_the_default_tier_when_the_history_is_short(router: Router, tiny_spec: Spec) -> None:
    request = make_request(tiny_spec, history_items=int(tiny_spec.routing.rules[0].value) - 1)

    (response,) = router.execute(request)

    assert_served_by(router, request, response, tiny_spec.default_tier)


def test_router_passes_the_request_tensors_unchanged_when_calling_a_tier(
    router: Router, tiny_spec: Spec
) -> None:
    request = make_request(tiny_spec, history_items=5, n=4, seed=3)

    router.execute(request)

    sent = router.backend.calls[-1].inputs
    assert list(sent) == list(INPUTS)
    for name in INPUTS:
        np.testing.assert_array_equal(sent[name], request.tensors[name].as_numpy()[0])
    assert router.backend.preprocessed == []


@pytest.mark.parametrize("history_items", [0, 6])
def test_router_serves_the_forced_tier_when_the_tier_parameter_names_it(
    router: Router, tiny_spec: Spec, history_items: int
) -> None:
    request = make_request(tiny_spec, history_items=history_items, params={"tier": "standard"})

    (response,) = router.execute(request)

    assert_served_by(router, request, response, "standard")


def test_router_refuses_only_the_bad_request_when_a_tier_name_is_unknown(
    router: Router, tiny_spec: Spec
) -> None:
    bad = make_request(tiny_spec, history_items=1, params={"tier": "gigantic"})
    good = make_request(tiny_spec, history_items=1, seed=1)

    first, second = router.execute(bad, good)

    assert_error(first, FakeTritonError.INVALID_ARG, "'tier'", "gigantic")
    assert_served_by(router, good, second, tiny_spec.default_tier)
    assert [c.model_name for c in router.backend.calls] == [tiny_spec.default_tier]


@pytest.mark.parametrize("budget", [0, -5, "abc", True])
def test_router_refuses_the_request_when_the_latency_budget_is_malformed(
    router: Router, tiny_spec: Spec, budget: Any
) -> None:
    (response,) = router.execute(make_request(tiny_spec, 1, params={"latency_budget_ms": budget}))

    assert_error(response, FakeTritonError.INVALID_ARG, "'latency_budget_ms'")
    assert router.backend.calls == []
    assert router.backend.preprocessed == []


def test_router_refuses_the_request_naming_ad_dense_when_it_has_no_candidates(
    router: Router, tiny_spec: Spec
) -> None:
    (response,) = router.execute(make_request(tiny_spec, history_items=2, n=0))

    assert_error(response, FakeTritonError.INVALID_ARG, "'ad_dense'")
    assert router.backend.calls == []


def test_router_refuses_the_request_naming_ad_dense_when_n_exceeds_max_candidates(
    router: Router, tiny_spec: Spec
) -> None:
    limit = tiny_spec.triton.max_candidates
    too_many = make_request(tiny_spec, history_items=2, n=limit + 1)
    at_limit = make_request(tiny_spec, history_items=2, n=limit)

    refused, served = router.execute(too_many, at_limit)

    assert_error(refused, FakeTritonError.INVALID_ARG, "'ad_dense'", str(limit))
    assert_served_by(router, at_limit, served, tiny_spec.default_tier)


def test_router_refuses_the_request_naming_the_tensor_when_an_input_is_missing(
    router: Router, tiny_spec: Spec
) -> None:
    request = make_request(tiny_spec, history_items=2)
    del request.tensors["user_history"]

    (response,) = router.execute(request)

    assert_error(response, FakeTritonError.INVALID_ARG, "'user_history'")


def test_router_falls_back_to_the_next_cheaper_tier_and_counts_it_when_a_tier_fails(
    router: Router, tiny_spec: Spec
) -> None:
    router.backend.failing["xl"] = "model 'xl' is not loaded"
    wishes_xl = make_request(tiny_spec, history_items=6)
    healthy = make_request(tiny_spec, history_items=0)

    (first,) = router.execute(wishes_xl)

    cheaper = tiny_spec.tier_names[tiny_spec.tier_names.index("xl") - 1]
    assert_served_by(router, wishes_xl, first, cheaper)
    assert [c.model_name for c in router.backend.calls] == ["xl", cheaper]
    (second,) = router.execute(healthy)
    assert_served_by(router, healthy, second, "lite")
    assert router.model.counts["fallback:xl"] == 1 and router.model.counts["error:xl"] == 1


def test_router_answers_unavailable_naming_every_tier_when_no_tier_can_answer(
    router: Router, tiny_spec: Spec
) -> None:
    for tier in tiny_spec.tier_names:
        router.backend.failing[tier] = f"model '{tier}' is not loaded"

    (response,) = router.execute(make_request(tiny_spec, history_items=6))

    message = assert_error(response, FakeTritonError.UNAVAILABLE, "no tier could answer")
    for tier in tiny_spec.tier_names:
        assert f"'{tier}'" in message
    assert router.model.counts["unavailable"] == 1


def test_router_falls_back_when_a_tier_call_raises(router: Router, tiny_spec: Spec) -> None:
    router.backend.raising.add("xl")

    (response,) = router.execute(make_request(tiny_spec, history_items=6))

    assert outputs(response)["tier"][0, 0] < tiny_spec.tier_names.index("xl")


def test_router_refuses_what_validation_refuses_and_counts_folded_ids(
    router: Router, tiny_spec: Spec
) -> None:
    nan = make_request(tiny_spec, history_items=2)
    nan.tensors["ad_dense"].as_numpy()[0, 0, 0] = np.nan
    folded = make_request(tiny_spec, history_items=2, seed=4)
    folded.tensors["ad_sparse"].as_numpy()[0, 0, 0] = 10**9

    refused, served = router.execute(nan, folded)

    assert_error(refused, FakeTritonError.INVALID_ARG, "'ad_dense'", "NaN")
    assert_served_by(router, folded, served, tiny_spec.default_tier)
    assert router.model.counts["folded_ids"] == 1


def test_router_refuses_an_unknown_request_parameter_naming_it(router: Router, tiny_spec: Spec) -> None:
    (response,) = router.execute(make_request(tiny_spec, 1, params={"colour": "red"}))

    assert_error(response, FakeTritonError.INVALID_ARG, "'colour'")
    assert router.backend.calls == []


def test_router_logs_its_decision_counts_when_finalized(router: Router, tiny_spec: Spec) -> None:
    router.execute(make_request(tiny_spec, 6), make_request(tiny_spec, 0), make_request(tiny_spec, 0))

    router.model.finalize()

    assert "'tier:lite': 2" in router.backend.logs[-1]
    assert "'tier:xl': 1" in router.backend.logs[-1]


def test_deployed_router_restores_sys_modules_and_path_when_the_test_ends(
    tmp_path: Path, tiny_spec: Spec
) -> None:
    path_before = list(sys.path)

    with deployed_router(tmp_path, tiny_spec) as deployed:
        assert "toolkit_router" in sys.modules
        assert str((deployed.folder / "1").resolve()) in sys.path

    assert "toolkit_router" not in sys.modules
    assert "triton_python_backend_utils" not in sys.modules
    assert sys.path == path_before


def test_router_preprocesses_only_for_tiers_without_the_step_fused_and_steps_down_when_it_fails(
    tmp_path: Path, tiny_spec: Spec
) -> None:
    with deployed_router(tmp_path, tiny_spec, preprocessed_tiers=("xl",)) as router:
        bad = make_request(tiny_spec, history_items=2, n=0, params={"tier": "xl"})
        (refused,) = router.execute(bad)
        assert_error(refused, FakeTritonError.INVALID_ARG, "'ad_dense'")
        assert router.backend.preprocessed == [] and router.backend.calls == []

        (served,) = router.execute(make_request(tiny_spec, history_items=2, params={"tier": "xl"}))
        assert outputs(served)["tier"].tolist() == [[2, 2, 2]]
        assert len(router.backend.preprocessed) == 1
        assert list(router.backend.calls[-1].inputs) == list(INPUTS)

        router.backend.failing["preprocess"] = "model is not loaded"
        request = make_request(tiny_spec, history_items=2, params={"tier": "xl"})
        (response,) = router.execute(request)

        assert_served_by(router, request, response, "standard")
        assert router.model.counts["error:preprocess"] == 1 and router.model.counts["fallback:xl"] == 1


def test_router_skips_a_tier_whose_recent_calls_exceed_the_tier_timeout_until_they_age_out(
    router: Router, tiny_spec: Spec
) -> None:
    now = [100.0]
    router.model.latency.clock = lambda: now[0]
    request = make_request(tiny_spec, history_items=6, n=3)
    limit = router.config.tier_timeout_ms
    for _ in range(8):
        router.model.latency.observe("xl", 3, 2 * limit)

    (slow,) = router.execute(request)

    assert outputs(slow)["tier"][0, 0] < tiny_spec.tier_names.index("xl")
    assert "xl" not in [c.model_name for c in router.backend.calls]
    assert router.model.counts["slow:xl"] == 1 and router.model.counts["fallback:xl"] == 1
    now[0] += router.config.budget_max_age_s + 1
    (again,) = router.execute(request)
    assert_served_by(router, request, again, "xl")


def test_router_gives_up_on_a_tier_that_misses_the_deadline_and_falls_back(
    router: Router, tiny_spec: Spec
) -> None:
    router.model.config = dataclasses.replace(router.model.config, tier_timeout_ms=50.0)
    router.backend.hanging.add("xl")
    request = make_request(tiny_spec, history_items=6)

    (response,) = router.execute(request)

    cheaper = tiny_spec.tier_names[tiny_spec.tier_names.index("xl") - 1]
    assert_served_by(router, request, response, cheaper)
    assert [c.model_name for c in router.backend.calls] == ["xl", cheaper]
    assert router.model.counts["timeout:xl"] == 1 and router.model.counts["fallback:xl"] == 1


class _RisingQueue:
    """Triton's stats endpoint for a router whose requests wait 40 ms each, 10 started per read."""

    def __init__(self) -> None:
        self.reads, self.paths = 0, []

    def __call__(self, path: str) -> tuple[int, bytes]:
        self.reads += 1
        self.paths.append(path)
        started = 10 * self.reads
        queue = {"count": started, "ns": int(started * 40.0 * 1e6)}
        return 200, json.dumps(
            {"model_stats": [{"version": "1", "inference_stats": {"queue": queue}}]}
        ).encode()


def test_router_with_an_slo_reads_its_queue_and_steps_down_while_requests_wait(
    tmp_path: Path, tiny_spec: Spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    stats = _RisingQueue()
    spec = dataclasses.replace(tiny_spec, routing=dataclasses.replace(tiny_spec.routing, slo_ms=50.0))
    rule = spec.routing.rules[0]
    with http_endpoint(stats) as url:
        monkeypatch.setenv("TOOLKIT_TRITON_HTTP_URL", url)
        with deployed_router(tmp_path, spec) as router:
            try:
                deadline = time.monotonic() + 10.0
                while router.model.queue.level > 0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert router.model.queue.level == 0.0 and router.model.queue.wait_ms == pytest.approx(40.0)
                request = make_request(spec, history_items=int(rule.value) + 1)  # the rule's tier

                (response,) = router.execute(request)

                assert_served_by(router, request, response, spec.tier_names[0])
                assert router.model.counts["reason:load"] == 1
                forced = make_request(spec, history_items=0, params={"tier": rule.tier})
                (response,) = router.execute(forced)
                assert_served_by(router, forced, response, rule.tier)  # a forced tier stays
                assert set(stats.paths) == {f"/v2/models/{spec.router_model}/stats"}
            finally:
                router.model.finalize()


def test_router_without_slo_budget_or_queue_timeout_reads_no_statistics(
    tmp_path: Path, tiny_spec: Spec
) -> None:
    spec = dataclasses.replace(tiny_spec, triton=dataclasses.replace(tiny_spec.triton, queue_timeout_ms=0.0))
    with deployed_router(tmp_path, spec) as router:
        router.execute(make_request(spec, history_items=0))

        assert router.model._watcher is None
        router.execute(make_request(spec, history_items=0, params={"latency_budget_ms": 50.0}))
        assert router.model._watcher is not None  # the first budget starts the reads
        router.model.finalize()


def test_router_sheds_requests_while_they_wait_past_the_queue_timeout_and_serves_once_idle(
    tmp_path: Path, tiny_spec: Spec, monkeypatch: pytest.MonkeyPatch
) -> None:
    stats = _RisingQueue()  # every request waited 40 ms
    spec = dataclasses.replace(tiny_spec, triton=dataclasses.replace(tiny_spec.triton, queue_timeout_ms=30.0))
    with http_endpoint(stats) as url:
        monkeypatch.setenv("TOOLKIT_TRITON_HTTP_URL", url)
        with deployed_router(tmp_path, spec) as router:
            try:
                deadline = time.monotonic() + 10.0
                while router.model.queue.wait_ms < 40.0 and time.monotonic() < deadline:
                    time.sleep(0.01)
                router.model._watching.set()
                router.model._watcher.join(timeout=5.0)
                module = type(router.model).execute.__globals__  # model.py, imported by the fixture
                monkeypatch.setitem(module, "_IDLE_S", 3600.0)  # the instance went straight on
                request = make_request(spec, history_items=0)

                (response,) = router.execute(request)

                assert_error(response, FakeTritonError.UNAVAILABLE, "Request shed", "40 ms", "30 ms")
                assert router.model.counts["shed"] == 1 and not router.backend.calls
                own = make_request(spec, history_items=0)
                own.timeout = lambda: 20_000  # the request's own timeout, microseconds: 20 ms
                (response,) = router.execute(own)
                assert_error(response, FakeTritonError.UNAVAILABLE, "Request shed", "20 ms")
                monkeypatch.setitem(module, "_IDLE_S", 0.0)  # the instance waited: no queue
                (response,) = router.execute(request)
                assert_served_by(router, request, response, spec.default_tier)
                assert router.model.queue.wait_ms == 0.0 and router.model.counts["shed"] == 2
            finally:
                router.model.finalize()
