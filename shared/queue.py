"""The Celery application, configured once for the broker (which only sends) and the workers,
and where kombu keeps its queues in Redis."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from celery import Celery
from kombu import Queue
from kombu.transport.redis import PRIORITY_STEPS, Channel

from model_proxy.shared.settings import Settings

__all__ = ["create_celery", "queue_keys", "unacked_key"]


def create_celery(settings: Settings, redis_url: str) -> Celery:
    """A Celery app on ``redis_url``: JSON only, late acknowledgement, explicit queues.

    Celery's result backend is not used: the job record in Redis is the public status. A job
    whose worker dies is queued again by the reaper within about a minute; Redis's own
    redelivery (after the visibility timeout, longer than any job may run) is the backstop.
    Every key kombu writes (its queues, their bindings, the messages being worked on, the
    control channels) starts with ``<redis_prefix>:``, so two deployments with different
    prefixes share one Redis without ever taking each other's tasks.
    """
    app = Celery("model_proxy", broker=redis_url, set_as_current=False)
    app.conf.update(
        task_serializer="json",
        accept_content=["json"],
        result_backend=None,
        task_ignore_result=True,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_default_queue=settings.queue_name,
        task_queues=[Queue(settings.queue_name)],
        broker_connection_retry_on_startup=True,
        broker_transport_options={
            # must exceed the longest job, or Redis hands a running job to a second worker
            "visibility_timeout": int(2 * settings.job_time_limit + 300),
            "socket_connect_timeout": 5,
            "global_keyprefix": f"{settings.redis_prefix}:",
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app


def queue_keys(queue: str, transport_options: Mapping[str, Any]) -> list[str]:
    """The Redis lists kombu keeps a queue in: the queue's own name for priority 0, and
    ``<queue><sep><step>`` for each higher priority step (``priority_steps``, ``sep``), each
    under the transport's ``global_keyprefix``."""
    prefix: str = transport_options.get("global_keyprefix", "")
    steps: Iterable[int] = transport_options.get("priority_steps", PRIORITY_STEPS)
    sep: str = transport_options.get("sep", Channel.sep)
    keys = [queue]
    keys += [f"{queue}{sep}{step}" for step in sorted(set(steps)) if step]
    return [prefix + key for key in keys]


def unacked_key(transport_options: Mapping[str, Any]) -> str:
    """The Redis hash of the messages workers have taken but not yet acknowledged (running,
    prefetched, or waiting for their retry's countdown)."""
    prefix: str = transport_options.get("global_keyprefix", "")
    return prefix + str(transport_options.get("unacked_key", Channel.unacked_key))
