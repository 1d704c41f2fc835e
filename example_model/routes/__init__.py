"""The example model's routers, one module per resource, gathered here."""

from fastapi import APIRouter

from model_proxy.example_model.routes import debug, health, predict

__all__ = ["model_router"]

model_router = APIRouter()
model_router.include_router(predict.router)
model_router.include_router(health.router)
model_router.include_router(debug.router)
