"""Probing an endpoint's ``statusUri``: one blocking GET, described in our own words.

Used by the status page (``/status``) and by ``model-proxy check``. A server is asked with its
auth and TLS settings (its :class:`ServerSessions` session), exactly as the workers reach it;
a model without auth. Redirects are followed and 200 means up. What a probe reports is safe to
show: URIs without their userinfo or secret query values, and errors in our own short words,
never a foreign exception's text.
"""

from __future__ import annotations

import logging
import re
import socket
import ssl
import time
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from model_proxy.shared.config import ModelConfig, ServerConfig
from model_proxy.shared.dicomweb.auth import PacsAuth
from model_proxy.shared.dicomweb.sessions import ServerSessions
from model_proxy.shared.errors import ModelProxyError
from model_proxy.shared.http import caused_by, is_timeout, new_session

__all__ = [
    "MODEL_TLS_ADVICE",
    "TLS_ADVICE",
    "EndpointStatus",
    "Health",
    "describe_failure",
    "probe",
    "probe_model",
    "probe_server",
    "public_uri",
    "with_error",
]

log = logging.getLogger(__name__)

Health = Literal["up", "down", "unknown"]

TLS_ADVICE = (
    'TLS certificate not trusted: set "caBundle" in servers.json to the CA that signed it, '
    'or "tlsVerify": false for a self-signed local PACS'
)
MODEL_TLS_ADVICE = (
    'TLS certificate not trusted: set "caBundle" in models.json to the CA that signed it, '
    'or "tlsVerify": false for a self-signed local model'
)
"""What a probe says of a PACS whose certificate failed verification."""

_SECRET_PARAMETER = re.compile(r"token|key|secret|pass|auth|sig|credential", re.IGNORECASE)
_SERVER_PREFIX = re.compile(r"^server [^:\s]+: ")


def public_uri(uri: str) -> str:
    """``uri`` safe to show: without userinfo (``user:pass@``) or fragment, and the values of
    query parameters whose names suggest a secret (``token``, ``key``, …) replaced by ``***``."""
    try:
        parts = urlsplit(uri)
        host = parts.netloc.rpartition("@")[2]
    except ValueError:
        return "(not a valid URI)"
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        if any(_SECRET_PARAMETER.search(name) for name, _ in pairs):
            query = urlencode(
                [(n, "***" if _SECRET_PARAMETER.search(n) else v) for n, v in pairs], safe="*"
            )
    return urlunsplit((parts.scheme, host, parts.path, query, ""))


@dataclass(frozen=True)
class EndpointStatus:
    """A server's or a model's check. URIs are made safe to show on construction."""

    uri: str
    status_uri: str | None
    status: Health
    status_code: int | None = None
    latency_ms: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "uri", public_uri(self.uri))
        if self.status_uri is not None:
            object.__setattr__(self, "status_uri", public_uri(self.status_uri))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "uri": self.uri,
            "statusUri": self.status_uri,
            "status": self.status,
            # the same verdict as a boolean for simple checks: null when unknown
            "ok": None if self.status == "unknown" else self.status == "up",
            "statusCode": self.status_code,
            "latencyMs": self.latency_ms,
        }
        return with_error(body, self.error)


def probe(
    session: requests.Session,
    uri: str,
    status_uri: str,
    timeout: float,
    auth: PacsAuth | None = None,
    tls_advice: str = "TLS certificate not trusted",
) -> EndpointStatus:
    """GET ``status_uri`` (redirects followed, ``auth``'s headers sent): 200 is up.

    ``uri`` is the address the entry is known by. With auth, a 401 or 403 is retried once when
    the auth could be renewed (an expired token), as the workers do.
    """
    started = time.perf_counter()
    try:
        code = _status_code(session, status_uri, timeout, auth)
    except Exception as exc:
        if not isinstance(exc, requests.exceptions.RequestException | ModelProxyError):
            log.warning("status: the check of %s failed (%s)", public_uri(uri), type(exc).__name__)
        return EndpointStatus(
            uri, status_uri, "down", error=describe_failure(exc, timeout, tls_advice)
        )
    latency = round((time.perf_counter() - started) * 1000, 1)
    if code == 200:
        return EndpointStatus(uri, status_uri, "up", code, latency)
    refused = " (credentials refused)" if auth is not None and code in (401, 403) else ""
    return EndpointStatus(uri, status_uri, "down", code, latency, f"HTTP {code}{refused}")


def _status_code(session: requests.Session, url: str, timeout: float, auth: PacsAuth | None) -> int:
    headers = auth.headers() if auth is not None else {}
    code = _get(session, url, headers, timeout)
    if code in (401, 403) and auth is not None and auth.renew(headers):
        code = _get(session, url, auth.headers(), timeout)
    return code


def _get(session: requests.Session, url: str, headers: dict[str, str], timeout: float) -> int:
    # stream: only the status is wanted, not a PACS's whole list of studies
    with session.get(
        url, headers=headers, timeout=(timeout, timeout), allow_redirects=True, stream=True
    ) as response:
        return response.status_code


def describe_failure(exc: BaseException, timeout: float, tls_advice: str) -> str:
    """Our own short wording for a failed check; never the text of a foreign exception."""
    if isinstance(exc, ModelProxyError):  # ours: safe by design; drop the "server <key>: "
        return _SERVER_PREFIX.sub("", exc.message)
    if isinstance(exc, requests.exceptions.SSLError):
        if caused_by(exc, ssl.SSLCertVerificationError):
            return tls_advice
        return "TLS handshake failed"
    if is_timeout(exc):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, requests.exceptions.ConnectionError):
        if caused_by(exc, ConnectionRefusedError):
            return "connection refused"
        if caused_by(exc, socket.gaierror):
            return "host name not found"
        if caused_by(exc, ConnectionResetError):
            return "connection reset"
        return "cannot connect"
    if isinstance(exc, requests.exceptions.RequestException):
        return "request failed"
    return "check failed"


def probe_server(
    sessions: ServerSessions,
    key: str,
    server: ServerConfig,
    timeout: float,
    target: str | None = None,
) -> EndpointStatus:
    """Blocking: the server's ``statusUri`` (or ``target``) with its auth, on its session (its
    TLS settings). Raises our error when its auth cannot be set up (no Redis for its tokens)."""
    status_uri = target or server.status_uri
    assert status_uri is not None
    session, auth = sessions.get(key)
    return probe(session, server.uri, status_uri, timeout, auth, TLS_ADVICE)


def probe_model(model: ModelConfig, timeout: float) -> EndpointStatus:
    """Blocking: the model's ``statusUri``, without auth, on a session of its own with the
    model's TLS settings."""
    assert model.status_uri is not None
    with new_session(1) as session:
        session.verify = model.tls_verification
        return probe(session, model.uri, model.status_uri, timeout, tls_advice=MODEL_TLS_ADVICE)


def with_error(body: dict[str, Any], error: str | None) -> dict[str, Any]:
    """``body`` with ``"error"`` added when there is one."""
    return body if error is None else {**body, "error": error}
