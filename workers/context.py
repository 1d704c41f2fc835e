"""What a worker process needs to run jobs, built once per process and passed to the pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import redis
import requests

from model_proxy.shared.auth.token_store import TokenStore
from model_proxy.shared.config import Catalog, SizeLimits, catalog_from_settings
from model_proxy.shared.dicomweb.sessions import ServerSessions
from model_proxy.shared.http import Timeouts, new_session
from model_proxy.shared.jobs import JobKeys, JobStore
from model_proxy.shared.metrics import Metrics
from model_proxy.shared.model_client import ModelClient
from model_proxy.shared.redis_clients import sync_redis
from model_proxy.shared.settings import Settings
from model_proxy.workers.cutoff import cut_with_runs
from model_proxy.workers.stopping import RunningJobs

__all__ = ["WorkerContext", "build_context"]


@dataclass
class WorkerContext:
    """Everything one worker process uses to run jobs: the settings and catalog, the job store
    on its Redis, the metrics, a session per PACS server (``sources``), the model client and
    the runs under way (``runs``).

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
    runs: RunningJobs = field(default_factory=RunningJobs)
    """The runs of this process, which a stopping worker hands back after its grace period."""
    webhook_session: requests.Session = field(default_factory=lambda: new_session(1))
    """POSTs webhooks (:mod:`~model_proxy.workers.webhooks`)."""


def build_context(
    settings: Settings,
    redis_url: str,
    environ: Mapping[str, str] | None = None,
    runs: RunningJobs | None = None,
) -> WorkerContext:
    catalog = catalog_from_settings(settings, environ)
    client = sync_redis(redis_url, settings)
    # the run's cutoff (deadline, hand-back) can cut every connection a job opens
    model_session: requests.Session = cut_with_runs(new_session(settings.worker_concurrency))
    metrics = Metrics(client, settings.redis_prefix)
    limits = SizeLimits.from_settings(settings)

    def count_token_call(server_id: str, kind: str, outcome: str) -> None:
        metrics.inc("token_requests", {"server": server_id, "kind": kind, "outcome": outcome})

    return WorkerContext(
        settings=settings,
        redis=client,
        catalog=catalog,
        store=JobStore(client, settings.job_ttl_seconds, JobKeys(settings.redis_prefix)),
        metrics=metrics,
        sources=ServerSessions(
            catalog,
            TokenStore(
                client,
                lock_timeout=settings.token_lock_timeout,
                wait_timeout=settings.token_lock_timeout + 5,
                prefix=settings.redis_prefix,
            ),
            Timeouts(settings.pacs_connect_timeout, settings.pacs_read_timeout),
            pool_size=settings.worker_concurrency,
            refresh_margin=settings.token_refresh_margin,
            count_token_call=count_token_call,
            prepare_session=cut_with_runs,
            limits=limits,
        ),
        model_client=ModelClient(
            model_session,
            Timeouts(settings.model_connect_timeout, settings.model_read_timeout),
            catalog=catalog,
            limits=limits,
        ),
        runs=runs if runs is not None else RunningJobs(),
        webhook_session=new_session(settings.worker_concurrency),
    )
