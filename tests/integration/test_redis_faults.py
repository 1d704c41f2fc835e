"""The API and Redis under faults and load: a Redis gone silent is a 503 within seconds, not a
hang, and more concurrent requests than the Redis pool holds are all answered, not reported as
an outage."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient

from devtools.processes import ManagedProcess
from devtools.redis_server import RedisServer
from model_proxy.broker.app import create_app
from tests.support.deployment import Deployment, Ids, PacsData

pytestmark = pytest.mark.integration


@pytest.fixture()
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    yield server
    os.kill(server.process.process.pid, signal.SIGCONT)  # never leave it stopped
    server.stop()


def _timed(client: TestClient, url: str) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = client.get(url)
    return response, time.monotonic() - started


def test_a_paused_redis_is_a_503_within_seconds_and_then_recovers(
    deployment: Deployment, pacs: PacsData, own_redis: RedisServer
) -> None:
    settings = deployment.settings.model_copy(
        update={"redis_socket_timeout": 1.0, "redis_connect_timeout": 1.0}
    )
    item = pacs.series_a[0]
    viewer = f"/segmentations/{Ids.SEGMENTATION}/studies/{item.study_uid}/series/{item.series_uid}"
    app = create_app(settings, redis_url=own_redis.url, environ=deployment.environ)
    with TestClient(app, headers={"Prefer": "respond-async"}) as client:
        assert client.get("/readyz").status_code == 200
        pid = own_redis.process.process.pid
        os.kill(pid, signal.SIGSTOP)  # silent: the connection stays open, nothing answers
        try:
            for url in (viewer, "/jobs/0123456789abcdef", "/readyz"):
                response, took = _timed(client, url)
                assert response.status_code == 503, (url, response.text)
                assert response.json()["code"] == "redis_unavailable"
                assert took < 4, f"{url} took {took:.1f} s"
        finally:
            os.kill(pid, signal.SIGCONT)

        assert client.get("/readyz").status_code == 200
        assert client.get("/jobs/0123456789abcdef").status_code == 404
        queued = client.get(viewer)
        assert queued.status_code == 202, queued.text  # no worker on this Redis: it waits


def test_more_concurrent_requests_than_the_pool_holds_are_all_answered(
    deployment: Deployment, worker: ManagedProcess, pacs: PacsData
) -> None:
    pool = 8
    settings = deployment.settings.model_copy(
        update={"redis_max_connections": pool, "local_cache_seconds": 0.0}
    )
    item = pacs.ct_small
    viewer = f"/segmentations/{Ids.SEGMENTATION}/studies/{item.study_uid}/series/{item.series_uid}"
    app = create_app(settings, environ=deployment.environ)
    with TestClient(app) as client:
        made = client.get(viewer)
        assert made.status_code == 200, made.text
        job = f"/jobs/{made.headers['x-job-id']}"

        async def burst() -> list[httpx.Response]:
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as http:
                urls = [viewer, job, f"{job}/result"] * 100
                return await asyncio.gather(*(http.get(url) for url in urls))

        assert client.portal is not None
        responses = client.portal.call(burst)

    codes = [r.json().get("code") for r in responses if r.status_code != 200]
    assert codes == [], f"{len(codes)} of {len(responses)} failed: {set(codes)}"
