"""The workers' retry policy: which failures are tried again, how soon, and how often.

Only errors our tree marks transient (:func:`~model_proxy.shared.errors.is_transient`: a peer
that refused or reset the connection, a 502/503/504, Redis away for a moment) are retried; every
other error fails the job at once with its own code. Waits grow exponentially from
``first_delay``, each capped at ``max_delay`` and shortened by a random jitter so that workers
that failed together do not come back together. A job runs at most ``max_attempts`` times in
all, waits at most ``total_delay`` seconds in all, and never starts a retry that its deadline
would cut short.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from model_proxy.shared.errors import is_transient
from model_proxy.shared.settings import Settings

__all__ = ["RetryPolicy"]


@dataclass(frozen=True)
class RetryPolicy:
    """When to try a failed job (or task) again, and after how long; see the module text."""

    first_delay: float
    max_delay: float
    total_delay: float
    max_attempts: int
    # a number in [0, 1) per call; tests pass a fixed one
    random: Callable[[], float] = field(default=random.random, compare=False, repr=False)

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        return cls(
            first_delay=settings.retry_first_delay,
            max_delay=settings.retry_max_delay,
            total_delay=settings.retry_total_delay,
            max_attempts=settings.max_attempts,
        )

    def backoff(self, retries_done: int) -> float:
        """The wait before retry number ``retries_done + 1``: doubling, capped, half jittered."""
        ceiling = self.backoff_ceiling(retries_done)
        return ceiling / 2 + self.random() * ceiling / 2

    def longest_wait(self, retries_done: int) -> float:
        """The most that the waits before ``retries_done`` retries can have taken in all."""
        return sum(self.backoff_ceiling(n) for n in range(retries_done))

    def backoff_ceiling(self, retries_done: int) -> float:
        """The wait before retry number ``retries_done + 1`` without jitter: doubling, capped."""
        return min(self.max_delay, self.first_delay * 2.0 ** min(retries_done, 32))

    def delay_before_retry(
        self,
        error: BaseException,
        attempts: int,
        waited: float,
        time_left: float | None = None,
    ) -> float | None:
        """Seconds to wait before trying again, or None when ``error`` must fail the job now.

        ``attempts`` counts the runs so far (the first included), ``waited`` the seconds already
        spent in earlier waits, ``time_left`` what remains until the job's deadline (None: none).
        """
        if not is_transient(error) or attempts >= self.max_attempts:
            return None
        delay = self.backoff(attempts - 1)
        if waited + delay > self.total_delay:
            return None
        if time_left is not None and delay >= time_left:
            return None
        return delay
