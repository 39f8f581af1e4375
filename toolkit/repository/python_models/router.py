"""The BLS router of a tiered ranking ensemble (Triton python backend).

Reads ``router.json`` beside this file. Per request: validates the raw request, runs the preprocess
model through BLS, picks a tier with the routing policy that ``toolkit deploy`` copied beside it
(package ``toolkit_router``), calls that tier through BLS (stepping down to cheaper tiers when it
fails) and returns its scores plus, per candidate, the index of the tier that scored it. Tiers that
another pool serves (``remote_tiers`` in ``router.json``) are called over gRPC with
``tritonclient.grpc.aio`` instead: the pool's addresses in turn, an address that failed left alone for
a while, and the same step-down when the pool does not answer in time. Every decision and failure is
counted, in the log and as the Prometheus counter ``toolkit_router_events_total``. With
``max_batch_size: 1`` (the config gives the router a queue policy that way), every tensor arrives
with a leading dimension of 1, which is dropped on the way in and added on the way out.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toolkit_router import (  # noqa: E402
    DEADLINE_EXCEEDED,
    RETRYABLE,
    AddressBook,
    InputSchema,
    LatencyTracker,
    RemoteTier,
    RequestContext,
    RouterConfig,
    RoutingError,
    cap,
    cascade_scores,
    decide,
    grpc_status,
    parse_parameters,
    request_features,
    top_candidates,
    validate_request,
)

INPUTS = ("user_dense", "user_sparse", "user_history", "ad_dense", "ad_sparse")
CHEAPEST_SCORE = "cheapest_score"
CANDIDATE_INPUTS = ("ad_dense", "ad_sparse")
_LOG_EVERY = 1000
_EVENTS_METRIC = "toolkit_router_events_total"
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 500),
    ("grpc.lb_policy_name", "round_robin"),
]
"""Channels to other pools: a server that comes back is reached within ~0.5 s (gRPC's default
reconnect backoff grows to minutes), and a DNS name that resolves to several pods is balanced."""


_RETIRED: list[tuple[object, dict[str, object]]] = []


class _Events:
    """Counts of router events, in the log and as a Prometheus counter when the backend has metrics.

    Each series carries the model version and instance, so no two routers share one. The counters
    are never deleted (see :meth:`close`).
    """

    def __init__(self, router: str, version: str, instance: str) -> None:
        self.counts: Counter[str] = Counter()
        self._labels = {"router": router, "version": version, "instance": instance}
        self._metrics: dict[str, object] = {}
        family = getattr(pb_utils, "MetricFamily", None)
        self._family = (
            family(
                name=_EVENTS_METRIC,
                description="Router events by kind (tier served, reason, fallback, error, timeout, remote "
                "call outcome per address) and subject (tier, pool or address)",
                kind=family.COUNTER,
            )
            if family is not None
            else None
        )

    def __getitem__(self, key: str) -> int:
        return self.counts[key]

    def __setitem__(self, key: str, value: int) -> None:
        added = value - self.counts[key]
        self.counts[key] = value
        if self._family is not None and added > 0:
            metric = self._metrics.get(key)
            if metric is None:
                event, _, subject = key.partition(":")
                metric = self._family.Metric(labels={**self._labels, "event": event, "subject": subject})
                self._metrics[key] = metric
            metric.increment(added)

    def items(self) -> object:
        return self.counts.items()

    def close(self) -> None:
        """Keep the counters alive until the process ends instead of deleting them at unload.

        Deleting them (Metric objects, then the MetricFamily) while a new version of the router was
        already serving, as Triton does when it polls a changed repository, aborted the embedded 2.51
        server ("malloc(): unaligned fastbin chunk detected"); kept, the old version's series stay at
        their last values.
        """
        _RETIRED.append((self._family, self._metrics))


class _TierError(Exception):
    """A tier's BLS call failed."""

    def __init__(self, tier: str, message: str) -> None:
        super().__init__(message)
        self.tier = tier


