"""reap_once on fakeredis: jobs whose worker died are queued again, or failed for good."""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any

import pytest
import redis

from model_proxy.shared.config.schema import Level, Task
from model_proxy.shared.jobs import (
    Claim,
    Job,
    JobKeys,
    JobState,
    JobStore,
    Lease,
    Written,
    job_to_fields,
    new_job,
)
from model_proxy.shared.jobs.operations import JobOperations
from model_proxy.shared.request import InferenceRequest
from model_proxy.workers.reaper import Reaper, reap_once, recover_queued
from tests.unit.jobs.support import run_script

TTL = 3600
LEASE = 30.0
MAX_ATTEMPTS = 3
KEYS = JobKeys()


def make_job(series_uid: str, queue: str = "gpu") -> Job:
    request = InferenceRequest(
        task=Task.SEGMENTATION,
        model_id="cf8063dc-d4bb-4b68-8e74-eba77c248c8b",
        server_id="b5208f48-f748-4339-9402-d1148dab571e",
        level=Level.SERIES,
        study_uid="1.2.3",
        series_uid=series_uid,
    )
    return new_job(request, queue=queue)


class Enqueued:
    """Stands in for sending the task: records each (job id, queue) it is given."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    def __call__(self, job_id: str, queue: str) -> None:
        self.calls.append((job_id, queue))


@pytest.fixture
def store(client: redis.Redis) -> JobStore:
    return JobStore(client, TTL, KEYS)


@pytest.fixture
def enqueue() -> Enqueued:
    return Enqueued()


def record(client: redis.Redis, job: Job) -> None:
    """The record as the broker writes it (the hash, the index and the model's queue)."""
    fields: dict[Any, Any] = job_to_fields(job)
    client.hset(KEYS.job(job.id), mapping=fields)
    client.expire(KEYS.job(job.id), TTL)
    client.set(KEYS.active(job.fingerprint), job.id, ex=TTL)
    client.zadd(KEYS.index, {job.id: job.created_at})
    client.zadd(KEYS.queued(job.request.model_id), {job.id: job.created_at})


def running(client: redis.Redis, store: JobStore, job: Job, token: str) -> Job:
    record(client, job)
    assert store.claim(job, token, LEASE) is Claim.CLAIMED
    return job


def lapse(client: redis.Redis, job: Job) -> None:
    """The worker was killed: its lease runs out."""
    client.delete(KEYS.lease(job.id))


def state(store: JobStore, job: Job) -> JobState:
    found = store.get(job.id)
    assert found is not None
    return found.state


def queued(client: redis.Redis, job: Job) -> bool:
    return client.zscore(KEYS.queued(job.request.model_id), job.id) is not None


def test_a_job_whose_lease_ran_out_is_queued_again_on_its_queue(
    client: redis.Redis, store: JobStore, enqueue: Enqueued
) -> None:
    job = running(client, store, make_job("1.2.3.1", queue="gpu-large"), "worker-a")
    lapse(client, job)

    assert reap_once(store, MAX_ATTEMPTS, enqueue) == 1

    assert enqueue.calls == [(job.id, "gpu-large")]
    assert state(store, job) is JobState.QUEUED
    assert queued(client, job)
    assert store.abandoned() == []
    assert reap_once(store, MAX_ATTEMPTS, enqueue) == 0  # once only
    assert enqueue.calls == [(job.id, "gpu-large")]


def test_a_job_whose_lease_expired_by_itself_is_queued_again(
    client: redis.Redis, store: JobStore, enqueue: Enqueued
) -> None:
    job = make_job("1.2.3.1")
    record(client, job)
    assert store.claim(job, "worker-a", 0.01) is Claim.CLAIMED
    time.sleep(0.05)  # no heartbeat renews the 10 ms lease

    assert reap_once(store, MAX_ATTEMPTS, enqueue) == 1
    assert enqueue.calls == [(job.id, "gpu")]


def test_a_job_with_a_live_lease_is_left_alone(
    client: redis.Redis, store: JobStore, enqueue: Enqueued
) -> None:
    job = running(client, store, make_job("1.2.3.1"), "worker-a")

    assert reap_once(store, MAX_ATTEMPTS, enqueue) == 0

    assert enqueue.calls == []
    assert state(store, job) is JobState.FETCHING
    assert not queued(client, job)
    assert store.renew_lease(job.id, "worker-a", LEASE) is Lease.RENEWED


def test_only_the_dead_workers_jobs_are_queued_again(
    client: redis.Redis, store: JobStore, enqueue: Enqueued
) -> None:
    alive = running(client, store, make_job("1.2.3.1"), "worker-a")
    dead = running(client, store, make_job("1.2.3.2", queue="cpu"), "worker-b")
    waiting = make_job("1.2.3.3")
    record(client, waiting)
    lapse(client, dead)

    assert reap_once(store, MAX_ATTEMPTS, enqueue) == 1

    assert enqueue.calls == [(dead.id, "cpu")]
    assert (state(store, alive), state(store, dead), state(store, waiting)) == (
        JobState.FETCHING,
        JobState.QUEUED,
        JobState.QUEUED,
    )


def test_after_max_attempts_the_job_fails_and_is_not_enqueued(
    client: redis.Redis, store: JobStore, enqueue: Enqueued
) -> None:
    job = make_job("1.2.3.1")
    record(client, job)
    for attempt in range(1, MAX_ATTEMPTS):
        assert store.claim(job, f"worker-{attempt}", LEASE) is Claim.CLAIMED
        lapse(client, job)
        assert reap_once(store, MAX_ATTEMPTS, enqueue) == 1
    assert store.claim(job, "worker-last", LEASE) is Claim.CLAIMED
    lapse(client, job)
    ended: list[str] = []

    assert reap_once(store, MAX_ATTEMPTS, enqueue, ended.append) == 0

    assert ended == [job.id]  # its webhooks are queued

    assert enqueue.calls == [(job.id, "gpu")] * (MAX_ATTEMPTS - 1)
    failed = store.get(job.id)
    assert failed is not None
    assert failed.state is JobState.FAILED
    assert failed.attempts == MAX_ATTEMPTS
    assert failed.error is not None and failed.error.code == "worker_lost"
    assert failed.lost_runs == MAX_ATTEMPTS
    assert f"stopped {MAX_ATTEMPTS} times" in failed.error.message
    assert not queued(client, job)
    assert store.abandoned() == []
    assert client.get(KEYS.active(job.fingerprint)) is None  # a new request starts afresh
    assert store.claim(job, "worker-next", LEASE) is Claim.FINISHED


def test_a_job_that_finished_meanwhile_is_left_finished(
    client: redis.Redis, store: JobStore, enqueue: Enqueued
) -> None:
    job = running(client, store, make_job("1.2.3.1"), "worker-a")
    assert store.succeed(job, "worker-a", b"{}") is Written.DONE
    client.zadd(KEYS.running, {job.id: time.time()})  # as if the reaper read the list before

    assert reap_once(store, MAX_ATTEMPTS, enqueue) == 0

    assert enqueue.calls == []
    assert state(store, job) is JobState.SUCCEEDED
    assert store.get_result(job.id) == b"{}"
    assert store.abandoned() == []


def test_a_dead_workers_job_whose_record_expired_is_forgotten(
    client: redis.Redis, store: JobStore, enqueue: Enqueued
) -> None:
    job = running(client, store, make_job("1.2.3.1"), "worker-a")
    lapse(client, job)
    client.delete(KEYS.job(job.id))  # the record's time to live ran out too

    assert reap_once(store, MAX_ATTEMPTS, enqueue) == 0

    assert enqueue.calls == []
    assert store.get(job.id) is None
    assert store.abandoned() == []  # not looked up again on every round, forever


def test_retries_within_a_run_are_not_counted_as_worker_deaths(
    client: redis.Redis, store: JobStore, enqueue: Enqueued
) -> None:
    """A run that retried transient failures up to ``max_attempts`` and then lost its worker
    died once: it is queued again, not failed as ``worker_lost``."""
    job = running(client, store, make_job("1.2.3.1"), "worker-a")
    retried = {"attempts": str(MAX_ATTEMPTS), "state": JobState.FETCHING.value}
    assert store.update(job.id, "worker-a", retried, announce=True) is Written.DONE
    lapse(client, job)

    assert reap_once(store, MAX_ATTEMPTS, enqueue) == 1

    assert state(store, job) is JobState.QUEUED
    assert enqueue.calls == [(job.id, "gpu")]


# --- queued jobs whose task message was lost ---------------------------------------------------

BOUND = 0.2


def waited(client: redis.Redis, job: Job, seconds: float) -> None:
    """The job has been queued, unchanged, for ``seconds``."""
    client.hset(KEYS.job(job.id), "updated_at", repr(time.time() - seconds))


def queued_long_ago(client: redis.Redis, store: JobStore, broker_store: Any, series: str) -> Job:
    job = make_job(series).model_copy(update={"created_at": time.time() - 10})
    broker_store(job)
    waited(client, job, 10)
    return job


class Messages:
    """Stands in for the look at kombu's lists: the job ids whose message is waiting."""

    def __init__(self, *job_ids: str) -> None:
        self.waiting = set(job_ids)
        self.asked: list[set[str]] = []

    def __call__(self, queues: Iterable[str]) -> set[str]:
        self.asked.append(set(queues))
        return self.waiting


@pytest.fixture
def create(client: redis.Redis) -> Any:
    """Records a job as the API does (the script), without sending its task."""
    operations = JobOperations(KEYS, TTL)

    def create_job(job: Job) -> None:
        run_script(client, operations.create_or_attach(job, use_cached=False))

    return create_job


def test_a_queued_job_without_a_task_message_is_sent_again_once_per_bound(
    client: redis.Redis, store: JobStore, enqueue: Enqueued, create: Any
) -> None:
    lost = queued_long_ago(client, store, create, "1.2.3.1")
    messages = Messages()

    assert recover_queued(store, BOUND, messages, enqueue) == 1
    assert enqueue.calls == [(lost.id, "gpu")]
    assert messages.asked == [{"gpu"}]
    assert state(store, lost) is JobState.QUEUED

    assert recover_queued(store, BOUND, messages, enqueue) == 0  # not again before the bound
    time.sleep(BOUND * 1.5)
    assert recover_queued(store, BOUND, messages, enqueue) == 1  # that send was lost too
    assert enqueue.calls == [(lost.id, "gpu")] * 2


def test_a_queued_job_whose_message_waits_or_that_is_young_is_left_alone(
    client: redis.Redis, store: JobStore, enqueue: Enqueued, create: Any
) -> None:
    waiting = queued_long_ago(client, store, create, "1.2.3.1")
    young = make_job("1.2.3.2")
    create(young)
    running_job = queued_long_ago(client, store, create, "1.2.3.3")
    assert store.claim(running_job, "worker-a", LEASE) is Claim.CLAIMED

    assert recover_queued(store, BOUND, Messages(waiting.id), enqueue) == 0

    assert enqueue.calls == []


def test_a_failing_enqueue_loses_neither_the_round_nor_the_job(
    client: redis.Redis, store: JobStore, create: Any
) -> None:
    long_ago = {"created_at": time.time() - 10}
    first = running(client, store, make_job("1.2.3.1").model_copy(update=long_ago), "worker-a")
    second = running(client, store, make_job("1.2.3.2").model_copy(update=long_ago), "worker-b")
    lapse(client, first)
    lapse(client, second)
    sent: list[str] = []

    def broker_away_once(job_id: str, queue: str) -> None:
        if not sent and job_id == first.id:
            sent.append("failed")
            raise OSError("connection refused")
        sent.append(job_id)

    assert reap_once(store, MAX_ATTEMPTS, broker_away_once) == 1  # no exception: the next job
    assert second.id in sent
    assert state(store, first) is JobState.QUEUED  # not lost: still queued
    waited(client, first, 10)

    assert recover_queued(store, BOUND, Messages(second.id), broker_away_once) == 1
    assert sent[-1] == first.id


def test_the_reaper_thread_outlives_a_failing_enqueue_and_sends_the_job_later(
    client: redis.Redis, store: JobStore, create: Any
) -> None:
    lost = queued_long_ago(client, store, create, "1.2.3.1")
    attempts: list[str] = []

    def enqueue_failing_first(job_id: str, queue: str) -> None:
        attempts.append(job_id)
        if len(attempts) == 1:
            raise ConnectionError("the broker is away")

    reaper = Reaper(
        store,
        client,
        interval=0.02,
        max_attempts=MAX_ATTEMPTS,
        queued_bound=BOUND,
        enqueue=enqueue_failing_first,
        with_messages=Messages(),
    )
    reaper.start()
    try:
        deadline = time.monotonic() + 5
        while len(attempts) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert attempts == [lost.id, lost.id]
        assert reaper.alive
    finally:
        reaper.stop()
