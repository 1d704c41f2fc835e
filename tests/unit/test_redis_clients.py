"""Redis clients built from the settings: timeouts and health checks on every client, a bounded
pool whose exhausted wait is told apart from Redis being down."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from model_proxy.shared.errors import QueueUnavailable, ServiceBusy
from model_proxy.shared.queue import create_celery
from model_proxy.shared.redis_clients import (
    PoolExhausted,
    _SyncPool,
    async_redis,
    celery_transport_options,
    sync_redis,
)
from model_proxy.shared.redis_errors import REDIS_BUSY, redis_errors
from model_proxy.shared.settings import Settings

URL = "redis://127.0.0.1:6399/0"
SETTINGS = Settings(
    redis_socket_timeout=1.5,
    redis_connect_timeout=0.5,
    redis_health_check_interval=7,
    redis_max_connections=33,
    redis_pool_timeout=0.25,
)


@pytest.mark.parametrize("build", [sync_redis, async_redis])
def test_every_client_has_timeouts_a_health_check_and_a_bounded_blocking_pool(
    build: object,
) -> None:
    client = build(URL, SETTINGS)  # type: ignore[operator]
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    assert kwargs["socket_timeout"] == 1.5
    assert kwargs["socket_connect_timeout"] == 0.5
    assert kwargs["health_check_interval"] == 7
    assert pool.max_connections == 33
    assert pool.timeout == 0.25


def test_the_defaults_protect_the_service() -> None:
    settings = Settings()
    assert 0 < settings.redis_socket_timeout <= 10
    assert 0 < settings.redis_connect_timeout <= 5
    assert 0 < settings.redis_pool_timeout <= 5
    assert settings.redis_max_connections > 200  # the load the API is measured at
    assert settings.redis_health_check_interval > 0


def test_celerys_redis_connections_time_out_too() -> None:
    options = create_celery(SETTINGS, URL).conf.broker_transport_options
    assert options["socket_timeout"] == 1.5
    assert options["socket_connect_timeout"] == 0.5
    assert options["health_check_interval"] == 7
    assert options["visibility_timeout"] > SETTINGS.job_time_limit
    assert celery_transport_options(SETTINGS).items() <= options.items()


def test_a_pool_whose_wait_runs_out_is_busy_not_down() -> None:
    pool = _SyncPool(
        connection_class=fakeredis.FakeRedisConnection,
        server=fakeredis.FakeServer(),
        max_connections=1,
        timeout=0.05,
    )
    held = pool.get_connection()
    with pytest.raises(PoolExhausted):
        pool.get_connection()
    with pytest.raises(ServiceBusy) as caught, redis_errors():
        redis.Redis(connection_pool=pool).ping()
    assert caught.value.message == REDIS_BUSY
    assert caught.value.code == "busy" and caught.value.retry_after == 1
    pool.release(held)
    assert redis.Redis(connection_pool=pool).ping()


def test_a_refused_connection_is_still_redis_unavailable() -> None:
    with pytest.raises(QueueUnavailable) as caught, redis_errors():
        raise redis.exceptions.ConnectionError("Error 111 connecting")
    assert not isinstance(caught.value, ServiceBusy)
