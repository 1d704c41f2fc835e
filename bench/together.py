"""Work done from many threads at once, released together, and timed from the release."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

__all__ = ["at_once"]


def at_once(count: int, work: Callable[[int], None]) -> float:
    """Call ``work(0)`` ... ``work(count - 1)`` each in its own thread, all released together.

    Returns the seconds from the release until the last call returned. ``work`` catches its own
    errors: one that escapes ends only its thread.
    """
    release = threading.Barrier(count + 1)

    def run(index: int) -> None:
        release.wait()
        work(index)

    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(count)]
    for thread in threads:
        thread.start()
    release.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started
