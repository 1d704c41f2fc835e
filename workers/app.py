"""The workers' Celery app: the shared configuration, the tasks, their retry policy, the reaper and
the graceful stop (:mod:`model_proxy.workers.stopping`)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterable
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_ready, worker_shutdown, worker_shutting_down

from model_proxy.shared.errors import QueueUnavailable
from model_proxy.shared.queue import create_celery, deliveries_with_messages, jobs_with_messages
from model_proxy.shared.settings import Settings
from model_proxy.shared.tasks import DELIVER_WEBHOOKS, RUN_INFERENCE, STORE_OBJECTS
from model_proxy.shared.webhooks import next_delay
from model_proxy.workers.context import WorkerContext, build_context
from model_proxy.workers.pipeline import JobRunResult, run_job
from model_proxy.workers.presence import WorkerPresence
from model_proxy.workers.reaper import Reaper
from model_proxy.workers.retry import RetryPolicy
from model_proxy.workers.stopping import RunningJobs
from model_proxy.workers.store_again import store_job_objects
from model_proxy.workers.webhook_recovery import WebhookRecovery
from model_proxy.workers.webhooks import deliver_webhook, dispatch_callbacks

__all__ = ["create_worker_app", "worker_queues"]

log = logging.getLogger(__name__)

_DEFERRED_RETRY_SECONDS = 1.0


class _LazyContext:
    """Builds the worker context on first use in each process (after a prefork fork too)."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self._settings = settings
        self._redis_url = redis_url
        self._context: WorkerContext | None = None
        self._lock = threading.Lock()
        # the process's runs, reachable without building the context (from a signal handler)
        self.runs = RunningJobs()

    def get(self) -> WorkerContext:
        with self._lock:
            if self._context is None:
                self._context = build_context(self._settings, self._redis_url, runs=self.runs)
            return self._context

    def reset(self, **_: object) -> None:
        # a forked child must not share Redis or HTTP connections with its parent. (Its runs
        # are its own too: the graceful hand-back needs the threads or solo pool, where the
        # runs live in the process that receives SIGTERM.)
        self._context = None
        self.runs = RunningJobs()


def worker_queues(settings: Settings, queues: Iterable[str]) -> list[str]:
    """The queues a worker consumes: ``queues`` (its inference queues) and the webhook queue,
    which every worker consumes, so that a worker of any queue delivers webhooks."""
    named = [queue.strip() for queue in queues if queue.strip()]
    return named if settings.webhook_queue in named else [*named, settings.webhook_queue]


def _sent_by(sender: Any, app: Celery) -> bool:
    """Signals are process-wide: is this one about a worker of ``app``?"""
    return getattr(sender, "app", None) is app


def _presence(consumer: Any, ctx: WorkerContext, settings: Settings) -> WorkerPresence:
    """The announcement of the worker ``consumer`` belongs to: its queues and pool size."""
    queues = [
        queue.name
        for queue in getattr(consumer.task_consumer, "queues", ())
        if queue.name != settings.webhook_queue  # announced for inference queues only
    ]
    slots = getattr(consumer.controller, "concurrency", None) or settings.worker_concurrency
    return WorkerPresence(
        ctx.redis,
        ctx.store.keys,
        queues or [settings.queue_name],
        str(consumer.hostname),
        int(slots),
        settings.worker_presence_seconds,
    )


