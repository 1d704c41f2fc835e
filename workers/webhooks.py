"""Delivering webhooks: POST an ended job's resource to one of its callbacks, signed the
Standard Webhooks way, and record the try beside the job.

One task message is one try (:data:`~model_proxy.shared.tasks.DELIVER_WEBHOOKS`, with the job
id, the callback's id and the try's number); the task asks to run again after the delay this
module answers, so no worker thread waits between tries. A try is recorded under its number
once: a message delivered again after a worker died does not POST again a try already recorded.
The URL is checked against the allowlist again before each try; redirects are never followed;
a try connects within ``webhook_connect_timeout_seconds`` and ends within
``webhook_timeout_seconds`` in all; at most ``webhook_max_answer_bytes`` of an answer are read,
and none is kept. Deliveries have a queue of their own, ``webhook_queue``, that every worker
consumes besides its own (:func:`~model_proxy.workers.app.worker_queues`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable

import requests

from model_proxy.shared.errors import CallbackNotAllowed, QueueUnavailable
from model_proxy.shared.http import is_timeout
from model_proxy.shared.jobs import JobState
from model_proxy.shared.redis_errors import redis_errors
from model_proxy.shared.schemas import JobResource
from model_proxy.shared.settings import Settings
from model_proxy.shared.webhooks import (
    check_callback_url,
    next_delay,
    parse_origins,
    signing_key,
    webhook_headers,
)
from model_proxy.shared.webhooks.records import (
    Callback,
    CallbackAttempt,
    CallbackFields,
    callbacks_from_fields,
    claim_unsent_call,
    new_claim,
    release_call,
)
from model_proxy.workers.context import WorkerContext

__all__ = ["Send", "deliver_webhook", "dispatch_callbacks"]

log = logging.getLogger(__name__)

Send = Callable[[str, str, str, int], None]
"""Queues a try of a callback: the job id, the callback's id, the claim it is queued under, the
try's number."""

_RETRIED_STATUSES = frozenset({408, 429})
# errors no later try can mend: the URL itself is one requests cannot send to
_BAD_URL_ERRORS = (
    requests.exceptions.InvalidURL,
    requests.exceptions.InvalidSchema,
    requests.exceptions.MissingSchema,
)
_FINAL_ERRORS = frozenset({"callback_not_allowed", "unknown_job", "invalid_url"})


def dispatch_callbacks(context: WorkerContext, job_id: str, send: Send) -> int:
    """Queue the first try of each callback of job ``job_id`` not queued yet, once the job has
    ended; returns how many were queued. When one could not be sent it is released and
    :class:`~model_proxy.shared.errors.QueueUnavailable` is raised once the others were tried:
    the caller calls again later (``run_inference`` retries itself)."""
    job = context.store.get(job_id)
    if job is None or not job.state.finished:
        return 0
    fields, claim = CallbackFields(context.settings.redis_prefix), new_claim()
    claimed = context.store.run(claim_unsent_call(fields, job_id, claim))
    sent = 0
    for cid, attempt in claimed:
        try:
            send(job_id, cid, claim, attempt)
        except Exception as exc:  # kombu's errors: released for the caller's next call
            context.store.run(release_call(fields, job_id, cid, claim))
            log.warning("job=%s stage=webhook not queued (%s)", job_id, type(exc).__name__)
            continue
        sent += 1
    if sent < len(claimed):
        raise QueueUnavailable(f"{len(claimed) - sent} webhooks of job {job_id} not queued")
    return sent


