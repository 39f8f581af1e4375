"""The router of a tiered ranking ensemble (Triton python backend).

Reads ``router.json`` beside this file and runs the routing engine that ``toolkit deploy`` copied
beside it (package ``toolkit_router``): per request it validates the raw request, picks a tier,
scores with it (stepping down to cheaper tiers when it fails) and returns the scores plus, per
candidate, the index of the tier that scored it. This file is the engine's tier backend. A local CPU
tier (and the gate) has the preprocess step fused in front and, with ``local_tiers: inprocess``, runs
in this process on the file Triton serves; otherwise it is called through BLS. Tiers that another
pool serves (``remote_tiers``) are called over gRPC with ``tritonclient.grpc.aio``: the pool's
addresses in turn, an address that failed left alone for a while, and the same step-down when the
pool does not answer in time. Every decision, failure and tier call is counted, in the log and as
Prometheus counters. With ``max_batch_size: 1`` (the config gives the router a queue policy that
way), every tensor arrives with a leading dimension of 1, which is dropped on the way in and added
on the way out.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils

sys.path.insert(0, str(Path(__file__).resolve().parent))

from toolkit_router import (  # noqa: E402
    DEADLINE_EXCEEDED,
    POLL_S,
    REQUEST_INPUTS,
    RETRYABLE,
    AddressBook,
    LatencyTracker,
    LocalModel,
    NoTierError,
    NotServedError,
    QueueWait,
    RemoteTier,
    RouterConfig,
    RoutingEngine,
    RoutingError,
    TierError,
    complete,
    grpc_status,
    newest_version,
    stats_reader,
)

CHEAPEST_SCORE = "cheapest_score"
_ONNX_FILE = "model.onnx"
_SCORE_OUTPUTS = ["score"]
_LOG_EVERY = 1000
_EVENTS_METRIC = "toolkit_router_events_total"
_CALLS_METRIC = "toolkit_router_tier_calls_total"
_SECONDS_METRIC = "toolkit_router_tier_seconds_total"
_WAIT_METRIC = "toolkit_router_queue_wait_ms"
_CEILING_METRIC = "toolkit_router_tier_ceiling"
_STATS_URL_ENV = "TOOLKIT_TRITON_HTTP_URL"
_STATS_WARN_AFTER = 200
"""Failed reads of the queue statistics (at POLL_S apart) before the router says so in the log."""
FLUSH_S = 0.2
"""How often counted events reach the Prometheus counters."""
_IDLE_S = 0.002
"""An instance that waited this long for its next request saw the queue empty: that request found no
queue, whatever the last statistics read says (it lags the queue by up to a read)."""
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


def _tensors(arrays: dict) -> list:
    return [pb_utils.Tensor(name, array) for name, array in arrays.items()]


class _Events:
    """Counts of router events and tier-call time, in the log and as Prometheus counters.

    Counting is a dictionary update on the request path; a background thread hands what was counted
    to the backend's metrics every :data:`FLUSH_S` seconds (each increment is a round trip to the
    server, ~0.06 ms, too dear to pay per request), and :meth:`close` hands over the rest, so a
    series lags the router by at most that long. Each series carries the model version and instance,
    so no two routers share one; the counters are never deleted (see :meth:`close`).
    """

    def __init__(self, router: str, version: str, instance: str) -> None:
        self.counts: Counter[str] = Counter()
        self._labels = {"router": router, "version": version, "instance": instance}
        self._metrics: dict[tuple[str, str], object] = {}
        self._pending: Counter[tuple[str, str]] = Counter()
        self._lock = threading.Lock()
        self._flushing = threading.Lock()
        family = getattr(pb_utils, "MetricFamily", None)
        self._families = {}
        if family is not None:
            self._families = {
                _EVENTS_METRIC: family(
                    name=_EVENTS_METRIC,
                    description="Router events by kind (tier served, reason, fallback, error, timeout, "
                    "remote call outcome per address) and subject (tier, pool or address)",
                    kind=family.COUNTER,
                ),
                _CALLS_METRIC: family(
                    name=_CALLS_METRIC,
                    description="Tier calls the router made, by tier and path (inprocess, bls, remote)",
                    kind=family.COUNTER,
                ),
                _SECONDS_METRIC: family(
                    name=_SECONDS_METRIC,
                    description="Seconds the router's tier calls took, by tier and path",
                    kind=family.COUNTER,
                ),
            }
        self._stop = threading.Event()
        self._flusher = None
        if self._families:
            self._flusher = threading.Thread(target=self._flush_every, name="router-metrics", daemon=True)
            self._flusher.start()

    def __getitem__(self, key: str) -> int:
        return self.counts[key]

    def __setitem__(self, key: str, value: int) -> None:
        added = value - self.counts[key]
        self.counts[key] = value
        if self._families and added > 0:
            with self._lock:
                self._pending[(_EVENTS_METRIC, key)] += added

    def timed(self, tier: str, path: str, seconds: float) -> None:
        """Count one call of ``tier`` by ``path`` that took ``seconds``."""
        if self._families:
            key = f"{tier}:{path}"
            with self._lock:
                self._pending[(_CALLS_METRIC, key)] += 1
                self._pending[(_SECONDS_METRIC, key)] += seconds

    def items(self) -> object:
        return self.counts.items()

    def gauges(self) -> list | None:
        """This instance's queue-wait and tier-ceiling gauges (None without metrics support)."""
        family = getattr(pb_utils, "MetricFamily", None)
        if family is None or not self._families:
            return None
        if _WAIT_METRIC not in self._families:
            self._families[_WAIT_METRIC] = family(
                name=_WAIT_METRIC,
                description="Mean wait (ms) in the router's queue of the requests it started lately",
                kind=family.GAUGE,
            )
            self._families[_CEILING_METRIC] = family(
                name=_CEILING_METRIC,
                description="The most expensive tier index the router's load ceiling allows now "
                "(fractional: that share of requests may go one tier up)",
                kind=family.GAUGE,
            )
        made = []
        for name in (_WAIT_METRIC, _CEILING_METRIC):
            metric = self._families[name].Metric(labels=self._labels)
            self._metrics[(name, "")] = metric
            made.append(metric)
        return made

    def flush(self) -> None:
        """Hand what was counted since the last flush to the backend's metrics."""
        with self._flushing:
            with self._lock:
                pending, self._pending = self._pending, Counter()
            for (name, key), added in pending.items():
                metric = self._metrics.get((name, key))
                if metric is None:
                    first, _, second = key.partition(":")
                    labels = (
                        {"event": first, "subject": second}
                        if name == _EVENTS_METRIC
                        else {"tier": first, "path": second}
                    )
                    metric = self._families[name].Metric(labels={**self._labels, **labels})
                    self._metrics[(name, key)] = metric
                metric.increment(added)

    def _flush_every(self) -> None:
        while not self._stop.wait(FLUSH_S):
            try:
                self.flush()
            except Exception as exc:
                pb_utils.Logger.log_warn(f"router metrics not updated: {type(exc).__name__}: {exc}")

    def close(self) -> None:
        """Flush, stop the flusher, and keep the counters alive until the process ends.

        Deleting them (Metric objects, then the MetricFamily) while a new version of the router was
        already serving, as Triton does when it polls a changed repository, aborted the embedded 2.51
        server ("malloc(): unaligned fastbin chunk detected"); kept, the old version's series stay at
        their last values.
        """
        self._stop.set()
        if self._flusher is not None:
            self._flusher.join(timeout=5.0)
        if self._families:
            self.flush()
        _RETIRED.append((self._families, self._metrics))


