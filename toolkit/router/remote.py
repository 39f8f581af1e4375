"""Tiers that another pool serves: where the router finds them and which address to try next.

Plain Python (no gRPC here): the router model makes the calls with ``tritonclient.grpc.aio`` and
tells an :class:`AddressBook` how each went.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

UNAVAILABLE = "StatusCode.UNAVAILABLE"
DEADLINE_EXCEEDED = "StatusCode.DEADLINE_EXCEEDED"
RETRYABLE = frozenset({UNAVAILABLE, "StatusCode.NOT_FOUND", "StatusCode.CANCELLED"})
"""gRPC statuses after which the router tries the pool's next address: the server is down or
restarting (UNAVAILABLE, CANCELLED at shutdown) or does not hold the tier yet (NOT_FOUND)."""


@dataclass(frozen=True)
class RemoteTier:
    """A tier served by another pool.

    Attributes:
        tier: Tier name (the model name on the pool's servers).
        pool: The pool's name.
        addresses: gRPC addresses (``host:port``) of the pool's servers (or one DNS name that
            resolves to each of them).
        timeout_ms: Deadline of one call, all retries included.
        retry_after_ms: How long an address that failed or timed out is left alone.
    """

    tier: str
    pool: str
    addresses: tuple[str, ...]
    timeout_ms: float
    retry_after_ms: float = 1000.0

    def __post_init__(self) -> None:
        if not self.pool or not self.addresses or not all(isinstance(a, str) and a for a in self.addresses):
            raise ValueError(f"remote tier {self.tier!r} needs a pool and at least one address")
        if not math.isfinite(self.timeout_ms) or self.timeout_ms <= 0:
            raise ValueError(f"remote tier {self.tier!r}: timeout_ms must be > 0, got {self.timeout_ms}")
        if not math.isfinite(self.retry_after_ms) or self.retry_after_ms <= 0:
            raise ValueError(
                f"remote tier {self.tier!r}: retry_after_ms must be > 0, got {self.retry_after_ms}"
            )

    @classmethod
    def from_dict(cls, tier: str, data: dict[str, Any]) -> RemoteTier:
        """Read one entry of ``router.json``'s ``remote_tiers``."""
        if not isinstance(data, dict):
            raise ValueError(f"remote tier {tier!r}: expected a mapping, got {type(data).__name__}")
        try:
            addresses = data["addresses"]
            if not isinstance(addresses, list | tuple):
                # not tuple(addresses): tuple("host:port") is one "address" per character
                raise TypeError(f"'addresses' must be a list of host:port strings, got {addresses!r}")
            numbers = {}
            for key, default in (("timeout_ms", None), ("retry_after_ms", 1000.0)):
                value = data[key] if default is None else data.get(key, default)
                try:
                    numbers[key] = float(value)
                except (TypeError, ValueError):
                    raise TypeError(f"{key!r} must be a number, got {value!r}") from None
            return cls(tier=tier, pool=str(data["pool"]), addresses=tuple(addresses), **numbers)
        except KeyError as exc:
            raise ValueError(f"remote tier {tier!r}: missing key {exc}") from None
        except TypeError as exc:
            raise ValueError(f"remote tier {tier!r}: {exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """The ``router.json`` entry."""
        return {
            "pool": self.pool,
            "addresses": list(self.addresses),
            "timeout_ms": self.timeout_ms,
            "retry_after_ms": self.retry_after_ms,
        }


class AddressBook:
    """A pool's addresses: which to try, in which order, and which are resting after a failure.

    Calls rotate over the addresses (each call starts one further along), so load spreads over the
    pool's servers; an address whose last call failed is skipped until ``retry_after_s`` has passed,
    then the next call tries it again.

    Args:
        addresses: The pool's addresses.
        retry_after_s: How long a failed address rests.
        clock: Monotonic clock in seconds (injectable for tests).
    """

    def __init__(
        self, addresses: tuple[str, ...], retry_after_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.addresses = tuple(addresses)
        self.retry_after_s = retry_after_s
        self._clock = clock
        self._resting_until: dict[str, float] = {}
        self._next = 0

    def candidates(self) -> list[str]:
        """Addresses to try for the next call, in order; empty when every address is resting."""
        now = self._clock()
        start = self._next % len(self.addresses)
        self._next += 1
        rotated = self.addresses[start:] + self.addresses[:start]
        return [a for a in rotated if self._resting_until.get(a, 0.0) <= now]

    def failed(self, address: str) -> None:
        """A call to ``address`` failed or timed out: leave it alone for ``retry_after_s``."""
        self._resting_until[address] = self._clock() + self.retry_after_s

    def succeeded(self, address: str) -> None:
        """A call to ``address`` worked."""
        self._resting_until.pop(address, None)

    def resting(self) -> list[str]:
        """Addresses being left alone right now."""
        now = self._clock()
        return [a for a in self.addresses if self._resting_until.get(a, 0.0) > now]

    def seconds_to_retry(self) -> float:
        """Seconds until the first resting address may be tried again (0 when one is available)."""
        now = self._clock()
        waits = [self._resting_until.get(a, 0.0) - now for a in self.addresses]
        return max(0.0, min(waits))


def grpc_status(exc: BaseException) -> str:
    """The gRPC status of a ``tritonclient`` error (``StatusCode.UNAVAILABLE``), or "" for others."""
    status = getattr(exc, "status", None)
    try:
        value = status() if callable(status) else status
    except Exception:
        return ""
    return str(value) if value else ""
