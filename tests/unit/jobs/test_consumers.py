"""The workers' announcements of their queues and pool sizes, summed by the API (fakeredis)."""

from __future__ import annotations

import fakeredis
import redis

from model_proxy.shared.jobs.consumers import (
    announce_consumer,
    consumer_slots,
    withdraw_consumer,
)
from tests.unit.jobs.support import KEYS, on_async_client


def slots(server: fakeredis.FakeServer, queue: str) -> int:
    return on_async_client(server, lambda client: consumer_slots(client, KEYS, queue))


def test_no_worker_announced_is_no_slot(server: fakeredis.FakeServer) -> None:
    assert slots(server, "gpu") == 0


def test_the_live_workers_slots_are_summed_per_queue(
    client: redis.Redis, server: fakeredis.FakeServer
) -> None:
    announce_consumer(client, KEYS, ["gpu", "cpu"], "worker-a", 4, ttl_seconds=30)
    announce_consumer(client, KEYS, ["gpu"], "worker-b", 2, ttl_seconds=30)
    announce_consumer(client, KEYS, ["gpu"], "worker-b", 2, ttl_seconds=30)  # a renewal

    assert slots(server, "gpu") == 6
    assert slots(server, "cpu") == 4


def test_an_expired_announcement_no_longer_counts(
    client: redis.Redis, server: fakeredis.FakeServer
) -> None:
    announce_consumer(client, KEYS, ["gpu"], "worker-a", 4, ttl_seconds=30)
    client.zadd(KEYS.consumers("gpu"), {"3:dead-worker": 1.0})  # expired long ago

    assert slots(server, "gpu") == 4


def test_a_withdrawn_worker_no_longer_counts(
    client: redis.Redis, server: fakeredis.FakeServer
) -> None:
    announce_consumer(client, KEYS, ["gpu"], "worker-a", 4, ttl_seconds=30)
    announce_consumer(client, KEYS, ["gpu"], "worker-b", 1, ttl_seconds=30)

    withdraw_consumer(client, KEYS, ["gpu"], "worker-a", 4)

    assert slots(server, "gpu") == 1
