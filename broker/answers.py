"""How the API answers with a job: its stored result (200), its error, 410 when cancelled, or
202 with the job resource while it runs. The viewer's routes and ``/jobs`` both answer here.

A stored answer is served as the worker stored it (:mod:`~model_proxy.shared.jobs.answers`):
gzipped answers go to clients that accept gzip as they are, with ``Content-Encoding: gzip``, and
are decompressed, streaming, for the others. Every answer carries ``Vary: Accept-Encoding`` and a
strong ``ETag`` read from the stored header (one per representation: the gzip one ends in
``-gzip``); a client whose ``If-None-Match`` names it gets 304 without a body.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Sequence

from fastapi import Response
from fastapi.responses import JSONResponse, StreamingResponse

from model_proxy.broker.errors import error_response
from model_proxy.broker.negotiation import Negotiated, etag_matches
from model_proxy.broker.resources import render_job
from model_proxy.broker.services import BrokerServices
from model_proxy.shared.dicomweb.multipart import closing_delimiter, dicom_part_chunks
from model_proxy.shared.errors import (
    JobCancelled,
    NoResultObject,
    ResultExpired,
    error_from_code,
)
from model_proxy.shared.jobs import (
    Job,
    JobOutput,
    JobState,
    StoredAnswer,
    decompressed_chunks,
    read_answer,
)
from model_proxy.shared.schemas import job_url

__all__ = [
    "DICOM_TYPE",
    "accepted",
    "answer_for_job",
    "object_for_job",
    "object_parts",
    "result_answer",
]

log = logging.getLogger(__name__)

DICOM_TYPE = "application/dicom"


async def accepted(services: BrokerServices, job: Job) -> JSONResponse:
    """202 Accepted with the job and its estimate: the job runs on; poll its status URL."""
    return JSONResponse(
        await render_job(services, job),
        status_code=202,
        headers={"Location": job_url(job.id), "Retry-After": "1"},
    )


def result_answer(job_id: str, answer: StoredAnswer, wanted: Negotiated) -> Response:
    """200 with the model's JSON document (gzipped when stored so and the client accepts it),
    naming the job that made it; 304 when the client's ``If-None-Match`` names it."""
    send_gzip = answer.gzipped and wanted.gzip
    etag = f'"{answer.tag}-gzip"' if send_gzip else f'"{answer.tag}"'
    headers = {"X-Job-Id": job_id, "ETag": etag, "Vary": "Accept-Encoding"}
    if etag_matches(wanted.if_none_match, etag):
        return Response(status_code=304, headers=headers)
    if send_gzip or not answer.gzipped:
        if send_gzip:
            headers["Content-Encoding"] = "gzip"
        return Response(answer.body, media_type="application/json", headers=headers)
    headers["Content-Length"] = str(answer.size)
    return StreamingResponse(_json_of(answer), media_type="application/json", headers=headers)


async def _json_of(answer: StoredAnswer) -> AsyncIterator[bytes]:
    # piece by piece (a quarter MB each, about a millisecond): other requests go on between
    for chunk in decompressed_chunks(answer):
        yield chunk


async def object_for_job(
    services: BrokerServices, job: Job, kind: str, series: str | None = None
) -> Response:
    """200 with the DICOM objects ``kind`` (``seg``, ``sr``) made from the job's answer: one as
    ``application/dicom``, several (a SEG per segmented series) as ``multipart/related`` parts
    each naming its SOP Instance UID; ``series`` (the object's or its source series) picks
    among them. 404 ``result_object_not_found`` when it made none; otherwise as
    :func:`answer_for_job`."""
    if job.state is not JobState.SUCCEEDED:
        return await _unfinished(services, job)
    chosen = [output for output in job.outputs if output.format == kind]
    if series is not None:
        chosen = [
            output
            for output in chosen
            if series in (output.series_instance_uid, output.source_series_instance_uid)
        ]
    if not chosen:
        of_series = f" of series {series}" if series is not None else ""
        why = f": {job.output_error.message}" if job.output_error is not None else ""
        return error_response(
            NoResultObject(f"job {job.id} made no {kind} object{of_series}{why}"), jobId=job.id
        )
    expired = ResultExpired(f"the {kind} object of job {job.id} has expired")
    if len(chosen) == 1:
        data = await services.jobs.get_object(job.id, chosen[0].key)
        if data is None:
            return error_response(expired, jobId=job.id)
        disposition = f'attachment; filename="{job.id}-{kind}.dcm"'
        headers = {"X-Job-Id": job.id, "Content-Disposition": disposition}
        return Response(data, media_type=DICOM_TYPE, headers=headers)
    if not await services.jobs.objects_kept(job.id, [output.key for output in chosen]):
        return error_response(expired, jobId=job.id)
    boundary = uuid.uuid4().hex
    return StreamingResponse(
        object_parts(services, job.id, chosen, boundary),
        media_type=f'multipart/related; type="{DICOM_TYPE}"; boundary={boundary}',
        headers={"X-Job-Id": job.id},
    )


async def object_parts(
    services: BrokerServices, job_id: str, outputs: Sequence[JobOutput], boundary: str
) -> AsyncIterator[bytes]:
    """The ``multipart/related`` body of a job's several objects, each read from Redis only as
    its part is sent: one object in memory at a time, never the whole body. An object that
    expires meanwhile raises :class:`ResultExpired`, which cuts the body short before its
    closing delimiter (the client sees an incomplete answer, never a shorter complete one)."""
    for output in outputs:
        data = await services.jobs.get_object(job_id, output.key)
        if data is None:
            log.warning("an object of job %s expired while it was being sent", job_id)
            raise ResultExpired(f"the {output.format} object of job {job_id} has expired")
        for chunk in dicom_part_chunks(data, _part_headers(job_id, output), boundary):
            yield chunk
    yield closing_delimiter(boundary)


def _part_headers(job_id: str, output: JobOutput) -> dict[str, str]:
    """A part's ``Content-Location``: the URL of that object alone, by its series."""
    location = f"{job_url(job_id)}/result?format={output.format}"
    if output.series_instance_uid:
        location += f"&series={output.series_instance_uid}"
    headers = {"Content-Location": location}
    if output.sop_instance_uid:
        headers["Content-ID"] = f"<{output.sop_instance_uid}>"
    return headers


async def answer_for_job(services: BrokerServices, job: Job, wanted: Negotiated) -> Response:
    """200 with the model's JSON (or 304), the job's error, 410 when cancelled, or 202 while it
    runs."""
    if job.state is JobState.SUCCEEDED:
        result = await services.jobs.get_result(job.id)
        if result is None:
            return error_response(
                ResultExpired(f"the result of job {job.id} has expired"), jobId=job.id
            )
        return result_answer(job.id, read_answer(result), wanted)
    return await _unfinished(services, job)


async def _unfinished(services: BrokerServices, job: Job) -> Response:
    """The job's error, 410 when cancelled, or 202 while it runs."""
    if job.state is JobState.CANCELLED:
        return error_response(JobCancelled(f"job {job.id} was cancelled"), jobId=job.id)
    if job.state is JobState.FAILED:
        error = job.error
        failure = (
            error_from_code(error.code, error.message)
            if error is not None
            else error_from_code("internal_error", "the job failed")
        )
        return error_response(failure, jobId=job.id)
    return await accepted(services, job)
