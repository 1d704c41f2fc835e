"""Finding jobs that nothing will run any more, and queueing them again.

Two kinds, looked for every ``reaper_interval_seconds`` by one worker (under a Redis lock),
besides the webhooks whose delivery stalled (:mod:`model_proxy.workers.webhook_recovery`):

* **Jobs whose worker died.** A running job holds a lease that its worker's heartbeat renews;
  when a worker is killed the lease lapses within ``job_lease_seconds``, and the job is queued
  again, or failed as ``worker_lost`` once its workers died ``max_attempts`` times. Celery's own
  redelivery (after the visibility timeout) would take an hour; this takes about
  ``job_lease_seconds + reaper_interval_seconds``.
* **Queued jobs whose task message was lost** (its publish failed, a worker took it and then
  could neither run nor send it back, an earlier enqueue of the reaper failed). A job queued and
  unchanged for ``queued_recovery_seconds`` whose id no task message in its queue, or taken by
  a worker, carries is sent again, at most once per that bound.

Sending a task may fail (the broker away for a moment): the reaper logs it and goes on with the
next job; the job stays queued, so the second kind of recovery sends it on a later round. The
reaper's thread outlives every error of a round.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import KW_ONLY, dataclass, field

import redis

from model_proxy.shared.jobs import Job, JobStore, Requeued

__all__ = ["Reaper", "reap_once", "recover_queued"]

log = logging.getLogger(__name__)

Enqueue = Callable[[str, str], None]
"""Sends the task of a job (its id, its queue)."""
Ended = Callable[[str], None]
"""Told the id of each job the reaper ended (failed for good): its webhooks are queued."""
JobsWithMessages = Callable[[Iterable[str]], set[str]]
"""The ids of the jobs a task message is waiting for, in the given queues or taken by a worker."""
Round = Callable[[], int]
"""Another recovery run in each round (under the same lock): how many it queued again."""


def _send(enqueue: Enqueue, job: Job) -> bool:
    """Send the job's task; False (logged) when it could not be sent."""
    try:
        enqueue(job.id, job.queue)
    except Exception as exc:  # kombu raises OperationalError and friends
        log.warning("job=%s stage=reaper enqueue failed (%s)", job.id, type(exc).__name__)
        return False
    return True


def _tell_ended(ended: Ended, job: Job) -> None:
    try:
        ended(job.id)
    except Exception as exc:  # Redis or the broker away: the job's webhooks are not sent
        log.warning("job=%s stage=reaper webhooks not queued (%s)", job.id, type(exc).__name__)


def reap_once(
    store: JobStore, max_attempts: int, enqueue: Enqueue, ended: Ended | None = None
) -> int:
    """Queue again every job whose lease lapsed; returns how many tasks were sent. A job
    failed for good (its workers died ``max_attempts`` times) is given to ``ended``."""
    requeued = 0
    for job_id in store.abandoned():
        job = store.get(job_id)
        if job is None:
            store.forget_running(job_id)
            continue
        outcome = store.requeue_abandoned(job, max_attempts)
        if outcome is Requeued.REQUEUED:
            log.warning("job=%s stage=reaped its worker stopped; queued again", job.id)
            requeued += _send(enqueue, job)
        elif outcome is Requeued.FAILED:
            log.error(
                "job=%s stage=reaped its workers stopped %d times; failed", job.id, max_attempts
            )
            if ended is not None:
                _tell_ended(ended, job)
    return requeued


def recover_queued(
    store: JobStore, bound: float, with_messages: JobsWithMessages, enqueue: Enqueue
) -> int:
    """Send again the task of every job queued and unchanged for ``bound`` seconds that no task
    message carries; returns how many were sent."""
    unchanged_since = time.time() - bound
    candidates = store.long_queued(unchanged_since)
    if not candidates:
        return 0
    waiting = with_messages({job.queue for job in candidates})
    sent = 0
    for job in candidates:
        if job.id in waiting:
            continue
        if store.recover_queued(job, unchanged_since) is Requeued.REQUEUED:
            log.warning("job=%s stage=recovered queued without a task message; sent again", job.id)
            sent += _send(enqueue, job)
    return sent


@dataclass
class Reaper:
    """Runs :func:`reap_once`, :func:`recover_queued` and ``also`` (the webhooks' recovery)
    every ``interval`` seconds in a background thread, in one worker at a time."""

    store: JobStore
    client: redis.Redis
    _: KW_ONLY
    interval: float
    max_attempts: int
    queued_bound: float
    enqueue: Enqueue
    with_messages: JobsWithMessages
    ended: Ended | None = None
    also: Round | None = None
    _stop: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="reaper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def run_once(self) -> None:
        """One round, if no other worker's reaper holds the lock."""
        lock = self.client.lock(
            self.store.keys.reaper_lock, timeout=self.interval * 3, blocking=False
        )
        if not lock.acquire():
            return
        try:
            try:
                reap_once(self.store, self.max_attempts, self.enqueue, self.ended)
                recover_queued(self.store, self.queued_bound, self.with_messages, self.enqueue)
            finally:  # the webhooks' recovery runs whatever befell the jobs' own
                if self.also is not None:
                    self.also()
        finally:
            lock.release()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.run_once()
            except Exception as exc:  # Redis away, a lock lost: the next round tries again
                log.warning(
                    "reaper: round skipped (%s)", getattr(exc, "message", type(exc).__name__)
                )
