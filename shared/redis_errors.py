"""Redis failures, translated at the boundary into the project's own error.

The job store, the token store and the broker's async job store all talk to Redis; a lost
connection or a timeout becomes one :class:`~model_proxy.shared.errors.QueueUnavailable` with
one message, whichever of them met it. The same context manager serves sync and async code.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import redis.exceptions

from model_proxy.shared.errors import QueueUnavailable

__all__ = ["REDIS_UNREACHABLE", "redis_errors"]

REDIS_UNREACHABLE = "Redis cannot be reached; try again shortly"


@contextmanager
def redis_errors() -> Iterator[None]:
    """Raise :class:`QueueUnavailable` in place of a Redis connection error or timeout."""
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        raise QueueUnavailable(REDIS_UNREACHABLE) from None
