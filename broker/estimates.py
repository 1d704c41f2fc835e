"""Where a job stands in its model's queue, and when it may start and finish: estimates.

The position is exact: the job's rank in its model's queued set (oldest first). The times are
estimates from the model's recent runs (:mod:`model_proxy.shared.jobs.durations`):

* the model's **concurrency** is its ``maxConcurrency``; without one, the jobs the live workers
  reading its queue run at once (:mod:`model_proxy.shared.jobs.consumers`); with neither, 1;
* each of its running jobs is taken to end one average run after it started (at once if it has
  run longer), and frees its place then; the other places are free now;
* the queued jobs take the places in order, each for one average run.

So with every place busy, the job at ``position`` starts about ``ceil(position / concurrency)``
average runs from now, less what the running jobs have already done, and finishes one average
run later. A model with no recorded run has a position but no times. A running job's finish is
one average run after it started. Workers shared with other models, retries, and a model
slower or faster than lately all make the real times differ.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from model_proxy.broker.services import BrokerServices
from model_proxy.shared.errors import ModelProxyError
from model_proxy.shared.jobs import Job, JobState
from model_proxy.shared.jobs.consumers import consumer_slots
from model_proxy.shared.jobs.durations import recent_durations
from model_proxy.shared.jobs.estimate import NO_ESTIMATE, JobEstimate, QueuePlace
from model_proxy.shared.jobs.operations import text
from model_proxy.shared.redis_errors import redis_errors

__all__ = ["JobEstimate", "QueuePlace", "estimate_job", "seconds_until_start"]


def seconds_until_start(
    position: int, concurrency: int, average_run: float, running_elapsed: Sequence[float]
) -> float:
    """Seconds until the job at ``position`` (1-based) of the queue starts, when each run takes
    ``average_run`` and the model's running jobs have run ``running_elapsed`` so far.

    Each place frees when its running job reaches one average run (at once if it has run
    longer; free places now). Every such time lies within one average run of now, so the queued
    jobs take the places round-robin in the order they free up: job ``i`` (0-based) starts at
    the ``i mod c``-th earliest free time plus ``i // c`` runs.
    """
    places = max(concurrency, len(running_elapsed), 1)
    busy = sorted(max(average_run - elapsed, 0.0) for elapsed in running_elapsed)
    free_at = [0.0] * (places - len(busy)) + busy
    index = max(position, 1) - 1
    return free_at[index % places] + (index // places) * average_run


async def estimate_job(
    services: BrokerServices, job: Job, now: float | None = None
) -> JobEstimate | None:
    """The estimate of an unfinished job (nothing for a finished one): for a queued job, its
    place and times; for a running one, its finish. ``None`` when ``job`` says queued but is no
    longer in its model's queue: a worker claimed it after it was read, so the record is stale
    and should be read again (a record that predates the queued sets stays so)."""
    if job.state.finished:
        return NO_ESTIMATE
    now = time.time() if now is None else now
    jobs = services.jobs
    model_id = job.request.model_id
    history = await recent_durations(jobs.redis, jobs.keys, model_id)
    average = history.average.run if history is not None else None
    if job.state is not JobState.QUEUED:
        if average is None or job.started_at is None:
            return NO_ESTIMATE
        return JobEstimate(finish_at=max(job.started_at + average, now))
    with redis_errors():
        rank: Any = await jobs.redis.zrank(jobs.keys.queued(model_id), job.id)
    if not isinstance(rank, int):  # claimed since ``job`` was read
        return None
    place = QueuePlace(rank + 1, rank, await _concurrency(services, job))
    if average is None:
        return JobEstimate(queue=place)
    elapsed = await _running_elapsed(services, model_id, now)
    start = now + seconds_until_start(place.position, place.concurrency, average, elapsed)
    return JobEstimate(queue=place, start_at=start, finish_at=start + average)


async def _concurrency(services: BrokerServices, job: Job) -> int:
    """The model's ``maxConcurrency``; else the slots of the live workers on its queue; else 1."""
    try:
        limit = services.catalog.model(job.request.model_id).max_concurrency
    except ModelProxyError:  # no longer configured
        limit = None
    if limit is not None:
        return limit
    queue = job.queue or services.settings.queue_name
    return await consumer_slots(services.jobs.redis, services.jobs.keys, queue) or 1


async def _running_elapsed(services: BrokerServices, model_id: str, now: float) -> list[float]:
    """Seconds each running job of the model has run (of the first ``eta_running_scan`` running
    jobs of all models: the running set holds at most the workers' slots)."""
    jobs = services.jobs
    limit = services.settings.eta_running_scan
    with redis_errors():
        running: list[Any] = await jobs.redis.zrange(
            jobs.keys.running, 0, limit - 1, withscores=True
        )
        if not running:
            return []
        async with jobs.redis.pipeline(transaction=False) as pipe:
            for job_id, _ in running:
                pipe.hget(jobs.keys.job(text(job_id)), "model")
            models = await pipe.execute()
    return [
        max(now - float(claimed), 0.0)
        for (_, claimed), model in zip(running, models, strict=True)
        if model is not None and text(model) == model_id
    ]
