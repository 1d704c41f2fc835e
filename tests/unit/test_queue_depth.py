"""How the depth of a Celery queue is counted."""

from __future__ import annotations

from model_proxy.broker.queue_depth import queue_keys


def test_queue_keys_follow_kombus_priority_lists() -> None:
    sep = "\x06\x16"
    assert queue_keys("inference", {}) == [
        "inference",
        f"inference{sep}3",
        f"inference{sep}6",
        f"inference{sep}9",
    ]
    assert queue_keys("slow", {"priority_steps": [0, 5], "sep": ":"}) == ["slow", "slow:5"]
