"""What the routes use: the catalog, the job records, the event fan-out, the task queue, and
sessions to the PACS servers for checks."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import redis
import requests
from celery import Celery
from starlette.concurrency import run_in_threadpool

from model_proxy.broker.jobs import AsyncJobStore, JobEvents
from model_proxy.broker.metrics import AsyncMetrics
from model_proxy.broker.result_cache import ResultCache
from model_proxy.shared.auth.token_store import TokenStore
from model_proxy.shared.config import Catalog
from model_proxy.shared.dicomweb.auth import PacsAuth, auth_for_server
from model_proxy.shared.errors import QueueUnavailable
from model_proxy.shared.http import Timeouts, new_session
from model_proxy.shared.jobs import Job
from model_proxy.shared.settings import Settings
from model_proxy.shared.tasks import RUN_INFERENCE

__all__ = ["BrokerServices", "ServerSessions"]

_PUBLISH_RETRY = {
    "max_retries": 2,
    "interval_start": 0.1,
    "interval_step": 0.2,
    "interval_max": 0.5,
}


class ServerSessions:
    """A session per PACS server with that server's TLS settings and auth, built as the workers
    build theirs (basic auth, or bearer tokens through the shared :class:`TokenStore`), for short
    checks such as the status page's. Safe to use from several threads; :meth:`close` ends all.
    """

    def __init__(
        self,
        catalog: Catalog,
        redis_url: str | None,
        *,
        timeout: float,
        refresh_margin: float,
        lock_timeout: float,
    ) -> None:
        self._catalog = catalog
        self._timeouts = Timeouts(timeout, timeout)
        self._refresh_margin = refresh_margin
        # connects only when a server behind a token server needs its tokens; without a Redis
        # those servers cannot be reached (their one-off tokens live in the shared store)
        self._redis = (
            redis.Redis.from_url(redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)
            if redis_url
            else None
        )
        # wait for another process's sign-in no longer than a check may take
        self._tokens = (
            TokenStore(self._redis, lock_timeout=lock_timeout, wait_timeout=timeout)
            if self._redis is not None
            else None
        )
        self._lock = threading.Lock()
        self._sessions: dict[str, tuple[requests.Session, PacsAuth]] = {}
        self._closed = False

    def get(self, server_id: str) -> tuple[requests.Session, PacsAuth]:
        """The session of a configured server and the auth to send on it."""
        key, server = self._catalog.server(server_id)
        with self._lock:
            if self._closed:
                raise RuntimeError("these server sessions are closed")
            if key not in self._sessions:
                session = new_session(1)
                session.verify = server.tls_verification
                auth = auth_for_server(
                    key,
                    server,
                    session=session,
                    token_store=self._tokens,
                    timeouts=self._timeouts,
                    refresh_margin=self._refresh_margin,
                )
                self._sessions[key] = (session, auth)
            return self._sessions[key]

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for session, _ in self._sessions.values():
                session.close()
            self._sessions.clear()
            if self._redis is not None:
                self._redis.close()


@dataclass
class BrokerServices:
    settings: Settings
    catalog: Catalog
    jobs: AsyncJobStore
    events: JobEvents
    celery: Celery
    metrics: AsyncMetrics
    results: ResultCache

    @property
    def redis_url(self) -> str:
        """The Redis the app was built with (create_app may override settings.redis_url)."""
        return str(self.celery.conf.broker_url)

    async def enqueue(self, job: Job) -> None:
        """Queue the job's task by name on its model's queue; the record must already exist."""

        def send() -> None:
            self.celery.send_task(
                RUN_INFERENCE,
                args=[job.id],
                queue=job.queue,
                retry=True,
                retry_policy=_PUBLISH_RETRY,
            )

        try:
            await run_in_threadpool(send)
        except Exception as exc:  # kombu raises OperationalError and friends
            raise QueueUnavailable(
                f"the job queue cannot be reached ({type(exc).__name__})"
            ) from None

    @contextmanager
    def server_sessions(self) -> Iterator[ServerSessions]:
        """Per-server sessions with auth for short checks (``status_timeout`` each), closed
        when the block ends."""
        settings = self.settings
        sessions = ServerSessions(
            self.catalog,
            self.redis_url,
            timeout=settings.status_timeout,
            refresh_margin=settings.token_refresh_margin,
            lock_timeout=settings.token_lock_timeout,
        )
        try:
            yield sessions
        finally:
            sessions.close()
