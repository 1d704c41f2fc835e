"""Webhooks whose delivery stalled are queued again by the reaper (fakeredis): a callback never
queued, a queued one that never began, a retry that never came; nothing over or still carried
by a task message is queued again, a message of a replaced claim makes no try, and the pending
set forgets jobs whose callbacks are all over or that expired."""

from __future__ import annotations

import base64
import time
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis

from model_proxy.shared.http import new_session
from model_proxy.shared.jobs import Job, JobKeys, JobState, JobStore, job_to_fields
from model_proxy.shared.settings import Settings
from model_proxy.shared.webhooks.records import (
    CallbackAttempt,
    CallbackFields,
    Registration,
    callbacks_from_fields,
    claim_unsent_call,
    reclaim_call,
    register_call,
)
from model_proxy.workers import reaper as reaper_module
from model_proxy.workers.context import WorkerContext
from model_proxy.workers.reaper import Reaper
from model_proxy.workers.webhook_recovery import WebhookRecovery
from model_proxy.workers.webhooks import deliver_webhook
from tests.unit.jobs.support import make_job

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
TTL = 3600
FIELDS = CallbackFields("model-proxy")
URL = "http://127.0.0.1:9/hook"  # nothing listens: a try made there is recorded unreachable
SETTINGS = Settings(
    callback_origins="http://127.0.0.1:9",
    webhook_secret=SECRET,
    webhook_recovery_seconds=60,
    webhook_connect_timeout_seconds=3,
    webhook_timeout_seconds=10,
    webhook_backoff_max_seconds=300,
    job_ttl_seconds=TTL,
)
QUIET = 60 + 3 + 2 * 10  # a delivery queued and not begun this long has stalled
QUIET_AFTER_A_TRY = QUIET + 300


class Sent:
    """The tries queued, as (job id, callback id, claim, try number); refuses the first
    ``refuse``."""

    def __init__(self, refuse: int = 0) -> None:
        self.tries: list[tuple[str, str, str, int]] = []
        self.refuse = refuse

    def __call__(self, job_id: str, cid: str, claim: str, attempt: int) -> None:
        if self.refuse:
            self.refuse -= 1
            raise ConnectionError("the broker is away")
        self.tries.append((job_id, cid, claim, attempt))

    def numbers(self) -> list[tuple[str, str, int]]:
        return [(job_id, cid, attempt) for job_id, cid, _, attempt in self.tries]


def record(client: redis.Redis, state: JobState = JobState.SUCCEEDED) -> Job:
    job = make_job().model_copy(update={"state": state, "finished_at": time.time()})
    fields: dict[Any, Any] = job_to_fields(job)
    client.hset(JobKeys().job(job.id), mapping=fields)
    return job


def run(client: redis.Redis, call: Any) -> Any:
    return JobStore(client, TTL).run(call)


def register(client: redis.Redis, job: Job, at: float, url: str = URL) -> str:
    """Keep ``url`` as the job's callback at ``at``, as the API does before it queues it."""
    call = register_call(FIELDS, JobKeys().job(job.id), job.id, url, "me", at, 10, TTL)
    outcome, _ = run(client, call)
    assert outcome is Registration.ADDED
    return next(c.id for c in callbacks_of(client, job) if c.url == url)


def callbacks_of(client: redis.Redis, job: Job) -> list[Any]:
    return callbacks_from_fields(client.hgetall(FIELDS.key(job.id)))


def sent_field(client: redis.Redis, job: Job, cid: str) -> str | None:
    value = client.hget(FIELDS.key(job.id), FIELDS.sent(cid))
    return None if value is None else value.decode()


def tried(client: redis.Redis, job: Job, cid: str, *moments: float) -> None:
    """Record that the delivery was queued and tries began at ``moments`` (none ended it)."""
    key = FIELDS.key(job.id)
    client.hset(key, FIELDS.sent(cid), repr(moments[0] - 1))
    client.hset(key, FIELDS.first(cid), repr(moments[0]))
    for number, at in enumerate(moments, start=1):
        attempt = CallbackAttempt(at=at, status=503)
        client.hset(key, FIELDS.attempt(cid, number), attempt.model_dump_json())


