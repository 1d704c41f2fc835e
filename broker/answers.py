"""How the API answers with a job: its stored result (200), its error, 410 when cancelled, or
202 with the job resource while it runs. The viewer's routes and ``/jobs`` both answer here."""

from __future__ import annotations

from fastapi import Response
from fastapi.responses import JSONResponse

from model_proxy.broker.errors import error_response
from model_proxy.broker.jobs import AsyncJobStore
from model_proxy.broker.schemas import JobResource, job_url
from model_proxy.shared.errors import JobCancelled, ResultExpired, error_from_code
from model_proxy.shared.jobs import Job, JobState

__all__ = ["accepted", "answer_for_job", "result_answer"]


def accepted(job: Job) -> JSONResponse:
    """202 Accepted: the job runs on; poll its status URL."""
    return JSONResponse(
        JobResource.from_job(job).to_json(),
        status_code=202,
        headers={"Location": job_url(job.id), "Retry-After": "1"},
    )


def result_answer(job_id: str, result: bytes) -> Response:
    """200 with the model's JSON document, naming the job that made it."""
    return Response(result, media_type="application/json", headers={"X-Job-Id": job_id})


async def answer_for_job(store: AsyncJobStore, job: Job) -> Response:
    """200 with the model's JSON, the job's error, 410 when cancelled, or 202 while it runs."""
    if job.state is JobState.SUCCEEDED:
        result = await store.get_result(job.id)
        if result is None:
            return error_response(
                ResultExpired(f"the result of job {job.id} has expired"), jobId=job.id
            )
        return result_answer(job.id, result)
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
    return accepted(job)
