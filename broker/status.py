"""The status page's checks: every server's and model's ``statusUri``, Redis, the workers, the
queues and the recent jobs, all at once, each within ``status_timeout`` (contract §6, G7).

A server's ``statusUri`` is asked with that server's auth and TLS settings, exactly as the
workers would reach it; a model's without auth. Redirects are followed and 200 means up. An entry
without a ``statusUri`` is ``unknown``, not down. What the report says is safe to show: URIs
without their userinfo, and errors in our own short words, never a foreign exception's text.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import socket
import ssl
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import redis.asyncio as aioredis
import redis.exceptions
import requests

from model_proxy.broker.queue_depth import queue_depths
from model_proxy.broker.services import BrokerServices, ServerSessions
from model_proxy.shared.config import ModelConfig, ServerConfig
from model_proxy.shared.dicomweb.auth import PacsAuth
from model_proxy.shared.errors import ModelProxyError, QueueUnavailable
from model_proxy.shared.http import new_session
from model_proxy.shared.jobs import JobState

__all__ = [
    "JOBS_WINDOW",
    "EndpointStatus",
    "Health",
    "RedisStatus",
    "StatusReport",
    "WorkersStatus",
    "check_status",
    "describe_failure",
    "probe",
    "public_uri",
]

log = logging.getLogger(__name__)

Health = Literal["up", "down", "unknown"]
Overall = Literal["ok", "degraded", "down"]
_T = TypeVar("_T")

JOBS_WINDOW = 200
"""How many of the most recent jobs the report counts by state."""
_GRACE = 0.5  # past its own timeouts, a check in a thread gets this long before it is given up
_WORKER_PING = 1.0
_SECRET_PARAMETER = re.compile(r"token|key|secret|pass|auth|sig|credential", re.IGNORECASE)
_SERVER_PREFIX = re.compile(r"^server [^:\s]+: ")
_TLS_ADVICE = (
    'TLS certificate not trusted: set "caBundle" in servers.json to the CA that signed it, '
    'or "tlsVerify": false for a self-signed local PACS'
)


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


# --- what the report holds -------------------------------------------------------------------


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
            # the contract's G7 name for the same verdict: true, false, or null when unknown
            "ok": None if self.status == "unknown" else self.status == "up",
            "statusCode": self.status_code,
            "latencyMs": self.latency_ms,
        }
        if self.error is not None:
            body["error"] = self.error
        return body


@dataclass(frozen=True)
class RedisStatus:
    status: Literal["up", "down"]
    uri: str
    latency_ms: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "uri", public_uri(self.uri))

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "status": self.status,
            "uri": self.uri,
            "latencyMs": self.latency_ms,
        }
        if self.error is not None:
            body["error"] = self.error
        return body


@dataclass(frozen=True)
class WorkersStatus:
    """The Celery workers that answered a ping: ``down`` when none did, ``unknown`` when they
    could not be asked."""

    status: Health
    names: tuple[str, ...] = ()
    error: str | None = None

    @property
    def count(self) -> int:
        return len(self.names)

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"status": self.status, "count": self.count, "names": [*self.names]}
        if self.error is not None:
            body["error"] = self.error
        return body


@dataclass(frozen=True)
class StatusReport:
    servers: Mapping[str, EndpointStatus]
    models: Mapping[str, EndpointStatus]
    redis: RedisStatus
    workers: WorkersStatus
    queues: Mapping[str, int | None]
    """Tasks waiting in each Celery queue; None when they could not be counted."""
    jobs: Mapping[str, int]
    """The latest ``jobs_window`` jobs counted by state; empty when they could not be read."""
    checked_at: dt.datetime
    jobs_window: int = JOBS_WINDOW
    problems: tuple[str, ...] = field(init=False)
    overall: Overall = field(init=False)

    def __post_init__(self) -> None:
        problems: list[str] = []
        if self.redis.status != "up":
            problems.append(f"Redis: {self.redis.error or 'down'}; no job can be queued")
        if self.workers.status == "down":
            problems.append("no worker answered: queued jobs wait until one starts")
        elif self.workers.status == "unknown" and self.redis.status == "up":
            problems.append(f"workers: {self.workers.error or 'could not be asked'}")
        for kind, entries in (("server", self.servers), ("model", self.models)):
            for key, entry in entries.items():
                if entry.status == "down":
                    problems.append(f"{kind} {key}: {entry.error or 'down'}")
        serving = self.redis.status == "up" and self.workers.status != "down"
        overall: Overall = "ok" if not problems else "degraded" if serving else "down"
        object.__setattr__(self, "problems", tuple(problems))
        object.__setattr__(self, "overall", overall)

    def to_json(self) -> dict[str, Any]:
        return {
            "overall": self.overall,
            "problems": [*self.problems],
            "servers": {key: entry.to_json() for key, entry in self.servers.items()},
            "models": {key: entry.to_json() for key, entry in self.models.items()},
            "redis": self.redis.to_json(),
            "workers": self.workers.to_json(),
            "queues": dict(self.queues),
            "jobs": dict(self.jobs),
            "checkedAt": iso_time(self.checked_at),
        }


def iso_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


# --- one HTTP check (blocking, run in a thread) ----------------------------------------------


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
        if _caused_by(exc, ssl.SSLCertVerificationError):
            return tls_advice
        return "TLS handshake failed"
    if isinstance(exc, requests.exceptions.Timeout | TimeoutError):
        return f"timed out after {timeout:g} s"
    if isinstance(exc, requests.exceptions.TooManyRedirects):
        return "too many redirects"
    if isinstance(exc, requests.exceptions.ConnectionError):
        if _caused_by(exc, ConnectionRefusedError):
            return "connection refused"
        if _caused_by(exc, socket.gaierror):
            return "host name not found"
        if _caused_by(exc, ConnectionResetError):
            return "connection reset"
        return "cannot connect"
    if isinstance(exc, requests.exceptions.RequestException):
        return "request failed"
    return "check failed"


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    return any(isinstance(cause, kind) for cause in _causes(exc))


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


# --- Redis, workers, queues, jobs ------------------------------------------------------------


async def _check_redis(client: aioredis.Redis, uri: str, timeout: float) -> RedisStatus:
    started = time.perf_counter()
    try:
        await asyncio.wait_for(client.ping(), timeout)
    except (TimeoutError, redis.exceptions.TimeoutError):
        return RedisStatus("down", uri, error=f"timed out after {timeout:g} s")
    except redis.exceptions.AuthenticationError:
        return RedisStatus("down", uri, error="authentication refused")
    except (redis.exceptions.ConnectionError, OSError) as exc:
        refused = _caused_by(exc, ConnectionRefusedError)
        return RedisStatus("down", uri, error="connection refused" if refused else "cannot connect")
    except redis.exceptions.RedisError as exc:
        log.warning("status: Redis ping failed (%s)", type(exc).__name__)
        return RedisStatus("down", uri, error="ping failed")
    return RedisStatus("up", uri, round((time.perf_counter() - started) * 1000, 2))


async def _job_counts(services: BrokerServices, window: int) -> dict[str, int]:
    counted = Counter(job.state.value for job in await services.jobs.recent(window))
    return {state.value: counted.get(state.value, 0) for state in JobState}


def _ping_workers(services: BrokerServices, timeout: float) -> tuple[str, ...]:
    replies = services.celery.control.ping(timeout=timeout) or []
    return tuple(sorted(name for reply in replies for name in reply))


# --- all checks at once ----------------------------------------------------------------------


async def check_status(services: BrokerServices, jobs_window: int = JOBS_WINDOW) -> StatusReport:
    """Check everything at once; answers within about ``status_timeout`` plus a second."""
    timeout = services.settings.status_timeout
    catalog = services.catalog
    size = min(len(catalog.servers) + len(catalog.models) + 1, 64)
    executor = ThreadPoolExecutor(max_workers=size, thread_name_prefix="status-check")
    try:
        with services.server_sessions() as sessions:
            server_checks = [
                _check_endpoint(
                    executor,
                    timeout,
                    server.uri,
                    server.status_uri,
                    partial(_check_server, sessions, key, server, timeout),
                )
                for key, server in catalog.servers.items()
            ]
            model_checks = [
                _check_endpoint(
                    executor,
                    timeout,
                    model.uri,
                    model.status_uri,
                    partial(_check_model, model, timeout),
                )
                for model in catalog.models.values()
            ]
            servers, models, (redis_status, workers, queues, jobs) = await asyncio.gather(
                asyncio.gather(*server_checks),
                asyncio.gather(*model_checks),
                _check_backend(services, executor, timeout, jobs_window),
            )
    finally:
        # a check past its deadline ends on its own timeouts in its thread
        executor.shutdown(wait=False, cancel_futures=True)
    return StatusReport(
        servers=dict(zip(catalog.servers, servers, strict=True)),
        models=dict(zip(catalog.models, models, strict=True)),
        redis=redis_status,
        workers=workers,
        queues=queues,
        jobs=jobs,
        checked_at=dt.datetime.now(dt.UTC),
        jobs_window=jobs_window,
    )


def _check_server(
    sessions: ServerSessions, key: str, server: ServerConfig, timeout: float
) -> EndpointStatus:
    """Blocking: the server's statusUri with its auth, on its session (its TLS settings)."""
    assert server.status_uri is not None
    session, auth = sessions.get(key)
    return probe(session, server.uri, server.status_uri, timeout, auth, _TLS_ADVICE)


