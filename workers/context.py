"""What a worker process needs to run jobs, built once per process and passed to the pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import redis
import requests

from model_proxy.shared.auth.token_store import TokenStore
from model_proxy.shared.config import Catalog, SizeLimits, catalog_from_settings
from model_proxy.shared.dicomweb.sessions import ServerSessions
from model_proxy.shared.http import Timeouts, new_session
from model_proxy.shared.jobs import JobStore
from model_proxy.shared.metrics import Metrics
from model_proxy.shared.model_client import ModelClient
from model_proxy.shared.settings import Settings

__all__ = ["WorkerContext", "build_context"]


@dataclass
class WorkerContext:
    """Everything one worker process uses to run jobs: the settings and catalog, the job store
    on its Redis, the metrics, a session per PACS server (``sources``) and the model client.

    Built once per process by :func:`build_context` (after a prefork fork too) and passed to
    the pipeline; nothing in it is a module global.
    """

    settings: Settings
    redis: redis.Redis
    catalog: Catalog
    store: JobStore
    metrics: Metrics
    sources: ServerSessions
    model_client: ModelClient


def build_context(
    settings: Settings, redis_url: str, environ: Mapping[str, str] | None = None
) -> WorkerContext:
    catalog = catalog_from_settings(settings, environ)
    client = redis.Redis.from_url(redis_url, socket_connect_timeout=5, health_check_interval=30)
    model_session: requests.Session = new_session(settings.worker_concurrency)
    metrics = Metrics(client)
    limits = SizeLimits.from_settings(settings)

    def count_token_call(server_id: str, kind: str, outcome: str) -> None:
        metrics.inc("token_requests", {"server": server_id, "kind": kind, "outcome": outcome})

    return WorkerContext(
        settings=settings,
        redis=client,
        catalog=catalog,
        store=JobStore(client, settings.job_ttl_seconds),
        metrics=metrics,
        sources=ServerSessions(
            catalog,
            TokenStore(
                client,
                lock_timeout=settings.token_lock_timeout,
                wait_timeout=settings.token_lock_timeout + 5,
            ),
            Timeouts(settings.pacs_connect_timeout, settings.pacs_read_timeout),
            pool_size=settings.worker_concurrency,
            refresh_margin=settings.token_refresh_margin,
            count_token_call=count_token_call,
            limits=limits,
        ),
        model_client=ModelClient(
            model_session,
            Timeouts(settings.model_connect_timeout, settings.model_read_timeout),
            catalog=catalog,
            limits=limits,
        ),
    )
