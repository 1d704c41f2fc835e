"""The inference service behind the viewer's routes: validate, answer from the cache, or record a
job (or join the same one already running), queue it, wait for it, and answer with it."""

from __future__ import annotations

from fastapi import Response

from model_proxy.broker.answers import answer_for_job, result_answer
from model_proxy.broker.audit import note_inference
from model_proxy.broker.deps import AnswerOptions
from model_proxy.broker.errors import status_for
from model_proxy.broker.jobs import wait_for_job
from model_proxy.broker.services import BrokerServices
from model_proxy.broker.validation import ViewerPath, build_request
from model_proxy.shared.config import Task
from model_proxy.shared.errors import ModelProxyError, QueueFull, UnknownJob
from model_proxy.shared.jobs import JobState, new_job
from model_proxy.shared.request import InferenceRequest

__all__ = ["answer_viewer"]


async def answer_viewer(
    services: BrokerServices, task: Task, path: ViewerPath, options: AnswerOptions
) -> Response:
    """Answer the viewer's GET and count the answer by route, model, server and status."""
    labels = _request_labels(services, task, path)
    try:
        response = await _answer(services, task, path, options)
    except ModelProxyError as error:
        services.metrics.add("requests", {**labels, "status": str(status_for(error))})
        raise
    services.metrics.add("requests", {**labels, "status": str(response.status_code)})
    return response


def _request_labels(services: BrokerServices, task: Task, path: ViewerPath) -> dict[str, str]:
    # only configured keys become label values: unknown ones would grow without bound
    catalog = services.catalog
    model = path.model_id.lower()
    server = (path.server_id or catalog.default_server_id).lower()
    return {
        "route": f"{task.route_prefix}:{path.level.name.lower()}",
        "model": model if model in catalog.models else "unknown",
        "server": server if server in catalog.servers else "unknown",
    }


async def _answer(
    services: BrokerServices, task: Task, path: ViewerPath, options: AnswerOptions
) -> Response:
    inference = build_request(services.catalog, task, path, options.query)
    if not options.fresh:
        cached = await _cached_answer(services, inference)
        if cached is not None:
            return cached
    job_id = await _start_or_join_job(services, inference, use_cached=not options.fresh)
    wait = 0.0 if options.respond_async else services.settings.sync_wait_seconds
    current = await wait_for_job(services.jobs, services.events, job_id, wait)
    if current is None:
        raise UnknownJob(f"job {job_id} has expired")
    return await answer_for_job(services.jobs, current)


async def _cached_answer(services: BrokerServices, inference: InferenceRequest) -> Response | None:
    """The stored answer of an earlier job on the same request, if one is still kept."""
    fingerprint = inference.fingerprint()
    cached = services.results.get(fingerprint) or await services.jobs.cached(fingerprint)
    if cached is None:
        return None
    services.results.put(fingerprint, *cached)
    services.metrics.add("cache_hits", {"model": inference.model_id})
    note_inference(inference, cached[0], "cache")
    return result_answer(*cached)


async def _start_or_join_job(
    services: BrokerServices, inference: InferenceRequest, *, use_cached: bool
) -> str:
    """The id of the job that answers ``inference``: a new one, recorded then queued, or the
    same request's job already queued or running. Refused when the model's queue is full."""
    settings = services.settings
    config = services.catalog.model(inference.model_id)
    limit = config.max_queued or settings.max_queued_per_model
    if await services.jobs.queued_count(inference.model_id) >= limit:
        raise QueueFull(
            f"model {inference.model_id} has {limit} jobs waiting; try again shortly",
            retry_after=settings.queue_full_retry_after,
        )
    job = new_job(inference, queue=config.queue or settings.queue_name)
    admitted = await services.jobs.create_or_attach(job, use_cached=use_cached)
    note_inference(inference, admitted.job_id, "created" if admitted.created else "attached")
    if not admitted.created:
        services.metrics.add("shared_jobs", {"model": inference.model_id})
        return admitted.job_id
    try:
        await services.enqueue(job)
    except ModelProxyError as error:
        await services.jobs.terminate(job, JobState.FAILED, error)
        raise
    return admitted.job_id
