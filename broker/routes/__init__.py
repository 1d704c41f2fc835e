"""The API's routers, one module per resource, gathered here."""

from fastapi import APIRouter

from model_proxy.broker.routes import health, inference, jobs, status

__all__ = ["api_router"]

api_router = APIRouter()
api_router.include_router(inference.router)
api_router.include_router(jobs.router)
api_router.include_router(health.router)
api_router.include_router(status.router)
