"""What a worker process needs to run jobs, built once per process and passed to the pipeline."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import redis
import requests

from model_proxy.shared.auth.token_store import TokenStore
from model_proxy.shared.config import Catalog, load_catalog
from model_proxy.shared.dicomweb.auth import auth_for_server
from model_proxy.shared.dicomweb.source import DicomWebSource
from model_proxy.shared.http import Timeouts, new_session
from model_proxy.shared.jobs import JobStore
from model_proxy.shared.metrics import Metrics
from model_proxy.shared.model_client import ModelClient
from model_proxy.shared.settings import Settings

__all__ = ["PacsSources", "WorkerContext", "build_context"]


@dataclass
class PacsSources:
    """One :class:`DicomWebSource` per configured server, each with its own pooled session."""

    catalog: Catalog
    token_store: TokenStore
    timeouts: Timeouts
    pool_size: int
    refresh_margin: float
    metrics: Metrics
    _sources: dict[str, DicomWebSource] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def source_for(self, server_id: str) -> DicomWebSource:
        with self._lock:
            if server_id not in self._sources:
                key, server = self.catalog.server(server_id)
                session = new_session(self.pool_size)
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
                self._sources[key] = DicomWebSource(
                    key, server.dicomweb_root, session, auth, self.timeouts
                )
            return self._sources[server_id]

    def _token_call_counter(self, server_id: str) -> Callable[[str, str], None]:
        def count(kind: str, outcome: str) -> None:
            labels = {"server": server_id, "kind": kind, "outcome": outcome}
            self.metrics.inc("token_requests", labels)

        return count


@dataclass
class WorkerContext:
    settings: Settings
    redis: redis.Redis
    catalog: Catalog
    store: JobStore
    metrics: Metrics
    sources: PacsSources
    model_client: ModelClient


def build_context(
    settings: Settings, redis_url: str, environ: Mapping[str, str] | None = None
) -> WorkerContext:
    catalog = load_catalog(
        settings.servers_file, settings.models_file, os.environ if environ is None else environ
    )
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, health_check_interval=30)
    model_session: requests.Session = new_session(settings.worker_concurrency)
    metrics = Metrics(client)
    return WorkerContext(
        settings=settings,
        redis=client,
        catalog=catalog,
        store=JobStore(client, settings.job_ttl_seconds),
        metrics=metrics,
        sources=PacsSources(
            catalog,
            TokenStore(
                client,
                lock_timeout=settings.token_lock_timeout,
                wait_timeout=settings.token_lock_timeout + 5,
            ),
            Timeouts(settings.pacs_connect_timeout, settings.pacs_read_timeout),
            settings.worker_concurrency,
            settings.token_refresh_margin,
            metrics,
        ),
        model_client=ModelClient(
            model_session, Timeouts(settings.model_connect_timeout, settings.model_read_timeout)
        ),
    )
