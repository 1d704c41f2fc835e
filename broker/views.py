"""How a job is shown to clients: ``GET /jobs/{id}`` and every 202 answer."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from model_proxy.broker.schemas import JobResource
from model_proxy.shared.jobs import Job

__all__ = ["accepted", "job_url"]


def job_url(job_id: str) -> str:
    return f"/jobs/{job_id}"


def accepted(job: Job) -> JSONResponse:
    """202 Accepted: the job runs on; poll its status URL."""
    return JSONResponse(
        JobResource.from_job(job).to_json(),
        status_code=202,
        headers={"Location": job_url(job.id), "Retry-After": "1"},
    )
