"""HTTP sessions for PACS, token servers and models: pooled, one per peer and process; and the
one translation of ``requests``' exceptions into ours, by exception type."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import requests
import urllib3.exceptions
from requests.adapters import HTTPAdapter

from model_proxy.shared.errors import ModelProxyError

__all__ = [
    "Peer",
    "Timeouts",
    "caused_by",
    "is_timeout",
    "new_session",
    "pieces_as_they_arrive",
    "tls_advice",
    "translate_request_error",
    "translated_errors",
]


@dataclass(frozen=True)
class Timeouts:
    connect: float
    read: float

    def as_requests(self) -> tuple[float, float]:
        return (self.connect, self.read)


def tls_advice(key: str, what: str, kind: str = "server") -> str:
    """The message for a certificate that failed verification, saying which setting to use:
    ``kind`` is ``server`` (an entry of servers.json) or ``model`` (of models.json)."""
    local = "PACS" if kind == "server" else kind
    return (
        f"{kind} {key}: TLS certificate verification of its {what} failed; in "
        f'{kind}s.json set "caBundle" to the CA file that signed it, or "tlsVerify": false '
        f"for a self-signed local {local}"
    )


def new_session(pool_size: int, user_agent: str = "model-proxy") -> requests.Session:
    """A session whose connection pool holds ``pool_size`` connections per host."""
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=max(pool_size, 1))
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    session.headers["User-Agent"] = user_agent
    # Proxies from the environment must not see PACS traffic or patient data by surprise.
    session.trust_env = False
    return session


# --- a streamed body ---------------------------------------------------------------------------


def pieces_as_they_arrive(response: requests.Response, max_bytes: int) -> Iterator[bytes]:
    """The body of a streamed ``response`` (decoded as ``iter_content`` decodes it) in pieces of
    whatever has arrived, at most ``max_bytes`` each, until its end.

    ``iter_content(chunk_size=N)`` waits until N bytes have arrived: a PACS that sends small
    instances slowly would reach the model, and the job's progress, a megabyte at a time. Read
    failures are requests' exceptions, as ``iter_content`` raises them.
    """
    raw = response.raw
    while True:
        try:
            piece = raw.read1(max_bytes, decode_content=True)
        except urllib3.exceptions.ProtocolError as exc:
            raise requests.exceptions.ChunkedEncodingError(exc) from exc
        except urllib3.exceptions.DecodeError as exc:
            raise requests.exceptions.ContentDecodingError(exc) from exc
        except urllib3.exceptions.ReadTimeoutError as exc:
            raise requests.exceptions.ConnectionError(exc) from exc
        except urllib3.exceptions.SSLError as exc:
            raise requests.exceptions.SSLError(exc) from exc
        if not piece:
            return
        yield piece


# --- requests' exceptions into ours ----------------------------------------------------------

_TIMEOUTS = (requests.exceptions.Timeout, TimeoutError, urllib3.exceptions.TimeoutError)


@dataclass(frozen=True)
class Peer:
    """Whom a request went to, and which of our errors its failures become.

    ``name`` starts each message ("server X", "model X", "server X: signInServer"); ``tls``
    is the message for a certificate that failed verification (None: just unreachable);
    ``failed`` is the wording of any other failure (None: unreachable as well).
    """

    name: str
    timeout: type[ModelProxyError]
    unreachable: type[ModelProxyError]
    failed: type[ModelProxyError]
    failed_text: str | None = None
    tls: str | None = None


def translate_request_error(exc: BaseException, peer: Peer) -> ModelProxyError:
    """Our error for a failed request to ``peer``, chosen by the exception's type (and the types
    of what it wraps), naming the peer and nothing secret."""
    if isinstance(exc, requests.exceptions.SSLError) and peer.tls is not None:
        return peer.unreachable(peer.tls)
    if is_timeout(exc):
        return peer.timeout(f"{peer.name} did not answer in time")
    if isinstance(exc, requests.exceptions.ConnectionError) or peer.failed_text is None:
        return peer.unreachable(f"{peer.name} cannot be reached")
    return peer.failed(f"{peer.name}: {peer.failed_text}")


@contextmanager
def translated_errors(peer: Peer) -> Iterator[None]:
    """Raise :func:`translate_request_error`'s answer for any request failure in the block."""
    try:
        yield
    except (requests.exceptions.RequestException, TimeoutError) as exc:
        raise translate_request_error(exc, peer) from None


def is_timeout(exc: BaseException) -> bool:
    """A connect or read timeout, also when ``requests`` wraps a read timeout met while a body
    streams in a ``ConnectionError``. (urllib3's refused connection is a kind of its connect
    timeout for history's sake; it is not one here.)"""
    return any(
        isinstance(cause, _TIMEOUTS)
        and not isinstance(cause, urllib3.exceptions.NewConnectionError)
        for cause in _causes(exc)
    )


def caused_by(exc: BaseException, *kinds: type[BaseException]) -> bool:
    """``exc``, or anything it wraps, is one of ``kinds``."""
    return any(isinstance(cause, kinds) for cause in _causes(exc))


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """``exc`` and what it wraps: causes, contexts, urllib3's ``reason`` and exception args."""
    seen: set[int] = set()
    pending: list[BaseException] = [exc]
    while pending:
        current = pending.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        yield current
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += [arg for arg in current.args if isinstance(arg, BaseException)]
        pending += [item for item in linked if isinstance(item, BaseException)]