def recover(
    client: redis.Redis,
    send: Sent,
    now: float,
    busy: frozenset[str] = frozenset(),
    delivering: frozenset[tuple[str, str]] = frozenset(),
) -> int:
    """One round; ``busy``: the jobs a task message waits for, ``delivering``: the callbacks a
    delivery message waits for."""
    recovery = WebhookRecovery(
        JobStore(client, TTL), client, SETTINGS, send, lambda: (set(busy), set(delivering))
    )
    return recovery.run(now)


def pending(client: redis.Redis) -> dict[str, float]:
    return {
        member.decode(): score
        for member, score in client.zrange(FIELDS.pending, 0, -1, withscores=True)
    }


def test_a_callback_kept_but_never_queued_is_queued_with_its_first_try(
    client: redis.Redis,
) -> None:
    now = time.time()
    job = record(client)
    cid = register(client, job, at=now - 1)  # the API was stopped right after keeping it
    send = Sent()

    assert recover(client, send, now) == 1

    assert send.numbers() == [(job.id, cid, 1)]
    [(_, _, claim, _)] = send.tries
    assert sent_field(client, job, cid) == claim
    assert recover(client, send, now + 1) == 0  # queued: not due before it could stall
    assert pending(client)[job.id] == pytest.approx(float(claim) + QUIET)
    assert recover(client, send, float(claim) + QUIET + 1) == 1  # its message never began


def test_a_job_a_task_message_still_waits_for_is_left_to_it(client: redis.Redis) -> None:
    now = time.time()
    job = record(client)
    register(client, job, at=now - 1000)
    run(client, claim_unsent_call(FIELDS, job.id, repr(now - 900)))  # long queued, not begun
    send = Sent()

    assert recover(client, send, now, busy=frozenset({job.id})) == 0

    assert send.tries == []
    assert pending(client)[job.id] == pytest.approx(now + 60)
    assert recover(client, send, now + 61) == 1  # the message is gone: queued again


def test_a_queued_delivery_is_queued_again_once_it_could_have_stalled(
    client: redis.Redis,
) -> None:
    now = time.time()
    job = record(client)
    cid = register(client, job, at=now - 1000)
    run(client, claim_unsent_call(FIELDS, job.id, repr(now - QUIET + 5)))
    send = Sent()

    assert recover(client, send, now) == 0  # its message may still be on its way
    assert pending(client)[job.id] == pytest.approx(now + 5)
    assert recover(client, send, now + 6) == 1
    assert send.numbers() == [(job.id, cid, 1)]


def test_a_retry_that_never_came_is_queued_numbered_after_the_recorded_tries(
    client: redis.Redis,
) -> None:
    now = time.time()
    job = record(client)
    cid = register(client, job, at=now - 2000)
    tried(client, job, cid, now - 1500, now - QUIET_AFTER_A_TRY + 5)
    send = Sent()

    assert recover(client, send, now) == 0  # within the longest backoff and a try
    assert recover(client, send, now + 6) == 1
    assert send.numbers() == [(job.id, cid, 3)]


def test_callbacks_that_are_over_are_left_and_their_job_is_forgotten(client: redis.Redis) -> None:
    now = time.time()
    job = record(client)
    for url, outcome in ((URL, "delivered"), (URL + "/b", "failed")):
        cid = register(client, job, at=now - 1000, url=url)
        tried(client, job, cid, now - 900)
        client.hset(FIELDS.key(job.id), FIELDS.end(cid), outcome)
    send = Sent()

    assert recover(client, send, now) == 0

    assert send.tries == []
    assert pending(client) == {}


def test_an_unfinished_job_is_looked_at_again_later(client: redis.Redis) -> None:
    now = time.time()
    job = record(client, JobState.INFERRING)
    register(client, job, at=now - 1000)
    send = Sent()

    assert recover(client, send, now) == 0

    assert pending(client) == {job.id: pytest.approx(now + 60)}


def test_an_expired_job_is_forgotten(client: redis.Redis) -> None:
    now = time.time()
    job = record(client)
    register(client, job, at=now - 1000)
    client.delete(JobKeys().job(job.id), FIELDS.key(job.id))

    assert recover(client, Sent(), now) == 0
    assert pending(client) == {}


