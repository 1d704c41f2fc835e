"""Fixtures of the job-store tests: one fake Redis, the workers' store, the broker's store, a
queued job, the same job claimed by ``worker-a``, and a subscription to the events channel."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import redis

from model_proxy.shared.jobs import (
    Admission,
    Admitted,
    Claim,
    Job,
    JobStore,
)
from tests.unit.jobs.support import (
    KEYS,
    LEASE,
    TTL,
    Broker,
    make_job,
)


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
