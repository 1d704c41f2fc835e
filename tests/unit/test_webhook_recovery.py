"""Webhooks whose delivery stalled are queued again by the reaper (fakeredis): a callback never
queued, a queued one that never began, a retry that never came; nothing over is queued twice,
and the pending set forgets jobs whose callbacks are all over or that expired."""

from __future__ import annotations

import base64
import time
from typing import Any

import pytest
import redis

from model_proxy.shared.jobs import Job, JobKeys, JobState, JobStore, job_to_fields
from model_proxy.shared.settings import Settings
from model_proxy.shared.webhooks.records import (
    CallbackAttempt,
    CallbackFields,
    Registration,
    callbacks_from_fields,
    claim_unsent_call,
    register_call,
)
from model_proxy.workers.reaper import Reaper
from model_proxy.workers.webhook_recovery import recover_webhooks
from tests.unit.jobs.support import make_job

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
TTL = 3600
FIELDS = CallbackFields("model-proxy")
SETTINGS = Settings(
    callback_origins="http://127.0.0.1:9",
    webhook_secret=SECRET,
    webhook_recovery_seconds=60,
    webhook_connect_timeout_seconds=3,
    webhook_timeout_seconds=10,
    webhook_backoff_max_seconds=300,
)
QUIET = 60 + 3 + 2 * 10  # a delivery queued and not begun this long has stalled
QUIET_AFTER_A_TRY = QUIET + 300


class Sent:
    """The tries queued, as (job id, callback id, try number); fails the first ``refuse``."""

    def __init__(self, refuse: int = 0) -> None:
        self.tries: list[tuple[str, str, int]] = []
        self.refuse = refuse

    def __call__(self, job_id: str, cid: str, attempt: int) -> None:
        if self.refuse:
            self.refuse -= 1
            raise ConnectionError("the broker is away")
        self.tries.append((job_id, cid, attempt))


def record(client: redis.Redis, state: JobState = JobState.SUCCEEDED) -> Job:
    job = make_job().model_copy(update={"state": state, "finished_at": time.time()})
    fields: dict[Any, Any] = job_to_fields(job)
    client.hset(JobKeys().job(job.id), mapping=fields)
    return job


def register(client: redis.Redis, job: Job, url: str, at: float) -> str:
    """Register ``url`` at ``at``, as the API does before it queues the delivery."""
    call = register_call(FIELDS, JobKeys().job(job.id), job.id, url, "me", at, 10, TTL)
    outcome, _ = call.reply(client.register_script(call.script)(keys=call.keys, args=call.args))
    assert outcome is Registration.ADDED
    return next(c.id for c in callbacks_of(client, job) if c.url == url)


def callbacks_of(client: redis.Redis, job: Job) -> list[Any]:
    return callbacks_from_fields(client.hgetall(FIELDS.key(job.id)))


def tried(client: redis.Redis, job: Job, cid: str, *moments: float) -> None:
    """Record that the delivery was queued and tries began at ``moments`` (none ended it)."""
    key = FIELDS.key(job.id)
    client.hset(key, FIELDS.sent(cid), repr(moments[0] - 1))
    client.hset(key, FIELDS.first(cid), repr(moments[0]))
    for number, at in enumerate(moments, start=1):
        attempt = CallbackAttempt(at=at, status=503)
        client.hset(key, FIELDS.attempt(cid, number), attempt.model_dump_json())


def recover(client: redis.Redis, send: Sent, now: float) -> int:
    return recover_webhooks(JobStore(client, TTL), client, SETTINGS, send, now=now)


def pending(client: redis.Redis) -> list[str]:
    return [member.decode() for member in client.zrange(FIELDS.pending, 0, -1)]


def test_a_callback_registered_but_never_queued_is_queued_with_its_first_try(
    client: redis.Redis,
) -> None:
    now = time.time()
    job = record(client)
    cid = register(client, job, "http://127.0.0.1:9/a", at=now - 61)  # the API died here
    send = Sent()

    assert recover(client, send, now) == 1

    assert send.tries == [(job.id, cid, 1)]
    assert callbacks_of(client, job)[0].sent_at == pytest.approx(now)
    assert recover(client, send, now + 61) == 0  # queued then: not stalled yet
    assert recover(client, send, now + 122) == 1  # its message never began either


