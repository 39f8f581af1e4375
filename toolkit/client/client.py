"""Small gRPC clients for a deployed ranking ensemble: one user and N candidate ads in, scores out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from toolkit.client.errors import (
    OVERLOAD_MARKERS,
    ClientError,
    InvalidRequestError,
    ServerOverloadedError,
    ServerUnavailableError,
)

_REQUEST = (
    ("user_dense", np.float32, "user"),
    ("user_sparse", np.int64, "user"),
    ("user_history", np.int64, "user"),
    ("ad_dense", np.float32, "candidate"),
    ("ad_sparse", np.int64, "candidate"),
)
_MAX_ID = np.iinfo(np.int64).max
_TRITON_DTYPE = {np.float32: "FP32", np.int64: "INT64"}


@dataclass(frozen=True)
class Ranking:
    """The answer to one request.

    Attributes:
        scores: Click probability per candidate, FP32 [N].
        tiers: Index of the tier that scored each candidate, INT32 [N].
        tier_names: Names of those tiers, by candidate (when the client knows the tier list).
    """

    scores: np.ndarray
    tiers: np.ndarray
    tier_names: tuple[str, ...] = ()


def prepare_inputs(arrays: dict[str, Any]) -> dict[str, np.ndarray]:
    """Check and convert one request's arrays to the schema's dtypes.

    User tensors must be [1, D] (a 1-D array is taken as one row); candidate tensors [N, D] with
    the same N >= 1.

    Raises:
        InvalidRequestError: A tensor is missing, not numeric, of the wrong rank, or N differs.
    """
    out = {}
    for name, dtype, level in _REQUEST:
        if name not in arrays or arrays[name] is None:
            raise InvalidRequestError(f"input tensor {name!r} is missing")
        value = np.asarray(arrays[name])
        if value.dtype.kind not in "biuf":
            raise InvalidRequestError(f"input tensor {name!r} must be numeric, got dtype {value.dtype}")
        if np.dtype(dtype).kind in "iu" and value.dtype.kind == "f":
            raise InvalidRequestError(
                f"input tensor {name!r} holds ids and must be integers, got {value.dtype}"
            )
        if level == "user" and value.ndim == 1:
            value = value[None, :]
        if value.ndim != 2:
            raise InvalidRequestError(f"input tensor {name!r} must be 2-D, got shape {value.shape}")
        if level == "user" and value.shape[0] != 1:
            raise InvalidRequestError(
                f"input tensor {name!r} must have one row (one user), got {value.shape[0]}"
            )
        if np.dtype(dtype).kind == "f" and not np.all(np.isfinite(value)):
            raise InvalidRequestError(f"input tensor {name!r} holds NaN or Inf")
        if np.dtype(dtype).kind in "iu" and value.size and (value.min() < 0 or value.max() > _MAX_ID):
            raise InvalidRequestError(
                f"input tensor {name!r} holds ids outside 0..2^63-1 (min {value.min()}, max {value.max()})"
            )
        out[name] = np.ascontiguousarray(value, dtype=dtype)
    n, m = out["ad_dense"].shape[0], out["ad_sparse"].shape[0]
    if n != m:
        raise InvalidRequestError(f"input tensors 'ad_dense' and 'ad_sparse' disagree on N: {n} vs {m}")
    if n == 0:
        raise InvalidRequestError("input tensor 'ad_dense' has no candidates; a request needs at least 1")
    return out


def request_parameters(
    tier: str | None, latency_budget_ms: float | None, value: float | None = None
) -> dict[str, Any] | None:
    """The gRPC request parameters the router reads."""
    params: dict[str, Any] = {}
    if tier is not None:
        params["tier"] = tier
    if latency_budget_ms is not None:
        params["latency_budget_ms"] = float(latency_budget_ms)
    if value is not None:
        params["value"] = float(value)
    return params or None


def translate_error(exc: Exception, model: str) -> ClientError:
    """Turn a tritonclient exception into a :class:`ClientError` of the right kind."""
    status = exc.status() if hasattr(exc, "status") else None
    message = exc.message() if hasattr(exc, "message") else str(exc)
    text = f"{model}: {message}"
    if status and "INVALID_ARGUMENT" in status:
        return InvalidRequestError(text, status)
    if status and "UNAVAILABLE" in status and any(m in message for m in OVERLOAD_MARKERS):
        return ServerOverloadedError(
            f"{text} (the server is overloaded and shed this request before computing it; retry "
            "with backoff)",
            status,
        )
    if status is None or "UNAVAILABLE" in status or "NOT_FOUND" in status:
        return ServerUnavailableError(text, status)
    return ClientError(text, status)


def _infer_inputs(grpc: Any, arrays: dict[str, np.ndarray]) -> list[Any]:
    inputs = []
    for name, dtype, _ in _REQUEST:
        tensor = grpc.InferInput(name, list(arrays[name].shape), _TRITON_DTYPE[dtype])
        tensor.set_data_from_numpy(arrays[name])
        inputs.append(tensor)
    return inputs


def _ranking(result: Any, tier_names: tuple[str, ...]) -> Ranking:
    scores = result.as_numpy("score")
    tiers = result.as_numpy("tier")
    names = tuple(tier_names[i] if 0 <= i < len(tier_names) else str(i) for i in tiers) if tier_names else ()
    return Ranking(scores=scores, tiers=tiers, tier_names=names)


class _Client:
    """Settings shared by the sync and asyncio clients; subclasses open the gRPC channel."""

    def __init__(
        self,
        url: str = "127.0.0.1:8001",
        model: str = "ads_ranking",
        timeout_s: float = 10.0,
        tier_names: tuple[str, ...] = (),
    ) -> None:
        import tritonclient.grpc as grpcclient

        self._grpc = grpcclient
        self.url = url
        self.model = model
        self.timeout_s = timeout_s
        self.tier_names = tuple(tier_names)
        self._client = self._connect(url)

    def _connect(self, url: str) -> Any:
        raise NotImplementedError


class RankingClient(_Client):
    """Synchronous client of a deployed ensemble.

    Example:
        >>> with RankingClient("127.0.0.1:8001", "ads_ranking") as client:  # doctest: +SKIP
        ...     ranking = client.rank(user_dense=..., user_sparse=..., user_history=...,
        ...                           ad_dense=..., ad_sparse=...)

    Args:
        url: gRPC address ``host:port``.
        model: The ensemble's model name.
        timeout_s: Per-request deadline in seconds.
        tier_names: Tier names in spec order, to name the ``tier`` output (optional).
    """

    def _connect(self, url: str) -> Any:
        return self._grpc.InferenceServerClient(url)

    def __enter__(self) -> RankingClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the gRPC channel."""
        self._client.close()

    def is_ready(self) -> bool:
        """Whether the server is up and the ensemble is ready."""
        try:
            return bool(self._client.is_server_ready() and self._client.is_model_ready(self.model))
        except Exception:
            return False

    def rank(
        self,
        user_dense: Any,
        user_sparse: Any,
        user_history: Any,
        ad_dense: Any,
        ad_sparse: Any,
        tier: str | None = None,
        latency_budget_ms: float | None = None,
        value: float | None = None,
    ) -> Ranking:
        """Score N candidate ads for one user.

        Args:
            user_dense: FP32 [1, Du] (or [Du]).
            user_sparse: INT64 [1, Su], raw ids.
            user_history: INT64 [1, L'], raw ids, 0 = padding, newest last; any length.
            ad_dense: FP32 [N, Da].
            ad_sparse: INT64 [N, Sa], raw ids.
            tier: Force this tier by name.
            latency_budget_ms: This request's latency budget.
            value: What this request is worth (the learned policy weighs its predicted gain by it).

        Raises:
            InvalidRequestError: Malformed request, or refused by the server.
            ServerUnavailableError: Server or model not reachable.
            ClientError: Any other failure.
        """
        arrays = prepare_inputs(
            {
                "user_dense": user_dense,
                "user_sparse": user_sparse,
                "user_history": user_history,
                "ad_dense": ad_dense,
                "ad_sparse": ad_sparse,
            }
        )
        try:
            result = self._client.infer(
                self.model,
                _infer_inputs(self._grpc, arrays),
                parameters=request_parameters(tier, latency_budget_ms, value),
                client_timeout=self.timeout_s,
            )
        except Exception as exc:
            raise translate_error(exc, self.model) from None
        return _ranking(result, self.tier_names)


class AsyncRankingClient(_Client):
    """Asyncio client of a deployed ensemble (``tritonclient.grpc.aio``).

    Takes the same arguments as :class:`RankingClient`.
    """

    def _connect(self, url: str) -> Any:
        import tritonclient.grpc.aio as aioclient

        return aioclient.InferenceServerClient(url)

    async def __aenter__(self) -> AsyncRankingClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the gRPC channel."""
        await self._client.close()

    async def rank(
        self,
        tier: str | None = None,
        latency_budget_ms: float | None = None,
        value: float | None = None,
        **arrays: Any,
    ) -> Ranking:
        """Score one request; the five request tensors are passed by name (see :meth:`RankingClient.rank`)."""
        prepared = prepare_inputs(arrays)
        try:
            result = await self._client.infer(
                self.model,
                _infer_inputs(self._grpc, prepared),
                parameters=request_parameters(tier, latency_budget_ms, value),
                client_timeout=self.timeout_s,
            )
        except Exception as exc:
            raise translate_error(exc, self.model) from None
        return _ranking(result, self.tier_names)
