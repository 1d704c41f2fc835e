"""The workers' Celery app: the shared configuration plus the tasks."""

from __future__ import annotations

import threading

from celery import Celery
from celery.signals import worker_process_init

from shared.queue import create_celery
from shared.settings import Settings
from shared.tasks import RUN_INFERENCE
from workers.context import WorkerContext, build_context
from workers.pipeline import run_job

__all__ = ["create_worker_app"]


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


def create_worker_app(settings: Settings, redis_url: str) -> Celery:
    app = create_celery(settings, redis_url)
    context = _LazyContext(settings, redis_url)
    worker_process_init.connect(context.reset, weak=False)

    @app.task(name=RUN_INFERENCE, acks_late=True)
    def run_inference(job_id: str) -> None:
        """Thin: the job id in; the pipeline does the work and records the outcome."""
        run_job(job_id, context.get())

    return app
