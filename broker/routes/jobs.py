"""``/jobs``: submitting inference jobs as JSON, and their status, result and cancellation.

A job belongs to those who asked for it (:mod:`~model_proxy.broker.requesters`): the listing is
the caller's own jobs (an admin's: all; an anonymous caller's: none, 401); a job and its result
are open to whoever holds its id; a cancel by a requester leaves the job, which is cancelled when
no requester is left (an admin's cancels it at once); who asked is shown to admins only."""

from __future__ import annotations

import contextlib
from enum import StrEnum
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse

from model_proxy.broker.answers import DICOM_TYPE, answer_for_job, object_for_job
from model_proxy.broker.audit import note_job, note_listing
from model_proxy.broker.callbacks import dispatch_callbacks
from model_proxy.broker.deps import AnswerOptions, NegotiatedParam, Services
from model_proxy.broker.errors import error_response
from model_proxy.broker.event_stream import EVENT_STREAM_RESPONSES, event_stream_response
from model_proxy.broker.idempotency import IdempotencyKey
from model_proxy.broker.inference import submit_job as submit
from model_proxy.broker.negotiation import negotiate
from model_proxy.broker.openapi import ANSWER_HEADERS, NOT_MODIFIED, errors
from model_proxy.broker.requesters import Caller, CallerParam, named_caller
from model_proxy.broker.resources import render_job
from model_proxy.broker.services import BrokerServices
from model_proxy.broker.submission import JobSubmission, prefer_wait, read_submission
from model_proxy.broker.validation import build_request
from model_proxy.shared.errors import (
    JobCancelled,
    JobFinished,
    JobNotSucceeded,
    NoResultObject,
    NotYourJob,
    QueueUnavailable,
    UnknownJob,
)
from model_proxy.shared.jobs import Detached, Job, JobState, Terminated
from model_proxy.shared.schemas import ErrorBody, JobList, JobResource
from model_proxy.shared.tasks import STORE_OBJECTS

__all__ = ["router"]

router = APIRouter(prefix="/jobs", tags=["jobs"])

