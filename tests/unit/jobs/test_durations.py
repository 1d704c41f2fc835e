"""The recent stage durations per model: folded by workers, read by the API (fakeredis)."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from model_proxy.shared.errors import QueueUnavailable
from model_proxy.shared.jobs.durations import (
    RecentDurations,
    RunDurations,
    recent_durations,
    record_run_durations,
)
from tests.unit.jobs.support import KEYS, MODEL, OTHER_MODEL, on_async_client

DAY = 24 * 3600


def read(server: fakeredis.FakeServer, model_id: str = MODEL) -> RecentDurations | None:
    return on_async_client(server, lambda client: recent_durations(client, KEYS, model_id))


def run(seconds: float) -> RunDurations:
    return RunDurations(
        queue_wait=seconds / 4, fetch=seconds / 4, inference=seconds / 2, run=seconds
    )


def test_a_model_without_runs_has_no_durations(server: fakeredis.FakeServer) -> None:
    assert read(server) is None


def test_the_first_run_is_the_average(client: redis.Redis, server: fakeredis.FakeServer) -> None:
    record_run_durations(client, KEYS, MODEL, run(8.0), weight=0.3, ttl_seconds=DAY)

    recent = read(server)

    assert recent is not None
    assert recent.average == RunDurations(queue_wait=2.0, fetch=2.0, inference=4.0, run=8.0)
    assert recent.runs == 1


def test_later_runs_move_the_average_by_their_weight(
    client: redis.Redis, server: fakeredis.FakeServer
) -> None:
    record_run_durations(client, KEYS, MODEL, run(8.0), weight=0.25, ttl_seconds=DAY)
    record_run_durations(client, KEYS, MODEL, run(4.0), weight=0.25, ttl_seconds=DAY)

    recent = read(server)

    assert recent is not None
    assert recent.average.run == pytest.approx(7.0)  # 8 + 0.25 * (4 - 8)
    assert recent.average.inference == pytest.approx(3.5)
    assert recent.runs == 2


def test_each_model_has_its_own_bounded_hash_that_expires(
    client: redis.Redis, server: fakeredis.FakeServer
) -> None:
    for _ in range(50):
        record_run_durations(client, KEYS, MODEL, run(2.0), weight=0.3, ttl_seconds=DAY)

    assert read(server, OTHER_MODEL) is None
    assert client.hlen(KEYS.durations(MODEL)) == 6  # four stages, runs, updated_at
    assert 0 < client.ttl(KEYS.durations(MODEL)) <= DAY


def test_a_damaged_hash_reads_as_no_durations(
    client: redis.Redis, server: fakeredis.FakeServer
) -> None:
    client.hset(KEYS.durations(MODEL), mapping={"run": "soon", "runs": "1"})

    assert read(server) is None


def test_redis_away_is_our_error() -> None:
    unreachable = redis.Redis(port=1, socket_connect_timeout=0.2)

    with pytest.raises(QueueUnavailable):
        record_run_durations(unreachable, KEYS, MODEL, run(1.0), weight=0.3, ttl_seconds=DAY)
