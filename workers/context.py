"""What a worker process needs to run jobs, built once per process and passed to the pipeline."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

import redis
import requests

from shared.config import Catalog, load_catalog
from shared.dicomweb.auth import auth_for_server
from shared.dicomweb.source import DicomWebSource
from shared.http import Timeouts, new_session
from shared.jobs import JobStore
from shared.model_client import ModelClient
from shared.settings import Settings

__all__ = ["PacsSources", "WorkerContext", "build_context"]


@dataclass
class PacsSources:
    """One :class:`DicomWebSource` per configured server, each with its own pooled session."""

    catalog: Catalog
    timeouts: Timeouts
    pool_size: int
    _sources: dict[str, DicomWebSource] = field(default_factory=dict)

    def source_for(self, server_id: str) -> DicomWebSource:
        if server_id not in self._sources:
            key, server = self.catalog.server(server_id)
            self._sources[key] = DicomWebSource(
                key,
                server.dicomweb_root,
                new_session(self.pool_size),
                auth_for_server(key, server),
                self.timeouts,
            )
        return self._sources[server_id]


@dataclass
class WorkerContext:
    catalog: Catalog
    store: JobStore
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
    return WorkerContext(
        catalog=catalog,
        store=JobStore(client, settings.job_ttl_seconds),
        sources=PacsSources(
            catalog,
            Timeouts(settings.pacs_connect_timeout, settings.pacs_read_timeout),
            settings.worker_concurrency,
        ),
        model_client=ModelClient(
            model_session, Timeouts(settings.model_connect_timeout, settings.model_read_timeout)
        ),
    )
