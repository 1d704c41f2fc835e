"""The status page's checks: every server's and model's ``statusUri``, Redis, the workers, the
queues and the recent jobs, all at once, each within ``status_timeout`` (model-contract §5).

Each endpoint is probed as :mod:`model_proxy.shared.probe` describes; an entry without a
``statusUri`` is ``unknown``, not down. What the report says is safe to show: URIs without their
userinfo, and errors in our own short words, never a foreign exception's text.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal, TypeVar

import redis.asyncio as aioredis
import redis.exceptions

from model_proxy.broker.queue_depth import queue_depths
from model_proxy.broker.services import BrokerServices
from model_proxy.shared.errors import QueueUnavailable
from model_proxy.shared.http import caused_by
from model_proxy.shared.jobs import JobState
from model_proxy.shared.probe import (
    EndpointStatus,
    Health,
    probe_model,
    probe_server,
    public_uri,
    with_error,
)

__all__ = [
    "JOBS_WINDOW",
    "RedisStatus",
    "StatusReport",
    "WorkersStatus",
    "check_status",
    "iso_time",
]

log = logging.getLogger(__name__)

Overall = Literal["ok", "degraded", "down"]
_T = TypeVar("_T")

JOBS_WINDOW = 200
"""How many of the most recent jobs the report counts by state."""
_GRACE = 0.5  # past its own timeouts, a check in a thread gets this long before it is given up
_WORKER_PING = 1.0


# --- what the report holds -------------------------------------------------------------------


@dataclass(frozen=True)
class RedisStatus:
    status: Literal["up", "down"]
    uri: str
    latency_ms: float | None = None
    error: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "uri", public_uri(self.uri))

    def to_json(self) -> dict[str, Any]:
        body = {"status": self.status, "uri": self.uri, "latencyMs": self.latency_ms}
        return with_error(body, self.error)


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
        body = {"status": self.status, "count": self.count, "names": [*self.names]}
        return with_error(body, self.error)


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
        refused = caused_by(exc, ConnectionRefusedError)
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
                    partial(probe_server, sessions, key, server, timeout),
                )
                for key, server in catalog.servers.items()
            ]
            model_checks = [
                _check_endpoint(
                    executor,
                    timeout,
                    model.uri,
                    model.status_uri,
                    partial(probe_model, model, timeout),
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
