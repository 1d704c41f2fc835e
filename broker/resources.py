"""The job resource as the API answers with it: the record and, for a single job, its live
estimate (queue place, estimated start and finish: :mod:`~model_proxy.broker.estimates`) and its
callbacks (:mod:`~model_proxy.broker.callbacks`).

Every answer that shows one job (``GET /jobs/{id}``, the 202 of the viewer's routes, of
``POST /jobs`` and of ``/jobs/{id}/result``, event streams) renders it with :func:`render_job`;
listings use :meth:`~model_proxy.shared.schemas.JobResource.from_job` alone and carry neither.
"""

from __future__ import annotations

from typing import Any

from model_proxy.broker.callbacks import job_callbacks
from model_proxy.broker.estimates import estimate_job
from model_proxy.broker.requesters import Caller
from model_proxy.broker.services import BrokerServices
from model_proxy.shared.jobs import Job
from model_proxy.shared.schemas import JobResource

__all__ = ["render_job"]


async def render_job(
    services: BrokerServices, job: Job, who: Caller | None = None
) -> dict[str, Any]:
    """``job`` as its JSON resource as ``who`` sees it (``None``: a caller with no rights beyond
    holding the id): its estimate (a few Redis reads while unfinished; none once finished), its
    callbacks (the URLs a named ``who`` gave, or all to an admin, in full; of the others only
    the origin), and ``requestedBy`` to an admin."""
    admin = who is not None and who.admin
    estimate = await estimate_job(services, job)
    callbacks = await job_callbacks(services, job.id, who)
    resource = JobResource.from_job(
        job, show_requesters=admin, estimate=estimate, callbacks=callbacks
    )
    return resource.to_json()
