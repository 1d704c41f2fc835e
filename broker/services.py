"""What the routes use: the catalog, the job records, the event fan-out, the task queue, and
sessions to the PACS servers for checks."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from celery import Celery
from starlette.concurrency import run_in_threadpool

from model_proxy.broker.idempotency import IdempotencyKeys
from model_proxy.broker.jobs import AsyncJobStore, JobEvents
from model_proxy.broker.metrics import AsyncMetrics
from model_proxy.broker.result_cache import ResultCache
from model_proxy.shared.config import Catalog
from model_proxy.shared.dicomweb.sessions import ServerSessions
from model_proxy.shared.errors import QueueUnavailable
from model_proxy.shared.jobs import Job
from model_proxy.shared.settings import Settings
from model_proxy.shared.tasks import RUN_INFERENCE

__all__ = ["BrokerServices"]

_PUBLISH_RETRY = {
    "max_retries": 2,
    "interval_start": 0.1,
    "interval_step": 0.2,
    "interval_max": 0.5,
}


@dataclass
class BrokerServices:
    """Everything the API's routes use, built once in the app's lifespan (``create_app``) and
    reached through :func:`model_proxy.broker.deps.get_services`: the settings and catalog, the
    async job store and its event fan-out, the Celery app to enqueue by task name, the metrics
    the short-lived copy of stored answers, and the idempotency keys of ``POST /jobs``."""

    settings: Settings
    catalog: Catalog
    jobs: AsyncJobStore
    events: JobEvents
    celery: Celery
    metrics: AsyncMetrics
    results: ResultCache
    idempotency: IdempotencyKeys

    @property
    def redis_url(self) -> str:
        """The Redis the app was built with (create_app may override settings.redis_url)."""
        return str(self.celery.conf.broker_url)

    async def enqueue(self, job: Job, task: str = RUN_INFERENCE) -> None:
        """Queue ``task`` (by default: the job's inference) for the job by name on its model's
        queue; the record must already exist."""
        await self.send(task, [job.id], job.queue)

    async def send(self, task: str, args: list[str | int], queue: str) -> None:
        """Queue ``task`` by name with ``args`` on ``queue``."""

        def send() -> None:
            self.celery.send_task(
                task, args=args, queue=queue, retry=True, retry_policy=_PUBLISH_RETRY
            )

        try:
            await run_in_threadpool(send)
        except Exception as exc:  # kombu raises OperationalError and friends
            raise QueueUnavailable(
                f"the job queue cannot be reached ({type(exc).__name__})"
            ) from None

    @contextmanager
    def server_sessions(self) -> Iterator[ServerSessions]:
        """Per-server sessions with auth for short checks (``status_timeout`` each), closed
        when the block ends."""
        settings = self.settings
        sessions = ServerSessions.for_checks(
            self.catalog,
            self.redis_url,
            timeout=settings.status_timeout,
            refresh_margin=settings.token_refresh_margin,
            lock_timeout=settings.token_lock_timeout,
            redis_prefix=settings.redis_prefix,
        )
        try:
            yield sessions
        finally:
            sessions.close()
