"""Two deployments with different ``MODEL_PROXY_REDIS_PREFIX`` on one real Redis, each with its
own worker process: neither sees the other's jobs, and each job is run by its own worker."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from devtools.processes import ManagedProcess
from model_proxy.broker.app import create_app
from tests.support.deployment import Deployment, Ids, PacsData, start_worker
from tests.support.keys import with_keys

pytestmark = pytest.mark.integration


@dataclass
class Site:
    prefix: str
    api: TestClient
    worker: ManagedProcess


@pytest.fixture(scope="module")
def sites(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Site]]:
    started: dict[str, Site] = {}
    try:
        for prefix in ("site-alpha", "site-beta"):
            environ = {**deployment.environ, "MODEL_PROXY_REDIS_PREFIX": prefix}
            local = Deployment(
                deployment.settings.model_copy(update={"redis_prefix": prefix}),
                environ,
                deployment.workdir,
                deployment.model_url,
                deployment.redis,
            )
            worker = start_worker(local, f"worker-{prefix}", concurrency=2)
            # an admin's key, who lists every job of its deployment
            settings, headers = with_keys(
                local.settings, tmp_path_factory.mktemp(prefix), ops="admin"
            )
            api = TestClient(create_app(settings, environ=environ), headers=headers["ops"])
            api.__enter__()
            started[prefix] = Site(prefix, api, worker)
        yield started
    finally:
        for site in started.values():
            site.api.__exit__(None, None, None)
            site.worker.stop()


def _wait_finished(site: Site, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        body: dict[str, Any] = site.api.get(f"/jobs/{job_id}").json()
        if body["state"] in ("succeeded", "failed", "cancelled") or time.monotonic() > deadline:
            return body
        time.sleep(0.1)


def test_a_job_of_one_deployment_is_invisible_to_the_other_and_run_by_its_own_worker(
    sites: dict[str, Site], deployment: Deployment, pacs: PacsData
) -> None:
    alpha, beta = sites["site-alpha"], sites["site-beta"]
    series = pacs.series_a[0]
    url = f"/segmentations/{Ids.SEGMENTATION}/studies/{series.study_uid}/series/{series.series_uid}"

    submitted = alpha.api.get(url, headers={"Prefer": "respond-async", "Cache-Control": "no-cache"})
    assert submitted.status_code == 202, submitted.text
    job_id = submitted.json()["id"]

    assert beta.api.get(f"/jobs/{job_id}").status_code == 404
    assert _wait_finished(alpha, job_id)["state"] == "succeeded"
    assert job_id in [job["id"] for job in alpha.api.get("/jobs").json()["jobs"]]
    assert job_id not in [job["id"] for job in beta.api.get("/jobs").json()["jobs"]]
    assert beta.api.get(f"/jobs/{job_id}/result").status_code == 404
    assert f"job={job_id} stage=claimed" in alpha.worker.log_text()
    assert job_id not in beta.worker.log_text()

    # the same request at beta is beta's own job, run by beta's worker
    again = beta.api.get(url, headers={"Prefer": "respond-async"})
    assert again.status_code == 202, again.text
    beta_job = again.json()["id"]
    assert beta_job != job_id
    assert _wait_finished(beta, beta_job)["state"] == "succeeded"
    assert beta_job not in alpha.worker.log_text()

    client = deployment.redis.client()
    try:
        keys = {key.decode() for key in client.keys("site-*")}
    finally:
        client.close()
    assert f"site-alpha:job:{job_id}" in keys and f"site-beta:job:{beta_job}" in keys
    assert "site-alpha:celery:_kombu.binding.inference" in keys  # Celery's queue: prefixed too
    assert "site-beta:celery:_kombu.binding.inference" in keys
    assert any(key.startswith("site-alpha:metrics:") for key in keys)
    assert any(key.startswith("site-beta:metrics:") for key in keys)
