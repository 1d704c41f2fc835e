"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST

from model_proxy.broker.deps import Services
from model_proxy.broker.errors import error_response
from model_proxy.broker.metrics import render_metrics
from model_proxy.broker.openapi import errors
from model_proxy.broker.requesters import ADMIN_WHEN_CLOSED, admin_when_closed
from model_proxy.shared.errors import QueueUnavailable, ServiceUnavailable
from model_proxy.shared.redis_errors import REDIS_UNREACHABLE, redis_errors

__all__ = ["router"]

router = APIRouter(tags=["operations"])

_NOT_READY = {
    "type": "object",
    "properties": {
        "status": {"const": "unavailable"},
        "message": {"type": "string"},
        "code": {"type": "string"},
    },
    "required": ["status", "message", "code"],
}


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        200: {"description": "Ready: Redis answers; the number of servers and models"},
        503: {
            "description": "Not ready: Redis cannot be reached, or this process is busy",
            "content": {"application/json": {"schema": _NOT_READY}},
        },
    },
)
async def readyz(services: Services) -> JSONResponse:
    """Configuration loaded and Redis reachable."""
    try:
        await services.jobs.ping()
    except ServiceUnavailable as error:  # Redis down, or this process at its load limit
        return error_response(error, status="unavailable")
    except Exception:
        return error_response(QueueUnavailable(REDIS_UNREACHABLE), status="unavailable")
    return JSONResponse(
        {
            "status": "ready",
            "servers": len(services.catalog.servers),
            "models": len(services.catalog.models),
        }
    )


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"},
        **errors(503),
        **ADMIN_WHEN_CLOSED,
    },
    dependencies=[Depends(admin_when_closed)],
)
async def metrics(services: Services) -> Response:
    """Requests, jobs, stage durations, bytes fetched, cache hits, shared jobs, token calls and
    queue depths, from the API and every worker, in the Prometheus text format. With anonymous
    access refused (`MODEL_PROXY_ANONYMOUS=none`) only admins see them."""
    with redis_errors():
        await services.metrics.flush()  # this process's own latest counts too
        body = await render_metrics(
            services.jobs,
            services.catalog.queues(services.settings.queue_name),
            services.catalog.models,
            services.celery.conf.broker_transport_options or {},
        )
    return Response(body, media_type=CONTENT_TYPE_LATEST)
