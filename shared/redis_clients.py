"""Redis clients for the API and the workers, built from the settings in one place.

Every client has a socket timeout, a connect timeout and a health check, so a Redis that goes
silent (paused, or behind a half-open connection) is an error within seconds instead of a hang
until TCP gives up. Connections come from a bounded pool sized by a setting; a caller that finds
every connection busy waits a moment for one and then gets :class:`PoolExhausted`, which
:func:`~model_proxy.shared.redis_errors.redis_errors` tells apart from Redis being down.
"""

from __future__ import annotations

from typing import Any

import redis
import redis.asyncio as aioredis
import redis.exceptions

from model_proxy.shared.settings import Settings

__all__ = ["PoolExhausted", "async_redis", "celery_transport_options", "sync_redis"]

# what redis-py's blocking pools say when their wait for a free connection ran out
_POOL_WAIT_EXPIRED = "No connection available."


class PoolExhausted(redis.exceptions.ConnectionError):
    """Every connection of the pool was in use for the whole wait: this process is busy,
    Redis itself may be fine."""


def _pool_error(error: redis.exceptions.ConnectionError) -> redis.exceptions.ConnectionError:
    if str(error) == _POOL_WAIT_EXPIRED:
        return PoolExhausted("every Redis connection of this process is in use")
    return error


class _AsyncPool(aioredis.BlockingConnectionPool):
    async def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return await super().get_connection(*args, **kwargs)
        except redis.exceptions.ConnectionError as error:
            raise _pool_error(error) from None


class _SyncPool(redis.BlockingConnectionPool):
    def get_connection(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().get_connection(*args, **kwargs)
        except redis.exceptions.ConnectionError as error:
            raise _pool_error(error) from None


def _options(settings: Settings) -> dict[str, Any]:
    return {
        "max_connections": settings.redis_max_connections,
        "timeout": settings.redis_pool_timeout,
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_keepalive": True,
        "health_check_interval": settings.redis_health_check_interval,
    }


def async_redis(url: str, settings: Settings) -> aioredis.Redis:
    """The API's asyncio client; closing it closes its pool."""
    return aioredis.Redis.from_pool(_AsyncPool.from_url(url, **_options(settings)))


def sync_redis(url: str, settings: Settings) -> redis.Redis:
    """A worker process's client; closing it closes its pool."""
    return redis.Redis.from_pool(_SyncPool.from_url(url, **_options(settings)))


def celery_transport_options(settings: Settings) -> dict[str, Any]:
    """The same timeouts and health checks for Celery's own Redis connections (kombu): a
    publish to a silent Redis fails within the socket timeout, and a consumer's BRPOP on a
    half-open connection is dropped and reconnected."""
    return {
        "socket_timeout": settings.redis_socket_timeout,
        "socket_connect_timeout": settings.redis_connect_timeout,
        "socket_keepalive": True,
        "health_check_interval": max(1, round(settings.redis_health_check_interval)),
        "max_connections": settings.redis_max_connections,
    }
