"""The broker's :class:`AsyncJobStore` (``broker/jobs.py``): recording jobs, ending them from
outside, listing and counting them. Each call runs on its own event loop."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
import redis

from model_proxy.shared.config.schema import Level
from model_proxy.shared.errors import QueueUnavailable
from model_proxy.shared.jobs import (
    Admission,
    Admitted,
    Job,
    JobError,
    JobState,
    JobStore,
    Terminated,
    Written,
)
from tests.unit.jobs.support import (
    KEYS,
    OTHER_MODEL,
    TTL,
    Broker,
    announced,
    cancel_job,
    current,
    expire,
    fail_job,
    lapse,
    make_job,
    succeed_job,
)

# --- create_or_attach -------------------------------------------------------------------------


def test_a_new_job_is_recorded_indexed_and_counted(
    client: redis.Redis, store: JobStore, broker: Broker, events: Any
) -> None:
    job = make_job()
    assert broker.submit(job) == Admitted(job.id, Admission.CREATED)
    assert store.get(job.id) == job
    assert broker.get(job.id) == job
    assert [found.id for found in broker.recent(10)] == [job.id]
    assert broker.queued_count() == 1
    assert broker.queued_count(OTHER_MODEL) == 0
    assert 0 < client.ttl(KEYS.job(job.id)) <= TTL
    assert announced(events) == []  # creating a job announces nothing: no one waits for it yet


def test_an_identical_request_attaches_to_the_unfinished_job(
    store: JobStore, broker: Broker, job: Job
) -> None:
    again = make_job()
    assert broker.submit(again) == Admitted(job.id, Admission.ATTACHED)
    assert store.get(again.id) is None
    assert broker.queued_count() == 1
    assert [found.id for found in broker.recent(10)] == [job.id]


def test_an_identical_request_attaches_to_the_running_job(
    store: JobStore, broker: Broker, running: Job
) -> None:
    assert broker.submit(make_job()) == Admitted(running.id, Admission.ATTACHED)
    assert broker.queued_count() == 0


def test_a_different_request_is_a_new_job(broker: Broker, job: Job) -> None:
    other = make_job(series_uid="1.2.3.9", level=Level.SERIES)
    assert broker.submit(other) == Admitted(other.id, Admission.CREATED)
    elsewhere = make_job(model_id=OTHER_MODEL)
    assert broker.submit(elsewhere) == Admitted(elsewhere.id, Admission.CREATED)
    assert broker.queued_count() == 2
    assert broker.queued_count(OTHER_MODEL) == 1


@pytest.mark.parametrize(
    "finish", [succeed_job, fail_job, cancel_job], ids=["succeeded", "failed", "cancel"]
)
def test_after_the_job_finished_an_identical_request_is_a_new_job(
    store: JobStore, broker: Broker, running: Job, finish: Callable[..., None]
) -> None:
    finish(store, broker, running)
    again = make_job()
    assert broker.submit(again, use_cached=False) == Admitted(again.id, Admission.CREATED)
    assert current(store, again).state is JobState.QUEUED
    assert current(store, running).state.finished


def test_a_request_that_missed_the_cache_by_a_moment_gets_the_succeeded_job(
    store: JobStore, broker: Broker, running: Job
) -> None:
    """Its cache lookup came just before the job succeeded: no second run starts."""
    succeed_job(store, broker, running)
    again = make_job()
    assert broker.submit(again) == Admitted(running.id, Admission.CACHED)
    assert store.get(again.id) is None


def test_after_the_job_expired_an_identical_request_is_a_new_job(
    client: redis.Redis, store: JobStore, broker: Broker, job: Job
) -> None:
    expire(client, job)
    again = make_job()
    assert broker.submit(again) == Admitted(again.id, Admission.CREATED)
    assert store.get(again.id) == again


# --- terminate --------------------------------------------------------------------------------


def test_cancel_a_queued_job(store: JobStore, broker: Broker, job: Job, events: Any) -> None:
    assert broker.cancel(job) is Terminated.TERMINATED
    cancelled = current(store, job)
    assert cancelled.state is JobState.CANCELLED
    assert cancelled.error == JobError(code="job_cancelled", message="cancelled by a client")
    assert cancelled.finished_at is not None and cancelled.finished_at == cancelled.updated_at
    assert broker.queued_count() == 0
    assert announced(events) == [job.id]
    again = make_job()
    assert broker.submit(again) == Admitted(again.id, Admission.CREATED)


def test_cancel_a_running_job(
    client: redis.Redis, store: JobStore, broker: Broker, running: Job
) -> None:
    assert broker.cancel(running) is Terminated.TERMINATED
    assert current(store, running).state is JobState.CANCELLED
    lapse(client, running)  # even if its worker dies now, the reaper leaves it alone
    assert store.abandoned() == []
    assert store.update(running.id, "worker-a", {"bytes_fetched": "1"}, False) is Written.ENDED


def test_a_job_that_could_not_be_enqueued_is_failed(
    store: JobStore, broker: Broker, job: Job
) -> None:
    error = QueueUnavailable("Redis cannot be reached")
    outcome = broker.run(lambda jobs: jobs.terminate(job, JobState.FAILED, error))
    assert outcome is Terminated.TERMINATED
    failed = current(store, job)
    assert failed.state is JobState.FAILED
    assert failed.error == JobError(code="redis_unavailable", message="Redis cannot be reached")
    assert broker.queued_count() == 0


@pytest.mark.parametrize(
    "finish", [succeed_job, fail_job, cancel_job], ids=["succeeded", "failed", "cancel"]
)
def test_terminate_a_finished_job(
    store: JobStore, broker: Broker, running: Job, events: Any, finish: Callable[..., None]
) -> None:
    finish(store, broker, running)
    before = current(store, running)
    announced(events)
    assert broker.cancel(running) is Terminated.FINISHED
    assert current(store, running) == before
    assert announced(events) == []


def test_terminate_a_missing_job(client: redis.Redis, broker: Broker, events: Any) -> None:
    never_recorded = make_job()
    assert broker.cancel(never_recorded) is Terminated.MISSING
    assert not client.exists(KEYS.job(never_recorded.id))
    assert announced(events) == []


# --- recent -----------------------------------------------------------------------------------


def _submit_at(broker: Broker, created_at: float, **request_changes: Any) -> Job:
    job = make_job(**request_changes).model_copy(
        update={"created_at": created_at, "updated_at": created_at}
    )
    assert broker.submit(job) == Admitted(job.id, Admission.CREATED)
    return job


def test_recent_is_newest_first_limited_and_filtered(broker: Broker, store: JobStore) -> None:
    now = time.time()
    jobs = [_submit_at(broker, now - 100 + i, series_uid=f"1.2.3.{i}") for i in range(5)]
    assert broker.cancel(jobs[1]) is Terminated.TERMINATED
    assert broker.cancel(jobs[3]) is Terminated.TERMINATED

    assert [job.id for job in broker.recent(10)] == [job.id for job in reversed(jobs)]
    assert [job.id for job in broker.recent(2)] == [jobs[4].id, jobs[3].id]
    assert [job.id for job in broker.recent(10, JobState.CANCELLED)] == [jobs[3].id, jobs[1].id]
    assert [job.id for job in broker.recent(1, JobState.CANCELLED)] == [jobs[3].id]
    assert [job.id for job in broker.recent(10, JobState.QUEUED)] == [
        jobs[4].id,
        jobs[2].id,
        jobs[0].id,
    ]
    assert broker.recent(10, JobState.SUCCEEDED) == []
    assert broker.recent(0) == []


def test_recent_looks_past_the_first_batch(broker: Broker) -> None:
    now = time.time()
    jobs = [_submit_at(broker, now - 100 + i, series_uid=f"1.2.3.{i}") for i in range(60)]
    assert broker.cancel(jobs[0]) is Terminated.TERMINATED
    found = broker.recent(5, JobState.CANCELLED)
    assert [job.id for job in found] == [jobs[0].id]


def test_recent_skips_expired_records_and_jobs_older_than_the_ttl(
    client: redis.Redis, broker: Broker
) -> None:
    now = time.time()
    old = _submit_at(broker, now - TTL - 10, series_uid="1.2.3.1")
    gone = _submit_at(broker, now - 20, series_uid="1.2.3.2")
    kept = _submit_at(broker, now - 10, series_uid="1.2.3.3")
    expire(client, gone)
    assert [job.id for job in broker.recent(10)] == [kept.id]
    assert client.zscore(KEYS.index, old.id) is None


def test_queued_count_drops_entries_older_than_the_ttl(broker: Broker) -> None:
    _submit_at(broker, time.time() - TTL - 10, series_uid="1.2.3.1")
    _submit_at(broker, time.time(), series_uid="1.2.3.2")
    assert broker.queued_count() == 1


# --- Redis away -------------------------------------------------------------------------------


def test_redis_away_is_queue_unavailable_for_the_broker(
    server: fakeredis.FakeServer, broker: Broker
) -> None:
    server.connected = False
    job = make_job()
    for call in (
        lambda: broker.submit(job),
        lambda: broker.get(job.id),
        lambda: broker.cached(job.fingerprint),
        lambda: broker.queued_count(),
        lambda: broker.recent(10),
        lambda: broker.cancel(job),
    ):
        with pytest.raises(QueueUnavailable):
            call()
