"""Which workers read a queue, and how many jobs they run at once: the workers announce it.

Each worker announces itself on every queue it reads, in ``<prefix>:consumers:<queue>`` (a
sorted set: member ``<slots>:<worker name>``, scored by when the announcement expires), and
renews it while it lives (:mod:`model_proxy.workers.presence`); a worker that dies drops out
when its announcement expires. The API sums the slots of the live ones
(:func:`consumer_slots`): the concurrency of a model without ``maxConcurrency``, for its ETA.
Cheap on both sides: one pipelined write per worker every few seconds, one range read per
estimate, and no broadcast to the workers.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import redis
import redis.asyncio as aioredis

from model_proxy.shared.jobs.keys import JobKeys
from model_proxy.shared.jobs.operations import text
from model_proxy.shared.redis_errors import redis_errors

__all__ = ["announce_consumer", "consumer_slots", "withdraw_consumer"]


def _member(name: str, slots: int) -> str:
    return f"{slots}:{name}"


def announce_consumer(
    client: redis.Redis,
    keys: JobKeys,
    queues: Iterable[str],
    name: str,
    slots: int,
    ttl_seconds: float,
) -> None:
    """Worker ``name`` runs ``slots`` jobs at once from ``queues``, for ``ttl_seconds`` more;
    expired announcements of any worker are dropped on the way."""
    now = time.time()
    with redis_errors(), client.pipeline(transaction=False) as pipe:
        for queue in queues:
            key = keys.consumers(queue)
            pipe.zremrangebyscore(key, "-inf", now)
            pipe.zadd(key, {_member(name, slots): now + ttl_seconds})
            pipe.expire(key, math.ceil(ttl_seconds))
        pipe.execute()


def withdraw_consumer(
    client: redis.Redis, keys: JobKeys, queues: Iterable[str], name: str, slots: int
) -> None:
    """Worker ``name`` stops reading ``queues``."""
    with redis_errors(), client.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.zrem(keys.consumers(queue), _member(name, slots))
        pipe.execute()


async def consumer_slots(client: aioredis.Redis, keys: JobKeys, queue: str) -> int:
    """The jobs the live workers reading ``queue`` run at once (0: none has announced itself)."""
    with redis_errors():
        members = await client.zrangebyscore(keys.consumers(queue), time.time(), "+inf")
    total = 0
    for member in members:
        slots, _, _ = text(member).partition(":")
        total += int(slots) if slots.isdigit() else 0
    return total
