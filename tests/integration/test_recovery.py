"""Queued jobs whose task message was lost are sent again by the reaper, with a real worker on
a real Redis; a job whose message still waits in its queue is not sent twice.

This module's deployment has a key prefix of its own, a one-second recovery bound and a reaper
that looks twice a second.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from model_proxy.broker.app import create_app
from model_proxy.shared.config.schema import Level
from model_proxy.shared.jobs import JobKeys
from model_proxy.shared.jobs.operations import JobOperations
from model_proxy.shared.queue import create_celery, queue_keys
from tests.support.deployment import Deployment, Ids, PacsData, start_worker
from tests.unit.jobs.support import make_job, run_script

pytestmark = pytest.mark.integration

PREFIX = "recovery-test"
UNCONSUMED = "b0000000-0000-4000-8000-000000000001"  # on a queue no worker reads
UNCONSUMED_QUEUE = "recovery-unconsumed"


@pytest.fixture(scope="module")
def local(deployment: Deployment, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    here: Path = tmp_path_factory.mktemp("recovery")
    models = json.loads(deployment.settings.models_file.read_text())
    models[UNCONSUMED] = {
        "uri": f"{deployment.model_url}/segmentation",
        "task": "segmentation",
        "supports": ["/studies/series"],
        "queue": UNCONSUMED_QUEUE,
    }
    (here / "models.json").write_text(json.dumps(models))
    environ = {
        **deployment.environ,
        "MODEL_PROXY_MODELS_FILE": str(here / "models.json"),
        "MODEL_PROXY_REDIS_PREFIX": PREFIX,
        "MODEL_PROXY_QUEUED_RECOVERY_SECONDS": "1",
        "MODEL_PROXY_REAPER_INTERVAL_SECONDS": "0.5",
    }
    settings = deployment.settings.model_copy(
        update={
            "models_file": here / "models.json",
            "redis_prefix": PREFIX,
            "queued_recovery_seconds": 1.0,
        }
    )
    site = Deployment(settings, environ, here, deployment.model_url, deployment.redis)
    worker = start_worker(site, "recovery-worker", concurrency=2, queues="inference")
    yield site
    worker.stop()


@pytest.fixture()
def api(local: Deployment) -> Iterator[TestClient]:
    with TestClient(create_app(local.settings, environ=local.environ)) as client:
        yield client


def _wait(api: TestClient, job_id: str, timeout: float = 20) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = api.get(f"/jobs/{job_id}").json()
        if body["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_a_job_whose_task_message_was_lost_is_run_after_the_bound(
    local: Deployment, api: TestClient, pacs: PacsData
) -> None:
    series = pacs.series_b[0]
    job = make_job(
        model_id=Ids.SEGMENTATION,
        server_id=Ids.PACS,
        level=Level.SERIES,
        study_uid=series.study_uid,
        series_uid=series.series_uid,
        data_filters=(),
    ).model_copy(update={"queue": local.settings.queue_name})
    # recorded as the API records it, and then its task never sent (the publish failed)
    operations = JobOperations(JobKeys(PREFIX), local.settings.job_ttl_seconds)
    client = redis.Redis.from_url(local.redis.url)
    try:
        run_script(client, operations.create_or_attach(job, use_cached=False))
    finally:
        client.close()
    assert api.get(f"/jobs/{job.id}").json()["state"] == "queued"

    finished = _wait(api, job.id)

    assert finished["state"] == "succeeded", finished
    assert api.get(f"/jobs/{job.id}/result").status_code == 200


def test_a_job_whose_message_waits_in_its_queue_is_not_sent_twice(
    local: Deployment, api: TestClient, pacs: PacsData
) -> None:
    series = pacs.series_a[0]
    url = f"/segmentations/{UNCONSUMED}/studies/{series.study_uid}/series/{series.series_uid}"
    submitted = api.get(url, headers={"Prefer": "respond-async", "Cache-Control": "no-cache"})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]

    time.sleep(3)  # three recovery bounds, six rounds of the reaper

    options = create_celery(local.settings, local.redis.url).conf.broker_transport_options
    client = redis.Redis.from_url(local.redis.url)
    try:
        waiting = sum(int(client.llen(key)) for key in queue_keys(UNCONSUMED_QUEUE, options))
    finally:
        client.close()
    assert waiting == 1
    assert api.get(f"/jobs/{job_id}").json()["state"] == "queued"
    assert api.delete(f"/jobs/{job_id}").status_code == 200