def create_worker_app(settings: Settings, redis_url: str) -> Celery:
    app: Celery = create_celery(settings, redis_url)
    context = _LazyContext(settings, redis_url)
    worker_process_init.connect(context.reset, weak=False)

    # The error policy of the task, declared once: transient failures (is_transient) are
    # retried with backoff, jitter and caps from the settings; inside a claimed job the pipeline
    # retries them itself, within the job's time limit; any other error fails the job at once.
    policy = RetryPolicy.from_settings(settings)

    @app.task(name=RUN_INFERENCE, bind=True, acks_late=True, max_retries=None)
    def run_inference(
        self: Task,
        job_id: str,
        transient_retries: int = 0,
        webhook_retries: int = 0,
        dispatching_since: float | None = None,
    ) -> None:
        """Thin: the job id in; the pipeline does the work and records the outcome.

        A transient error that escapes the pipeline (Redis away before the job was claimed)
        sends the task back to the queue after the policy's backoff, at most
        ``max_attempts - 1`` times and within its total delay; a job its model has no place for
        comes back after a second. When the ended job's webhooks could not all be queued, the
        task comes back (running an ended job again only queues its webhooks) after a short
        backoff, within the webhook retry window (:func:`_queue_webhooks`).
        """
        try:
            result = run_job(job_id, context.get(), policy)
        except Exception as error:
            waited = policy.longest_wait(transient_retries)
            delay = policy.delay_before_retry(error, transient_retries + 1, waited)
            if delay is None:
                raise
            raise self.retry(
                args=[job_id],
                kwargs={"transient_retries": transient_retries + 1},
                countdown=delay,
            ) from error
        if result is JobRunResult.DONE:
            _queue_webhooks(self, job_id, webhook_retries, dispatching_since)
        if result is JobRunResult.DEFERRED:
            # the model is at its concurrency limit: back to the queue, not blocking a thread
            raise self.retry(countdown=_DEFERRED_RETRY_SECONDS)
        if result is JobRunResult.HANDED_BACK:
            # this worker is stopping and the job is queued again: another worker takes it now
            raise self.retry(countdown=0)

    def _queue_webhooks(task: Task, job_id: str, retries: int, since: float | None) -> None:
        """Queue the ended job's webhooks; when the broker refused one, send this task back
        (the message is acknowledged once it returns, so nothing else would queue it) after
        1, 2, 4, ... seconds, at most the webhook backoff, until the webhook retry window has
        passed since the first refusal."""
        try:
            dispatch_callbacks(context.get(), job_id, send_webhook)
        except QueueUnavailable as error:
            now = time.time()
            first = now if since is None else since
            delay = next_delay(
                retries + 1,
                now - first,
                settings.webhook_retry_seconds,
                settings.webhook_backoff_max_seconds,
            )
            if delay is None:
                log.warning("job=%s stage=webhook given up queuing (%s)", job_id, error)
                return
            raise task.retry(
                args=[job_id],
                kwargs={"webhook_retries": retries + 1, "dispatching_since": first},
                countdown=delay,
            ) from error

    @app.task(name=STORE_OBJECTS, acks_late=True)
    def store_objects_again(job_id: str) -> None:
        """Thin: the job id in; its kept DICOM objects are stored again and the outcome
        recorded in the job (``POST /jobs/{id}/store``)."""
        store_job_objects(job_id, context.get(), policy)

    def send_webhook(job_id: str, cid: str, claim: str, attempt: int) -> None:
        app.send_task(
            DELIVER_WEBHOOKS,
            args=[job_id, cid, claim],
            kwargs={"attempt": attempt},
            queue=settings.webhook_queue,
        )

    @app.task(name=DELIVER_WEBHOOKS, bind=True, acks_late=True, max_retries=None)
    def deliver_webhooks(
        self: Task, job_id: str, callback_id: str, claim: str, attempt: int = 1
    ) -> None:
        """Thin: one try of one callback of an ended job; the next try comes back as a new
        message after its backoff (no thread waits), until it is delivered or given up."""
        delay = deliver_webhook(context.get(), job_id, callback_id, attempt, claim)
        if delay is not None:
            raise self.retry(
                args=[job_id, callback_id, claim],
                kwargs={"attempt": attempt + 1},
                countdown=delay,
            )

    reapers: list[Reaper] = []
    presences: list[WorkerPresence] = []
    celery_app = app

    def start_reaper(sender: Any = None, **_: object) -> None:
        if not _sent_by(sender, celery_app):
            return
        ctx = context.get()

        transport_options = dict(celery_app.conf.broker_transport_options or {})

        def queue_webhooks(job_id: str) -> None:
            dispatch_callbacks(ctx, job_id, send_webhook)

        def enqueue(job_id: str, queue: str) -> None:
            celery_app.send_task(RUN_INFERENCE, args=[job_id], queue=queue or settings.queue_name)

        def with_messages(queues: Iterable[str]) -> set[str]:
            named = {queue or settings.queue_name for queue in queues}
            return jobs_with_messages(ctx.redis, named, transport_options)

        reaper = Reaper(
            ctx.store,
            ctx.redis,
            interval=settings.reaper_interval_seconds,
            max_attempts=settings.max_attempts,
            queued_bound=settings.queued_recovery_seconds,
            enqueue=enqueue,
            with_messages=with_messages,
            ended=queue_webhooks,
            also=WebhookRecovery(
                ctx.store,
                ctx.redis,
                settings,
                send_webhook,
                waiting=lambda: deliveries_with_messages(
                    ctx.redis, {settings.webhook_queue}, transport_options
                ),
            ).run,
        )
        reaper.start()
        reapers.append(reaper)
        presence = _presence(sender, ctx, settings)
        presence.start()
        presences.append(presence)

    def stop_reapers(**_: object) -> None:
        for reaper in reapers:
            reaper.stop()
        for presence in presences:
            presence.stop()

    def stop_gracefully(**_: object) -> None:
        # SIGTERM: Celery takes no more messages and waits for the running tasks; those that
        # outlast the grace period are cut and hand their jobs back
        context.runs.stop(settings.shutdown_grace_seconds)

    worker_ready.connect(start_reaper, weak=False)
    worker_shutting_down.connect(stop_gracefully, weak=False)
    worker_shutdown.connect(stop_reapers, weak=False)
    return app
