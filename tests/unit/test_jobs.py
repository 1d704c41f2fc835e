"""Job records on fakeredis: the hash codec, the broker's AsyncJobStore, the workers' JobStore
(each step a Lua script), the events channel and waiting for a job.

Every test looks at what a client would see: the record (``get``), the result, the queue count,
the list of recent jobs and the announcements on the events channel. The broker's calls each run
on their own event loop with ``asyncio.run``; the worker's calls are plain.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import fakeredis
import pytest
import redis

from model_proxy.broker import jobs as broker_jobs
from model_proxy.broker.jobs import AsyncJobStore, JobEvents, wait_for_job
from model_proxy.shared.config.schema import Level, Task
from model_proxy.shared.errors import DicomNotFound, JobCancelled, QueueUnavailable
from model_proxy.shared.jobs import (
    Admission,
    Admitted,
    Claim,
    Job,
    JobError,
    JobKeys,
    JobState,
    JobStore,
    Lease,
    Requeued,
    Slot,
    Terminated,
    Written,
    job_from_fields,
    job_to_fields,
    new_job,
)
from model_proxy.shared.request import DataFilter, InferenceRequest

T = TypeVar("T")

TTL = 3600
LEASE = 30.0
KEYS = JobKeys()
MODEL = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"
OTHER_MODEL = "0d5e3c1a-7f1b-4a43-9d1e-2b9a8c7e6f50"

REQUEST = InferenceRequest(
    task=Task.SEGMENTATION,
    model_id=MODEL,
    server_id="b5208f48-f748-4339-9402-d1148dab571e",
    level=Level.STUDY,
    study_uid="1.2.3",
    data_filters=(
        DataFilter(
            data_key="series-two",
            uuid="1.2.3.2",
            data_filter=(DataFilter(data_key="top", uuid="1.2.3.2.1"),),
        ),
    ),
)


def make_job(**request_changes: Any) -> Job:
    """A new job as the broker builds it, for REQUEST changed by ``request_changes``."""
    return new_job(REQUEST.model_copy(update=request_changes), queue="gpu")


# --- the codec ----------------------------------------------------------------------------------


def test_a_new_job_is_queued_with_a_fresh_id() -> None:
    first, second = make_job(), make_job()
    assert first.state is JobState.QUEUED
    assert first.id != second.id
    assert len(first.id) == 32 and int(first.id, 16) >= 0
    assert first.created_at == first.updated_at
    assert (first.queue, first.attempts, first.error) == ("gpu", 0, None)
    assert first.fingerprint == second.fingerprint == REQUEST.fingerprint()


def full_job() -> Job:
    """A job with every field set, the floats at full precision."""
    request = REQUEST.model_copy(update={"level": Level.INSTANCE, "series_uid": "1.2.3.4"})
    return new_job(request, queue="gpu").model_copy(
        update={
            "state": JobState.FAILED,
            "created_at": 1764300000.123456789,
            "updated_at": 1764300042.1,
            "started_at": 1764300001.000001,
            "inferring_at": 1764300002.5,
            "finished_at": 1764300042.1,
            "error": JobError(code="dicom_not_found", message='the "series" was not found'),
            "instances_fetched": 300,
            "instances_total": 301,
            "bytes_fetched": 157_286_400,
            "attempts": 2,
        }
    )


@pytest.mark.parametrize("job", [make_job(), full_job()], ids=["new", "full"])
def test_round_trip(job: Job) -> None:
    fields = job_to_fields(job)
    assert all(isinstance(value, str) for value in fields.values())
    assert job_from_fields(fields) == job


@pytest.mark.parametrize("job", [make_job(), full_job()], ids=["new", "full"])
def test_round_trip_through_bytes_as_redis_returns_them(job: Job) -> None:
    as_bytes = {k.encode(): v.encode() for k, v in job_to_fields(job).items()}
    assert job_from_fields(as_bytes) == job


def test_absent_values_are_left_out_of_the_hash() -> None:
    fields = job_to_fields(make_job())
    assert not {"started_at", "inferring_at", "finished_at", "instances_total", "error"} & set(
        fields
    )
    assert fields["model"] == MODEL


def test_a_record_without_progress_fields_reads_as_zero() -> None:
    fields = job_to_fields(make_job())
    del fields["instances_fetched"], fields["bytes_fetched"], fields["attempts"]
    job = job_from_fields(fields)
    assert job is not None
    assert (job.instances_fetched, job.bytes_fetched, job.attempts) == (0, 0, 0)


def _without(*names: str) -> dict[str, str]:
    fields = job_to_fields(make_job())
    for name in names:
        del fields[name]
    return fields


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"state": "fetching", "updated_at": "1764300042.1", "bytes_fetched": "300"},
        _without("id"),
        _without("request"),
        _without("state"),
        _without("created_at"),
    ],
    ids=["empty", "a-stray-write", "no-id", "no-request", "no-state", "no-created_at"],
)
def test_an_incomplete_hash_is_no_job(fields: dict[str, str]) -> None:
    assert job_from_fields(fields) is None


@pytest.mark.parametrize(
    ("state", "finished"),
    [
        (JobState.QUEUED, False),
        (JobState.FETCHING, False),
        (JobState.INFERRING, False),
        (JobState.SUCCEEDED, True),
        (JobState.FAILED, True),
        (JobState.CANCELLED, True),
    ],
)
def test_finished_states(state: JobState, finished: bool) -> None:
    assert state.finished is finished


def test_key_names() -> None:
    assert KEYS.job("abc") == "model-proxy:job:abc"
    assert KEYS.result("abc") == "model-proxy:result:abc"
    assert KEYS.lease("abc") == "model-proxy:lease:abc"
    assert KEYS.events == "model-proxy:job-events"
    assert KEYS.queued(MODEL) == f"model-proxy:queued:{MODEL}"
    assert JobKeys("other").job("abc") == "other:job:abc"


# --- fixtures: one fake Redis, the worker's store, the broker's store, the events channel ------


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def client(server: fakeredis.FakeServer) -> Iterator[redis.Redis]:
    connection = fakeredis.FakeRedis(server=server)
    yield connection
    connection.close()


@pytest.fixture
def store(client: redis.Redis) -> JobStore:
    """The workers' store."""
    return JobStore(client, TTL)


