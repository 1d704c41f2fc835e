"""The FastAPI application factory of the example model."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from model_proxy.example_model.errors import InvalidInput
from model_proxy.example_model.received import ReceivedLog
from model_proxy.example_model.routes import model_router
from model_proxy.example_model.settings import ExampleModelSettings

__all__ = ["create_app"]


def create_app(settings: ExampleModelSettings | None = None) -> FastAPI:
    """Build the example model API; each app has its own log of received requests."""
    settings = settings or ExampleModelSettings()
    app = FastAPI(
        title="model-proxy example model",
        summary="Segmentation, annotation and prediction of the pixels above a threshold",
        version="0.1.0",
    )
    app.state.settings = settings
    app.state.received = ReceivedLog(settings.recent_limit)
    app.add_exception_handler(InvalidInput, _invalid_input)
    app.include_router(model_router)
    return app


async def _invalid_input(_: Request, exc: Exception) -> JSONResponse:
    return JSONResponse({"detail": str(exc)}, status_code=422)
