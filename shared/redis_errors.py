"""Redis failures, translated at the boundary into the project's own errors.

The job store, the token store and the broker's async job store all talk to Redis; a lost
connection or a timeout becomes one :class:`~model_proxy.shared.errors.QueueUnavailable` with
one message, whichever of them met it. A wait for a free connection of this process's pool that
ran out (:class:`~model_proxy.shared.redis_clients.PoolExhausted`) is not Redis being down: it
becomes :class:`~model_proxy.shared.errors.ServiceBusy`. The same context manager serves sync
and async code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.exceptions

from model_proxy.shared.errors import QueueUnavailable, ServiceBusy
from model_proxy.shared.redis_clients import PoolExhausted

__all__ = ["REDIS_BUSY", "REDIS_UNREACHABLE", "redis_errors"]

REDIS_UNREACHABLE = "Redis cannot be reached; try again shortly"
REDIS_BUSY = "the service is at its load limit; try again shortly"


@contextmanager
def redis_errors() -> Iterator[None]:
    """Raise :class:`ServiceBusy` when no pooled connection came free in time, and
    :class:`QueueUnavailable` in place of any other Redis connection error or timeout."""
    try:
        yield
    except PoolExhausted:
        raise ServiceBusy(REDIS_BUSY) from None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        raise QueueUnavailable(REDIS_UNREACHABLE) from None
