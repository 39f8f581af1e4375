"""Load of pre-serialized requests over raw gRPC: more than the server takes, from one process.

:mod:`toolkit.bench.load` goes through ``tritonclient``, which builds every request in Python and
cannot offer several times the capacity of a server on the same cores. Overload measurements
serialize their requests once (:func:`serialized_requests`) and send the bytes as they are
(:func:`offer`), closed loop or with Poisson arrivals, recording each request's outcome.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import numpy as np
from tritonclient.grpc import service_pb2

from toolkit.data.requests import RequestSet

_INFER = "/inference.GRPCInferenceService/ModelInfer"


def serialized_requests(requests: RequestSet, model: str) -> list[bytes]:
    """Each request of ``requests`` as a serialized gRPC ``ModelInferRequest`` for ``model``."""
    out = []
    for r in range(requests.num_requests):
        message = service_pb2.ModelInferRequest(model_name=model)
        for name, value in requests.request(r).items():
            kind = "FP32" if value.dtype == np.float32 else "INT64"
            message.inputs.add(name=name, datatype=kind, shape=list(value.shape))
            message.raw_input_contents.append(np.ascontiguousarray(value).tobytes())
        out.append(message.SerializeToString())
    return out


@dataclass
class Offered:
    """What :func:`offer` sent and what came back.

    Attributes:
        results: Per answered or failed request, its status (``OK`` or the gRPC code's name, such
            as ``UNAVAILABLE``) and the milliseconds from its scheduled arrival to the answer.
        messages: Per failing status, the first message the server gave.
        sent: Requests sent.
        seconds: How long requests were sent for.
    """

    results: list[tuple[str, float]]
    messages: dict[str, str]
    sent: int
    seconds: float


async def offer(
    url: str,
    payloads: list[bytes],
    rate: float | None,
    seconds: float,
    concurrency: int = 4,
    on_send: Callable[[], None] | None = None,
) -> Offered:
    """Send ``payloads`` (cycled) for ``seconds`` and wait for every answer.

    Args:
        url: The server's gRPC address, ``host:port``.
        payloads: From :func:`serialized_requests`.
        rate: Poisson arrivals at this many requests per second (open loop); None: closed loop with
            ``concurrency`` requests in flight.
        seconds: How long to send.
        concurrency: Requests in flight in the closed loop.
        on_send: Called after each request of the open loop is sent (for example to sample the
            server's memory as the load goes on).
    """
    results: list[tuple[str, float]] = []
    messages: dict[str, str] = {}
    async with grpc.aio.insecure_channel(url, options=[("grpc.max_send_message_length", -1)]) as channel:
        call = channel.unary_unary(_INFER)

        async def one(i: int, at: float) -> None:
            try:
                await call(payloads[i % len(payloads)], timeout=120)
                status = "OK"
            except grpc.aio.AioRpcError as exc:
                status = exc.code().name
                messages.setdefault(status, exc.details() or "")
            results.append((status, (time.perf_counter() - at) * 1000.0))

        started, sent = time.perf_counter(), 0
        if rate is None:

            async def worker() -> None:
                nonlocal sent
                while time.perf_counter() - started < seconds:
                    sent += 1
                    await one(sent, time.perf_counter())

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        else:
            rng = np.random.default_rng(0)
            tasks: set[asyncio.Task[None]] = set()
            at = started
            while at - started < seconds:
                at += rng.exponential(1.0 / rate)
                delay = at - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(one(sent, at))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                sent += 1
                if on_send is not None:
                    on_send()
            await asyncio.gather(*tasks)
    return Offered(results, messages, sent, seconds)
