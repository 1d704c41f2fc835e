"""Who may ask: with anonymous access refused (``MODEL_PROXY_ANONYMOUS=none``), a request needs
a credential, else 401 with ``WWW-Authenticate: Bearer``.

The liveness and readiness probes, the API description and CORS preflights stay open. No
credential source is configured yet, so with anonymous access refused every other request is
refused: a credential that is sent cannot be recognised, and is answered 401
``invalid_credentials`` (never echoed, never logged).
"""

from __future__ import annotations

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["OPEN_PATHS", "RequireCredentials"]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})


class RequireCredentials:
    """ASGI middleware for ``MODEL_PROXY_ANONYMOUS=none``."""

    def __init__(self, app: ASGIApp) -> None:
        self._app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"] in OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        names = {key for key, _ in scope.get("headers", [])}
        if b"authorization" in names or b"x-api-key" in names:
            body = {"message": "the credential is not recognised", "code": "invalid_credentials"}
            challenge = 'Bearer error="invalid_token"'
        else:
            body = {
                "message": "this model-proxy does not answer anonymous requests: send a "
                "credential (Authorization: Bearer ...)",
                "code": "unauthenticated",
            }
            challenge = "Bearer"
        answer = JSONResponse(body, status_code=401, headers={"WWW-Authenticate": challenge})
        await answer(scope, receive, send)
