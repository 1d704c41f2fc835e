"""The worker's announcement of its queues and pool size (fakeredis)."""

from __future__ import annotations

import redis

from model_proxy.shared.jobs import JobKeys
from model_proxy.workers.presence import WorkerPresence

KEYS = JobKeys()


def test_a_started_worker_is_announced_on_each_queue_and_withdrawn_when_it_stops(
    client: redis.Redis,
) -> None:
    presence = WorkerPresence(client, KEYS, ["gpu", "cpu"], "worker@host", 4, ttl_seconds=30)

    presence.start()
    try:
        for queue in ("gpu", "cpu"):
            assert client.zrange(KEYS.consumers(queue), 0, -1) == [b"4:worker@host"]
    finally:
        presence.stop()

    assert client.zcard(KEYS.consumers("gpu")) == 0


def test_redis_away_does_not_stop_the_worker() -> None:
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.2)
    presence = WorkerPresence(unreachable, KEYS, ["gpu"], "worker@host", 4, ttl_seconds=30)

    presence.announce()
    presence.stop()
