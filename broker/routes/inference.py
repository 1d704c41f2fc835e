"""The viewer's routes: ``/{segmentations|annotations|predictions}/{model}/studies/...``.

Each request becomes a job: validated, recorded in Redis, queued for a worker; the viewer's GET
then waits for the outcome and answers with the model's JSON document.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from model_proxy.broker.errors import status_for
from model_proxy.broker.jobs import wait_for_job
from model_proxy.broker.outcomes import job_outcome
from model_proxy.broker.schemas import JobResource
from model_proxy.broker.services import BrokerServices
from model_proxy.broker.validation import build_request
from model_proxy.shared.config import Task
from model_proxy.shared.errors import ModelProxyError, QueueFull, UnknownJob
from model_proxy.shared.jobs import JobState, new_job

__all__ = ["router"]

router = APIRouter(tags=["inference"])

_ERRORS: dict[int | str, dict[str, object]] = {
    status: {"description": description, "content": {"application/json": {"example": example}}}
    for status, description, example in [
        (400, "Bad data filters", {"message": "...", "code": "invalid_data_filter"}),
        (
            404,
            "Unknown model or server, unsupported level, or no such DICOM data",
            {"message": "Not found", "code": "unknown_model"},
        ),
        (422, "A UID that is not a DICOM UID", {"message": "...", "code": "invalid_uid"}),
        (502, "The PACS or the model failed", {"message": "...", "code": "model_error"}),
        (410, "The job was cancelled", {"message": "...", "code": "job_cancelled"}),
        (
            429,
            "Too many jobs of this model are waiting (see Retry-After)",
            {"message": "...", "code": "queue_full"},
        ),
        (503, "Redis cannot be reached", {"message": "...", "code": "redis_unavailable"}),
        (
            504,
            "The PACS or the model did not answer in time",
            {"message": "...", "code": "model_timeout"},
        ),
    ]
}
_OK: dict[int | str, dict[str, object]] = {
    200: {"description": "The model's JSON document", "content": {"application/json": {}}},
    202: {
        "description": "Still running (past the wait limit, or asked with `Prefer: "
        "respond-async` or `?async=true`): poll the job at `Location`",
        "model": JobResource,
    },
}
ServerParam = Annotated[
    str | None, Query(description="Key of a server in servers.json; the default server if absent")
]


async def _infer(
    request: Request,
    task: Task,
    model: str,
    study: str,
    series: str | None,
    instance: str | None,
    server: str | None,
) -> Response:
    """Answer the viewer and count the answer by route, model, server and status."""
    services: BrokerServices = request.app.state.services
    level = "instance" if instance else "series" if series else "study"
    catalog = services.catalog
    labels = {
        "route": f"{task.route_prefix}:{level}",
        # only configured keys become label values: unknown ones would grow without bound
        "model": model.lower() if model.lower() in catalog.models else "unknown",
        "server": (server or catalog.default_server_id).lower()
        if (server or catalog.default_server_id).lower() in catalog.servers
        else "unknown",
    }
    try:
        response = await _answer(request, services, task, model, study, series, instance, server)
    except ModelProxyError as error:
        services.metrics.add("requests", {**labels, "status": str(status_for(error))})
        raise
    services.metrics.add("requests", {**labels, "status": str(response.status_code)})
    return response


async def _answer(
    request: Request,
    services: BrokerServices,
    task: Task,
    model: str,
    study: str,
    series: str | None,
    instance: str | None,
    server: str | None,
) -> Response:
    settings = services.settings
    inference = build_request(
        services.catalog,
        task=task,
        model_id=model,
        server_id=server,
        study_uid=study,
        series_uid=series,
        instance_uid=instance,
        query=request.query_params.multi_items(),
    )
    config = services.catalog.model(inference.model_id)
    if not _asks_fresh(request):
        fingerprint = inference.fingerprint()
        cached = services.results.get(fingerprint) or await services.jobs.cached(fingerprint)
        if cached is not None:
            services.results.put(fingerprint, *cached)
            cached_id, result = cached
            services.metrics.add("cache_hits", {"model": inference.model_id})
            return Response(result, media_type="application/json", headers={"X-Job-Id": cached_id})
    limit = config.max_queued or settings.max_queued_per_model
    if await services.jobs.queued_count(inference.model_id) >= limit:
        raise QueueFull(
            f"model {inference.model_id} has {limit} jobs waiting; try again shortly",
            retry_after=settings.queue_full_retry_after,
        )
    job = new_job(inference, queue=config.queue or settings.queue_name)
    admitted = await services.jobs.create_or_attach(job, use_cached=not _asks_fresh(request))
    job_id = admitted.job_id
    if admitted.created:
        try:
            await services.enqueue(job)
        except ModelProxyError as error:
            await services.jobs.terminate(job, JobState.FAILED, error)
            raise
    else:
        services.metrics.add("shared_jobs", {"model": inference.model_id})
    wait = 0.0 if _asks_async(request) else settings.sync_wait_seconds
    current = await wait_for_job(services.jobs, services.events, job_id, wait)
    if current is None:
        raise UnknownJob(f"job {job_id} has expired")
    return await job_outcome(services.jobs, current)


def _asks_async(request: Request) -> bool:
    """``Prefer: respond-async`` (RFC 7240) or ``?async=true``: answer 202 at once."""
    prefer = request.headers.get("prefer", "").lower()
    preferences = {
        token.split("=")[0].strip() for item in prefer.split(",") for token in item.split(";")
    }
    flag = request.query_params.get("async", "").lower()
    return "respond-async" in preferences or flag in ("true", "1", "yes")


def _asks_fresh(request: Request) -> bool:
    """``Cache-Control: no-cache``: run the model again instead of answering from the cache."""
    directives = request.headers.get("cache-control", "").lower()
    return any(d.strip() in ("no-cache", "no-store") for d in directives.split(","))


def _add_routes(task: Task) -> None:
    prefix = f"/{task.route_prefix}/{{model}}/studies/{{study}}"
    name = task.route_prefix

    @router.get(prefix, name=f"{name}_study", responses={**_OK, **_ERRORS})
    async def study_level(
        request: Request,
        model: str,
        study: str,
        server: ServerParam = None,
    ) -> Response:
        return await _infer(request, task, model, study, None, None, server)

    @router.get(prefix + "/series/{series}", name=f"{name}_series", responses={**_OK, **_ERRORS})
    async def series_level(
        request: Request, model: str, study: str, series: str, server: ServerParam = None
    ) -> Response:
        return await _infer(request, task, model, study, series, None, server)

    @router.get(
        prefix + "/series/{series}/instances/{instance}",
        name=f"{name}_instance",
        responses={**_OK, **_ERRORS},
    )
    async def instance_level(
        request: Request,
        model: str,
        study: str,
        series: str,
        instance: str,
        server: ServerParam = None,
    ) -> Response:
        return await _infer(request, task, model, study, series, instance, server)

    for endpoint in (study_level, series_level, instance_level):
        endpoint.__doc__ = (
            f"The {task.value} of model `model` on this DICOM data. Data filters "
            "(`data-filters`) are read at study and series level."
        )


for _task in Task:
    _add_routes(_task)
