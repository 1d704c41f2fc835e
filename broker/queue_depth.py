"""How many tasks wait in a Celery queue: counted one way for ``/status`` and ``/metrics``.

kombu keeps a Redis queue in one list per priority step, so a queue's depth is the sum of the
lengths of all of them, not the length of the list named after the queue alone.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import redis.asyncio as aioredis

from model_proxy.shared.queue import queue_keys

__all__ = ["queue_depths", "queue_keys"]


async def queue_depths(
    client: aioredis.Redis, queues: Iterable[str], transport_options: Mapping[str, Any]
) -> dict[str, int]:
    """The tasks waiting in each queue, over all its priority lists, in one round trip."""
    keys = {queue: queue_keys(queue, transport_options) for queue in queues}
    async with client.pipeline(transaction=False) as pipe:
        for names in keys.values():
            for name in names:
                pipe.llen(name)
        lengths = iter(await pipe.execute())
    return {queue: sum(int(next(lengths)) for _ in names) for queue, names in keys.items()}