class _NoTierError(Exception):
    """No tier could answer: the wished one and every cheaper one failed."""


class TritonPythonModel:
    """Triton's entry point for the router model."""

    def initialize(self, args: dict) -> None:
        """Load ``router.json``."""
        here = Path(args["model_repository"]) / args["model_version"]
        self.config = RouterConfig.from_json((here / "router.json").read_text(encoding="utf-8"))
        self.latency = LatencyTracker(
            self.config.tiers,
            self.config.latency_prior_ms,
            window=self.config.budget_window,
            percentile=self.config.budget_percentile,
            max_age_s=self.config.budget_max_age_s,
        )
        self.schema = InputSchema.from_dict(self.config.inputs)
        self.counts = _Events(
            args.get("model_name", "router"),
            str(args.get("model_version", "")),
            args.get("model_instance_name", ""),
        )
        self.served = 0
        self.batched = json.loads(args.get("model_config") or "{}").get("max_batch_size", 0) > 0
        self.remote = {t: RemoteTier.from_dict(t, d) for t, d in self.config.remote_tiers.items()}
        self.books: dict[str, AddressBook] = {}
        for remote in self.remote.values():
            self.books.setdefault(remote.pool, AddressBook(remote.addresses, remote.retry_after_ms / 1000.0))
        self._clients: dict[str, object] = {}
        self._grpc = None
        if self.remote:
            try:
                import tritonclient.grpc.aio as grpc_aio
            except ImportError as exc:
                raise RuntimeError(
                    f"tiers {', '.join(self.remote)} run in other pools, which the router calls with "
                    f"tritonclient[grpc], but this Python cannot import it ({exc}); install it in the "
                    "python backend's environment (toolkit k8s writes a Dockerfile for the entry pool)"
                ) from None
            from tritonclient.utils import np_to_triton_dtype

            self._grpc = grpc_aio
            self._np_to_triton = np_to_triton_dtype

    async def execute(self, requests: list) -> list:
        """Route and score each request; a refused request gets INVALID_ARGUMENT, others are unaffected.

        Asynchronous so that a tier call can be given up after ``tier_timeout_ms`` (``async_exec``
        under ``asyncio.wait_for``); the instance still handles one request at a time.
        """
        responses = []
        for request in requests:
            try:
                responses.append(await self._route(request))
            except Exception as exc:
                self.counts["internal_error"] += 1
                message = f"router failed on this request: {type(exc).__name__}: {exc}"
                responses.append(
                    pb_utils.InferenceResponse(
                        error=pb_utils.TritonError(message, pb_utils.TritonError.INTERNAL)
                    )
                )
        return responses

    async def _route(self, request: object) -> object:
        try:
            tensors, context = self._parse(request)
            cheapest = None
            if self.config.policy == "learned" and context.forced_tier is None:
                if self.config.cheapest_first:
                    cheapest = await self._cheapest(tensors)
                context = dataclasses.replace(context, gains=self._gains(tensors, cheapest))
            budget = context.latency_budget_ms or (self.config.default_budget_ms or None)
            n = int(context.features["num_candidates"])
            decision = cap(self.config, decide(self.config, context), budget, n, self.latency)
        except RoutingError as exc:
            return self._refuse("rejected", exc, pb_utils.TritonError.INVALID_ARG)
        except _NoTierError as exc:
            return self._refuse("unavailable", exc, pb_utils.TritonError.UNAVAILABLE)
        try:
            score, served = await self._score_or_fall_back(
                decision.index, [tensors[name] for name in INPUTS], cheapest
            )
        except _NoTierError as exc:
            return self._refuse("unavailable", exc, pb_utils.TritonError.UNAVAILABLE)
        tiers = np.full(score.shape, served, dtype=np.int32)
        if decision.rescore_tier is not None and served == decision.index:
            try:
                top = top_candidates(score, decision.top_k)
                better = await self._rescore(decision.rescore_tier, tensors, top) if len(top) else None
                score, tiers = cascade_scores(score, decision, lambda _: better)
            except _TierError as exc:
                self.counts[f"error:{exc.tier}"] += 1
                self.counts[f"fallback:{exc.tier}"] += 1
            else:
                rescored = int((tiers == decision.rescore_index).sum())
                self.counts[f"rescored:{decision.rescore_tier}"] += rescored
        self._count(self.config.tiers[served], decision.reason)
        if self.batched:
            score, tiers = score[None, :], tiers[None, :]
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor("score", score), pb_utils.Tensor("tier", tiers)]
        )

    def _refuse(self, counter: str, exc: Exception, code: int) -> object:
        self.counts[counter] += 1
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code))

    async def _score_or_fall_back(
        self, index: int, inputs: list, cheapest: np.ndarray | None = None
    ) -> tuple[np.ndarray, int]:
        """Scores of tier ``index``, else of the next cheaper tier that answers, and who answered.

        A tier that returns an error or is not loaded counts as ``error:<tier>``; one whose recent
        calls took longer than ``tier_timeout_ms`` is not called (``slow:<tier>``); each step down
        counts as ``fallback:<tier>``. The cheapest tier's scores, when already known
        (``cheapest``, in cheapest-first mode), are not asked for again. When even the cheapest
        fails, :class:`_NoTierError`.
        """
        failures = []
        n = int(inputs[INPUTS.index("ad_dense")].as_numpy().shape[0])
        limit = self.config.tier_timeout_ms
        for candidate in range(index, -1, -1):
            tier = self.config.tiers[candidate]
            recent = self.latency.recent(tier, n) if limit > 0 and candidate > 0 else None
            if recent is not None and recent > limit:
                self.counts[f"slow:{tier}"] += 1
                self.counts[f"fallback:{tier}"] += 1
                failures.append(
                    f"tier {tier!r} is too slow: its recent calls take {recent:.0f} ms > {limit:g} ms"
                )
                continue
            if candidate == 0 and cheapest is not None:
                return cheapest, 0
            try:
                return await self._score(tier, inputs), candidate
            except _TierError as exc:
                self.counts[f"error:{tier}"] += 1
                if candidate > 0:
                    self.counts[f"fallback:{tier}"] += 1
                failures.append(str(exc))
        raise _NoTierError("no tier could answer this request: " + "; ".join(failures))

    async def _cheapest(self, tensors: dict) -> np.ndarray | None:
        """The cheapest tier's scores, which a cheapest-first gate takes; None if it fails (counted)."""
        tier = self.config.tiers[0]
        try:
            return await self._score(tier, [tensors[name] for name in INPUTS])
        except _TierError:
            self.counts[f"error:{tier}"] += 1
            return None

    def _gains(self, tensors: dict, cheapest: np.ndarray | None) -> tuple[float, ...] | None:
        """The gate's predicted gains for this request; None (default tier) if the gate fails."""
        inputs = [tensors[name] for name in INPUTS]
        if self.config.cheapest_first:
            if cheapest is None:
                self.counts["error:gate"] += 1
                return None
            inputs.append(pb_utils.Tensor(CHEAPEST_SCORE, cheapest))
        try:
            response = pb_utils.InferenceRequest(
                model_name=self.config.gate_model, requested_output_names=["gains"], inputs=inputs
            ).exec()
            failed = response.has_error()
        except Exception:
            failed = True
        if failed:
            self.counts["error:gate"] += 1
            return None
        gains = pb_utils.get_output_tensor_by_name(response, "gains").as_numpy()
        return tuple(float(g) for g in gains[0])

    async def _score(self, tier: str, inputs: list) -> np.ndarray:
        """``tier``'s scores; :class:`_TierError` when it fails, is not loaded or misses the deadline."""
        if tier in self.remote:
            return await self._score_remote(self.remote[tier], inputs)
        started = time.perf_counter()
        n = int(inputs[INPUTS.index("ad_dense")].as_numpy().shape[0])
        limit = self.config.tier_timeout_ms
        call = pb_utils.InferenceRequest(model_name=tier, requested_output_names=["score"], inputs=inputs)
        try:
            response = await asyncio.wait_for(
                call.async_exec(), timeout=limit / 1000.0 if limit > 0 else None
            )
        except TimeoutError:
            self.latency.observe(tier, n, (time.perf_counter() - started) * 1000.0)
            self.counts[f"timeout:{tier}"] += 1
            raise _TierError(tier, f"tier {tier!r} did not answer within {limit:g} ms") from None
        except Exception as exc:
            raise _TierError(tier, f"tier {tier!r} failed: {exc}") from None
        self.latency.observe(tier, n, (time.perf_counter() - started) * 1000.0)
        if response.has_error():
            raise _TierError(tier, f"tier {tier!r} failed: {response.error().message()}")
        return pb_utils.get_output_tensor_by_name(response, "score").as_numpy().astype(np.float32, copy=False)

    async def _score_remote(self, remote: RemoteTier, inputs: list) -> np.ndarray:
        """Scores of a tier of another pool, over gRPC; :class:`_TierError` when no address answers.

        The pool's addresses are tried in turn (one further along each call) within one deadline,
        ``remote.timeout_ms``, for all tries: an address that refuses (UNAVAILABLE, NOT_FOUND,
        CANCELLED) is left alone for ``retry_after_ms`` and the next is tried; one that times out is
        left alone too and the call gives up; any other error gives up at once. Counts per address
        ``remote_ok``, ``remote_unavailable``, ``remote_timeout`` or ``remote_error``, per tier
        ``retry`` and ``timeout``, and per pool ``remote_resting`` when every address is resting.
        """
        tier, book = remote.tier, self.books[remote.pool]
        n = int(inputs[INPUTS.index("ad_dense")].as_numpy().shape[0])
        started = time.perf_counter()
        deadline_s = remote.timeout_ms / 1000.0
        addresses = book.candidates()
        if not addresses:
            self.counts[f"remote_resting:{remote.pool}"] += 1
            raise _TierError(
                tier,
                f"tier {tier!r}: every server of pool {remote.pool!r} failed within the last "
                f"{remote.retry_after_ms:g} ms ({', '.join(book.addresses)}); next try in "
                f"{book.seconds_to_retry() * 1000:.0f} ms",
            )
        failures = []
        for i, address in enumerate(addresses):
            remaining = deadline_s - (time.perf_counter() - started)
            if remaining <= 0:
                break
            if i:
                self.counts[f"retry:{tier}"] += 1
            try:
                scores = await self._call_remote(address, tier, inputs, remaining)
            except Exception as exc:
                status = grpc_status(exc)
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                failures.append(f"{address}: {message}")
                if status == DEADLINE_EXCEEDED:
                    book.failed(address)
                    self.counts[f"remote_timeout:{address}"] += 1
                    self.counts[f"timeout:{tier}"] += 1
                    self.latency.observe(tier, n, (time.perf_counter() - started) * 1000.0)
                    break
                if status in RETRYABLE:
                    book.failed(address)
                    self.counts[f"remote_unavailable:{address}"] += 1
                    continue
                self.counts[f"remote_error:{address}"] += 1
                break
            book.succeeded(address)
            self.counts[f"remote_ok:{address}"] += 1
            self.latency.observe(tier, n, (time.perf_counter() - started) * 1000.0)
            return scores
        raise _TierError(tier, f"tier {tier!r} of pool {remote.pool!r} failed: " + "; ".join(failures))

    async def _call_remote(self, address: str, tier: str, inputs: list, timeout_s: float) -> np.ndarray:
        """One gRPC call of ``tier`` at ``address``; the client is made here, in the serving event loop."""
        client = self._clients.get(address)
        if client is None:
            client = self._grpc.InferenceServerClient(address, channel_args=_CHANNEL_ARGS)
            self._clients[address] = client
        request = []
        for tensor in inputs:
            array = tensor.as_numpy()
            item = self._grpc.InferInput(tensor.name(), list(array.shape), self._np_to_triton(array.dtype))
            item.set_data_from_numpy(array)
            request.append(item)
        result = await client.infer(
            model_name=tier,
            inputs=request,
            outputs=[self._grpc.InferRequestedOutput("score")],
            client_timeout=timeout_s,
        )
        return result.as_numpy("score").astype(np.float32, copy=False)

    async def _rescore(self, tier: str, tensors: dict, top: np.ndarray) -> np.ndarray:
        """Scores of ``tier`` for the candidates at ``top`` (the user tensors are passed as they are)."""
        inputs = [
            pb_utils.Tensor(name, np.ascontiguousarray(tensors[name].as_numpy()[top]))
            if name in CANDIDATE_INPUTS
            else tensors[name]
            for name in INPUTS
        ]
        return await self._score(tier, inputs)

    def _preprocess(self, raw: dict) -> dict:
        """The tiers' inputs: the raw request run through the preprocess model (BLS)."""
        outputs = self.config.preprocess_outputs
        try:
            response = pb_utils.InferenceRequest(
                model_name=self.config.preprocess_model,
                requested_output_names=[outputs[name] for name in INPUTS],
                inputs=[pb_utils.Tensor(name, raw[name]) for name in INPUTS],
            ).exec()
            failure = response.error().message() if response.has_error() else None
        except Exception as exc:
            failure = str(exc)
        if failure is not None:
            self.counts["error:preprocess"] += 1
            raise _NoTierError(f"the preprocess model {self.config.preprocess_model!r} failed: {failure}")
        return {
            name: pb_utils.Tensor(
                name, pb_utils.get_output_tensor_by_name(response, outputs[name]).as_numpy()
            )
            for name in INPUTS
        }

    def _parse(self, request: object) -> tuple[dict, RequestContext]:
        """Validate the raw request and its parameters, then preprocess it (nothing runs before)."""
        raw = {}
        for name in INPUTS:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            array = None if tensor is None else tensor.as_numpy()
            if array is not None and self.batched:
                if array.ndim < 1 or array.shape[0] != 1:
                    raise RoutingError(
                        f"input tensor {name!r}: expected a batch of 1, got {list(array.shape)}"
                    )
                array = array[0]
            raw[name] = array
        found = validate_request(raw, self.schema)
        if found.folded_ids:
            self.counts["folded_ids"] += found.folded_ids
        if found.truncated_history:
            self.counts["truncated_history"] += 1
        try:
            parameters = json.loads(request.parameters() or "{}")
        except ValueError as exc:
            raise RoutingError(f"request parameters are not readable: {exc}") from None
        parsed = parse_parameters(parameters, self.config)
        tensors = self._preprocess(raw)
        features = request_features(tensors["user_history"].as_numpy(), int(raw["ad_dense"].shape[0]))
        return tensors, RequestContext(
            features=features,
            forced_tier=parsed.tier,
            latency_budget_ms=parsed.latency_budget_ms,
            value=parsed.value,
        )

    def _count(self, tier: str, reason: str) -> None:
        self.counts[f"tier:{tier}"] += 1
        self.counts[f"reason:{reason.split(':')[0]}"] += 1
        self.served += 1
        if self.served % _LOG_EVERY == 0:
            pb_utils.Logger.log_info(f"router decisions so far: {dict(sorted(self.counts.items()))}")

    def finalize(self) -> None:
        """Log the decision counts once more at unload."""
        pb_utils.Logger.log_info(f"router decisions: {dict(sorted(self.counts.items()))}")
        self.counts.close()