class Broker:
    """The broker's AsyncJobStore; each call runs on its own event loop and client."""

    def __init__(self, server: fakeredis.FakeServer) -> None:
        self.server = server

    def run(self, operation: Callable[[AsyncJobStore], Awaitable[T]]) -> T:
        async def main() -> T:
            client = fakeredis.FakeAsyncRedis(server=self.server)
            try:
                return await operation(AsyncJobStore(client, TTL, KEYS))
            finally:
                await client.aclose()

        return asyncio.run(main())

    def submit(self, job: Job, use_cached: bool = True) -> Admitted:
        return self.run(lambda jobs: jobs.create_or_attach(job, use_cached))

    def cancel(self, job: Job) -> Terminated:
        error = JobCancelled("cancelled by a client")
        return self.run(lambda jobs: jobs.terminate(job, JobState.CANCELLED, error))

    def get(self, job_id: str) -> Job | None:
        return self.run(lambda jobs: jobs.get(job_id))

    def cached(self, fingerprint: str) -> tuple[str, bytes] | None:
        return self.run(lambda jobs: jobs.cached(fingerprint))

    def queued_count(self, model_id: str = MODEL) -> int:
        return self.run(lambda jobs: jobs.queued_count(model_id))

    def recent(self, limit: int, state: JobState | None = None) -> list[Job]:
        return self.run(lambda jobs: jobs.recent(limit, state))


@pytest.fixture
def broker(server: fakeredis.FakeServer) -> Broker:
    return Broker(server)


@pytest.fixture
def job(broker: Broker) -> Job:
    """A job the broker has recorded and queued."""
    created = make_job()
    assert broker.submit(created) == Admitted(created.id, Admission.CREATED)
    return created


@pytest.fixture
def running(store: JobStore, job: Job) -> Job:
    """The job, claimed by the worker holding the token ``worker-a``."""
    assert store.claim(job, "worker-a", LEASE) is Claim.CLAIMED
    return job


@pytest.fixture
def events(client: redis.Redis) -> Iterator[Any]:
    pubsub = client.pubsub()
    pubsub.subscribe(KEYS.events)
    assert pubsub.get_message()["type"] == "subscribe"
    yield pubsub
    pubsub.close()


def announced(pubsub: Any) -> list[str]:
    """The job ids published on the events channel since the last look."""
    messages = []
    while (message := pubsub.get_message()) is not None:
        messages.append(message["data"].decode())
    return messages


