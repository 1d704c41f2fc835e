"""Which web pages may call the API: the CORS allowlist, and refusing state changes from others.

A browser lets a page read an answer of another origin only when the answer names that origin
in ``Access-Control-Allow-Origin``; it sends a cross-origin DELETE or POST, though, whatever the
answer. So the allowlist does two things: only allowed origins get CORS headers (Starlette's
``CORSMiddleware`` with the patterns as one regular expression), and a state-changing request
that carries a disallowed ``Origin`` is refused with 403 before it reaches a route.

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

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

__all__ = ["OriginPolicy", "RefuseForeignStateChanges"]

_PATTERN = re.compile(
    r"(?P<scheme>https?)://(?P<sub>\*\.)?(?P<host>\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+)"
    r"(?::(?P<port>\*|[0-9]{1,5}))?"
)
_STATE_CHANGING = frozenset({"POST", "PUT", "PATCH", "DELETE"})


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


class RefuseForeignStateChanges:
    """ASGI middleware: a POST, PUT, PATCH or DELETE whose ``Origin`` the policy does not allow
    is answered 403 ``origin_not_allowed``; requests without ``Origin`` (not from a browser's
    cross-origin page) pass."""

    def __init__(self, app: ASGIApp, policy: OriginPolicy) -> None:
        self._app = app
        self._policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in _STATE_CHANGING:
            origin = _header(scope, b"origin")
            if origin is not None and not self._policy.allows(origin):
                answer = JSONResponse(
                    {
                        "message": "requests from this web page's origin may not change jobs",
                        "code": "origin_not_allowed",
                    },
                    status_code=403,
                )
                await answer(scope, receive, send)
                return
        await self._app(scope, receive, send)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            text: str = value.decode("latin-1")
            return text
    return None
