"""One translation of Redis failures into ``QueueUnavailable`` (``shared/redis_errors.py``),
used by the job stores and the token store alike."""

from __future__ import annotations

import fakeredis
import pytest
import redis

from model_proxy.shared.auth.token_store import TokenStore
from model_proxy.shared.errors import QueueUnavailable
from model_proxy.shared.redis_errors import REDIS_UNREACHABLE, redis_errors


@pytest.mark.parametrize(
    "error", [redis.exceptions.ConnectionError("refused"), redis.exceptions.TimeoutError("slow")]
)
def test_connection_errors_and_timeouts_are_queue_unavailable(error: Exception) -> None:
    with pytest.raises(QueueUnavailable) as caught, redis_errors():
        raise error
    assert caught.value.message == REDIS_UNREACHABLE
    assert caught.value.__cause__ is None  # the foreign exception's text goes no further
    assert caught.value.__suppress_context__


def test_other_redis_errors_pass_through() -> None:
    with pytest.raises(redis.exceptions.ResponseError), redis_errors():
        raise redis.exceptions.ResponseError("WRONGTYPE")


def test_the_token_store_translates_the_same_way() -> None:
    server = fakeredis.FakeServer()
    tokens = TokenStore(fakeredis.FakeRedis(server=server), lock_timeout=1.0, wait_timeout=0.1)
    server.connected = False
    with pytest.raises(QueueUnavailable) as caught:
        tokens.load("pacs", "fingerprint")
    assert caught.value.message == REDIS_UNREACHABLE
    with pytest.raises(QueueUnavailable), tokens.locked("pacs"):
        pass
