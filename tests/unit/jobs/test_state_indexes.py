"""Each job sits in the index of its state only (``<prefix>:jobs:<state>``), moved there by
every scripted step, so that ``/jobs?state=`` reads one index and never scans."""

from __future__ import annotations

import time

import redis

from model_proxy.shared.errors import JobCancelled
from model_proxy.shared.jobs import Claim, Job, JobState, JobStore, Requeued, Written
from tests.unit.jobs.support import KEYS, LEASE, TTL, Broker, lapse, make_job


def indexed_in(client: redis.Redis, job: Job) -> list[str]:
    """The states whose index holds the job."""
    return [
        state.value
        for state in JobState
        if client.zscore(KEYS.in_state(state.value), job.id) is not None
    ]


def test_a_job_moves_through_the_state_indexes_as_it_runs(
    client: redis.Redis, store: JobStore, broker: Broker, job: Job
) -> None:
    assert indexed_in(client, job) == ["queued"]
    assert client.zscore(KEYS.in_state("queued"), job.id) == job.created_at
    assert store.claim(job, "worker-a", LEASE) is Claim.CLAIMED
    assert indexed_in(client, job) == ["fetching"]
    inferring = {"state": JobState.INFERRING.value}
    assert store.update(job.id, "worker-a", inferring, announce=True) is Written.DONE
    assert indexed_in(client, job) == ["inferring"]
    assert store.update(job.id, "worker-a", {"bytes_fetched": "9"}, False) is Written.DONE
    assert indexed_in(client, job) == ["inferring"]
    assert store.succeed(job, "worker-a", b"{}") is Written.DONE
    assert indexed_in(client, job) == ["succeeded"]
    assert [found.id for found in broker.recent(5, JobState.SUCCEEDED)] == [job.id]
    assert broker.recent(5, JobState.INFERRING) == []


def test_requeued_failed_and_cancelled_jobs_move_too(
    client: redis.Redis, store: JobStore, broker: Broker, job: Job
) -> None:
    assert store.claim(job, "worker-a", LEASE) is Claim.CLAIMED
    lapse(client, job)
    assert store.requeue_abandoned(job, 3) is Requeued.REQUEUED
    assert indexed_in(client, job) == ["queued"]
    assert store.claim(job, "worker-b", LEASE) is Claim.CLAIMED
    lapse(client, job)
    assert store.requeue_abandoned(job, 2) is Requeued.FAILED
    assert indexed_in(client, job) == ["failed"]

    other = make_job(study_uid="1.2.4")
    broker.submit(other)
    error = JobCancelled("cancelled by a client")
    broker.run(lambda jobs: jobs.terminate(other, JobState.CANCELLED, error))
    assert indexed_in(client, other) == ["cancelled"]


def test_creating_a_job_prunes_entries_older_than_the_ttl_from_every_index(
    client: redis.Redis, broker: Broker
) -> None:
    stale = time.time() - TTL - 60
    for state in JobState:
        client.zadd(KEYS.in_state(state.value), {f"old-{state.value}": stale})
    client.zadd(KEYS.index, {"old": stale})

    broker.submit(make_job())

    assert all(client.zcard(KEYS.in_state(state.value)) <= 1 for state in JobState)
    assert client.zscore(KEYS.index, "old") is None
