"""When a webhook is tried again: exponential backoff, capped, within a total time."""

from __future__ import annotations

__all__ = ["next_delay"]


def next_delay(attempt: int, elapsed: float, total: float, longest: float) -> float | None:
    """Seconds to wait after try ``attempt`` (1, 2, ...) failed: 1, 2, 4, ... capped at
    ``longest``; None when the next try would start more than ``total`` seconds after the
    first (``elapsed`` seconds ago)."""
    delay = min(2.0 ** (attempt - 1), longest)
    if elapsed + delay > total:
        return None
    return delay