def test_a_try_the_broker_refuses_is_given_back_and_queued_on_the_next_round(
    client: redis.Redis,
) -> None:
    now = time.time()
    job = record(client)
    cid = register(client, job, at=now - 1000)
    send = Sent(refuse=1)

    assert recover(client, send, now) == 0
    assert sent_field(client, job, cid) is None  # given back: a worker's own retry may queue it
    assert recover(client, send, now + 0.1) == 1
    assert send.numbers() == [(job.id, cid, 1)]


def test_one_unreadable_job_does_not_stop_the_others(client: redis.Redis) -> None:
    now = time.time()
    broken, job = record(client), record(client)
    register(client, broken, at=now - 2000)
    cid = register(client, job, at=now - 1000)
    client.hset(JobKeys().job(broken.id), "state", "no such state")
    send = Sent()

    assert recover(client, send, now) == 1

    assert send.numbers() == [(job.id, cid, 1)]
    assert pending(client)[broken.id] == pytest.approx(now + 60)


def test_a_reclaim_loses_to_a_try_made_since_the_callback_was_read(client: redis.Redis) -> None:
    now = time.time()
    job = record(client)
    cid = register(client, job, at=now - 1000)
    tried(client, job, cid, now - 900)
    seen = sent_field(client, job, cid)
    assert seen is not None

    assert run(client, reclaim_call(FIELDS, job.id, cid, seen, 1, repr(now))) is False
    assert run(client, reclaim_call(FIELDS, job.id, cid, seen, 2, repr(now))) is True
    assert run(client, reclaim_call(FIELDS, job.id, cid, seen, 2, repr(now))) is False  # moved


def test_a_message_whose_claim_was_replaced_makes_no_try(client: redis.Redis) -> None:
    now = time.time()
    job = record(client)
    cid = register(client, job, at=now - 1000)
    run(client, claim_unsent_call(FIELDS, job.id, repr(now - 900)))
    send = Sent()
    assert recover(client, send, now) == 1
    [(_, _, claim, _)] = send.tries
    parts = SimpleNamespace(
        redis=client,
        settings=SETTINGS,
        store=JobStore(client, TTL),
        webhook_session=new_session(1),
    )
    context = cast(WorkerContext, parts)

    assert deliver_webhook(context, job.id, cid, 1, repr(now - 900)) is None  # the lost one
    assert callbacks_of(client, job)[0].attempts == ()
    assert deliver_webhook(context, job.id, cid, 1, claim) is not None  # unreachable: retried
    assert [a.error for a in callbacks_of(client, job)[0].attempts] == ["unreachable"]


def test_registering_drops_pending_jobs_not_looked_at_for_a_whole_ttl(client: redis.Redis) -> None:
    now = time.time()
    forgotten = record(client)
    register(client, forgotten, at=now - TTL - 10)
    job = record(client)

    register(client, job, at=now)

    assert set(pending(client)) == {job.id}


def test_the_reaper_runs_the_recovery_even_when_the_jobs_recovery_fails(
    client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    rounds: list[int] = []

    def broken(*_: object) -> int:
        raise redis.ConnectionError("away")

    monkeypatch.setattr(reaper_module, "reap_once", broken)
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

    with pytest.raises(redis.ConnectionError):
        reaper.run_once()

    assert rounds == [1]


def test_a_callback_whose_own_message_waits_is_left_but_its_lost_sibling_is_queued(
    client: redis.Redis,
) -> None:
    now = time.time()
    job = record(client)
    retrying = register(client, job, at=now - 2000, url=URL + "/retrying")
    lost = register(client, job, at=now - 2000, url=URL + "/lost")
    tried(client, job, retrying, now - 1900)  # long ago, but its retry's message is held
    run(client, claim_unsent_call(FIELDS, job.id, repr(now - 1000)))  # lost's message never sent
    send = Sent()

    assert recover(client, send, now, delivering=frozenset({(job.id, retrying)})) == 1

    assert send.numbers() == [(job.id, lost, 1)]


def test_a_delivery_given_back_after_tries_goes_on_after_them(client: redis.Redis) -> None:
    now = time.time()
    job = record(client)
    cid = register(client, job, at=now - 1000)
    tried(client, job, cid, now - 900, now - 800)
    client.hdel(FIELDS.key(job.id), FIELDS.sent(cid))  # given back: its re-queueing was refused

    assert run(client, claim_unsent_call(FIELDS, job.id, repr(now))) == [(cid, 3)]
