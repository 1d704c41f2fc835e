"""A worker's graceful stop: running jobs get a grace period, then they are handed back.

On SIGTERM Celery stops taking messages and waits for the running tasks. :meth:`RunningJobs.stop`
gives those runs ``grace`` seconds to finish; then it cuts the runs still going
(:class:`~model_proxy.workers.cutoff.Cutoff` with ``HANDED_BACK``). Each such run gives its job
back at once (lease released, job queued again, its task published again: see
:mod:`model_proxy.workers.pipeline`), so another worker starts it without waiting for the lease
to lapse, and the stopping worker ends well within the stop grace of its supervisor.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from model_proxy.workers.cutoff import Cutoff, CutReason

__all__ = ["RunningJobs"]

log = logging.getLogger(__name__)


class RunningJobs:
    """The runs under way in one worker process, by job id; safe to use from any thread."""

    def __init__(self) -> None:
        self._runs: dict[str, Cutoff] = {}
        self._changed = threading.Condition()
        self._hand_back_at: float | None = None  # time.monotonic() when stopping; else None

    @property
    def stopping(self) -> bool:
        """The worker is stopping: no new job should start here."""
        return self._hand_back_at is not None

    def __len__(self) -> int:
        with self._changed:
            return len(self._runs)

    @contextmanager
    def running(self, job_id: str, cutoff: Cutoff) -> Iterator[Cutoff]:
        """Count a run in while the block runs; past the grace period it is cut at once."""
        with self._changed:
            self._runs[job_id] = cutoff
            late = self._hand_back_at is not None and time.monotonic() >= self._hand_back_at
        if late:
            cutoff.cut(CutReason.HANDED_BACK)
        try:
            yield cutoff
        finally:
            with self._changed:
                if self._runs.get(job_id) is cutoff:
                    del self._runs[job_id]
                self._changed.notify_all()

    def stop(self, grace: float) -> threading.Thread | None:
        """Begin the graceful stop (once): wait up to ``grace`` seconds for the runs, then cut
        those left. Returns the thread that waits (None when already stopping)."""
        with self._changed:
            if self._hand_back_at is not None:
                return None
            self._hand_back_at = time.monotonic() + grace
            count = len(self._runs)
        log.warning("stopping: %d job(s) running; grace period %.1f s", count, grace)
        waiter = threading.Thread(target=self._hand_back_after_grace, name="stopping", daemon=True)
        waiter.start()
        return waiter

    def _hand_back_after_grace(self) -> None:
        assert self._hand_back_at is not None
        with self._changed:
            while self._runs:
                left = self._hand_back_at - time.monotonic()
                if left <= 0:
                    break
                self._changed.wait(left)
            late = list(self._runs.items())
        for job_id, cutoff in late:
            log.warning("job=%s stage=stopping grace period over: handing the job back", job_id)
            cutoff.cut(CutReason.HANDED_BACK)
