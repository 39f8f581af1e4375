"""gRPC clients of a deployed ensemble (sync and asyncio), taking numpy arrays per request."""

from toolkit.client.client import AsyncRankingClient, Ranking, RankingClient, prepare_inputs
from toolkit.client.errors import (
    ClientError,
    InvalidRequestError,
    ServerOverloadedError,
    ServerUnavailableError,
)

__all__ = [
    "AsyncRankingClient",
    "ClientError",
    "InvalidRequestError",
    "Ranking",
    "RankingClient",
    "ServerOverloadedError",
    "ServerUnavailableError",
    "prepare_inputs",
]
