"""The viewer's routes: ``/{segmentations|annotations|predictions}/{model}/studies/...``.

Each request becomes a job: validated, recorded in Redis, queued for a worker; the viewer's GET
then waits for the outcome and answers with the model's JSON document.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Request, Response

from broker.jobs import wait_for_job
from broker.services import BrokerServices
from broker.validation import build_request
from shared.config import Task
from shared.errors import JobWaitTimeout, ModelProxyError, error_from_code
from shared.jobs import JobState, new_job

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
        (503, "Redis cannot be reached", {"message": "...", "code": "redis_unavailable"}),
        (
            504,
            "The PACS or the model did not answer in time",
            {"message": "...", "code": "model_timeout"},
        ),
    ]
}
_OK: dict[int | str, dict[str, object]] = {
    200: {"description": "The model's JSON document", "content": {"application/json": {}}}
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
    services: BrokerServices = request.app.state.services
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
    job = new_job(inference)
    await services.jobs.create(job)
    try:
        await services.enqueue(job.id)
    except ModelProxyError as error:
        await services.jobs.fail(job.id, error)
        raise
    return await _outcome(services, job.id)


async def _outcome(services: BrokerServices, job_id: str) -> Response:
    job = await wait_for_job(
        services.jobs, services.events, job_id, services.settings.sync_wait_seconds
    )
    if job is None:
        raise JobWaitTimeout(f"job {job_id} expired before it finished")
    if job.state is JobState.SUCCEEDED:
        result = await services.jobs.get_result(job_id)
        if result is not None:
            return Response(result, media_type="application/json")
        raise JobWaitTimeout(f"the result of job {job_id} has expired")
    if job.state is JobState.FAILED and job.error is not None:
        raise error_from_code(job.error.code, job.error.message)
    raise JobWaitTimeout(f"job {job_id} is still {job.state.value}")


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
