"""Who may ask: the authentication middleware, and the principal it gives each request.

A credential is an API key, sent as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``:

* a presented credential that is not a valid key is 401 ``invalid_credentials``, whatever the
  anonymous setting (a client that means to authenticate learns that it did not);
* a valid key makes the principal (the key's name and role), in ``scope["state"]["principal"]``
  (``request.state.principal`` in a route);
* no credential is the anonymous principal with ``MODEL_PROXY_ANONYMOUS=viewer`` (or unset), and
  401 ``unauthenticated`` with ``WWW-Authenticate: Bearer`` with ``none``.

The liveness and readiness probes, the API description and CORS preflights stay open. A
credential is never echoed, never logged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

from model_proxy.shared.api_keys import ApiKeyReader

__all__ = ["ANONYMOUS", "OPEN_PATHS", "Authenticate", "Principal"]

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})


@dataclass(frozen=True)
class Principal:
    """Who is asking: a key's name and role, or the anonymous viewer."""

    name: str
    role: Literal["viewer", "admin"]
    anonymous: bool = False


ANONYMOUS = Principal("anonymous", "viewer", anonymous=True)


class Authenticate:
    """ASGI middleware: find the request's principal, or answer 401."""

    def __init__(
        self, app: ASGIApp, keys: ApiKeyReader, anonymous: Literal["viewer", "none"]
    ) -> None:
        self._app = app
        self._keys = keys
        self._anonymous = anonymous

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"] in OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        key = _presented_key(scope)
        if key is None:
            if self._anonymous == "none":
                await _refuse(scope, receive, send, invalid=False)
                return
            principal = ANONYMOUS
        else:
            entry = self._keys.cached(key) or await run_in_threadpool(self._keys.verify, key)
            if entry is None:
                await _refuse(scope, receive, send, invalid=True)
                return
            principal = Principal(entry.name, entry.role)
        scope.setdefault("state", {})["principal"] = principal
        await self._app(scope, receive, send)


def _presented_key(scope: Scope) -> str | None:
    """The credential of the request (empty when a header is present but blank), or None."""
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credential = value.decode("latin-1").partition(" ")
            return credential.strip() if scheme.lower() == "bearer" else ""
        if name == b"x-api-key":
            return str(value.decode("latin-1").strip())
    return None


async def _refuse(scope: Scope, receive: Receive, send: Send, *, invalid: bool) -> None:
    if invalid:
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
