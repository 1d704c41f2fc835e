"""The Celery application, configured once for the broker (which only sends) and the workers,
and where kombu keeps its queues in Redis."""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from typing import Any

import redis
from celery import Celery
from kombu import Queue
from kombu.transport.redis import PRIORITY_STEPS, Channel

from model_proxy.shared.redis_clients import celery_transport_options
from model_proxy.shared.settings import Settings
from model_proxy.shared.tasks import DELIVER_WEBHOOKS

__all__ = [
    "create_celery",
    "deliveries_with_messages",
    "jobs_with_messages",
    "queue_keys",
    "unacked_key",
]


def create_celery(settings: Settings, redis_url: str) -> Celery:
    """A Celery app on ``redis_url``: JSON only, late acknowledgement, explicit queues.

    Celery's result backend is not used: the job record in Redis is the public status. A job
    whose worker dies is queued again by the reaper within about a minute; Redis's own
    redelivery (after the visibility timeout, longer than any job may run) is the backstop.
    Every key kombu writes (its queues, their bindings, the messages being worked on, the
    control channels) starts with ``<redis_prefix>:celery:``, so two deployments with different
    prefixes share one Redis without ever taking each other's tasks, and no queue name can
    collide with a key of the job store.
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
            **celery_transport_options(settings),
            # a namespace of its own: a queue may be named like one of our keys ("jobs")
            "global_keyprefix": f"{settings.redis_prefix}:celery:",
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


def jobs_with_messages(
    client: redis.Redis, queues: Iterable[str], transport_options: Mapping[str, Any]
) -> set[str]:
    """The job ids that a task message is waiting for, in any list of ``queues`` or taken by a
    worker and not yet acknowledged (running, prefetched, or held for a retry's countdown).

    Reads whole lists (a queue holds at most its models' ``maxQueued`` jobs, plus retries), in
    one round trip. A message that is not a task of ours is ignored.
    """
    return {args[0] for _, args in _waiting_tasks(client, queues, transport_options)}


def deliveries_with_messages(
    client: redis.Redis, queues: Iterable[str], transport_options: Mapping[str, Any]
) -> tuple[set[str], set[tuple[str, str]]]:
    """What task messages still wait for, as :func:`jobs_with_messages` reads them: the job
    ids of the messages that are not webhook deliveries, and the ``(job id, callback id)`` of
    those that are."""
    jobs: set[str] = set()
    deliveries: set[tuple[str, str]] = set()
    for task, args in _waiting_tasks(client, queues, transport_options):
        if task == DELIVER_WEBHOOKS and len(args) > 1:
            deliveries.add((args[0], args[1]))
        else:
            jobs.add(args[0])
    return jobs, deliveries


def _waiting_tasks(
    client: redis.Redis, queues: Iterable[str], transport_options: Mapping[str, Any]
) -> list[tuple[str, list[str]]]:
    """The task name and string arguments of each message in ``queues`` or unacknowledged."""
    with client.pipeline(transaction=False) as pipe:
        for queue in sorted(set(queues)):
            for key in queue_keys(queue, transport_options):
                pipe.lrange(key, 0, -1)
        pipe.hvals(unacked_key(transport_options))
        *lists, unacked = pipe.execute()
    found = [_task(raw) for waiting in lists for raw in waiting]
    found += [_task(raw, unacked=True) for raw in unacked]
    return [task for task in found if task is not None]


def _task(raw: bytes | str, unacked: bool = False) -> tuple[str, list[str]] | None:
    """The task name and leading string arguments of a kombu message (the first being the job
    id), or None for a message that is not a task of ours.

    kombu stores a message as JSON whose ``body`` is the Celery protocol-2 body
    (``[args, kwargs, embed]``), base64-encoded, and whose ``headers`` name the task; an
    unacknowledged one as ``[message, exchange, routing key]``.
    """
    try:
        message = json.loads(raw)
        if unacked:
            message = message[0]
        body = message["body"]
        if message.get("properties", {}).get("body_encoding") == "base64":
            body = base64.b64decode(body)
        args = json.loads(body)[0]
        task = str((message.get("headers") or {}).get("task", ""))
    except (ValueError, KeyError, IndexError, TypeError, AttributeError, binascii.Error):
        return None
    if not isinstance(args, list) or not args or not isinstance(args[0], str):
        return None
    leading = [arg for arg in args[:2] if isinstance(arg, str)]
    return task, leading
