"""Who may ask: the authentication middleware, and the principal it gives each request.

A credential is sent as ``Authorization: Bearer <credential>`` (an API key also as
``X-API-Key: <key>``). It is an OIDC bearer token when OIDC is configured
(``MODEL_PROXY_JWT_ISSUER``) and it has the form of a JWT (three base64url parts; see
:mod:`broker.bearer_tokens`), else an API key:

* a presented credential that is not valid is 401 ``invalid_credentials``, whatever the
  anonymous setting (a client that means to authenticate learns that it did not);
* a valid token without a scope of model-proxy is 403 ``insufficient_scope``; a token whose
  issuer's keys cannot be fetched is 503 ``idp_unavailable``;
* an API key verified before is answered from memory; checking a new one (scrypt) runs in a
  thread, at most ``MODEL_PROXY_API_KEY_CONCURRENT_CHECKS`` at once with
  ``MODEL_PROXY_API_KEY_WAITING_CHECKS`` waiting (in the event loop, holding no thread): past that
  503 ``busy`` at once; a key id with too many wrong secrets a moment ago is 429
  ``too_many_failures`` without a check (see :mod:`shared.api_keys`);
* anything unexpected while checking a credential (a malformed token that trips a library) is
  401 ``invalid_credentials``, logged without the credential;
* a valid credential makes the principal (a key's name, or ``oidc:<sub>``, and the role), in
  ``scope["state"]["principal"]`` (``request.state.principal`` in a route);
* no credential is the anonymous principal with ``MODEL_PROXY_ANONYMOUS=viewer`` (or unset), and
  401 ``unauthenticated`` with ``WWW-Authenticate: Bearer`` with ``none``.

The liveness and readiness probes, the API description and CORS preflights stay open. A
credential is never echoed, never logged.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal

from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Receive, Scope, Send

from model_proxy.broker.bearer_tokens import BearerTokenVerifier, looks_like_jwt
from model_proxy.broker.check_gate import CheckGate
from model_proxy.broker.errors import error_response
from model_proxy.shared.api_keys import OIDC_NAME_PREFIX, ApiKeyReader
from model_proxy.shared.errors import (
    InvalidCredentials,
    ModelProxyError,
    Unauthenticated,
)

__all__ = ["ANONYMOUS", "OPEN_PATHS", "Authenticate", "Principal"]

log = logging.getLogger(__name__)

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json", "/docs", "/docs/oauth2-redirect"})


@dataclass(frozen=True)
class Principal:
    """Who is asking: a key's name and role, or the anonymous viewer."""

    name: str
    role: Literal["viewer", "admin"]
    anonymous: bool = False

    @property
    def kind(self) -> Literal["key", "token", "anonymous"]:
        """What the principal showed: an API key, an OIDC token (named ``oidc:<sub>``), or
        nothing."""
        if self.anonymous:
            return "anonymous"
        return "token" if self.name.startswith(OIDC_NAME_PREFIX) else "key"


ANONYMOUS = Principal("anonymous", "viewer", anonymous=True)


class Authenticate:
    """ASGI middleware: find the request's principal, or answer 401."""

    def __init__(
        self,
        app: ASGIApp,
        keys: ApiKeyReader,
        anonymous: Literal["viewer", "none"],
        tokens: BearerTokenVerifier | None = None,
        checks: CheckGate | None = None,
    ) -> None:
        self._app = app
        self._keys = keys
        self._checks = checks or CheckGate(concurrent=2, waiting=16)
        self._anonymous = anonymous
        self._tokens = tokens  # None: OIDC is not configured

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] == "OPTIONS" or scope["path"] in OPEN_PATHS:
            await self._app(scope, receive, send)
            return
        credential = _presented_key(scope)
        if credential is None:
            if self._anonymous == "none":
                await _refuse(scope, receive, send, None)
                return
            principal = ANONYMOUS
        else:
            try:
                principal = await self._principal(credential)
            except ModelProxyError as error:
                await _refuse(scope, receive, send, error)
                return
            except Exception as exc:  # a library tripped on a malformed credential: not valid
                log.warning(
                    "checking a credential failed unexpectedly (%s); answered 401",
                    type(exc).__name__,
                )
                await _refuse(scope, receive, send, _not_recognised())
                return
        scope.setdefault("state", {})["principal"] = principal
        await self._app(scope, receive, send)

    async def _principal(self, credential: str) -> Principal:
        """The principal of a presented credential; InvalidCredentials when it is not valid
        (or the errors of :meth:`BearerTokenVerifier.verify`)."""
        if self._tokens is not None and looks_like_jwt(credential):
            holder = await run_in_threadpool(self._tokens.verify, credential)
            return Principal(holder.name, holder.role)
        entry = self._keys.cached(credential)
        if entry is None and self._keys.knows(credential):
            self._keys.check_allowed(credential)
            async with self._checks.turn():
                entry = await run_in_threadpool(self._keys.verify, credential)
        if entry is None:
            raise _not_recognised()
        return Principal(entry.name, entry.role)


def _not_recognised() -> InvalidCredentials:
    return InvalidCredentials("the credential is not recognised")


def _presented_key(scope: Scope) -> str | None:
    """The credential of the request: ``Authorization: Bearer``, else ``X-API-Key`` (empty
    when the header is there but blank), else None.

    Another ``Authorization`` scheme is not a credential of ours and is ignored: a reverse
    proxy in front that checks its own Basic login passes that header on, and its users must
    not be refused for it."""
    api_key = None
    for name, value in scope.get("headers", []):
        if name == b"authorization":
            scheme, _, credential = value.decode("latin-1").strip().partition(" ")
            if scheme.lower() == "bearer":
                return credential.strip()
        elif name == b"x-api-key" and api_key is None:
            api_key = value.decode("latin-1").strip()
    return api_key


async def _refuse(
    scope: Scope, receive: Receive, send: Send, error: ModelProxyError | None
) -> None:
    """Answer 401 ``unauthenticated`` (no credential: ``error`` None), or ``error``'s answer;
    each with the challenge of RFC 6750 that goes with it (see ``error_response``)."""
    if error is None:
        error = Unauthenticated(
            "this model-proxy does not answer anonymous requests: send a credential "
            "(Authorization: Bearer ...)"
        )
    await error_response(error)(scope, receive, send)