class TritonPythonModel:
    """Triton's entry point for the router model; also the routing engine's tier backend."""

    def initialize(self, args: dict) -> None:
        """Load ``router.json`` and open the in-process sessions of the local tiers."""
        here = Path(args["model_repository"]) / args["model_version"]
        self.config = RouterConfig.from_json((here / "router.json").read_text(encoding="utf-8"))
        self.latency = LatencyTracker(
            self.config.tiers,
            self.config.latency_prior_ms,
            window=self.config.budget_window,
            percentile=self.config.budget_percentile,
            max_age_s=self.config.budget_max_age_s,
        )
        self.counts = _Events(
            args.get("model_name", "router"),
            str(args.get("model_version", "")),
            args.get("model_instance_name", ""),
        )
        self.queue = QueueWait(len(self.config.tiers), self.config.slo_ms)
        self.engine = RoutingEngine(self.config, self, self.latency, self.counts, self.queue)
        self.model_name = args.get("model_name", "router")
        self.busy_s = 0.0
        self._free_since = time.perf_counter()
        self._watcher: threading.Thread | None = None
        self._watching = threading.Event()
        if self.config.slo_ms > 0 or self.config.default_budget_ms > 0 or self.config.queue_timeout_ms > 0:
            self._watch_queue()
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
        called = [t for t in self.config.tiers if t not in self.remote]
        called += [self.config.gate_model] * bool(self.config.gate_model)
        called += [self.config.preprocess_model] * bool(self.config.preprocessed_tiers)
        self.local = self._local_models(Path(args["model_repository"]).parent, called)
        self.inline = not self.remote and all(name in self.local for name in called)

    def _local_models(self, repository: Path, names: list[str]) -> dict[str, LocalModel]:
        """In-process models by name, of ``names``: the local CPU tiers, the gate, the preprocess model.

        Only with ``local_tiers: inprocess``, an importable ONNX Runtime and the models' folders
        beside the router's (a repository in object storage is copied model by model, so there the
        router calls them through BLS); each model not run here is called through BLS.
        """
        self._opener = None
        if self.config.local_tiers != "inprocess":
            return {}
        try:
            import onnxruntime as ort
        except ImportError as exc:
            pb_utils.Logger.log_warn(
                f"local_tiers is inprocess but this Python cannot import onnxruntime ({exc}); "
                "the router calls its tiers through BLS"
            )
            return {}
        found = {name: repository / name for name in names if newest_version(repository / name, _ONNX_FILE)}
        if len(found) < len(names):
            missing = sorted(set(names) - set(found))
            pb_utils.Logger.log_info(
                f"router: no ONNX file of {', '.join(missing)} beside the router; calling through BLS"
            )

        def open_session(path: Path) -> object:
            options = ort.SessionOptions()
            options.intra_op_num_threads = self.config.local_threads
            options.inter_op_num_threads = 1
            options.log_severity_level = 3
            return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])

        ready = getattr(pb_utils, "is_model_ready", None)

        def is_ready(name: str, version: int | None) -> bool:
            if ready is None:
                return True
            return bool(ready(model_name=name, model_version="" if version is None else str(version)))

        self._opener = ThreadPoolExecutor(max_workers=1, thread_name_prefix="router-open")
        local = {
            name: LocalModel(name, folder, _ONNX_FILE, is_ready, open_session, background=self._opener.submit)
            for name, folder in found.items()
        }
        for model in local.values():
            model.preload()
        return local

    def execute(self, requests: list) -> object:
        """Route and score each request; a refused request gets INVALID_ARGUMENT, others are unaffected.

        When every model the router calls runs in its own process there is nothing to wait for, and
        the responses are returned at once (the python backend's event loop would add ~0.2 ms a
        request). Otherwise this returns a coroutine, which the python backend runs on its event
        loop, so that a BLS or remote call can be given up after its deadline (``asyncio.wait_for``);
        the instance still handles one request at a time.
        """
        coroutine = self._execute(requests)
        return complete(coroutine) if self.inline else coroutine

    async def _execute(self, requests: list) -> list:
        started = time.perf_counter()
        if started - self._free_since > _IDLE_S:
            self.queue.drained()
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
        self._free_since = time.perf_counter()
        self.busy_s += self._free_since - started
        return responses

    def _watch_queue(self) -> None:
        """Read the router model's queue statistics every POLL_S seconds, in a thread of its own.

        Started at load with ``slo_ms``, a default budget or a queue timeout, else by the first
        request that brings a budget. The reads fail until the server's HTTP endpoint is up, after
        the models load; if they keep failing, the log says so once and the router goes on without
        the queue wait (no budget counts it, nothing is shed).
        """
        if self._watcher is not None:
            return
        url = os.environ.get(_STATS_URL_ENV) or self.config.stats_url
        read = stats_reader(url, self.model_name)

        def watch(gauges: list | None) -> None:
            failed = 0
            last_busy, last_at = self.busy_s, time.perf_counter()
            while not self._watching.wait(POLL_S):
                got = read()
                busy, now = self.busy_s, time.perf_counter()
                share = min((busy - last_busy) / max(now - last_at, 1e-9), 1.0)
                last_busy, last_at = busy, now
                if got is None:
                    failed += 1
                    if failed == _STATS_WARN_AFTER:
                        pb_utils.Logger.log_warn(
                            f"router: cannot read its queue statistics at {url} (set {_STATS_URL_ENV} "
                            "to the server's HTTP address); budgets do not count the queue wait and "
                            "no request is shed"
                        )
                    continue
                failed = 0
                self.queue.observe(*got, busy=share)
                if gauges:
                    try:
                        gauges[0].set(self.queue.wait_ms)
                        gauges[1].set(self.queue.level)
                    except Exception:
                        gauges = None

        self._watcher = threading.Thread(
            target=watch, args=(self.counts.gauges(),), name="router-queue", daemon=True
        )
        self._watcher.start()

    async def _route(self, request: object) -> object:
        limit = self._queue_limit_ms(request)
        if self.queue.over(limit):
            self.counts["shed"] += 1
            return pb_utils.InferenceResponse(
                error=pb_utils.TritonError(
                    f"Request shed: requests wait {self.queue.wait_ms:.0f} ms in the router's queue, "
                    f"more than the {limit:g} ms allowed (triton.queue_timeout_ms, or the request's "
                    "timeout); retry with backoff",
                    pb_utils.TritonError.UNAVAILABLE,
                )
            )
        try:
            tensors, context = self._parse(request)
            if self._watcher is None and context.latency_budget_ms is not None:
                self._watch_queue()
            routed = await self.engine.route(tensors, context)
        except RoutingError as exc:
            return self._refuse("rejected", exc, pb_utils.TritonError.INVALID_ARG)
        except NoTierError as exc:
            return self._refuse("unavailable", exc, pb_utils.TritonError.UNAVAILABLE)
        self.served += 1
        if self.served % _LOG_EVERY == 0:
            pb_utils.Logger.log_info(f"router decisions so far: {dict(sorted(self.counts.items()))}")
        score, tiers = routed.scores, routed.tiers
        if self.batched:
            score, tiers = score[None, :], tiers[None, :]
        return pb_utils.InferenceResponse(
            output_tensors=[pb_utils.Tensor("score", score), pb_utils.Tensor("tier", tiers)]
        )

    def _queue_limit_ms(self, request: object) -> float:
        """The queue wait (ms) past which ``request`` is shed (0: none).

        The queue timeout, or the request's own ``timeout`` (microseconds) where that is shorter.
        """
        limit = self.config.queue_timeout_ms
        timeout = getattr(request, "timeout", None)
        if limit <= 0 or timeout is None:
            return limit
        own_ms = timeout() / 1000.0
        return own_ms if 0 < own_ms < limit else limit

    def _refuse(self, counter: str, exc: Exception, code: int) -> object:
        self.counts[counter] += 1
        return pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc), code))

    def _parse(self, request: object) -> tuple[dict, object]:
        """The raw request tensors (batch dimension dropped) and the engine's context for them."""
        raw = {}
        for name in REQUEST_INPUTS:
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            array = None if tensor is None else tensor.as_numpy()
            if array is not None and self.batched:
                if array.ndim < 1 or array.shape[0] != 1:
                    raise RoutingError(
                        f"input tensor {name!r}: expected a batch of 1, got {list(array.shape)}"
                    )
                array = array[0]
            raw[name] = array
        try:
            parameters = json.loads(request.parameters() or "{}")
        except ValueError as exc:
            raise RoutingError(f"request parameters are not readable: {exc}") from None
        return raw, self.engine.parse(raw, parameters)

    # --- the engine's tier backend ---------------------------------------------------------------

    async def score(self, tier: str, tensors: dict) -> np.ndarray:
        """``tier``'s scores: in this process, through BLS, or over gRPC for another pool's tier.

        Every call that answers is counted per tier and path, with its time, as Prometheus counters.
        """
        if tier in self.config.preprocessed_tiers:
            tensors = self._preprocessed(tensors)
        started = time.perf_counter()
        if tier in self.remote:
            scores = await self._score_remote(self.remote[tier], tensors)
            self.counts.timed(tier, "remote", time.perf_counter() - started)
            return scores
        session = self._session(tier)
        if session is not None:
            try:
                scores = session.run(_SCORE_OUTPUTS, tensors)[0]
            except Exception as exc:
                raise TierError(tier, f"tier {tier!r} failed in the router's process: {exc}") from None
            self.counts.timed(tier, "inprocess", time.perf_counter() - started)
            return scores
        scores = await self._score_bls(tier, tensors)
        self.counts.timed(tier, "bls", time.perf_counter() - started)
        return scores

    async def _score_bls(self, tier: str, tensors: dict) -> np.ndarray:
        limit = self.config.tier_timeout_ms
        call = pb_utils.InferenceRequest(
            model_name=tier, requested_output_names=["score"], inputs=_tensors(tensors)
        )
        try:
            response = await asyncio.wait_for(
                call.async_exec(), timeout=limit / 1000.0 if limit > 0 else None
            )
        except TimeoutError:
            raise TierError(
                tier, f"tier {tier!r} did not answer within {limit:g} ms", timed_out=True
            ) from None
        except Exception as exc:
            raise TierError(tier, f"tier {tier!r} failed: {exc}") from None
        if response.has_error():
            raise TierError(tier, f"tier {tier!r} failed: {response.error().message()}")
        return pb_utils.get_output_tensor_by_name(response, "score").as_numpy()

    async def gains(self, tensors: dict, cheapest: np.ndarray | None) -> np.ndarray:
        """The gate's gains for the raw request (the gate has the preprocess step fused in front)."""
        feed = dict(tensors) if cheapest is None else {**tensors, CHEAPEST_SCORE: cheapest}
        session = self._session(self.config.gate_model)
        if session is not None:
            return session.run(["gains"], feed)[0][0]
        response = pb_utils.InferenceRequest(
            model_name=self.config.gate_model, requested_output_names=["gains"], inputs=_tensors(feed)
        ).exec()
        if response.has_error():
            raise RuntimeError(response.error().message())
        return pb_utils.get_output_tensor_by_name(response, "gains").as_numpy()[0]

    def _session(self, name: str) -> object | None:
        """The in-process session of a local model; None: call it through BLS.

        Raises:
            TierError: Triton does not serve the model now, or its new file cannot be opened.
        """
        local = self.local.get(name)
        if local is None:
            return None
        try:
            return local.get()
        except NotServedError as exc:
            raise TierError(name, str(exc)) from None
        except Exception as exc:
            raise TierError(name, f"model {name!r}: the router cannot open its file: {exc}") from None

    def _preprocessed(self, raw: dict) -> dict:
        """The preprocess model's outputs, by request tensor name (for tiers without it fused)."""
        outputs = self.config.preprocess_outputs
        names = [outputs[name] for name in REQUEST_INPUTS]
        try:
            session = self._session(self.config.preprocess_model)
            if session is not None:
                return dict(zip(REQUEST_INPUTS, session.run(names, raw), strict=True))
            response = pb_utils.InferenceRequest(
                model_name=self.config.preprocess_model, requested_output_names=names, inputs=_tensors(raw)
            ).exec()
            failure = response.error().message() if response.has_error() else None
        except Exception as exc:
            failure = str(exc)
        if failure is not None:
            self.counts["error:preprocess"] += 1
            raise TierError(
                self.config.preprocess_model,
                f"the preprocess model {self.config.preprocess_model!r} failed: {failure}",
            )
        return {
            name: pb_utils.get_output_tensor_by_name(response, outputs[name]).as_numpy()
            for name in REQUEST_INPUTS
        }

    async def _score_remote(self, remote: RemoteTier, tensors: dict) -> np.ndarray:
        """Scores of a tier of another pool, over gRPC; :class:`TierError` when no address answers.

        The pool's addresses are tried in turn (one further along each call) within one deadline,
        ``remote.timeout_ms``, for all tries: an address that refuses (UNAVAILABLE, NOT_FOUND,
        CANCELLED) is left alone for ``retry_after_ms`` and the next is tried; one that times out is
        left alone too and the call gives up; any other error gives up at once. Counts per address
        ``remote_ok``, ``remote_unavailable``, ``remote_timeout`` or ``remote_error``, per tier
        ``retry``, and per pool ``remote_resting`` when every address is resting.
        """
        tier, book = remote.tier, self.books[remote.pool]
        started = time.perf_counter()
        deadline_s = remote.timeout_ms / 1000.0
        addresses = book.candidates()
        if not addresses:
            self.counts[f"remote_resting:{remote.pool}"] += 1
            raise TierError(
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
                scores = await self._call_remote(address, tier, tensors, remaining)
            except Exception as exc:
                status = grpc_status(exc)
                message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                failures.append(f"{address}: {message}")
                if status == DEADLINE_EXCEEDED:
                    book.failed(address)
                    self.counts[f"remote_timeout:{address}"] += 1
                    message = f"tier {tier!r} of pool {remote.pool!r} timed out: {failures[-1]}"
                    raise TierError(tier, message, timed_out=True) from None
                if status in RETRYABLE:
                    book.failed(address)
                    self.counts[f"remote_unavailable:{address}"] += 1
                    continue
                self.counts[f"remote_error:{address}"] += 1
                break
            book.succeeded(address)
            self.counts[f"remote_ok:{address}"] += 1
            return scores
        raise TierError(tier, f"tier {tier!r} of pool {remote.pool!r} failed: " + "; ".join(failures))

    async def _call_remote(self, address: str, tier: str, tensors: dict, timeout_s: float) -> np.ndarray:
        """One gRPC call of ``tier`` at ``address``; the client is made here, in the serving event loop."""
        client = self._clients.get(address)
        if client is None:
            client = self._grpc.InferenceServerClient(address, channel_args=_CHANNEL_ARGS)
            self._clients[address] = client
        request = []
        for name, array in tensors.items():
            item = self._grpc.InferInput(name, list(array.shape), self._np_to_triton(array.dtype))
            item.set_data_from_numpy(array)
            request.append(item)
        result = await client.infer(
            model_name=tier,
            inputs=request,
            outputs=[self._grpc.InferRequestedOutput("score")],
            client_timeout=timeout_s,
        )
        return result.as_numpy("score").astype(np.float32, copy=False)

    def finalize(self) -> None:
        """Log the decision counts once more at unload."""
        self._watching.set()
        if self._watcher is not None:
            self._watcher.join(timeout=2.0)
        pb_utils.Logger.log_info(f"router decisions: {dict(sorted(self.counts.items()))}")
        self.counts.close()
        if self._opener is not None:
            self._opener.shutdown(wait=False)
