"""``/jobs``: the status, result and cancellation of inference jobs.

A job belongs to those who asked for it (:mod:`~model_proxy.broker.requesters`): the listing is
the caller's own jobs (an admin's: all; an anonymous caller's: none, 401); a job and its result
are open to whoever holds its id; a cancel by a requester leaves the job, which is cancelled when
no requester is left (an admin's cancels it at once); who asked is shown to admins only."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from fastapi.responses import JSONResponse

from model_proxy.broker.answers import DICOM_TYPE, answer_for_job, object_for_job
from model_proxy.broker.audit import note_job, note_listing
from model_proxy.broker.deps import NegotiatedParam, Services
from model_proxy.broker.errors import error_response
from model_proxy.broker.openapi import ANSWER_HEADERS, NOT_MODIFIED, errors
from model_proxy.broker.requesters import Caller, CallerParam, named_caller
from model_proxy.broker.schemas import ErrorBody, JobList, JobResource
from model_proxy.broker.services import BrokerServices
from model_proxy.shared.errors import (
    JobCancelled,
    JobFinished,
    JobNotSucceeded,
    NoResultObject,
    NotYourJob,
    UnknownJob,
)
from model_proxy.shared.jobs import Detached, Job, JobState, Terminated
from model_proxy.shared.tasks import STORE_OBJECTS

__all__ = ["router"]

router = APIRouter(prefix="/jobs", tags=["jobs"])


class ResultFormat(StrEnum):
    """What ``GET /jobs/{id}/result`` answers with."""

    JSON = "json"
    SEG = "seg"
    SR = "sr"


_NOT_FOUND: dict[int | str, dict[str, object]] = {
    **errors(503),
    404: {"model": ErrorBody, "description": "No such job (or it has expired)"},
}

_NOT_YOURS: dict[int | str, dict[str, object]] = {
    403: {
        "model": ErrorBody,
        "description": "Not a requester of this job (`not_your_job`), or a web page not "
        "allowed to change jobs (`origin_not_allowed`)",
    },
}


async def _job(services: BrokerServices, job_id: str) -> Job:
    job = await services.jobs.get(job_id)
    if job is None:
        raise UnknownJob(f"Not found: no job {job_id!r} (unknown, or expired)")
    note_job(job)
    return job


@router.get(
    "",
    response_model=JobList,
    responses={
        **errors(422, 503),
        401: {"model": ErrorBody, "description": "Anonymous: send a credential"},
    },
)
async def list_jobs(
    services: Services,
    who: Annotated[Caller, Depends(named_caller)],
    state: Annotated[JobState | None, Query(description="Only jobs in this state")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> JSONResponse:
    """The caller's jobs, those it asked for (latest ask first); an admin's: every job, newest
    first. Anonymous callers are not answered (401)."""
    if who.admin:
        jobs = await services.jobs.recent(limit, state)
    else:
        jobs = await services.jobs.asked_by(who.requester, limit, state)
    note_listing(jobs)
    resources = [JobResource.from_job(job, show_requesters=who.admin) for job in jobs]
    return JSONResponse({"jobs": [resource.to_json() for resource in resources]})


@router.get("/{job_id}", response_model=JobResource, responses=_NOT_FOUND)
async def get_job(services: Services, who: CallerParam, job_id: str) -> JSONResponse:
    """A job's state, request, progress, stage times and error; to an admin, also who asked
    for it. Open to whoever holds its id."""
    job = await _job(services, job_id)
    return JSONResponse(JobResource.from_job(job, show_requesters=who.admin).to_json())


@router.get(
    "/{job_id}/result",
    responses={
        200: {
            "description": "The model's JSON document, or the DICOM object(s) made from it",
            "content": {"application/json": {}, DICOM_TYPE: {}, "multipart/related": {}},
            "headers": ANSWER_HEADERS,
        },
        304: NOT_MODIFIED,
        202: {"model": JobResource, "description": "Not finished yet; try again"},
        **errors(400, 410, 422, 502, 504),
        **_NOT_FOUND,
        502: {"model": ErrorBody, "description": "The job failed: the error it recorded"},
    },
)
async def get_result(
    services: Services,
    wanted: NegotiatedParam,
    job_id: str,
    format: Annotated[
        ResultFormat,
        Query(
            description="`json`: the model's answer; `seg` or `sr`: the DICOM object made from "
            "it (`application/dicom`; 404 `result_object_not_found` when the job made none)"
        ),
    ] = ResultFormat.JSON,
    series: Annotated[
        str | None,
        Query(
            description="With `seg` or `sr`: only the object of this series (its own "
            "SeriesInstanceUID or that of the series it was made on)",
            max_length=64,
        ),
    ] = None,
) -> Response:
    """The model's JSON once the job succeeded (gzipped for a client that accepts gzip; 304
    when `If-None-Match` names its `ETag`), or with `?format=seg|sr` the DICOM object made from
    it (several, a SEG per segmented series, as `multipart/related; type="application/dicom"`;
    `series` picks one); otherwise what became of it."""
    job = await _job(services, job_id)
    if format is ResultFormat.JSON:
        return await answer_for_job(services.jobs, job, wanted)
    return await object_for_job(services.jobs, job, format.value, series)


@router.delete(
    "/{job_id}",
    response_model=JobResource,
    responses={
        409: {"model": ErrorBody, "description": "The job had already finished"},
        **_NOT_FOUND,
        **_NOT_YOURS,
    },
)
async def cancel_job(services: Services, who: CallerParam, job_id: str) -> Response:
    """Leave a job you asked for: it is cancelled when no other requester waits for it, and
    runs on for them otherwise (the answer is the job, still running). An admin cancels it at
    once. A running job stops at its next step, and its model call is not made if it has not
    started. Anyone else gets 403 `not_your_job`."""
    job = await _job(services, job_id)
    error = JobCancelled("cancelled by a client")
    outcome: str
    if who.admin:
        outcome = await services.jobs.terminate(job, JobState.CANCELLED, error)
    else:
        outcome = await services.jobs.detach(job, who.requester, error)
    if outcome == Detached.NOT_REQUESTER:
        raise NotYourJob(f"job {job_id} was asked for by others: only they or an admin cancel it")
    if outcome == Terminated.FINISHED:
        return error_response(JobFinished(f"job {job_id} had already finished"), jobId=job_id)
    if outcome == Terminated.MISSING:
        raise UnknownJob(f"Not found: no job {job_id!r} (unknown, or expired)")
    current = await _job(services, job_id)
    return JSONResponse(JobResource.from_job(current, show_requesters=who.admin).to_json())


@router.post(
    "/{job_id}/store",
    response_model=JobResource,
    status_code=202,
    responses={
        **_NOT_FOUND,
        404: {
            "model": ErrorBody,
            "description": "No such job (`unknown_job`), or it made no DICOM object "
            "(`result_object_not_found`)",
        },
        409: {"model": ErrorBody, "description": "The job has not succeeded"},
        **_NOT_YOURS,
    },
)
async def store_job_objects(services: Services, who: CallerParam, job_id: str) -> Response:
    """Store the DICOM objects a succeeded job made into the PACS again (after a failed store):
    a worker does it; the answer is the job (202), whose `outputs` and `storeError` show the
    outcome when it is done. For an admin or a requester of the job; 404
    `result_object_not_found` when it made no object, 409 `job_not_succeeded` before it
    succeeded."""
    job = await _job(services, job_id)
    if not who.admin and who.requester not in job.requesters:
        raise NotYourJob(f"job {job_id} was asked for by others: only they or an admin store it")
    if job.state is not JobState.SUCCEEDED:
        return error_response(
            JobNotSucceeded(f"job {job_id} is {job.state.value}: only a succeeded job is stored"),
            jobId=job_id,
        )
    if not job.outputs:
        return error_response(
            NoResultObject(f"job {job_id} made no DICOM object to store"), jobId=job_id
        )
    await services.enqueue(job, STORE_OBJECTS)
    return JSONResponse(
        JobResource.from_job(job, show_requesters=who.admin).to_json(), status_code=202
    )
