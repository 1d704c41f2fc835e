"""One concept for "a server's session and auth": a pooled session per configured PACS with that
server's TLS settings and auth, used alike by the workers (to retrieve), the status page and
``model-proxy check`` (to probe)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field

import redis
import requests

from model_proxy.shared.auth.token_store import TokenStore
from model_proxy.shared.config import Catalog, SizeLimits
from model_proxy.shared.dicomweb.auth import PacsAuth, auth_for_server
from model_proxy.shared.dicomweb.source import DicomWebSource
from model_proxy.shared.http import Timeouts, new_session

__all__ = ["ServerSessions", "TokenCallCounter"]

TokenCallCounter = Callable[[str, str, str], None]
"""Called with (server key, kind of token call, outcome) after each call to a token server."""


@dataclass
class ServerSessions:
    """A session per PACS server with its TLS settings and auth (basic auth, or bearer tokens
    shared between processes through a :class:`TokenStore`), built on first use.

    Safe to use from several threads; :meth:`close` ends every session (and the Redis client
    that :meth:`for_checks` opened).
    """

    catalog: Catalog
    token_store: TokenStore | None
    timeouts: Timeouts
    _: KW_ONLY
    refresh_margin: float
    pool_size: int = 1
    count_token_call: TokenCallCounter | None = None
    prepare_session: Callable[[requests.Session], object] | None = None
    """Called with each new session before its first request (the workers' cutoffs)."""
    limits: SizeLimits | None = None
    """The size caps of retrieves (the settings'); a model's entry may override them."""
    owned_redis: redis.Redis | None = None
    """Closed with the sessions: the client :meth:`for_checks` opened for the token store."""
    _lock: threading.Lock = field(default_factory=threading.Lock, init=False, repr=False)
    _sessions: dict[str, tuple[requests.Session, PacsAuth]] = field(
        default_factory=dict, init=False, repr=False
    )
    _sources: dict[str, DicomWebSource] = field(default_factory=dict, init=False, repr=False)
    _closed: bool = field(default=False, init=False, repr=False)

    @classmethod
    def for_checks(
        cls,
        catalog: Catalog,
        redis_url: str | None,
        *,
        timeout: float,
        refresh_margin: float,
        lock_timeout: float,
        redis_prefix: str = "model-proxy",
    ) -> ServerSessions:
        """Sessions for short checks, each call within ``timeout``. Redis is connected only when
        a server behind a token server needs its tokens; without a Redis those servers cannot
        be reached (their one-off tokens live in the shared store)."""
        client = (
            redis.Redis.from_url(redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)
            if redis_url
            else None
        )
        # wait for another process's sign-in no longer than a check may take
        tokens = (
            TokenStore(client, lock_timeout=lock_timeout, wait_timeout=timeout, prefix=redis_prefix)
            if client is not None
            else None
        )
        return cls(
            catalog,
            tokens,
            Timeouts(timeout, timeout),
            refresh_margin=refresh_margin,
            owned_redis=client,
        )

    def get(self, server_id: str) -> tuple[requests.Session, PacsAuth]:
        """The session of a configured server and the auth to send on it."""
        key, server = self.catalog.server(server_id)
        with self._lock:
            if self._closed:
                raise RuntimeError("these server sessions are closed")
            if key not in self._sessions:
                session = new_session(self.pool_size)
                if self.prepare_session is not None:
                    self.prepare_session(session)
                session.verify = server.tls_verification
                auth = auth_for_server(
                    key,
                    server,
                    session=session,
                    token_store=self.token_store,
                    timeouts=self.timeouts,
                    refresh_margin=self.refresh_margin,
                    on_token_call=self._token_call_counter(key),
                )
                self._sessions[key] = (session, auth)
            return self._sessions[key]

    def source_for(self, server_id: str, model_id: str | None = None) -> DicomWebSource:
        """The :class:`DicomWebSource` of a configured server, on its session.

        With ``model_id``, a source for one job of that model (:meth:`DicomWebSource.for_job`):
        the size caps are the model's, and its input cap counts all of the job's retrieves.
        """
        key, server = self.catalog.server(server_id)
        session, auth = self.get(key)
        with self._lock:
            if key not in self._sources:
                self._sources[key] = DicomWebSource(
                    key, server.dicomweb_root, session, auth, self.timeouts, self.limits
                )
            source = self._sources[key]
        if model_id is None or self.limits is None:
            return source
        return source.for_job(self.limits.for_model(self.catalog.model(model_id)))

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for session, _ in self._sessions.values():
                session.close()
            self._sessions.clear()
            self._sources.clear()
            if self.owned_redis is not None:
                self.owned_redis.close()

    def _token_call_counter(self, key: str) -> Callable[[str, str], None] | None:
        count = self.count_token_call
        if count is None:
            return None
        return lambda kind, outcome: count(key, kind, outcome)
