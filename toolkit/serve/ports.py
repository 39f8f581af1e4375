"""Port helpers: find a free port, check that the server's ports are free before it starts."""

from __future__ import annotations

import errno
import socket

from toolkit.errors import ServerError


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now (the OS picks it).

    Another process may take it before it is used; tests pick one per server so suites can run side by
    side.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_is_free(host: str, port: int) -> bool:
    """Whether a server could listen on ``host:port`` now.

    The probe sets ``SO_REUSEADDR`` like the server does, so a port left in ``TIME_WAIT`` by a
    server that just stopped counts as free; a port someone listens on does not.
    """
    with socket.socket(_family(host), socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                return False
            raise
    return True


def check_ports_free(host: str, ports: dict[str, int]) -> None:
    """Raise unless every port in ``ports`` is free on ``host``.

    Args:
        host: Address the server will bind.
        ports: Port per flag that sets it, for example ``{"--grpc-port": 8001}``.

    Raises:
        ServerError: A port is taken (the message names it and the flag that sets it), or the host
            cannot be bound on this machine.
    """
    for flag, port in ports.items():
        try:
            free = port_is_free(host, port)
        except OSError as exc:
            raise ServerError(f"Cannot bind {host}:{port} ({flag}): {exc.strerror or exc}.") from None
        if not free:
            raise ServerError(
                f"Port {port} on {host} is already in use; stop whatever listens there "
                f"or choose another port with {flag}."
            )


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET
