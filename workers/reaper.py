"""Finding jobs whose worker died, and queueing them again.

A running job holds a lease that its worker's heartbeat renews. When a worker is killed, the
lease lapses within ``job_lease_seconds``; every ``reaper_interval_seconds`` one worker (under a
Redis lock) looks for such jobs and queues each again, or fails it after ``max_attempts`` runs.
Celery's own redelivery (after the visibility timeout) would take an hour; this takes about
``job_lease_seconds + reaper_interval_seconds``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import redis

from model_proxy.shared.errors import ModelProxyError
from model_proxy.shared.jobs import JobStore, Requeued

__all__ = ["Reaper", "reap_once"]

log = logging.getLogger(__name__)


def reap_once(store: JobStore, max_attempts: int, enqueue: Callable[[str, str], None]) -> int:
    """Queue again every job whose lease lapsed; returns how many were queued."""
    requeued = 0
    for job_id in store.abandoned():
        job = store.get(job_id)
        if job is None:
            store.forget_running(job_id)
            continue
        outcome = store.requeue_abandoned(job, max_attempts)
        if outcome is Requeued.REQUEUED:
            enqueue(job.id, job.queue)
            requeued += 1
            log.warning("job %s: its worker stopped; queued again", job.id)
        elif outcome is Requeued.FAILED:
            log.error(
                "job=%s stage=reaped its workers stopped %d times; failed", job.id, max_attempts
            )
    return requeued


class Reaper:
    """Runs :func:`reap_once` every ``interval`` seconds in a background thread."""

    def __init__(
        self,
        store: JobStore,
        client: redis.Redis,
        *,
        interval: float,
        max_attempts: int,
        enqueue: Callable[[str, str], None],
    ) -> None:
        self._store = store
        self._client = client
        self._interval = interval
        self._max_attempts = max_attempts
        self._enqueue = enqueue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _loop(self) -> None:
        lock_name = self._store.keys.reaper_lock
        while not self._stop.wait(self._interval):
            lock = self._client.lock(lock_name, timeout=self._interval * 3, blocking=False)
            try:
                if not lock.acquire():
                    continue
                try:
                    reap_once(self._store, self._max_attempts, self._enqueue)
                finally:
                    lock.release()
            except (ModelProxyError, redis.exceptions.RedisError) as exc:
                log.warning("reaper: %s", getattr(exc, "message", type(exc).__name__))