def _check_model(model: ModelConfig, timeout: float) -> EndpointStatus:
    """Blocking: the model's statusUri, without auth."""
    assert model.status_uri is not None
    with new_session(1) as session:
        return probe(session, model.uri, model.status_uri, timeout)


async def _check_endpoint(
    executor: ThreadPoolExecutor,
    timeout: float,
    uri: str,
    status_uri: str | None,
    check: Callable[[], EndpointStatus],
) -> EndpointStatus:
    """``check`` in a thread, given up past its deadline; ``unknown`` without a statusUri."""
    if status_uri is None:
        return EndpointStatus(uri, None, "unknown")
    loop = asyncio.get_running_loop()
    try:
        return await asyncio.wait_for(loop.run_in_executor(executor, check), timeout + _GRACE)
    except TimeoutError:
        return EndpointStatus(uri, status_uri, "down", error=f"timed out after {timeout:g} s")


async def _check_backend(
    services: BrokerServices, executor: ThreadPoolExecutor, timeout: float, jobs_window: int
) -> tuple[RedisStatus, WorkersStatus, dict[str, int | None], dict[str, int]]:
    """Redis first; the workers, queues and jobs only when it answers (else each would wait
    for a connection that is not coming)."""
    client = services.jobs.redis
    queues = services.catalog.queues(services.settings.queue_name)
    redis_status = await _check_redis(client, services.redis_url, timeout)
    if redis_status.status != "up":
        not_asked = WorkersStatus("unknown", error="not asked: Redis cannot be reached")
        return redis_status, not_asked, dict.fromkeys(queues), {}
    loop = asyncio.get_running_loop()
    ping = min(_WORKER_PING, timeout)
    options = dict(services.celery.conf.broker_transport_options or {})
    names, depths, jobs = await asyncio.gather(
        _bounded(loop.run_in_executor(executor, _ping_workers, services, ping), ping + timeout),
        _bounded(queue_depths(client, queues, options), timeout),
        _bounded(_job_counts(services, jobs_window), timeout),
    )
    if isinstance(names, BaseException):
        log.warning("status: the workers could not be asked (%s)", type(names).__name__)
        workers = WorkersStatus("unknown", error="the workers could not be asked")
    else:
        workers = WorkersStatus("up" if names else "down", names)
    counts: dict[str, int | None] = dict.fromkeys(queues)
    if isinstance(depths, BaseException):
        log.warning("status: the queues could not be counted (%s)", type(depths).__name__)
    else:
        counts.update(depths)
    if isinstance(jobs, BaseException):
        if not isinstance(jobs, QueueUnavailable | TimeoutError):
            log.warning("status: the jobs could not be counted (%s)", type(jobs).__name__)
        jobs = {}
    return redis_status, workers, counts, jobs


async def _bounded(operation: Awaitable[_T], timeout: float) -> _T | BaseException:
    """The result of ``operation``, or the exception it raised (a timeout included)."""
    try:
        return await asyncio.wait_for(operation, timeout)
    except Exception as exc:
        return exc
