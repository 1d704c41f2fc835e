"""The workers' Celery app: the shared configuration, the task, and the reaper."""

from __future__ import annotations

import threading
from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init, worker_ready, worker_shutdown

from model_proxy.shared.queue import create_celery
from model_proxy.shared.settings import Settings
from model_proxy.shared.tasks import RUN_INFERENCE
from model_proxy.workers.context import WorkerContext, build_context
from model_proxy.workers.pipeline import Outcome, run_job
from model_proxy.workers.reaper import Reaper

__all__ = ["create_worker_app"]

_DEFERRED_RETRY_SECONDS = 1.0


class _LazyContext:
    """Builds the worker context on first use in each process (after a prefork fork too)."""

    def __init__(self, settings: Settings, redis_url: str) -> None:
        self._settings = settings
        self._redis_url = redis_url
        self._context: WorkerContext | None = None
        self._lock = threading.Lock()

    def get(self) -> WorkerContext:
        with self._lock:
            if self._context is None:
                self._context = build_context(self._settings, self._redis_url)
            return self._context

    def reset(self, **_: object) -> None:
        # a forked child must not share Redis or HTTP connections with its parent
        self._context = None


def _sent_by(sender: Any, app: Celery) -> bool:
    """Signals are process-wide: is this one about a worker of ``app``?"""
    return getattr(sender, "app", None) is app


def create_worker_app(settings: Settings, redis_url: str) -> Celery:
    app: Celery = create_celery(settings, redis_url)
    context = _LazyContext(settings, redis_url)
    worker_process_init.connect(context.reset, weak=False)

    @app.task(name=RUN_INFERENCE, bind=True, acks_late=True, max_retries=None)
    def run_inference(self: Task, job_id: str) -> None:
        """Thin: the job id in; the pipeline does the work and records the outcome."""
        if run_job(job_id, context.get()) is Outcome.DEFERRED:
            # the model is at its concurrency limit: back to the queue, not blocking a thread
            raise self.retry(countdown=_DEFERRED_RETRY_SECONDS)

    reapers: list[Reaper] = []
    celery_app = app

    def start_reaper(sender: Any = None, **_: object) -> None:
        if not _sent_by(sender, celery_app):
            return
        ctx = context.get()

        def enqueue(job_id: str, queue: str) -> None:
            celery_app.send_task(RUN_INFERENCE, args=[job_id], queue=queue or settings.queue_name)

        reaper = Reaper(
            ctx.store,
            ctx.redis,
            interval=settings.reaper_interval_seconds,
            max_attempts=settings.max_attempts,
            enqueue=enqueue,
        )
        reaper.start()
        reapers.append(reaper)

    def stop_reapers(**_: object) -> None:
        for reaper in reapers:
            reaper.stop()

    worker_ready.connect(start_reaper, weak=False)
    worker_shutdown.connect(stop_reapers, weak=False)
    return app
