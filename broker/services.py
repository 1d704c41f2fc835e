"""What the routes use: the catalog, the job records, the event fan-out and the task queue."""

from __future__ import annotations

from dataclasses import dataclass

from celery import Celery
from starlette.concurrency import run_in_threadpool

from broker.jobs import AsyncJobStore, JobEvents
from broker.metrics import AsyncMetrics
from shared.config import Catalog
from shared.errors import QueueUnavailable
from shared.jobs import Job
from shared.settings import Settings
from shared.tasks import RUN_INFERENCE

__all__ = ["BrokerServices"]

_PUBLISH_RETRY = {
    "max_retries": 2,
    "interval_start": 0.1,
    "interval_step": 0.2,
    "interval_max": 0.5,
}


@dataclass
class BrokerServices:
    settings: Settings
    catalog: Catalog
    jobs: AsyncJobStore
    events: JobEvents
    celery: Celery
    metrics: AsyncMetrics

    async def enqueue(self, job: Job) -> None:
        """Queue the job's task by name on its model's queue; the record must already exist."""

        def send() -> None:
            self.celery.send_task(
                RUN_INFERENCE,
                args=[job.id],
                queue=job.queue,
                retry=True,
                retry_policy=_PUBLISH_RETRY,
            )

        try:
            await run_in_threadpool(send)
        except Exception as exc:  # kombu raises OperationalError and friends
            raise QueueUnavailable(
                f"the job queue cannot be reached ({type(exc).__name__})"
            ) from None
