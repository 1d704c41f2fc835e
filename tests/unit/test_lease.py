"""The lease heartbeat on fakeredis: it keeps a job's lease, and notices when it is lost."""

from __future__ import annotations

import time

import pytest
import redis

from model_proxy.shared.config.schema import Level, Task
from model_proxy.shared.jobs import Claim, Job, JobKeys, JobStore, Slot, job_to_fields, new_job
from model_proxy.shared.request import InferenceRequest
from model_proxy.workers.lease import LeaseHeartbeat

KEYS = JobKeys()
LEASE = 0.3  # renewed every 0.1 s
MODEL_ID = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"


@pytest.fixture
def store(client: redis.Redis) -> JobStore:
    return JobStore(client, 3600, KEYS)


def claimed(client: redis.Redis, store: JobStore, token: str) -> Job:
    request = InferenceRequest(
        task=Task.SEGMENTATION,
        model_id=MODEL_ID,
        server_id="b5208f48-f748-4339-9402-d1148dab571e",
        level=Level.SERIES,
        study_uid="1.2.3",
        series_uid="1.2.3.1",
    )
    job = new_job(request, queue="inference")
    client.hset(KEYS.job(job.id), mapping=dict(job_to_fields(job)))
    assert store.claim(job, token, LEASE) is Claim.CLAIMED
    return job


def test_the_heartbeat_keeps_the_lease_past_its_first_expiry(
    client: redis.Redis, store: JobStore
) -> None:
    job = claimed(client, store, "worker-a")
    with LeaseHeartbeat(store, job, "worker-a", LEASE) as heartbeat:
        time.sleep(LEASE * 2.5)
        assert client.get(KEYS.lease(job.id)) == b"worker-a"
        assert not heartbeat.lost.is_set()


def test_a_lease_taken_by_another_worker_is_noticed(client: redis.Redis, store: JobStore) -> None:
    job = claimed(client, store, "worker-a")
    with LeaseHeartbeat(store, job, "worker-a", LEASE) as heartbeat:
        client.set(KEYS.lease(job.id), "worker-b", px=10_000)
        assert heartbeat.lost.wait(LEASE * 3)


def test_the_heartbeat_renews_the_models_place_too(client: redis.Redis, store: JobStore) -> None:
    job = claimed(client, store, "worker-a")
    assert store.acquire_slot(MODEL_ID, "worker-a", 1, LEASE) is Slot.TAKEN
    with LeaseHeartbeat(store, job, "worker-a", LEASE, renew_slot=True):
        time.sleep(LEASE * 2.5)
        assert store.acquire_slot(MODEL_ID, "another-job", 1, LEASE) is Slot.FULL


def test_after_the_run_the_heartbeat_stops_renewing(client: redis.Redis, store: JobStore) -> None:
    job = claimed(client, store, "worker-a")
    with LeaseHeartbeat(store, job, "worker-a", LEASE):
        pass
    time.sleep(LEASE * 1.5)
    assert client.get(KEYS.lease(job.id)) is None
