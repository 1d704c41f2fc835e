"""Answering with what became of a job: its result, its error, or 202 while it runs."""

from __future__ import annotations

from fastapi import Response

from model_proxy.broker.errors import error_response
from model_proxy.broker.jobs import AsyncJobStore
from model_proxy.broker.views import accepted
from model_proxy.shared.errors import JobCancelled, ResultExpired, error_from_code
from model_proxy.shared.jobs import Job, JobState

__all__ = ["job_outcome"]


async def job_outcome(store: AsyncJobStore, job: Job) -> Response:
    """200 with the model's JSON, the job's error, 410 when cancelled, or 202 while it runs."""
    if job.state is JobState.SUCCEEDED:
        result = await store.get_result(job.id)
        if result is None:
            return error_response(
                ResultExpired(f"the result of job {job.id} has expired"), jobId=job.id
            )
        return Response(result, media_type="application/json", headers={"X-Job-Id": job.id})
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