def deliver_webhook(
    context: WorkerContext, job_id: str, cid: str, attempt: int, claim: str
) -> float | None:
    """Make try ``attempt`` of callback ``cid`` of job ``job_id`` (unless it is recorded
    already) and record it; the seconds to wait before the next try, or None when it is over
    (delivered, refused, given up, or gone) or when the message's ``claim`` is no longer the
    callback's (the reaper queued its delivery again: that message goes on instead)."""
    client, settings = context.redis, context.settings
    fields = CallbackFields(settings.redis_prefix)
    key = fields.key(job_id)
    with redis_errors():
        callback = _find(callbacks_from_fields(client.hgetall(key)), cid)
    if callback is None or callback.outcome is not None:
        return None
    if not callback.claimed_by(claim):
        log.info("job=%s stage=webhook callback=%s try=%d superseded", job_id, cid, attempt)
        return None
    now = time.time()
    if len(callback.attempts) >= attempt:  # made before this message was delivered again
        tried = callback.attempts[attempt - 1]
    else:
        tried = _try(context, job_id, callback, now)
    first = callback.first_try_at or now
    delay = _next(tried, attempt, now - first, settings)
    outcome = None if delay is not None else ("delivered" if _ok(tried) else "failed")
    with redis_errors(), client.pipeline() as pipe:
        pipe.hsetnx(key, fields.first(cid), repr(first))
        pipe.hsetnx(key, fields.attempt(cid, attempt), tried.model_dump_json(exclude_none=True))
        if outcome is not None:
            pipe.hset(key, fields.end(cid), outcome)
        pipe.expire(key, settings.job_ttl_seconds)
        pipe.execute()
    log.info(
        "job=%s stage=webhook callback=%s try=%d status=%s error=%s next_s=%s",
        job_id,
        cid,
        attempt,
        tried.status,
        tried.error,
        "-" if delay is None else f"{delay:.0f}",
    )
    return delay


def _find(callbacks: list[Callback], cid: str) -> Callback | None:
    return next((callback for callback in callbacks if callback.id == cid), None)


def _ok(tried: CallbackAttempt) -> bool:
    return tried.status is not None and 200 <= tried.status < 300


def _next(tried: CallbackAttempt, attempt: int, elapsed: float, settings: Settings) -> float | None:
    """The wait before the next try; None: over (a 2xx, or a refusal not worth repeating)."""
    if _ok(tried) or tried.error in _FINAL_ERRORS:
        return None
    status = tried.status
    if status is not None and status < 500 and status not in _RETRIED_STATUSES:
        return None  # 3xx (not followed) and 4xx: the receiver will not change its mind
    return next_delay(
        attempt, elapsed, settings.webhook_retry_seconds, settings.webhook_backoff_max_seconds
    )


def _try(context: WorkerContext, job_id: str, callback: Callback, now: float) -> CallbackAttempt:
    """POST the job to the callback once; the status it answered or the error's code."""
    settings = context.settings
    try:
        check_callback_url(callback.url, parse_origins(settings.callback_origins))
    except CallbackNotAllowed as error:
        return CallbackAttempt(at=now, error=error.code)
    job = context.store.get(job_id)
    if job is None or job.state not in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED):
        return CallbackAttempt(at=now, error="unknown_job")
    resource = JobResource.from_job(job, base_url=settings.public_url or "")
    body = json.dumps(resource.to_json(), separators=(",", ":")).encode()
    assert settings.webhook_secret is not None  # the settings refuse callbacks without one
    headers = webhook_headers(
        signing_key(settings.webhook_secret), f"msg_{job_id}_{callback.id}", int(now), body
    )
    timeout = settings.webhook_timeout_seconds
    deadline = time.monotonic() + timeout
    try:
        with context.webhook_session.post(
            callback.url,
            data=body,
            headers=headers,
            timeout=(min(settings.webhook_connect_timeout_seconds, timeout), timeout),
            allow_redirects=False,
            stream=True,
        ) as response:
            _drain(response, settings.webhook_max_answer_bytes, deadline)
            return CallbackAttempt(at=now, status=response.status_code)
    except _BAD_URL_ERRORS:
        return CallbackAttempt(at=now, error="invalid_url")
    except (requests.exceptions.RequestException, TimeoutError) as exc:
        return CallbackAttempt(at=now, error="timeout" if is_timeout(exc) else "unreachable")


def _drain(response: requests.Response, limit: int, deadline: float) -> None:
    """Read at most ``limit`` bytes of the answer (so the connection may be kept), and nothing
    past ``deadline`` (``time.monotonic``: a receiver trickling its answer does not hold the
    worker); keep none."""
    read = 0
    while read < limit and time.monotonic() < deadline:
        # read1: what has arrived (at least a byte), not a whole chunk; raw: no decompression
        chunk = response.raw.read1(min(8192, limit - read), decode_content=False)
        if not chunk:
            break
        read += len(chunk)
