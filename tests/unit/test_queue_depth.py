"""How the depth of a Celery queue is counted."""

from __future__ import annotations

import asyncio

import fakeredis

from model_proxy.broker.queue_depth import queue_depths, queue_keys
from model_proxy.shared.queue import create_celery, unacked_key
from model_proxy.shared.settings import Settings


def test_queue_keys_follow_kombus_priority_lists() -> None:
    sep = "\x06\x16"
    assert queue_keys("inference", {}) == [
        "inference",
        f"inference{sep}3",
        f"inference{sep}6",
        f"inference{sep}9",
    ]
    assert queue_keys("slow", {"priority_steps": [0, 5], "sep": ":"}) == ["slow", "slow:5"]


def test_a_queues_depth_counts_every_priority_list() -> None:
    async def count() -> dict[str, int]:
        client = fakeredis.FakeAsyncRedis()
        try:
            await client.rpush("inference", "a", "b")
            await client.rpush("inference:5", "c")
            await client.rpush("other", "d")
            options = {"priority_steps": [0, 5], "sep": ":"}
            return await queue_depths(client, ["inference", "slow"], options)
        finally:
            await client.aclose()

    assert asyncio.run(count()) == {"inference": 3, "slow": 0}


def test_queue_keys_are_under_the_deployments_prefix() -> None:
    options = create_celery(Settings(redis_prefix="site-a"), "redis://127.0.0.1:1/0").conf
    transport = options.broker_transport_options
    assert queue_keys("inference", transport)[0] == "site-a:celery:inference"
    assert all(key.startswith("site-a:celery:") for key in queue_keys("inference", transport))
    assert unacked_key(transport) == "site-a:celery:unacked"
