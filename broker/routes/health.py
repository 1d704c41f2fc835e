"""Liveness and readiness probes."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

__all__ = ["router"]

router = APIRouter(tags=["operations"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Configuration loaded and Redis reachable."""
    services = request.app.state.services
    try:
        await services.jobs.ping()
    except Exception:
        return JSONResponse(
            {
                "status": "unavailable",
                "message": "Redis cannot be reached",
                "code": "redis_unavailable",
            },
            status_code=503,
        )
    return JSONResponse(
        {
            "status": "ready",
            "servers": len(services.catalog.servers),
            "models": len(services.catalog.models),
        }
    )
