"""``/status``: whether every server, model, Redis and the workers answer (model-contract §5).

Served only when ``ZHIVA_SHOW_STATUS_PAGE`` (the original's variable) or
``MODEL_PROXY_SHOW_STATUS_PAGE`` is true; otherwise 404 like any unknown path. With anonymous
access refused (``MODEL_PROXY_ANONYMOUS=none``) only admins see it. JSON for programs,
an HTML page when the client prefers ``text/html`` (a browser).
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.exceptions import HTTPException

from model_proxy.broker.deps import Services
from model_proxy.broker.requesters import ADMIN_WHEN_CLOSED, admin_when_closed
from model_proxy.broker.status import check_status
from model_proxy.broker.status_page import prefers_html, render_status_page
from model_proxy.shared.schemas import ErrorBody

__all__ = ["router"]

router = APIRouter(tags=["operations"])

_NO_STORE = {"Cache-Control": "no-store"}


@router.get(
    "/status",
    response_class=Response,
    responses={
        200: {
            "description": "Each server's and model's check, Redis, the live workers, the "
            "queue depths and the latest jobs by state",
            "content": {"application/json": {}, "text/html": {}},
        },
        404: {"model": ErrorBody, "description": "The status page is turned off"},
        **ADMIN_WHEN_CLOSED,
    },
    dependencies=[Depends(admin_when_closed)],
)
async def status(
    request: Request,
    services: Services,
    format: Annotated[
        Literal["json", "html"] | None,
        Query(description="Overrides the Accept header: `json` or `html`"),
    ] = None,
) -> Response:
    """Checks every server's `statusUri` (with its auth) and every model's at once, each
    within `MODEL_PROXY_STATUS_TIMEOUT`; 200 is up, an entry without `statusUri` is unknown.
    Only when `ZHIVA_SHOW_STATUS_PAGE` or `MODEL_PROXY_SHOW_STATUS_PAGE` is `true`."""
    if not services.settings.show_status_page:
        raise HTTPException(status_code=404)
    report = await check_status(services)
    html = format == "html" or (format is None and prefers_html(request.headers.get("accept", "")))
    if html:
        return HTMLResponse(render_status_page(report), headers=_NO_STORE)
    return JSONResponse(report.to_json(), headers=_NO_STORE)
