"""The FastAPI application factory."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from model_proxy.broker.access import OPEN_PATHS, Authenticate
from model_proxy.broker.audit import AuditAccess, AuditLog
from model_proxy.broker.bearer_tokens import BearerTokenVerifier
from model_proxy.broker.check_gate import CheckGate
from model_proxy.broker.errors import install_error_handlers
from model_proxy.broker.hosts import HostPolicy, RefuseForeignHosts
from model_proxy.broker.idempotency import IdempotencyKeys
from model_proxy.broker.jobs import AsyncJobStore, JobEvents
from model_proxy.broker.metrics import AsyncMetrics
from model_proxy.broker.openapi import declare_security
from model_proxy.broker.origins import OriginPolicy, RefuseForeignPages
from model_proxy.broker.result_cache import ResultCache
from model_proxy.broker.routes import api_router
from model_proxy.broker.routes import inference as viewer_routes
from model_proxy.broker.routes import jobs as job_routes
from model_proxy.broker.services import BrokerServices
from model_proxy.shared.api_keys import ApiKeyReader
from model_proxy.shared.config import catalog_from_settings
from model_proxy.shared.errors import ConfigError
from model_proxy.shared.jobs import JobKeys
from model_proxy.shared.jwks import JwksCache, JwtIssuer
from model_proxy.shared.queue import create_celery
from model_proxy.shared.redis_clients import async_redis
from model_proxy.shared.settings import Settings

__all__ = ["create_app"]


def create_app(
    settings: Settings,
    *,
    redis_url: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> FastAPI:
    """Build the API. Loads servers.json and models.json now, so a bad file stops the start.

    ``redis_url`` overrides ``settings.redis_url`` (the embedded Redis passes its own).
    """
    url = redis_url or settings.redis_url
    if url is None:
        raise ValueError("create_app needs a Redis URL: set MODEL_PROXY_REDIS_URL")
    catalog = catalog_from_settings(settings, environ)
    issuer = JwtIssuer.from_settings(settings)
    audit = AuditLog(settings.audit_log)
    audit.check()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client = async_redis(url, settings)
        keys = JobKeys(settings.redis_prefix)
        events = JobEvents(client, keys.events)
        celery = create_celery(settings, url)
        metrics = AsyncMetrics(client, keys.prefix)
        app.state.services = BrokerServices(
            settings=settings,
            catalog=catalog,
            jobs=AsyncJobStore(client, settings.job_ttl_seconds, keys),
            events=events,
            celery=celery,
            metrics=metrics,
            results=ResultCache(settings.local_cache_seconds),
            idempotency=IdempotencyKeys(
                client,
                keys.prefix,
                settings.idempotency_key_ttl_seconds,
                settings.idempotency_wait_seconds,
            ),
        )
        await events.start()
        await metrics.start()
        try:
            yield
        finally:
            await metrics.stop()
            await events.stop()
            await client.aclose()
            celery.close()

    app = FastAPI(
        title="model-proxy",
        summary="Inference broker between DICOMweb PACS servers, DICOM viewers and model APIs",
        version="0.1.0",
        lifespan=lifespan,
    )
    try:
        origins = OriginPolicy.from_patterns(settings.cors_origins)
    except ValueError as exc:
        raise ConfigError(f"MODEL_PROXY_CORS_ORIGINS: {exc}") from None
    try:
        hosts = HostPolicy.from_patterns(settings.allowed_hosts)
    except ValueError as exc:
        raise ConfigError(f"MODEL_PROXY_ALLOWED_HOSTS: {exc}") from None
    # added innermost first; a request meets them from the last to the first
    app.add_middleware(
        Authenticate,
        keys=ApiKeyReader(
            settings.api_keys_file,
            concurrent_checks=settings.api_key_concurrent_checks,
            max_failures=settings.api_key_max_failures,
            failure_window=settings.api_key_failure_window_seconds,
        ),
        anonymous=settings.anonymous or "viewer",
        tokens=None if issuer is None else BearerTokenVerifier(issuer, JwksCache(issuer)),
        checks=CheckGate(settings.api_key_concurrent_checks, settings.api_key_waiting_checks),
    )
    # a page that may not call is refused whoever it is, before credentials are looked at
    app.add_middleware(RefuseForeignPages, policy=origins)
    app.add_middleware(
        CORSMiddleware,
        allow_origins=["*"] if origins.any_origin else [],
        allow_origin_regex=None if origins.any_origin else origins.regex,
        allow_methods=["GET", "POST", "DELETE", "OPTIONS"],
        expose_headers=["ETag", "Location", "Preference-Applied", "Retry-After", "X-Job-Id"],
        allow_headers=["*"],
        max_age=600,
    )
    app.add_middleware(RefuseForeignHosts, policy=hosts)
    # outermost: every audited request gets its line, refused ones included
    app.add_middleware(
        AuditAccess,
        audit=audit,
        routes=[*viewer_routes.router.routes, *job_routes.router.routes],
        default_server=catalog.default_server_id,
    )
    install_error_handlers(app)
    app.include_router(api_router)
    declare_security(
        app,
        open_paths=OPEN_PATHS,
        anonymous=(settings.anonymous or "viewer") == "viewer",
        discovery_url=None if issuer is None else issuer.discovery_url,
    )
    return app
