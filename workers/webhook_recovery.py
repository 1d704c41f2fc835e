"""Finding webhooks that nothing will deliver any more, and queueing them again.

A callback's delivery is queued when its job ends, then each try queues the next. A step can be
lost: the task broker refused the first message and the caller was gone before it could try
again (an API cancel, the reaper failing a job), a process was killed between claiming a
delivery and queueing it, or a retry's message was never published. So the jobs with
callbacks are kept in a pending set (:mod:`model_proxy.shared.webhooks.records`), and every
``webhook_recovery_seconds`` the reaper looks at each again:

* an unfinished job is looked at again later;
* of a finished job, each callback that is not over and whose delivery has not moved (queued,
  or a try begun) for ``webhook_recovery_seconds`` plus its longest backoff and a try's
  timeouts is queued again, its next try numbered after the recorded ones;
* a job whose callbacks are all over, or that has expired, leaves the set.

Deliveries are at least once: a message merely slower than that bound makes a second try.
Receivers tell repeats by the ``webhook-id`` header, the same for every try.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

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
    reclaim_call,
)

__all__ = ["SendTry", "recover_webhooks", "stalled"]

log = logging.getLogger(__name__)

SendTry = Callable[[str, str, int], None]
"""Queues a try of a callback: the job id, the callback's id, the try's number."""

SCAN_LIMIT = 500  # jobs looked at in one round; the others wait for the next


def stalled(callback: Callback, settings: Settings, now: float) -> bool:
    """Whether nothing will move ``callback``'s delivery any more: not over, and still since
    longer than a queued message, a try and the longest backoff can take."""
    if callback.outcome is not None:
        return False
    if not callback.sent:
        return True  # registered but never queued (or released after a refused queueing)
    # a try lasts at most its connect timeout and its deadline, plus one read begun before it
    bound = (
        settings.webhook_recovery_seconds
        + settings.webhook_connect_timeout_seconds
        + 2 * settings.webhook_timeout_seconds
    )
    if callback.attempts:
        bound += settings.webhook_backoff_max_seconds
    return now - callback.last_activity > bound


def recover_webhooks(
    store: JobStore,
    client: redis.Redis,
    settings: Settings,
    send: SendTry,
    now: float | None = None,
) -> int:
    """One round: queue again each stalled callback of the pending jobs looked at
    ``webhook_recovery_seconds`` ago or earlier; returns how many were queued."""
    now = time.time() if now is None else now
    fields = CallbackFields(settings.redis_prefix)
    with redis_errors():
        due: list[Any] = client.zrangebyscore(
            fields.pending, "-inf", now - settings.webhook_recovery_seconds, 0, SCAN_LIMIT
        )
    queued = 0
    for raw in due:
        job_id = text(raw)
        job = store.get(job_id)
        if job is not None and job.state.finished:
            with redis_errors():
                raw_fields: dict[Any, Any] = client.hgetall(fields.key(job_id))
            found = {text(name): text(value) for name, value in raw_fields.items()}
            for callback in callbacks_from_fields(found):
                if stalled(callback, settings, now):
                    queued += _queue_again(store, fields, job_id, callback, send, now, found)
        if job is None:
            with redis_errors():
                client.zrem(fields.pending, job_id)
        else:
            store.run(forget_over_call(fields, job_id, now))
    return queued


def _queue_again(
    store: JobStore,
    fields: CallbackFields,
    job_id: str,
    callback: Callback,
    send: SendTry,
    now: float,
    found: dict[str, str],
) -> int:
    """Claim the stalled delivery (unless someone moved it since it was read) and queue its next
    try; 1 when queued."""
    seen = found.get(fields.sent(callback.id), "")
    if not store.run(reclaim_call(fields, job_id, callback.id, seen, now)):
        return 0
    attempt = len(callback.attempts) + 1
    try:
        send(job_id, callback.id, attempt)
    except Exception as exc:  # kombu's errors: left claimed, it stalls again and is found again
        log.warning("job=%s stage=webhook not queued again (%s)", job_id, type(exc).__name__)
        return 0
    log.warning(
        "job=%s stage=webhook callback=%s stalled; try %d queued again",
        job_id,
        callback.id,
        attempt,
    )
    return 1