def lapse(client: redis.Redis, job: Job) -> None:
    """The job's lease runs out, as when its worker was killed."""
    client.delete(KEYS.lease(job.id))


def expire(client: redis.Redis, job: Job) -> None:
    """The job's record reaches the end of its time to live."""
    client.delete(KEYS.job(job.id))


def current(store: JobStore, job: Job) -> Job:
    found = store.get(job.id)
    assert found is not None
    return found


# --- create_or_attach ---------------------------------------------------------------------------


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


def _succeed(store: JobStore, broker: Broker, job: Job) -> None:
    assert store.succeed(job, "worker-a", b"{}") is Written.DONE


def _fail(store: JobStore, broker: Broker, job: Job) -> None:
    assert store.fail(job, "worker-a", DicomNotFound("no such series")) is Written.DONE


def _cancel(store: JobStore, broker: Broker, job: Job) -> None:
    assert broker.cancel(job) is Terminated.TERMINATED


@pytest.mark.parametrize(
    "finish", [_succeed, _fail, _cancel], ids=["succeeded", "failed", "cancel"]
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
    _succeed(store, broker, running)
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


# --- claim --------------------------------------------------------------------------------------


def test_claim(client: redis.Redis, store: JobStore, broker: Broker, job: Job, events: Any) -> None:
    assert store.claim(job, "worker-a", LEASE) is Claim.CLAIMED
    claimed = current(store, job)
    assert claimed.state is JobState.FETCHING
    assert claimed.attempts == 1
    assert claimed.started_at is not None and claimed.started_at >= job.created_at
    assert claimed.updated_at == claimed.started_at
    assert (claimed.request, claimed.queue, claimed.created_at) == (
        job.request,
        job.queue,
        job.created_at,
    )
    assert broker.queued_count() == 0
    assert 0 < client.pttl(KEYS.lease(job.id)) <= LEASE * 1000
    assert store.abandoned() == []
    assert announced(events) == [job.id]


def test_a_second_claim_is_busy(store: JobStore, running: Job, events: Any) -> None:
    assert store.claim(running, "worker-b", LEASE) is Claim.BUSY
    assert store.claim(running, "worker-a", LEASE) is Claim.BUSY
    assert current(store, running).attempts == 1
    assert announced(events) == []


@pytest.mark.parametrize(
    "finish", [_succeed, _fail, _cancel], ids=["succeeded", "failed", "cancel"]
)
def test_a_finished_job_is_not_claimed(
    store: JobStore, broker: Broker, running: Job, finish: Callable[..., None]
) -> None:
    finish(store, broker, running)
    before = current(store, running)
    assert store.claim(running, "worker-b", LEASE) is Claim.FINISHED
    assert current(store, running) == before


def test_a_cancelled_queued_job_is_not_claimed(store: JobStore, broker: Broker, job: Job) -> None:
    assert broker.cancel(job) is Terminated.TERMINATED
    assert store.claim(job, "worker-a", LEASE) is Claim.FINISHED
    assert current(store, job).state is JobState.CANCELLED


def test_a_missing_job_is_not_claimed(client: redis.Redis, store: JobStore) -> None:
    never_recorded = make_job()
    assert store.claim(never_recorded, "worker-a", LEASE) is Claim.MISSING
    assert store.get(never_recorded.id) is None
    assert not client.exists(KEYS.lease(never_recorded.id))


def test_a_job_whose_lease_ran_out_can_be_claimed_again(store: JobStore, job: Job) -> None:
    assert store.claim(job, "worker-a", 0.01) is Claim.CLAIMED
    time.sleep(0.05)  # the lease (10 ms) runs out
    assert store.claim(job, "worker-b", LEASE) is Claim.CLAIMED
    assert current(store, job).attempts == 2
    assert store.update(job.id, "worker-a", {"bytes_fetched": "1"}, True) is Written.LOST
    assert store.update(job.id, "worker-b", {"bytes_fetched": "2"}, True) is Written.DONE


# --- update -------------------------------------------------------------------------------------


def test_update_with_the_lease(
    client: redis.Redis, store: JobStore, running: Job, events: Any
) -> None:
    before = current(store, running)
    client.expire(KEYS.job(running.id), 60)
    fields = {"state": JobState.INFERRING.value, "inferring_at": repr(time.time())}
    assert store.update(running.id, "worker-a", fields, announce=True) is Written.DONE
    after = current(store, running)
    assert after.state is JobState.INFERRING
    assert after.inferring_at is not None
    assert after.updated_at >= before.updated_at
    assert after.attempts == 1
    assert client.ttl(KEYS.job(running.id)) > 60  # the time to live starts again
    assert announced(events) == [running.id]


def test_progress_is_recorded_but_not_announced(store: JobStore, running: Job, events: Any) -> None:
    fields = {"instances_fetched": "12", "bytes_fetched": "6291456", "instances_total": "40"}
    assert store.update(running.id, "worker-a", fields, announce=False) is Written.DONE
    after = current(store, running)
    assert (after.instances_fetched, after.bytes_fetched, after.instances_total) == (
        12,
        6_291_456,
        40,
    )
    assert after.state is JobState.FETCHING
    assert announced(events) == []


def test_update_after_cancel_is_ended(
    store: JobStore, broker: Broker, running: Job, events: Any
) -> None:
    assert broker.cancel(running) is Terminated.TERMINATED
    announced(events)
    fields = {"state": JobState.INFERRING.value, "bytes_fetched": "9"}
    assert store.update(running.id, "worker-a", fields, announce=True) is Written.ENDED
    after = current(store, running)
    assert after.state is JobState.CANCELLED
    assert after.bytes_fetched == 0
    assert announced(events) == []


def test_update_without_the_lease_is_lost(
    client: redis.Redis, store: JobStore, running: Job, events: Any
) -> None:
    fields = {"state": JobState.INFERRING.value}
    assert store.update(running.id, "worker-b", fields, announce=True) is Written.LOST
    lapse(client, running)
    assert store.update(running.id, "worker-a", fields, announce=True) is Written.LOST
    assert current(store, running).state is JobState.FETCHING
    assert announced(events) == []


def test_update_after_the_record_expired_is_gone_and_leaves_nothing(
    client: redis.Redis, store: JobStore, running: Job, events: Any
) -> None:
    expire(client, running)
    fields = {"state": JobState.INFERRING.value, "bytes_fetched": "9"}
    assert store.update(running.id, "worker-a", fields, announce=True) is Written.GONE
    assert not client.exists(KEYS.job(running.id))
    assert store.get(running.id) is None
    assert announced(events) == []


# --- succeed and fail ---------------------------------------------------------------------------

RESULT = b'{"1.2.3": {"metadata": []}}'


def test_succeed(
    client: redis.Redis, store: JobStore, broker: Broker, running: Job, events: Any
) -> None:
    assert store.succeed(running, "worker-a", RESULT) is Written.DONE
    done = current(store, running)
    assert done.state is JobState.SUCCEEDED
    assert done.error is None
    assert done.finished_at is not None and done.finished_at == done.updated_at
    assert store.get_result(running.id) == RESULT
    assert broker.cached(running.fingerprint) == (done.id, RESULT)
    assert not client.exists(KEYS.lease(running.id))
    assert store.abandoned() == []
    assert 0 < client.ttl(KEYS.result(running.id)) <= TTL
    assert 0 < client.ttl(KEYS.job(running.id)) <= TTL
    assert announced(events) == [running.id]
    again = make_job()  # the broker answers from the cache; asked for a fresh run, a new job
    assert broker.submit(again, use_cached=False) == Admitted(again.id, Admission.CREATED)


def test_nothing_is_cached_before_a_job_succeeds(broker: Broker, running: Job) -> None:
    assert broker.cached(running.fingerprint) is None


def test_the_cache_lasts_only_as_long_as_the_result(
    client: redis.Redis, store: JobStore, broker: Broker, running: Job
) -> None:
    assert store.succeed(running, "worker-a", RESULT) is Written.DONE
    client.delete(KEYS.result(running.id))
    assert broker.cached(running.fingerprint) is None


def test_succeed_after_cancel_drops_the_result(
    store: JobStore, broker: Broker, running: Job, events: Any
) -> None:
    assert broker.cancel(running) is Terminated.TERMINATED
    announced(events)
    assert store.succeed(running, "worker-a", RESULT) is Written.ENDED
    assert store.get_result(running.id) is None
    assert current(store, running).state is JobState.CANCELLED
    assert broker.cached(running.fingerprint) is None
    assert announced(events) == []


def test_succeed_without_the_lease_drops_the_result(
    client: redis.Redis, store: JobStore, broker: Broker, running: Job
) -> None:
    lapse(client, running)
    assert store.succeed(running, "worker-a", RESULT) is Written.LOST
    assert store.get_result(running.id) is None
    assert current(store, running).state is JobState.FETCHING
    assert broker.cached(running.fingerprint) is None


def test_succeed_after_the_record_expired_leaves_nothing(
    client: redis.Redis, store: JobStore, broker: Broker, running: Job
) -> None:
    expire(client, running)
    assert store.succeed(running, "worker-a", RESULT) is Written.GONE
    assert store.get(running.id) is None
    assert store.get_result(running.id) is None
    assert not client.exists(KEYS.job(running.id))
    assert broker.cached(running.fingerprint) is None


def test_a_stale_worker_finishing_late_keeps_the_result_of_the_run_that_succeeded(
    client: redis.Redis, store: JobStore, broker: Broker, running: Job
) -> None:
    """Worker A stalls past its lease; the job is queued again and worker B completes it.
    When A wakes and reports its own result, its write is refused, and B's result stays."""
    lapse(client, running)
    assert store.requeue_abandoned(running, max_attempts=3) is Requeued.REQUEUED
    assert store.claim(running, "worker-b", LEASE) is Claim.CLAIMED
    assert store.succeed(running, "worker-b", b'{"by": "b"}') is Written.DONE

    assert store.succeed(running, "worker-a", b'{"by": "a"}') is Written.ENDED

    assert current(store, running).state is JobState.SUCCEEDED
    assert store.get_result(running.id) == b'{"by": "b"}'
    assert broker.cached(running.fingerprint) is not None


def test_fail_records_code_and_message(
    client: redis.Redis, store: JobStore, broker: Broker, running: Job, events: Any
) -> None:
    error = DicomNotFound("the series was not found on server b5208f48")
    assert store.fail(running, "worker-a", error) is Written.DONE
    failed = current(store, running)
    assert failed.state is JobState.FAILED
    assert failed.error == JobError(code="dicom_not_found", message=error.message)
    assert failed.finished_at is not None
    assert store.get_result(running.id) is None
    assert broker.cached(running.fingerprint) is None
    assert not client.exists(KEYS.lease(running.id))
    assert store.abandoned() == []
    assert announced(events) == [running.id]


def test_fail_after_cancel_keeps_the_cancellation(
    store: JobStore, broker: Broker, running: Job
) -> None:
    assert broker.cancel(running) is Terminated.TERMINATED
    assert store.fail(running, "worker-a", DicomNotFound("x")) is Written.ENDED
    after = current(store, running)
    assert after.state is JobState.CANCELLED
    assert after.error == JobError(code="job_cancelled", message="cancelled by a client")


def test_fail_without_the_lease_or_after_expiry_writes_nothing(
    client: redis.Redis, store: JobStore, running: Job
) -> None:
    assert store.fail(running, "worker-b", DicomNotFound("x")) is Written.LOST
    assert current(store, running).state is JobState.FETCHING
    expire(client, running)
    assert store.fail(running, "worker-a", DicomNotFound("x")) is Written.GONE
    assert not client.exists(KEYS.job(running.id))


# --- terminate ----------------------------------------------------------------------------------


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
    "finish", [_succeed, _fail, _cancel], ids=["succeeded", "failed", "cancel"]
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


# --- leases -------------------------------------------------------------------------------------


def test_renew_lease(client: redis.Redis, store: JobStore, running: Job) -> None:
    lease = KEYS.lease(running.id)
    client.pexpire(lease, 1000)
    assert store.renew_lease(running.id, "worker-b", LEASE) is Lease.LOST
    assert client.pttl(lease) <= 1000
    assert store.renew_lease(running.id, "worker-a", LEASE) is Lease.RENEWED
    assert 1000 < client.pttl(lease) <= LEASE * 1000
    lapse(client, running)
    assert store.renew_lease(running.id, "worker-a", LEASE) is Lease.LOST
    assert not client.exists(lease)


def test_release_lease(client: redis.Redis, store: JobStore, running: Job) -> None:
    assert store.release_lease(running.id, "worker-b") is Lease.LOST
    assert client.exists(KEYS.lease(running.id))
    assert store.claim(running, "worker-b", LEASE) is Claim.BUSY
    assert store.release_lease(running.id, "worker-a") is Lease.RELEASED
    assert not client.exists(KEYS.lease(running.id))
    assert store.abandoned() == []  # released by its worker: not abandoned
    assert store.release_lease(running.id, "worker-a") is Lease.LOST  # twice is harmless


def test_abandoned_lists_claimed_jobs_whose_lease_is_gone(
    client: redis.Redis, store: JobStore, broker: Broker, job: Job
) -> None:
    alive, dead = make_job(series_uid="1.2.3.1"), make_job(series_uid="1.2.3.2")
    for other in (alive, dead):
        assert broker.submit(other) == Admitted(other.id, Admission.CREATED)
        assert store.claim(other, f"worker-{other.id}", LEASE) is Claim.CLAIMED
    assert store.abandoned() == []
    lapse(client, dead)
    assert store.abandoned() == [dead.id]  # not the live one, nor the queued one


def test_requeue_an_abandoned_job(
    client: redis.Redis, store: JobStore, broker: Broker, running: Job, events: Any
) -> None:
    announced(events)
    lapse(client, running)
    assert store.requeue_abandoned(running, max_attempts=3) is Requeued.REQUEUED
    requeued = current(store, running)
    assert requeued.state is JobState.QUEUED
    assert requeued.attempts == 1
    assert requeued.error is None
    assert broker.queued_count() == 1
    assert store.abandoned() == []
    assert announced(events) == [running.id]
    # still the active job of its request
    assert broker.submit(make_job()) == Admitted(running.id, Admission.ATTACHED)
    assert store.claim(running, "worker-b", LEASE) is Claim.CLAIMED
    assert current(store, running).attempts == 2


def test_a_job_with_a_live_lease_is_not_requeued(
    store: JobStore, broker: Broker, running: Job, events: Any
) -> None:
    announced(events)
    assert store.requeue_abandoned(running, max_attempts=3) is Requeued.SKIPPED
    assert current(store, running).state is JobState.FETCHING
    assert broker.queued_count() == 0
    assert announced(events) == []


def test_a_finished_job_is_not_requeued(
    client: redis.Redis, store: JobStore, broker: Broker, running: Job
) -> None:
    assert store.succeed(running, "worker-a", RESULT) is Written.DONE
    client.zadd(KEYS.running, {running.id: time.time()})  # as if the finish raced the reaper
    assert store.abandoned() == [running.id]
    assert store.requeue_abandoned(running, max_attempts=3) is Requeued.SKIPPED
    assert current(store, running).state is JobState.SUCCEEDED
    assert store.abandoned() == []
    assert broker.queued_count() == 0


def test_after_max_attempts_an_abandoned_job_fails(
    client: redis.Redis, store: JobStore, broker: Broker, job: Job, events: Any
) -> None:
    for attempt in (1, 2):
        assert store.claim(job, f"worker-{attempt}", LEASE) is Claim.CLAIMED
        lapse(client, job)
        assert store.requeue_abandoned(job, max_attempts=3) is Requeued.REQUEUED
    assert store.claim(job, "worker-3", LEASE) is Claim.CLAIMED
    lapse(client, job)
    announced(events)

    assert store.requeue_abandoned(job, max_attempts=3) is Requeued.FAILED

    failed = current(store, job)
    assert failed.state is JobState.FAILED
    assert failed.attempts == 3
    assert failed.error is not None and failed.error.code == "worker_lost"
    assert "3 times" in failed.error.message
    assert failed.finished_at is not None
    assert broker.queued_count() == 0
    assert store.abandoned() == []
    assert announced(events) == [job.id]
    assert store.claim(job, "worker-4", LEASE) is Claim.FINISHED
    again = make_job()
    assert broker.submit(again) == Admitted(again.id, Admission.CREATED)


# --- model slots --------------------------------------------------------------------------------


def test_acquire_slot_respects_the_limit(store: JobStore) -> None:
    assert store.acquire_slot(MODEL, "job-a", 2, 60) is Slot.TAKEN
    assert store.acquire_slot(MODEL, "job-b", 2, 60) is Slot.TAKEN
    assert store.acquire_slot(MODEL, "job-c", 2, 60) is Slot.FULL
    assert store.acquire_slot(MODEL, "job-a", 2, 60) is Slot.TAKEN  # a holder asking again keeps it
    # each model its own places
    assert store.acquire_slot(OTHER_MODEL, "job-c", 2, 60) is Slot.TAKEN


def test_release_slot_frees_a_place(store: JobStore) -> None:
    assert store.acquire_slot(MODEL, "job-a", 1, 60) is Slot.TAKEN
    assert store.acquire_slot(MODEL, "job-b", 1, 60) is Slot.FULL
    store.release_slot(MODEL, "job-a")
    assert store.acquire_slot(MODEL, "job-b", 1, 60) is Slot.TAKEN


def test_an_expired_slot_is_reclaimed(store: JobStore) -> None:
    assert store.acquire_slot(MODEL, "job-a", 1, 0.01) is Slot.TAKEN
    time.sleep(0.05)  # its worker died and stopped renewing
    assert store.acquire_slot(MODEL, "job-b", 1, 60) is Slot.TAKEN
    assert store.acquire_slot(MODEL, "job-a", 1, 60) is Slot.FULL


def test_a_renewed_slot_outlives_its_first_hold(client: redis.Redis, store: JobStore) -> None:
    assert store.acquire_slot(MODEL, "job-a", 1, 0.01) is Slot.TAKEN
    store.renew_slot(MODEL, "job-a", 60)
    store.renew_slot(MODEL, "job-z", 60)  # renewing a slot never held takes none
    time.sleep(0.05)
    assert store.acquire_slot(MODEL, "job-b", 1, 60) is Slot.FULL
    assert client.zscore(KEYS.model_slots(MODEL), "job-z") is None


# --- recent -------------------------------------------------------------------------------------


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


# --- the events channel, step by step ----------------------------------------------------------


def test_which_steps_announce(client: redis.Redis, store: JobStore, broker: Broker) -> None:
    pubsub = client.pubsub()
    pubsub.subscribe(KEYS.events)
    pubsub.get_message()
    job = make_job()
    steps: list[tuple[str, Callable[[], object]]] = [
        ("create", lambda: broker.submit(job)),
        ("claim", lambda: store.claim(job, "worker-a", LEASE)),
        ("busy claim", lambda: store.claim(job, "worker-b", LEASE)),
        ("progress", lambda: store.update(job.id, "worker-a", {"bytes_fetched": "1"}, False)),
        ("stage", lambda: store.update(job.id, "worker-a", {"state": "inferring"}, True)),
        ("lost write", lambda: store.update(job.id, "worker-b", {"state": "inferring"}, True)),
        ("renew", lambda: store.renew_lease(job.id, "worker-a", LEASE)),
        ("lapse", lambda: lapse(client, job)),
        ("requeue", lambda: store.requeue_abandoned(job, 3)),
        ("claim again", lambda: store.claim(job, "worker-b", LEASE)),
        ("succeed", lambda: store.succeed(job, "worker-b", RESULT)),
        ("release", lambda: store.release_lease(job.id, "worker-b")),
        ("cancel too late", lambda: broker.cancel(job)),
    ]
    seen = {}
    for name, step in steps:
        step()
        seen[name] = len(announced(pubsub))
    pubsub.close()
    assert seen == {
        "create": 0,
        "claim": 1,
        "busy claim": 0,
        "progress": 0,
        "stage": 1,
        "lost write": 0,
        "renew": 0,
        "lapse": 0,
        "requeue": 1,
        "claim again": 1,
        "succeed": 1,
        "release": 0,
        "cancel too late": 0,
    }


# --- Redis away ---------------------------------------------------------------------------------


def test_redis_away_is_queue_unavailable_for_the_worker(
    server: fakeredis.FakeServer, store: JobStore, running: Job
) -> None:
    server.connected = False
    for call in (
        lambda: store.get(running.id),
        lambda: store.get_result(running.id),
        lambda: store.claim(running, "worker-b", LEASE),
        lambda: store.update(running.id, "worker-a", {"bytes_fetched": "1"}, False),
        lambda: store.succeed(running, "worker-a", RESULT),
        lambda: store.fail(running, "worker-a", DicomNotFound("x")),
        lambda: store.renew_lease(running.id, "worker-a", LEASE),
        lambda: store.acquire_slot(MODEL, running.id, 1, 60),
        lambda: store.abandoned(),
    ):
        with pytest.raises(QueueUnavailable):
            call()


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


def test_another_prefix_sees_other_jobs(client: redis.Redis, job: Job) -> None:
    assert JobStore(client, TTL, JobKeys("other")).get(job.id) is None


# --- wait_for_job -------------------------------------------------------------------------------


class _ReadSignal(AsyncJobStore):
    """Tells when the waiter has read the job once, so a test changes it only afterwards."""

    def __init__(self, client: Any) -> None:
        super().__init__(client, TTL, KEYS)
        self.read = asyncio.Event()

    async def get(self, job_id: str) -> Job | None:
        job = await super().get(job_id)
        self.read.set()
        return job


def waiting(
    server: fakeredis.FakeServer,
    scenario: Callable[[_ReadSignal, JobEvents], Awaitable[T]],
) -> T:
    """Run ``scenario`` with the broker's store and its events subscription started."""

    async def main() -> T:
        client = fakeredis.FakeAsyncRedis(server=server)
        events = JobEvents(client, KEYS.events)
        await events.start()
        try:
            return await asyncio.wait_for(scenario(_ReadSignal(client), events), 10)
        finally:
            await events.stop()
            await client.aclose()

    return asyncio.run(main())


async def _subscribed(client: Any) -> None:
    while (await client.pubsub_numsub(KEYS.events))[0][1] < 1:
        await asyncio.sleep(0.01)


def test_wait_returns_a_finished_job_at_once(
    server: fakeredis.FakeServer, store: JobStore, running: Job
) -> None:
    assert store.succeed(running, "worker-a", RESULT) is Written.DONE
    found = waiting(server, lambda jobs, events: wait_for_job(jobs, events, running.id, 60))
    assert found is not None and found.state is JobState.SUCCEEDED


def test_wait_for_a_missing_job_is_none(server: fakeredis.FakeServer) -> None:
    assert waiting(server, lambda jobs, events: wait_for_job(jobs, events, "no-such", 60)) is None


@pytest.mark.parametrize("timeout", [0.0, 0.05])
def test_wait_returns_the_job_as_it_stands_after_the_timeout(
    server: fakeredis.FakeServer, job: Job, timeout: float
) -> None:
    found = waiting(server, lambda jobs, events: wait_for_job(jobs, events, job.id, timeout))
    assert found == job


def test_wait_wakes_when_the_worker_finishes_the_job(
    server: fakeredis.FakeServer,
    store: JobStore,
    running: Job,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broker_jobs, "_RECHECK_SECONDS", 60.0)  # only an event can wake it

    async def scenario(jobs: _ReadSignal, events: JobEvents) -> Job | None:
        async def worker() -> None:
            await jobs.read.wait()
            await _subscribed(jobs.redis)
            assert store.succeed(running, "worker-a", RESULT) is Written.DONE

        finishing = asyncio.create_task(worker())
        found = await wait_for_job(jobs, events, running.id, 60)
        await finishing
        return found

    found = waiting(server, scenario)
    assert found is not None and found.state is JobState.SUCCEEDED


def test_wait_wakes_when_another_request_cancels_the_job(
    server: fakeredis.FakeServer, job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_jobs, "_RECHECK_SECONDS", 60.0)

    async def scenario(jobs: _ReadSignal, events: JobEvents) -> Job | None:
        async def cancel() -> None:
            await jobs.read.wait()
            await _subscribed(jobs.redis)
            outcome = await jobs.terminate(job, JobState.CANCELLED, JobCancelled("no"))
            assert outcome is Terminated.TERMINATED

        cancelling = asyncio.create_task(cancel())
        found = await wait_for_job(jobs, events, job.id, 60)
        await cancelling
        return found

    found = waiting(server, scenario)
    assert found is not None and found.state is JobState.CANCELLED


def test_an_announcement_of_an_unfinished_change_keeps_the_waiter_waiting(
    server: fakeredis.FakeServer, store: JobStore, running: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_jobs, "_RECHECK_SECONDS", 60.0)

    async def scenario(jobs: _ReadSignal, events: JobEvents) -> Job | None:
        async def stage() -> None:
            await jobs.read.wait()
            await _subscribed(jobs.redis)
            fields = {"state": JobState.INFERRING.value}
            assert store.update(running.id, "worker-a", fields, True) is Written.DONE

        staging = asyncio.create_task(stage())
        found = await wait_for_job(jobs, events, running.id, 0.3)
        await staging
        return found

    found = waiting(server, scenario)
    assert found is not None and found.state is JobState.INFERRING
