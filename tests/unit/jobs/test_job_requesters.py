"""Who asked for a job (``shared/jobs/scripts.py``: CREATE_OR_ATTACH, DETACH, NOTE_ASKED): the
requesters a job records, each requester's index and quota, and leaving a job."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import fakeredis
import pytest
import redis

from model_proxy.broker import jobs as broker_jobs
from model_proxy.broker.jobs import AsyncJobStore
from model_proxy.shared.errors import JobCancelled
from model_proxy.shared.jobs import (
    Admission,
    Admitted,
    Detached,
    Job,
    JobState,
    JobStore,
)
from tests.unit.jobs.support import KEYS, TTL, Broker, announced, current, make_job

GONE = JobCancelled("cancelled by a client")


def ask(broker: Broker, job: Job, requester: str, limit: int = 0, **kwargs: Any) -> Admitted:
    return broker.run(lambda jobs: jobs.create_or_attach(job, True, requester, limit, **kwargs))


def leave(broker: Broker, job: Job, requester: str) -> Detached:
    return broker.run(lambda jobs: jobs.detach(job, requester, GONE))


def listed(
    broker: Broker, requester: str, limit: int = 50, state: JobState | None = None
) -> list[str]:
    return [job.id for job in broker.run(lambda jobs: jobs.asked_by(requester, limit, state))]


def _ids(client: redis.Redis, key: str) -> list[str]:
    return [item.decode() for item in client.zrange(key, 0, -1)]


# --- who asked --------------------------------------------------------------------------------


def test_every_requester_of_a_job_is_recorded_with_it_and_in_its_own_index(
    client: redis.Redis, store: JobStore, broker: Broker
) -> None:
    job = make_job()
    assert ask(broker, job, "ward-7") == Admitted(job.id, Admission.CREATED)
    same = make_job()  # an identical request of another requester joins the first job
    assert ask(broker, same, "anonymous@10.0.0.5") == Admitted(job.id, Admission.ATTACHED)
    assert ask(broker, same, "ward-7") == Admitted(job.id, Admission.ATTACHED)

    assert current(store, job).requesters == ("anonymous@10.0.0.5", "ward-7")
    for requester in ("ward-7", "anonymous@10.0.0.5"):
        assert _ids(client, KEYS.asked(requester)) == [job.id]
        assert 0 < client.ttl(KEYS.asked(requester)) <= TTL
    assert listed(broker, "ward-7") == [job.id]
    assert listed(broker, "ward-8") == []


def test_a_request_without_a_requester_records_none(
    client: redis.Redis, store: JobStore, broker: Broker
) -> None:
    job = make_job()
    assert broker.submit(job) == Admitted(job.id, Admission.CREATED)
    assert current(store, job).requesters == ()
    assert client.keys(f"{KEYS.prefix}:asked:*") == []
    assert client.keys(f"{KEYS.prefix}:unfinished:*") == []


def test_a_requesters_index_is_pruned_past_the_time_to_live(
    client: redis.Redis, broker: Broker
) -> None:
    old, new = make_job(study_uid="1.2.3.1"), make_job(study_uid="1.2.3.2")
    ask(broker, old.model_copy(update={"created_at": time.time() - TTL - 10}), "ward-7")
    ask(broker, new, "ward-7")
    assert _ids(client, KEYS.asked("ward-7")) == [new.id]


def test_an_answer_from_the_cache_is_noted_in_the_requesters_index(
    client: redis.Redis, store: JobStore, broker: Broker
) -> None:
    job = make_job()
    ask(broker, job, "ward-7")
    assert store.claim(job, "worker-a", 30) == "claimed"
    assert store.succeed(job, "worker-a", b"{}") == "done"

    broker.run(lambda jobs: jobs.note_asked("ward-8", job.id))
    # a request that raced the cache lookup is answered with the succeeded job, and noted too
    assert ask(broker, make_job(), "ward-9") == Admitted(job.id, Admission.CACHED)

    for requester in ("ward-8", "ward-9"):
        assert listed(broker, requester) == [job.id]
        assert 0 < client.ttl(KEYS.asked(requester)) <= TTL
    assert current(store, job).requesters == ("ward-7",)  # a finished job takes no requesters


def test_a_requester_lists_its_jobs_latest_first_and_by_state(
    broker: Broker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_jobs, "_PAGE", 2)  # the state filter reads several pages
    jobs = [make_job(study_uid=f"1.2.3.{n}") for n in range(5)]
    for job in jobs:
        ask(broker, job, "ward-7")
    ask(broker, make_job(study_uid="1.2.3.99"), "ward-8")
    broker.cancel(jobs[0])

    newest_first = [job.id for job in reversed(jobs)]
    assert listed(broker, "ward-7") == newest_first
    assert listed(broker, "ward-7", limit=2) == newest_first[:2]
    assert listed(broker, "ward-7", state=JobState.CANCELLED) == [jobs[0].id]
    assert listed(broker, "ward-7", state=JobState.QUEUED, limit=3) == newest_first[:3]


# --- quotas -----------------------------------------------------------------------------------


def test_past_its_limit_a_requester_is_refused_and_nothing_is_recorded(
    client: redis.Redis, store: JobStore, broker: Broker
) -> None:
    first, second = make_job(study_uid="1.2.3.1"), make_job(study_uid="1.2.3.2")
    assert ask(broker, first, "ward-7", limit=2).created
    assert ask(broker, second, "ward-7", limit=2).created
    third = make_job(study_uid="1.2.3.3")

    assert ask(broker, third, "ward-7", limit=2) == Admitted("", Admission.OVER_QUOTA)
    assert store.get(third.id) is None
    assert broker.queued_count() == 2
    assert client.get(KEYS.active(third.fingerprint)) is None
    # another requester still gets through
    assert ask(broker, third, "ward-8", limit=2).created


def test_asking_again_for_a_job_it_waits_for_does_not_count_twice(
    store: JobStore, broker: Broker
) -> None:
    first, second = make_job(study_uid="1.2.3.1"), make_job(study_uid="1.2.3.2")
    ask(broker, first, "ward-7", limit=2)
    ask(broker, second, "ward-8", limit=2)
    ask(broker, make_job(study_uid="1.2.3.3"), "ward-7", limit=2)

    again = ask(broker, make_job(study_uid="1.2.3.1"), "ward-7", limit=2)
    assert again == Admitted(first.id, Admission.ATTACHED)
    # joining another requester's job is one more job to wait for
    joining = ask(broker, make_job(study_uid="1.2.3.2"), "ward-7", limit=2)
    assert joining.admission is Admission.OVER_QUOTA
    assert current(store, second).requesters == ("ward-8",)


def test_finished_and_left_jobs_no_longer_count(store: JobStore, broker: Broker) -> None:
    first, second = make_job(study_uid="1.2.3.1"), make_job(study_uid="1.2.3.2")
    ask(broker, first, "ward-7", limit=2)
    ask(broker, second, "ward-7", limit=2)
    ask(broker, second, "ward-8", limit=2)
    assert ask(broker, make_job(study_uid="1.2.3.3"), "ward-7", limit=2).admission == "over_quota"

    broker.cancel(first)  # finished
    assert leave(broker, second, "ward-7") is Detached.DETACHED  # left; ward-8 still waits
    assert ask(broker, make_job(study_uid="1.2.3.3"), "ward-7", limit=1).created


def test_a_limit_of_zero_is_no_limit(client: redis.Redis, broker: Broker) -> None:
    for n in range(30):
        assert ask(broker, make_job(study_uid=f"1.2.3.{n}"), "ward-7", limit=0).created
    assert client.exists(KEYS.unfinished("ward-7")) == 0


# --- leaving a job ----------------------------------------------------------------------------


def test_the_job_runs_on_until_its_last_requester_leaves(
    client: redis.Redis, store: JobStore, broker: Broker, events: Any
) -> None:
    job = make_job()
    ask(broker, job, "ward-7")
    ask(broker, make_job(), "ward-8")

    assert leave(broker, job, "ward-7") is Detached.DETACHED
    assert current(store, job).state is JobState.QUEUED
    assert current(store, job).requesters == ("ward-8",)
    assert announced(events) == []  # nothing a waiter sees has changed
    assert leave(broker, job, "ward-7") is Detached.DETACHED  # had left already: no change

    assert leave(broker, job, "ward-8") is Detached.CANCELLED
    ended = current(store, job)
    assert ended.state is JobState.CANCELLED and ended.error is not None
    assert ended.error.code == "job_cancelled"
    assert announced(events) == [job.id]
    assert broker.queued_count() == 0
    assert client.get(KEYS.active(job.fingerprint)) is None
    assert leave(broker, job, "ward-8") is Detached.FINISHED


def test_one_who_never_asked_cannot_leave_or_cancel(store: JobStore, broker: Broker) -> None:
    job = make_job()
    ask(broker, job, "ward-7")
    assert leave(broker, job, "ward-8") is Detached.NOT_REQUESTER
    assert leave(broker, job, "anonymous@10.0.0.5") is Detached.NOT_REQUESTER
    assert current(store, job).state is JobState.QUEUED
    assert leave(broker, make_job(study_uid="9.9"), "ward-7") is Detached.MISSING


def test_a_requesters_cancel_takes_all_its_asks(store: JobStore, broker: Broker) -> None:
    job = make_job()
    ask(broker, job, "anonymous@10.0.0.5")
    ask(broker, make_job(), "anonymous@10.0.0.5")  # a second tab at the same address

    assert leave(broker, job, "anonymous@10.0.0.5") is Detached.CANCELLED
    assert current(store, job).state is JobState.CANCELLED


def test_two_requesters_leaving_at_once_cancel_it_exactly_once(
    server: Any, store: JobStore, broker: Broker
) -> None:
    job = make_job()
    ask(broker, job, "ward-7")
    ask(broker, make_job(), "ward-8")

    async def both() -> list[Detached]:
        client = fakeredis.FakeAsyncRedis(server=server)
        jobs = AsyncJobStore(client, TTL, KEYS)
        try:
            return list(
                await asyncio.gather(
                    jobs.detach(job, "ward-7", GONE), jobs.detach(job, "ward-8", GONE)
                )
            )
        finally:
            await client.aclose()

    assert sorted(asyncio.run(both())) == [Detached.CANCELLED, Detached.DETACHED]
    assert current(store, job).state is JobState.CANCELLED
