"""A gate in the event loop in front of costly credential checks that run in a thread.

Checking an API key costs scrypt (tens of milliseconds, 16 MiB). Left to the shared threadpool, a
flood of wrong secrets would take its threads and stall every request that needs one. The gate
lets ``concurrent`` checks run at once and ``waiting`` more wait for a turn (in the event loop,
holding no thread); one more is :class:`ServiceBusy` (503 ``busy``, ``Retry-After``) at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from model_proxy.shared.errors import ServiceBusy

__all__ = ["CheckGate"]


class CheckGate:
    """At most ``concurrent`` holders of a turn, and ``waiting`` waiters; see the module."""

    def __init__(self, concurrent: int, waiting: int) -> None:
        self._turns = asyncio.Semaphore(concurrent)
        self._limit = concurrent + waiting
        self._admitted = 0  # holding a turn or waiting for one

    @property
    def admitted(self) -> int:
        """Checks running or waiting now."""
        return self._admitted

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold a turn for one check; ServiceBusy at once when too many wait already."""
        if self._admitted >= self._limit:
            raise ServiceBusy("too many credential checks are waiting; try again in a moment")
        self._admitted += 1
        try:
            async with self._turns:
                yield
        finally:
            self._admitted -= 1
