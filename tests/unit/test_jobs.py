"""Job records: the hash codec, and the workers' JobStore on fakeredis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis

from shared.config.schema import Level, Task
from shared.errors import DicomNotFound, QueueUnavailable
from shared.jobs import (
    Job,
    JobError,
    JobKeys,
    JobState,
    JobStore,
    job_from_fields,
    job_to_fields,
    new_job,
)
from shared.request import DataFilter, InferenceRequest

TTL = 3600

REQUEST = InferenceRequest(
    task=Task.SEGMENTATION,
    model_id="cf8063dc-d4bb-4b68-8e74-eba77c248c8b",
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


# --- the codec ----------------------------------------------------------------------------------


def test_a_new_job_is_queued_with_a_fresh_id() -> None:
    first, second = new_job(REQUEST), new_job(REQUEST)
    assert first.state is JobState.QUEUED
    assert first.id != second.id
    assert len(first.id) == 32 and int(first.id, 16) >= 0
    assert first.created_at == first.updated_at
    assert (first.error, first.instances_fetched, first.bytes_fetched) == (None, 0, 0)


def full_job() -> Job:
    return new_job(REQUEST).model_copy(
        update={
            "state": JobState.FAILED,
            "created_at": 1764300000.123456789,
            "updated_at": 1764300042.1,
            "error": JobError(code="dicom_not_found", message='the "series" was not found'),
            "instances_fetched": 300,
            "bytes_fetched": 157_286_400,
        }
    )


@pytest.mark.parametrize("job", [new_job(REQUEST), full_job()], ids=["new", "full"])
def test_round_trip(job: Job) -> None:
    fields = job_to_fields(job)
    assert all(isinstance(value, str) for value in fields.values())
    assert job_from_fields(fields) == job


def test_round_trip_through_bytes_as_redis_returns_them() -> None:
    job = full_job()
    as_bytes = {k.encode(): v.encode() for k, v in job_to_fields(job).items()}
    assert job_from_fields(as_bytes) == job


def test_timestamps_survive_exactly() -> None:
    job = full_job()
    rebuilt = job_from_fields(job_to_fields(job))
    assert rebuilt is not None
    assert (rebuilt.created_at, rebuilt.updated_at) == (job.created_at, job.updated_at)


def test_no_fields_is_no_job() -> None:
    assert job_from_fields({}) is None


def test_a_record_without_progress_fields_reads_as_zero() -> None:
    fields = job_to_fields(new_job(REQUEST))
    del fields["instances_fetched"], fields["bytes_fetched"], fields["error"]
    job = job_from_fields(fields)
    assert job is not None
    assert (job.error, job.instances_fetched, job.bytes_fetched) == (None, 0, 0)


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
    keys = JobKeys()
    assert keys.job("abc") == "model-proxy:job:abc"
    assert keys.result("abc") == "model-proxy:result:abc"
    assert keys.events == "model-proxy:job-events"
    assert JobKeys("other").job("abc") == "other:job:abc"


# --- JobStore on fakeredis ----------------------------------------------------------------------


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
    return JobStore(client, TTL)


@pytest.fixture
def job(client: redis.Redis, store: JobStore) -> Job:
    """A job as the broker creates it: the hash with its time to live."""
    created = new_job(REQUEST).model_copy(update={"created_at": 1.5, "updated_at": 1.5})
    client.hset(store.keys.job(created.id), mapping=job_to_fields(created))
    client.expire(store.keys.job(created.id), TTL)
    return created


@pytest.fixture
def events(client: redis.Redis, store: JobStore) -> Iterator[Any]:
    pubsub = client.pubsub()
    pubsub.subscribe(store.keys.events)
    assert pubsub.get_message()["type"] == "subscribe"
    yield pubsub
    pubsub.close()


def announced(pubsub: Any) -> list[bytes]:
    messages = []
    while (message := pubsub.get_message()) is not None:
        messages.append(message["data"])
    return messages


def test_get(store: JobStore, job: Job) -> None:
    assert store.get(job.id) == job


def test_an_unknown_job(store: JobStore) -> None:
    assert store.get("no-such-job") is None
    assert store.get_result("no-such-job") is None


def test_set_state_is_recorded_and_announced(
    client: redis.Redis, store: JobStore, job: Job, events: Any
) -> None:
    store.set_state(job.id, JobState.FETCHING)
    stored = store.get(job.id)
    assert stored is not None
    assert stored.state is JobState.FETCHING
    assert stored.updated_at > job.updated_at
    assert stored.request == REQUEST
    assert announced(events) == [job.id.encode()]
    assert 0 < client.ttl(store.keys.job(job.id)) <= TTL


def test_progress_is_recorded_but_not_announced(store: JobStore, job: Job, events: Any) -> None:
    store.set_progress(job.id, 12, 6_291_456)
    stored = store.get(job.id)
    assert stored is not None
    assert (stored.instances_fetched, stored.bytes_fetched) == (12, 6_291_456)
    assert stored.state is JobState.QUEUED
    assert announced(events) == []


def test_succeed_stores_the_result_and_announces(
    client: redis.Redis, store: JobStore, job: Job, events: Any
) -> None:
    result = b'{"1.2.3": {"metadata": []}}'
    store.succeed(job.id, result)
    stored = store.get(job.id)
    assert stored is not None
    assert stored.state is JobState.SUCCEEDED
    assert stored.error is None
    assert store.get_result(job.id) == result
    assert announced(events) == [job.id.encode()]
    assert 0 < client.ttl(store.keys.result(job.id)) <= TTL
    assert 0 < client.ttl(store.keys.job(job.id)) <= TTL


def test_fail_records_code_and_message(store: JobStore, job: Job, events: Any) -> None:
    store.fail(job.id, DicomNotFound("the series was not found on server b5208f48"))
    stored = store.get(job.id)
    assert stored is not None
    assert stored.state is JobState.FAILED
    assert stored.error == JobError(
        code="dicom_not_found", message="the series was not found on server b5208f48"
    )
    assert store.get_result(job.id) is None
    assert announced(events) == [job.id.encode()]


def test_keys_with_another_prefix(client: redis.Redis, job: Job) -> None:
    other = JobStore(client, TTL, JobKeys("other"))
    assert other.get(job.id) is None


def test_redis_away_is_queue_unavailable(
    server: fakeredis.FakeServer, store: JobStore, job: Job
) -> None:
    server.connected = False
    for call in (
        lambda: store.get(job.id),
        lambda: store.get_result(job.id),
        lambda: store.set_state(job.id, JobState.INFERRING),
        lambda: store.set_progress(job.id, 1, 1),
        lambda: store.succeed(job.id, b"{}"),
        lambda: store.fail(job.id, DicomNotFound("x")),
    ):
        with pytest.raises(QueueUnavailable) as caught:
            call()
        assert caught.value.message == "Redis cannot be reached"


@pytest.mark.parametrize(
    "write",
    [
        lambda store: store.set_state("expired-job", JobState.INFERRING),
        lambda store: store.set_progress("expired-job", 3, 300),
        lambda store: store.fail("expired-job", DicomNotFound("x")),
    ],
    ids=["set_state", "set_progress", "fail"],
)
def test_a_write_to_an_expired_job_leaves_no_half_record(store: JobStore, write: Any) -> None:
    """A record that expired while its worker ran must still read as no job, not crash get()."""
    write(store)
    assert store.get("expired-job") is None
