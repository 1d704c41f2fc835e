"""``GET /`` and ``GET /health``: 200 while the API runs (a ``statusUri`` target)."""

from __future__ import annotations

from fastapi import APIRouter

__all__ = ["router"]

router = APIRouter(tags=["health"])


@router.get("/")
@router.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}
