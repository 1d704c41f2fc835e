"""Which host names the API answers to: the defence against DNS rebinding.

A page on ``attacker.example`` can have its name re-resolved to the proxy's address (or to
127.0.0.1); its requests are then same-origin to the browser (no ``Origin``, no CORS), and it
can read whatever the anonymous viewer may read. What gives them away is the ``Host`` header,
which still names ``attacker.example``. So a request whose ``Host`` is a name that
``MODEL_PROXY_ALLOWED_HOSTS`` does not list is answered 400 ``host_not_allowed``.

Patterns (comma-separated in the setting; any port is accepted):

* a host name, ``model-proxy.hospital.example``;
* a subdomain pattern, ``*.hospital.example`` (any subdomain, not the bare domain);
* ``*``, any host, only when written.

IP literals (``192.168.1.20``, ``[::1]``) are always answered: a rebinding needs a name, and an
address cannot be rebound. The default lists ``localhost``. The probes (``/healthz``,
``/readyz``) answer any ``Host``: orchestrators probe them by pod or service name.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable
from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from model_proxy.broker.errors import error_response
from model_proxy.broker.origins import PROBE_PATHS, header
from model_proxy.shared.errors import HostNotAllowed

__all__ = ["HostPolicy", "RefuseForeignHosts"]

_NAME = re.compile(r"[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")
_HOST_AND_PORT = re.compile(r"(?P<host>\[[^\]]*\]|[^:]*)(?::[0-9]{1,5})?")


@dataclass(frozen=True)
class HostPolicy:
    """The host names answered: exact names, and domains whose subdomains are (``*.``)."""

    any_host: bool
    names: frozenset[str]
    domains: tuple[str, ...]  # ".hospital.example" for "*.hospital.example"

    @classmethod
    def from_patterns(cls, patterns: Iterable[str]) -> HostPolicy:
        """Raise ValueError naming the first pattern that is not a host name pattern."""
        names: set[str] = set()
        domains: list[str] = []
        for raw in patterns:
            pattern = raw.strip().lower()
            if pattern == "*":
                return cls(True, frozenset(), ())
            pattern = pattern.rstrip(".")  # "localhost." is localhost
            name = pattern.removeprefix("*.")
            if _NAME.fullmatch(name) is None:
                raise ValueError(
                    f"{raw!r} is not a host name pattern (a name such as "
                    "model-proxy.hospital.example, *.hospital.example, or *; no scheme, no port)"
                )
            if name != pattern:
                domains.append("." + name)
            else:
                names.add(name)
        return cls(False, frozenset(names), tuple(domains))

    def allows(self, host_header: str) -> bool:
        """Whether a ``Host`` header (a name or an IP literal, with or without a port) is
        answered."""
        match = _HOST_AND_PORT.fullmatch(host_header.strip().lower())
        if match is None or not match["host"]:
            return False
        host = match["host"]
        if host.startswith("["):
            return _is_ip(host[1:-1], version=6)
        if _is_ip(host, version=4) or self.any_host:
            return True
        name = host.rstrip(".")
        return name in self.names or any(
            name.endswith(domain) and len(name) > len(domain) for domain in self.domains
        )


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


class RefuseForeignHosts:
    """ASGI middleware: a request whose ``Host`` the policy does not allow is answered 400
    ``host_not_allowed`` (the probes excepted)."""

    def __init__(self, app: ASGIApp, policy: HostPolicy) -> None:
        self._app = app
        self._policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] not in PROBE_PATHS:
            host = header(scope, b"host")
            if host is None or not self._policy.allows(host):
                answer = error_response(
                    HostNotAllowed(
                        "this model-proxy does not answer to the host name this request was "
                        "sent to: list it in MODEL_PROXY_ALLOWED_HOSTS"
                    )
                )
                await answer(scope, receive, send)
                return
        await self._app(scope, receive, send)
