"""A testing aid: ``GET /_debug/received`` and ``POST /_debug/reset`` (see example_model.received).

Tests of model-proxy read these to check which instances, byte for byte, reached the model.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from model_proxy.example_model.deps import ReceivedLogDep

__all__ = ["router"]

router = APIRouter(prefix="/_debug", tags=["testing aid"])


@router.get("/received")
async def received(log: ReceivedLogDep) -> dict[str, Any]:
    """The number of predict requests since the last reset and the most recent ones."""
    return log.snapshot()


@router.post("/reset")
async def reset(log: ReceivedLogDep) -> dict[str, str]:
    """Forget every received request."""
    log.clear()
    return {"status": "ok"}
