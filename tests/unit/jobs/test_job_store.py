"""The workers' :class:`JobStore` (``shared/jobs/store.py``): claiming, writing and finishing
a job under its lease, requeueing abandoned jobs, and the model's concurrency slots."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
import redis

from model_proxy.shared.errors import DicomNotFound, QueueUnavailable
from model_proxy.shared.jobs import (
    Admission,
    Admitted,
    Claim,
    Job,
    JobError,
    JobKeys,
    JobOutput,
    JobState,
    JobStore,
    Lease,
    Requeued,
    Slot,
    Terminated,
    Written,
)
from tests.unit.jobs.support import (
    KEYS,
    LEASE,
    MODEL,
    OTHER_MODEL,
    RESULT,
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

# --- claim ------------------------------------------------------------------------------------


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
    "finish", [succeed_job, fail_job, cancel_job], ids=["succeeded", "failed", "cancel"]
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


# --- update -----------------------------------------------------------------------------------


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


# --- succeed and fail -------------------------------------------------------------------------


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


# --- leases -----------------------------------------------------------------------------------


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


# --- model slots ------------------------------------------------------------------------------


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


# --- Redis away -------------------------------------------------------------------------------


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


def test_another_prefix_sees_other_jobs(client: redis.Redis, job: Job) -> None:
    assert JobStore(client, TTL, JobKeys("other")).get(job.id) is None


# --- a later store of the objects -----------------------------------------------------------


def test_a_later_store_of_the_objects_is_recorded_on_a_succeeded_job_only(
    client: redis.Redis, store: JobStore, running: Job
) -> None:
    first = JobOutput(format="seg", sop_instance_uid="1.2.3", server="pacs-1")
    refused = JobError(code="pacs_auth_failed", message="refused")
    assert not store.record_store(running.id, [first], refused)  # still running
    assert current(store, running).store_error is None

    objects = {"seg": b"DICM-seg"}
    store.succeed(running, "worker-a", RESULT, objects, None, [first], refused)
    assert store.get_objects(running.id, ["seg", "sr"]) == objects
    stored = first.model_copy(update={"stored": True})
    assert store.record_store(running.id, [stored], None)

    done = current(store, running)
    assert done.state is JobState.SUCCEEDED
    assert (done.outputs, done.store_error) == ((stored,), None)
    assert 0 < client.ttl(KEYS.job(running.id)) <= TTL
    assert not store.record_store("0" * 32, [stored], None)
