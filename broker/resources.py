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
from model_proxy.shared.jobs.estimate import NO_ESTIMATE
from model_proxy.shared.schemas import JobResource

__all__ = ["render_current", "render_job"]

REREADS = 2  # a queued record read just before its claim is read again at most this often


async def render_job(
    services: BrokerServices, job: Job, who: Caller | None = None
) -> dict[str, Any]:
    """``job`` as its JSON resource as ``who`` sees it (``None``: a caller with no rights beyond
    holding the id): its estimate (a few Redis reads while unfinished; none once finished), its
    callbacks (the URLs a named ``who`` gave, or all to an admin, in full; of the others only
    the origin), and ``requestedBy`` to an admin."""
    _, rendered = await render_current(services, job, who)
    return rendered


async def render_current(
    services: BrokerServices, job: Job, who: Caller | None = None
) -> tuple[Job, dict[str, Any]]:
    """:func:`render_job`, with the record rendered: ``job``, or its newer record when a worker
    claimed it between its read and its estimate (so a resource never says ``queued`` without
    its place in the queue)."""
    admin = who is not None and who.admin
    estimate = await estimate_job(services, job)
    for _ in range(REREADS):
        if estimate is not None:
            break
        newer = await services.jobs.get(job.id)
        if newer is None:
            break
        job = newer
        estimate = await estimate_job(services, job)
    callbacks = await job_callbacks(services, job.id, who)
    resource = JobResource.from_job(
        job, show_requesters=admin, estimate=estimate or NO_ESTIMATE, callbacks=callbacks
    )
    return job, resource.to_json()
