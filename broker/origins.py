"""Which web pages may call the API: the CORS allowlist, and refusing requests from others.

A browser lets a page read an answer of another origin only when the answer names that origin
in ``Access-Control-Allow-Origin``; it sends the request, though, whatever the answer, and a
viewer's GET makes a job (the proxy fetches from the PACS with its own credentials). So the
allowlist does two things: only allowed origins get CORS headers (Starlette's
``CORSMiddleware`` with the patterns as one regular expression), and a request from a page
that is not allowed is refused with 403 before it reaches a route (:class:`RefuseForeignPages`).

Patterns, as ``MODEL_PROXY_CORS_ORIGINS`` takes them (comma-separated):

* an exact origin, ``https://viewer.hospital.example``;
* a subdomain pattern, ``https://*.zhiva.ai`` (any subdomain, not the bare domain);
* a port pattern, ``http://localhost:*`` (any port, or none);
* ``*``, any origin, only when written.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from model_proxy.broker.errors import error_response
from model_proxy.shared.errors import OriginNotAllowed

__all__ = ["PROBE_PATHS", "OriginPolicy", "RefuseForeignPages", "header"]

_PATTERN = re.compile(
    r"(?P<scheme>https?)://(?P<sub>\*\.)?(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)"
    r"(?::(?P<port>\*|[0-9]{1,5}))?"
)

PROBE_PATHS = frozenset({"/healthz", "/readyz"})
# the API description holds no data: a link to it from an intranet page opens it
DESCRIPTION_PATHS = frozenset({"/docs", "/docs/oauth2-redirect", "/openapi.json"})
"""The probes: answered to anyone, from anywhere (orchestrators probe them by pod name)."""


@dataclass(frozen=True)
class OriginPolicy:
    """The allowed origins as one anchored regular expression (``any_origin`` for ``*``)."""

    any_origin: bool
    regex: str

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> OriginPolicy:
        """Raise ValueError naming the first pattern that is not an origin pattern."""
        alternatives: list[str] = []
        for pattern in patterns:
            if pattern == "*":
                return cls(True, ".*")
            alternatives.append(_to_regex(pattern))
        return cls(False, "|".join(alternatives) or "(?!)")

    def allows(self, origin: str) -> bool:
        return self.any_origin or re.fullmatch(self.regex, origin) is not None


def _to_regex(pattern: str) -> str:
    match = _PATTERN.fullmatch(pattern.strip().rstrip("/"))
    if match is None:
        raise ValueError(
            f"{pattern!r} is not an origin pattern (scheme://host[:port], "
            "https://*.domain, http://host:*, or *)"
        )
    host = re.escape(match["host"].lower())
    sub = r"(?:[a-z0-9-]+\.)+" if match["sub"] else ""
    port = match["port"]
    if port == "*":
        port_regex = r"(?::[0-9]{1,5})?"
    elif port:
        port_regex = re.escape(":" + port)
    else:
        port_regex = ""
    return f"(?:{match['scheme']}://{sub}{host}{port_regex})"


class RefuseForeignPages:
    """ASGI middleware: a request from a web page the policy does not allow is answered 403
    ``origin_not_allowed`` before it reaches authentication or a route.

    Refused: a request with a disallowed ``Origin`` (whatever its method: a viewer's GET
    makes a job, which fetches from the PACS with the proxy's credentials and uses up the
    caller's quota), and a request without ``Origin`` whose ``Sec-Fetch-Site`` is
    ``cross-site`` (what a browser sends for another site's ``<img src>`` or link, which carry
    no ``Origin``). Requests without either header (programs, the viewer's own page) pass, and
    so do CORS preflights (``OPTIONS``, answered by the CORS middleware), the probes and the API
    description."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        self._app = app
        self._policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] != "OPTIONS"
            and scope["path"] not in PROBE_PATHS | DESCRIPTION_PATHS
            and not self._allowed(scope)
        ):
            answer = error_response(
                OriginNotAllowed("requests from this web page's origin are not answered")
            )
            await answer(scope, receive, send)
            return
        await self._app(scope, receive, send)

    def _allowed(self, scope: Scope) -> bool:
        origin = header(scope, b"origin")
        if origin is not None:
            return self._policy.allows(origin)
        return header(scope, b"sec-fetch-site") != "cross-site"


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of a request header (its lower-case name), or None."""
    for key, value in scope.get("headers", []):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None
