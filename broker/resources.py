"""The job resource as the API answers with it: the record and, for a single job, its live
estimate (queue place, estimated start and finish: :mod:`~model_proxy.broker.estimates`).

Every answer that shows one job (``GET /jobs/{id}``, the 202 of the viewer's routes and of
``/jobs/{id}/result``, event streams) renders it with :func:`render_job`; listings use
:meth:`~model_proxy.broker.schemas.JobResource.from_job` alone and carry no estimates.
"""

from __future__ import annotations

from typing import Any

from model_proxy.broker.estimates import estimate_job
from model_proxy.broker.schemas import JobResource
from model_proxy.broker.services import BrokerServices
from model_proxy.shared.jobs import Job

__all__ = ["render_job"]


async def render_job(
    services: BrokerServices, job: Job, *, show_requesters: bool = False
) -> dict[str, Any]:
    """``job`` as its JSON resource, with its estimate (a few Redis reads while unfinished;
    none once finished). ``requestedBy`` is shown when ``show_requesters`` (to an admin)."""
    estimate = await estimate_job(services, job)
    resource = JobResource.from_job(job, show_requesters=show_requesters, estimate=estimate)
    return resource.to_json()
