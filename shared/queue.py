"""The Celery application, configured once for the broker (which only sends) and the workers."""

from __future__ import annotations

from celery import Celery
from kombu import Queue

from model_proxy.shared.redis_clients import celery_transport_options
from model_proxy.shared.settings import Settings

__all__ = ["create_celery"]


def create_celery(settings: Settings, redis_url: str) -> Celery:
    """A Celery app on ``redis_url``: JSON only, late acknowledgement, explicit queues.

    Celery's result backend is not used: the job record in Redis is the public status. A job
    whose worker dies is queued again by the reaper within about a minute; Redis's own
    redelivery (after the visibility timeout, longer than any job may run) is the backstop.
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
        },
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return app
