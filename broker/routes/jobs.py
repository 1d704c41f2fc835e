"""``/jobs``: the status, result and cancellation of inference jobs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from model_proxy.broker.answers import answer_for_job
from model_proxy.broker.audit import note, note_job
from model_proxy.broker.deps import Services
from model_proxy.broker.errors import error_response
from model_proxy.broker.openapi import errors
from model_proxy.broker.schemas import ErrorBody, JobList, JobResource
from model_proxy.broker.services import BrokerServices
from model_proxy.shared.errors import JobCancelled, JobFinished, UnknownJob
from model_proxy.shared.jobs import Job, JobState, Terminated

__all__ = ["router"]

router = APIRouter(prefix="/jobs", tags=["jobs"])

_NOT_FOUND: dict[int | str, dict[str, object]] = {
    **errors(503),
    404: {"model": ErrorBody, "description": "No such job (or it has expired)"},
}


async def _job(services: BrokerServices, job_id: str) -> Job:
    job = await services.jobs.get(job_id)
    if job is None:
        raise UnknownJob(f"Not found: no job {job_id!r} (unknown, or expired)")
    note_job(job)
    return job


@router.get("", response_model=JobList, responses=errors(422, 503))
async def list_jobs(
    services: Services,
    state: Annotated[JobState | None, Query(description="Only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JobList:
    """Recent jobs, newest first."""
    jobs = await services.jobs.recent(limit, state)
    note(jobs=len(jobs))
    return JobList(jobs=[JobResource.from_job(job) for job in jobs])


@router.get("/{job_id}", response_model=JobResource, responses=_NOT_FOUND)
async def get_job(services: Services, job_id: str) -> JobResource:
    """A job's state, request, progress, stage times and error."""
    return JobResource.from_job(await _job(services, job_id))


@router.get(
    "/{job_id}/result",
    responses={
        200: {"description": "The model's JSON document", "content": {"application/json": {}}},
        202: {"model": JobResource, "description": "Not finished yet; try again"},
        **errors(400, 410, 422, 502, 504),
        **_NOT_FOUND,
        502: {"model": ErrorBody, "description": "The job failed: the error it recorded"},
    },
)
async def get_result(services: Services, job_id: str) -> Response:
    """The model's JSON once the job succeeded; otherwise what became of it."""
    return await answer_for_job(services.jobs, await _job(services, job_id))


@router.delete(
    "/{job_id}",
    response_model=JobResource,
    responses={
        409: {"model": ErrorBody, "description": "The job had already finished"},
        **_NOT_FOUND,
        **errors(403),
    },
)
async def cancel_job(services: Services, job_id: str) -> Response:
    """Cancel a queued or running job; a running one stops at its next step, and its model
    call is not made if it has not started."""
    job = await _job(services, job_id)
    outcome = await services.jobs.terminate(
        job, JobState.CANCELLED, JobCancelled("cancelled by a client")
    )
    if outcome is Terminated.FINISHED:
        return error_response(JobFinished(f"job {job_id} had already finished"), jobId=job_id)
    if outcome is Terminated.MISSING:
        raise UnknownJob(f"Not found: no job {job_id!r} (unknown, or expired)")
    current = await _job(services, job_id)
    return Response(
        JobResource.from_job(current).model_dump_json(by_alias=True),
        media_type="application/json",
    )
