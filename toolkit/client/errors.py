"""Errors of the gRPC client: their own family, apart from the toolkit's build-time errors."""

from __future__ import annotations


class ClientError(Exception):
    """A request could not be sent or was not answered with scores.

    Attributes:
        status: The gRPC status name from the server (for example ``StatusCode.INVALID_ARGUMENT``),
            or ``None`` when the request never reached it.
    """

    def __init__(self, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.status = status


class InvalidRequestError(ClientError):
    """The request is malformed (caught before sending, or refused with INVALID_ARGUMENT)."""


class ServerUnavailableError(ClientError):
    """The server or the model is not reachable or not ready (UNAVAILABLE, connection refused)."""


class ServerOverloadedError(ServerUnavailableError):
    """The server shed the request: it waited in the router's queue past its timeout (UNAVAILABLE).

    Nothing was computed for it; retry with backoff, or spread the load.
    """


OVERLOAD_MARKERS = ("Request shed", "Request timeout expired", "Exceeds maximum queue size")
"""What the message says when the router sheds a request, or Triton's queue policy rejects one."""