_PREFERENCE_APPLIED = {
    "description": "`wait=N`: the wait honoured (N capped by `MODEL_PROXY_SYNC_WAIT_SECONDS`)",
    "schema": {"type": "string"},
}


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
    first. Anonymous callers are not answered (401). To keep listings cheap, their jobs carry no
    queue place or estimates (`GET /jobs/{id}` has them)."""
    if who.admin:
        jobs = await services.jobs.recent(limit, state)
    else:
        jobs = await services.jobs.asked_by(who.requester, limit, state)
    note_listing(jobs)
    resources = [JobResource.from_job(job, show_requesters=who.admin) for job in jobs]
    return JSONResponse({"jobs": [resource.to_json() for resource in resources]})


# --- POST /jobs: a request submitted as JSON (broker/submission.py) ---------------------------

_SUBMIT_BODY: dict[str, Any] = {
    "required": True,
    "content": {"application/json": {"schema": JobSubmission.model_json_schema(by_alias=True)}},
}
_SUBMIT_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "The model's JSON document: the job finished within `Prefer: wait=N`, "
        "or an identical request's stored answer (unless `fresh`)",
        "content": {"application/json": {}},
        "headers": {**ANSWER_HEADERS, "Preference-Applied": _PREFERENCE_APPLIED},
    },
    202: {
        "description": "The job, queued or running: poll it at `Location`",
        "model": JobResource,
        "headers": {
            "Location": {"description": "The job's URL", "schema": {"type": "string"}},
            "Retry-After": {"description": "Seconds to wait", "schema": {"type": "string"}},
            "Preference-Applied": _PREFERENCE_APPLIED,
        },
    },
    304: NOT_MODIFIED,
    **errors(400, 404, 409, 410, 429, 502, 503, 504),
    400: {
        "model": ErrorBody,
        "description": "A bad `Idempotency-Key` (`bad_idempotency_key`) or data filter "
        "(`invalid_data_filter`)",
    },
    409: {
        "model": ErrorBody,
        "description": "The first request with this `Idempotency-Key` is still being answered "
        "(`idempotency_key_in_flight`)",
    },
    413: {"model": ErrorBody, "description": "The body is too large (`body_too_large`)"},
    415: {
        "model": ErrorBody,
        "description": "The body is not JSON (`unsupported_media_type`)",
    },
    422: {
        "model": ErrorBody,
        "description": "A body that is not a submission (`invalid_request`), a UID that is not "
        "a DICOM UID (`invalid_uid`), or an `Idempotency-Key` used with another body "
        "(`idempotency_key_reused`)",
    },
    **_NOT_YOURS,
}


@router.post(
    "",
    status_code=202,
    response_model=JobResource,
    responses=_SUBMIT_RESPONSES,
    openapi_extra={"requestBody": _SUBMIT_BODY},
)
async def submit_job(
    request: Request,
    services: Services,
    who: CallerParam,
    prefer: Annotated[
        str | None,
        Header(
            description="`wait=N` (RFC 7240): wait up to N seconds (at most "
            "`MODEL_PROXY_SYNC_WAIT_SECONDS`) and answer 200 with the model's answer when the "
            "job finishes in time"
        ),
    ] = None,
    idempotency_key: Annotated[
        str | None,
        Header(
            description="1 to 255 printable ASCII characters: a retry with the same key and "
            "body gets the same job, for `MODEL_PROXY_IDEMPOTENCY_KEY_TTL_SECONDS` (a day)"
        ),
    ] = None,
) -> Response:
    """Ask for an inference with a JSON body, as the viewer's routes ask with a URL: the job
    is made, or joined when an identical request's job is unfinished, within the same quotas;
    an identical request's stored answer answers at once (200) unless `fresh`. The answer is
    202 with the job and `Location`, or, with `Prefer: wait=N`, what the job became within N
    seconds: 200 with the model's answer, the job's error, or still 202."""
    settings = services.settings
    submission = await read_submission(request, settings.submit_max_body_bytes)
    key = None
    if idempotency_key is not None:
        key = IdempotencyKey.checked(idempotency_key, submission.fingerprint())
    inference = build_request(
        services.catalog,
        submission.inference_task,
        submission.path,
        filter_items=submission.data_filters or (),
    )
    wait = prefer_wait(prefer, settings.sync_wait_seconds)
    options = AnswerOptions(
        query=(),
        respond_async=not wait,
        fresh=submission.fresh,
        negotiated=negotiate(request.headers),
        wait_seconds=wait,
        callback=submission.callback,
    )
    response = await submit(services, inference, options, who, request.is_disconnected, key)
    if wait is not None:
        response.headers["Preference-Applied"] = f"wait={wait}"
    return response


# --- the job resource ------------------------------------------------------------------------


@router.get("/{job_id}", response_model=JobResource, responses=_NOT_FOUND)
async def get_job(services: Services, who: CallerParam, job_id: str) -> JSONResponse:
    """A job's state, request, progress, stage times and error; while queued, its place in its
    model's queue; until it finishes, estimates of its start and finish (from the model's recent
    runs); to an admin, also who asked for it. Open to whoever holds its id."""
    job = await _job(services, job_id)
    return JSONResponse(await render_job(services, job, who))


@router.get(
    "/{job_id}/events",
    response_class=Response,
    responses={**EVENT_STREAM_RESPONSES, **_NOT_FOUND},
)
async def job_events(
    services: Services,
    who: CallerParam,
    job_id: str,
    last_event_id: Annotated[
        str | None,
        Header(
            description="The `id` of the last event received: the job is not sent again "
            "when that is still its current state"
        ),
    ] = None,
) -> Response:
    """The job's server-sent events (`text/event-stream`) as it changes: `state`, `progress`,
    `queue` (while queued) and, when it has finished, `end`, after which the stream ends. Each
    event's data is the job as `GET /jobs/{id}` renders it. Open to whoever holds its id."""
    job = await _job(services, job_id)
    return event_stream_response(services, job, who=who, last_event_id=last_event_id)


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
        return await answer_for_job(services, job, wanted)
    return await object_for_job(services, job, format.value, series)


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
    if current.state.finished:
        # the queue away: the worker that takes the job's task message queues them instead
        with contextlib.suppress(QueueUnavailable):
            await dispatch_callbacks(services, job_id)
    return JSONResponse(await render_job(services, current, who))


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
    return JSONResponse(await render_job(services, job, who), status_code=202)
