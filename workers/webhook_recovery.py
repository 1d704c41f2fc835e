"""Finding webhooks that nothing will deliver any more, and queueing them again.

A callback's delivery is queued when its job ends, then each try queues the next. A step can be
lost: the task broker refused the first message and the caller was gone before it could try
again (an API cancel, the reaper failing a job), a process was killed between claiming a
delivery and queueing it, or a retry's message was never published. So the jobs with
callbacks are kept in a pending set (:mod:`model_proxy.shared.webhooks.records`), scored by
when to look at them, and each round of the reaper looks at those that are due:

* an unfinished job is looked at again ``webhook_recovery_seconds`` later;
* a job that a task message still waits for (its inference task, taken by a worker and not
  acknowledged: running, held for a retry's countdown, or held by a worker that died, until the
  broker gives it back) is left to that message, and so is a callback whose own delivery
  message waits (in the webhook queue, or taken and not acknowledged);
* of the other finished jobs, each callback that is not over is queued again when it was never
  queued, or when its delivery has not moved (queued, or a try begun) for
  ``webhook_recovery_seconds`` plus, after a try, the longest backoff, plus a try's timeouts.
  The next try is numbered after the recorded ones and carries a new claim: a message of the
  old claim that turns up after all makes no try. The job is looked at again when its next
  callback could stall;
* a job whose callbacks are all over, or that has expired, leaves the set.

Delivery stays at least once (a try cut off by a crash is made again), so receivers tell
repeats by the ``webhook-id`` header, the same for every try.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

import redis

from model_proxy.shared.jobs import JobStore
from model_proxy.shared.jobs.operations import text
from model_proxy.shared.redis_errors import redis_errors
from model_proxy.shared.settings import Settings
from model_proxy.shared.webhooks.records import (
    Callback,
    CallbackFields,
    callbacks_from_fields,
    forget_over_call,
    new_claim,
    reclaim_call,
    release_call,
)
from model_proxy.workers.webhooks import Send

__all__ = ["WebhookRecovery", "stalls_at"]

log = logging.getLogger(__name__)

Waiting = Callable[[], tuple[set[str], set[tuple[str, str]]]]
"""What task messages wait for (queued, or taken and not acknowledged): the ids of the jobs
of other tasks, and the (job id, callback id) of webhook deliveries."""

SCAN_LIMIT = 500  # jobs looked at in one round; the others wait for the next


def stalls_at(callback: Callback, settings: Settings) -> float:
    """When ``callback``'s delivery, if it has not moved by then, is taken as lost (at once if
    it was never queued)."""
    if not callback.sent:
        return callback.registered_at
    # a try lasts at most its connect timeout and its deadline, plus one read begun before it
    bound = (
        settings.webhook_recovery_seconds
        + settings.webhook_connect_timeout_seconds
        + 2 * settings.webhook_timeout_seconds
    )
    if callback.attempts:
        bound += settings.webhook_backoff_max_seconds
    return callback.last_activity + bound


class WebhookRecovery:
    """One reaper round of webhook recovery (:meth:`run`) over the jobs of ``store``."""

    def __init__(
        self,
        store: JobStore,
        client: redis.Redis,
        settings: Settings,
        send: Send,
        waiting: Waiting,
    ) -> None:
        self.store, self.client, self.settings = store, client, settings
        self.send, self.waiting = send, waiting
        self.fields = CallbackFields(settings.redis_prefix)

    def run(self, now: float | None = None) -> int:
        """Look at the due jobs of the pending set; returns how many tries were queued again.
        A job that cannot be looked at (a record this version cannot read) is logged and looked
        at again later, so it never stops the others."""
        now = time.time() if now is None else now
        with redis_errors():
            due: list[Any] = self.client.zrangebyscore(
                self.fields.pending, "-inf", now, 0, SCAN_LIMIT
            )
        if not due:
            return 0
        busy, delivering = self.waiting()
        carried: dict[str, set[str]] = {}
        for job_id, cid in delivering:
            carried.setdefault(job_id, set()).add(cid)
        queued = 0
        for raw in due:
            job_id = text(raw)
            try:
                queued += self._look_at(job_id, job_id in busy, carried.get(job_id, set()), now)
            except Exception as exc:  # one unreadable job: the others are still looked at
                log.warning("job=%s stage=webhook recovery failed (%s)", job_id, type(exc).__name__)
                with redis_errors():
                    later = now + self.settings.webhook_recovery_seconds
                    self.client.zadd(self.fields.pending, {job_id: later})
        return queued

    def _look_at(self, job_id: str, busy: bool, carried: set[str], now: float) -> int:
        """Queue again the stalled callbacks of the job (``busy``: a task message of the job
        waits; ``carried``: the callbacks a delivery message waits for)."""
        job = self.store.get(job_id)
        if job is None:
            with redis_errors():
                self.client.zrem(self.fields.pending, job_id)
            return 0
        later = now + self.settings.webhook_recovery_seconds
        if not job.state.finished or busy:
            self.store.run(forget_over_call(self.fields, job_id, later))
            return 0
        with redis_errors():
            raw: dict[Any, Any] = self.client.hgetall(self.fields.key(job_id))
        found = {text(name): text(value) for name, value in raw.items()}
        queued = 0
        look_again = later
        for callback in callbacks_from_fields(found):
            if callback.outcome is not None or callback.id in carried:
                continue
            seen = found.get(self.fields.sent(callback.id), "")
            stall = stalls_at(callback, self.settings)
            if stall > now:
                look_again = min(look_again, stall)
                continue
            outcome = self._queue_again(job_id, callback, seen)
            if outcome == "queued":
                queued += 1
            elif outcome == "refused":
                look_again = now  # the next round tries again
        self.store.run(forget_over_call(self.fields, job_id, look_again))
        return queued

    def _queue_again(
        self, job_id: str, callback: Callback, seen: str
    ) -> Literal["queued", "moved", "refused"]:
        """Claim the stalled delivery (unless it moved since it was read) and queue its next
        try; the claim is given back when the broker refuses the message."""
        attempt, claim = len(callback.attempts) + 1, new_claim()
        call = reclaim_call(self.fields, job_id, callback.id, seen, attempt, claim)
        if not self.store.run(call):
            return "moved"
        try:
            self.send(job_id, callback.id, claim, attempt)
        except Exception as exc:  # kombu's errors
            self.store.run(release_call(self.fields, job_id, callback.id, claim))
            log.warning("job=%s stage=webhook not queued again (%s)", job_id, type(exc).__name__)
            return "refused"
        log.warning(
            "job=%s stage=webhook callback=%s stalled; try %d queued again",
            job_id,
            callback.id,
            attempt,
        )
        return "queued"