def test_a_job_registered_lately_is_not_looked_at_yet(client: redis.Redis) -> None:
    now = time.time()
    job = record(client)
    register(client, job, "http://127.0.0.1:9/a", at=now - 10)
    send = Sent()

    assert recover(client, send, now) == 0
    assert send.tries == []
    assert pending(client) == [job.id]


def test_a_queued_delivery_that_never_began_is_queued_again_once_quiet_long_enough(
    client: redis.Redis,
) -> None:
    now = time.time()
    job = record(client)
    cid = register(client, job, "http://127.0.0.1:9/a", at=now - 1000)
    JobStore(client, TTL).run(claim_unsent_call(FIELDS, job.id, now - QUIET + 5))
    send = Sent()

    assert recover(client, send, now) == 0  # its message may still be waiting
    assert recover(client, send, now + 30) == 0  # a job is looked at once a recovery period
    assert recover(client, send, now + 61) == 1
    assert send.tries == [(job.id, cid, 1)]


def test_a_retry_that_never_came_is_queued_numbered_after_the_recorded_tries(
    client: redis.Redis,
) -> None:
    now = time.time()
    job = record(client)
    cid = register(client, job, "http://127.0.0.1:9/a", at=now - 2000)
    tried(client, job, cid, now - 1500, now - QUIET_AFTER_A_TRY + 5)
    send = Sent()

    assert recover(client, send, now) == 0  # within the longest backoff and a try
    assert recover(client, send, now + 61) == 1
    assert send.tries == [(job.id, cid, 3)]


def test_callbacks_that_are_over_are_left_and_their_job_is_forgotten(client: redis.Redis) -> None:
    now = time.time()
    job = record(client)
    delivered = register(client, job, "http://127.0.0.1:9/a", at=now - 1000)
    failed = register(client, job, "http://127.0.0.1:9/b", at=now - 1000)
    for cid, outcome in ((delivered, "delivered"), (failed, "failed")):
        tried(client, job, cid, now - 900)
        client.hset(FIELDS.key(job.id), FIELDS.end(cid), outcome)
    send = Sent()

    assert recover(client, send, now) == 0

    assert send.tries == []
    assert pending(client) == []


def test_an_unfinished_job_is_looked_at_again_later(client: redis.Redis) -> None:
    now = time.time()
    job = record(client, JobState.INFERRING)
    register(client, job, "http://127.0.0.1:9/a", at=now - 1000)
    send = Sent()

    assert recover(client, send, now) == 0

    assert pending(client) == [job.id]
    assert client.zscore(FIELDS.pending, job.id) == pytest.approx(now)


def test_an_expired_job_is_forgotten(client: redis.Redis) -> None:
    now = time.time()
    job = record(client)
    register(client, job, "http://127.0.0.1:9/a", at=now - 1000)
    client.delete(JobKeys().job(job.id), FIELDS.key(job.id))

    assert recover(client, Sent(), now) == 0
    assert pending(client) == []


def test_a_try_the_broker_refuses_is_queued_on_a_later_round(client: redis.Redis) -> None:
    now = time.time()
    job = record(client)
    cid = register(client, job, "http://127.0.0.1:9/a", at=now - 1000)
    send = Sent(refuse=1)

    assert recover(client, send, now) == 0
    assert pending(client) == [job.id]
    assert recover(client, send, now + QUIET + 61) == 1
    assert send.tries == [(job.id, cid, 1)]


def test_a_sent_mark_without_a_time_reads_as_long_ago(client: redis.Redis) -> None:
    now = time.time()
    job = record(client)
    cid = register(client, job, "http://127.0.0.1:9/a", at=now - 1000)
    client.hset(FIELDS.key(job.id), FIELDS.sent(cid), "1")  # written before times were kept
    send = Sent()

    assert recover(client, send, now) == 1
    assert send.tries == [(job.id, cid, 1)]


def test_the_reaper_runs_the_recovery_in_each_round(client: redis.Redis) -> None:
    rounds: list[int] = []
    reaper = Reaper(
        JobStore(client, TTL),
        client,
        interval=1,
        max_attempts=2,
        queued_bound=60,
        enqueue=lambda job_id, queue: None,
        with_messages=lambda queues: set(),
        also=lambda: rounds.append(1) or 0,
    )

    reaper.run_once()
    reaper.run_once()

    assert rounds == [1, 1]
