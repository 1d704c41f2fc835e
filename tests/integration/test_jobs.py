"""Jobs: wait or poll, progress, cancel, shared identical requests, cache, lost workers, 429.

This module runs its own workers on queues of its own (models.json ``queue``), with a short
job lease and reaper interval, against the same Orthanc, Redis and example model.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient

from devtools.processes import ManagedProcess
from model_proxy.broker.app import create_app
from tests.support.deployment import Deployment, PacsData, start_worker
from tests.support.keys import with_keys

pytestmark = pytest.mark.integration

SLOW = "a0000000-0000-4000-8000-000000000001"  # answers after 2 s
FAST = "a0000000-0000-4000-8000-000000000002"
UNCONSUMED = "a0000000-0000-4000-8000-000000000003"  # on a queue no worker reads
KILLABLE = "a0000000-0000-4000-8000-000000000004"  # on the queue of the worker we kill
ONE_AT_A_TIME = "a0000000-0000-4000-8000-000000000005"  # maxConcurrency 1, 1 s each
TIME_LIMITED = "a0000000-0000-4000-8000-000000000006"  # timeLimit 1.5 s, answers after 5 s


class Jobs:
    def __init__(self, client: TestClient, deployment: Deployment) -> None:
        self.client = client
        self.deployment = deployment

    def url(self, model: str, item: Any, series: bool = True) -> str:
        path = f"/segmentations/{model}/studies/{item.study_uid}"
        return path + f"/series/{item.series_uid}" if series else path

    def submit(self, url: str, **headers: str) -> requests.Response:
        return self.client.get(url, headers={"Prefer": "respond-async", **headers})

    def job(self, job_id: str) -> dict[str, Any]:
        response = self.client.get(f"/jobs/{job_id}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    def wait(
        self,
        job_id: str,
        until: Callable[[dict[str, Any]], bool],
        timeout: float = 60,
        seen: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if seen is not None:
                seen.append(job)
            if until(job):
                return job
            assert time.monotonic() < deadline, f"job stayed {job['state']}"
            time.sleep(0.05)


def finished(job: dict[str, Any]) -> bool:
    return job["state"] in ("succeeded", "failed", "cancelled")


def model_calls(deployment: Deployment) -> int:
    recent = requests.get(f"{deployment.model_url}/_debug/received", timeout=5).json()["recent"]
    return len(recent)


def reset_model_log(deployment: Deployment) -> None:
    requests.post(f"{deployment.model_url}/_debug/reset", timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def setup(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Deployment, ManagedProcess]]:
    here: Path = tmp_path_factory.mktemp("jobs")
    model = deployment.model_url
    models = json.loads(deployment.settings.models_file.read_text())

    def entry(query: str, **extra: Any) -> dict[str, Any]:
        return {
            "uri": f"{model}/segmentation{query}",
            "task": "segmentation",
            "supports": ["/studies", "/studies/series"],
            "queue": "jobs",
            **extra,
        }

    models.update(
        {
            SLOW: entry("?delay=2"),
            FAST: entry(""),
            UNCONSUMED: entry("", queue="jobs-unconsumed", maxQueued=2),
            KILLABLE: entry("?delay=4", queue="jobs-killable"),
            ONE_AT_A_TIME: entry("?delay=1", maxConcurrency=1),
            TIME_LIMITED: entry("?delay=5", timeLimit=1.5),
        }
    )
    (here / "models.json").write_text(json.dumps(models))
    environ = {
        **deployment.environ,
        "MODEL_PROXY_MODELS_FILE": str(here / "models.json"),
        "MODEL_PROXY_JOB_LEASE_SECONDS": "3",
        "MODEL_PROXY_REAPER_INTERVAL_SECONDS": "1",
        "MODEL_PROXY_MODEL_READ_TIMEOUT": "30",
    }
    settings = deployment.settings.model_copy(
        update={"models_file": here / "models.json", "sync_wait_seconds": 1.0}
    )
    local = Deployment(settings, environ, here, deployment.model_url, deployment.redis)
    worker = start_worker(local, "jobs-worker", concurrency=4, queues="jobs")
    yield local, worker
    worker.stop()


@pytest.fixture()
def jobs(setup: tuple[Deployment, ManagedProcess]) -> Iterator[Jobs]:
    local, _ = setup
    reset_model_log(local)
    with TestClient(create_app(local.settings, environ=local.environ)) as client:
        yield Jobs(client, local)


def test_a_plain_get_waits_then_answers_202_with_the_job(jobs: Jobs, pacs: PacsData) -> None:
    response = jobs.client.get(
        jobs.url(SLOW, pacs.series_a[0]), headers={"Cache-Control": "no-cache"}
    )

    assert response.status_code == 202
    body = response.json()
    assert response.headers["location"] == f"/jobs/{body['id']}"
    assert body["links"]["result"] == f"/jobs/{body['id']}/result"
    assert not finished(body)  # queued still, on a busy machine, or running
    done = jobs.wait(body["id"], finished)
    assert done["state"] == "succeeded"
    result = jobs.client.get(done["links"]["result"])
    assert result.status_code == 200
    assert pacs.study_uid in result.json()


def test_async_submit_then_poll_shows_stages_and_rising_progress(
    jobs: Jobs, pacs: PacsData
) -> None:
    series = pacs.series_a
    response = jobs.submit(jobs.url(SLOW, series[0]), **{"Cache-Control": "no-cache"})
    assert response.status_code == 202
    job_id = response.json()["id"]
    seen: list[dict[str, Any]] = []

    done = jobs.wait(job_id, finished, seen=seen)

    assert done["state"] == "succeeded"
    assert done["request"]["series"] == series[0].series_uid
    assert done["progress"]["instancesTotal"] == len(series)
    assert done["progress"]["instancesFetched"] == len(series)
    assert done["progress"]["bytesFetched"] >= sum(len(item.data) for item in series)
    fetched = [job["progress"]["instancesFetched"] for job in seen]
    assert fetched == sorted(fetched)
    assert "inferring" in {job["state"] for job in seen}
    assert done["createdAt"] <= done["startedAt"] <= done["inferringAt"] <= done["finishedAt"]
    assert done["attempts"] == 1


def test_a_queued_job_is_cancelled_and_never_runs(
    jobs: Jobs, pacs: PacsData, setup: tuple[Deployment, ManagedProcess]
) -> None:
    local, _ = setup
    job_id = jobs.submit(jobs.url(UNCONSUMED, pacs.series_b[0])).json()["id"]
    assert jobs.job(job_id)["state"] == "queued"

    cancelled = jobs.client.delete(f"/jobs/{job_id}")

    assert cancelled.status_code == 200
    assert cancelled.json()["state"] == "cancelled"
    assert jobs.client.delete(f"/jobs/{job_id}").status_code == 409
    worker = start_worker(local, "unconsumed-worker", concurrency=1, queues="jobs-unconsumed")
    try:
        skipped = f"job={job_id} stage=skipped reason=cancelled"
        deadline = time.monotonic() + 30
        while skipped not in worker.output():  # the worker receives the task and skips it
            assert time.monotonic() < deadline, "the worker never skipped the cancelled job"
            time.sleep(0.05)
        assert jobs.job(job_id)["state"] == "cancelled"
    finally:
        worker.stop()
    assert model_calls(local) == 0
    result = jobs.client.get(f"/jobs/{job_id}/result")
    assert result.status_code == 410
    assert result.json()["code"] == "job_cancelled"


def test_a_running_job_is_cancelled_and_its_result_dropped(jobs: Jobs, pacs: PacsData) -> None:
    job_id = jobs.submit(jobs.url(SLOW, pacs.series_b[0]), **{"Cache-Control": "no-cache"}).json()[
        "id"
    ]
    jobs.wait(job_id, lambda job: job["state"] == "inferring")

    response = jobs.client.delete(f"/jobs/{job_id}")

    assert response.status_code == 200
    assert response.json()["state"] == "cancelled"
    time.sleep(2.5)  # the model answers meanwhile; the worker must not revive the job
    job = jobs.job(job_id)
    assert job["state"] == "cancelled"
    assert jobs.client.get(f"/jobs/{job_id}/result").status_code == 410


def test_twenty_identical_requests_share_one_job_and_one_model_call(
    jobs: Jobs, pacs: PacsData
) -> None:
    url = jobs.url(SLOW, pacs.series_a[0], series=False)
    first = jobs.submit(url, **{"Cache-Control": "no-cache"}).json()["id"]

    # the others attach to it: each waits for its answer (200), or for as long as the API
    # waits (202 with the job), or arrives once it is done and gets the answer it left (200)
    with ThreadPoolExecutor(20) as pool:
        responses = list(pool.map(lambda _: jobs.client.get(url), range(20)))

    assert {r.status_code for r in responses} <= {200, 202}
    jobs.wait(first, finished)
    bodies = {jobs.client.get(f"/jobs/{first}/result").content}
    for response in responses:
        if response.status_code == 200:
            assert response.headers["x-job-id"] == first
            bodies.add(response.content)
        else:
            assert response.json()["id"] == first
    assert len(bodies) == 1
    assert model_calls(jobs.deployment) == 1


def test_a_succeeded_answer_is_cached_and_no_cache_runs_again(jobs: Jobs, pacs: PacsData) -> None:
    url = jobs.url(FAST, pacs.mr_small)
    first = jobs.client.get(url, headers={"Cache-Control": "no-cache"})
    assert first.status_code == 200
    second = jobs.client.get(url)
    fresh = jobs.client.get(url, headers={"Cache-Control": "no-cache"})

    assert second.status_code == 200
    assert second.headers["x-job-id"] == first.headers["x-job-id"]
    assert second.content == first.content
    assert fresh.status_code == 200
    assert fresh.headers["x-job-id"] != first.headers["x-job-id"]
    assert model_calls(jobs.deployment) == 2


def test_a_job_whose_worker_is_killed_is_finished_by_another(
    jobs: Jobs, pacs: PacsData, setup: tuple[Deployment, ManagedProcess]
) -> None:
    local, _ = setup
    doomed = start_worker(local, "doomed-worker", concurrency=1, queues="jobs-killable")
    job_id = jobs.submit(
        jobs.url(KILLABLE, pacs.series_b[0]), **{"Cache-Control": "no-cache"}
    ).json()["id"]
    jobs.wait(job_id, lambda job: job["state"] == "inferring")

    doomed.kill()  # SIGKILL: no goodbye, its lease just stops being renewed
    rescuer = start_worker(local, "rescuer-worker", concurrency=1, queues="jobs-killable")
    try:
        done = jobs.wait(job_id, finished, timeout=60)
    finally:
        rescuer.stop()

    assert done["state"] == "succeeded"
    assert done["attempts"] == 2
    assert jobs.client.get(f"/jobs/{job_id}/result").status_code == 200


def test_a_restarted_api_still_answers_for_every_job(
    jobs: Jobs, pacs: PacsData, setup: tuple[Deployment, ManagedProcess], tmp_path: Path
) -> None:
    local, _ = setup
    settings, headers = with_keys(local.settings, tmp_path, ops="admin")
    admin = headers["ops"]
    with TestClient(create_app(settings, environ=local.environ)) as before:
        listed = before.get("/jobs", params={"limit": 100}, headers=admin).json()["jobs"]
    assert listed

    with TestClient(create_app(settings, environ=local.environ)) as restarted:
        for job in listed:
            again = restarted.get(f"/jobs/{job['id']}")
            assert again.status_code == 200
            assert again.json()["state"] == job["state"] or not finished(job)
        states = restarted.get("/jobs", params={"state": "cancelled"}, headers=admin).json()["jobs"]
        assert states and {job["state"] for job in states} == {"cancelled"}
    assert jobs.client.get("/jobs/0123456789abcdef").status_code == 404


def test_past_the_queue_limit_new_requests_get_429_with_retry_after(
    jobs: Jobs, pacs: PacsData
) -> None:
    waiting = [
        jobs.submit(jobs.url(UNCONSUMED, item)) for item in (pacs.series_a[0], pacs.ct_small)
    ]
    try:
        assert [r.status_code for r in waiting] == [202, 202]  # maxQueued is 2
        refused = jobs.submit(jobs.url(UNCONSUMED, pacs.mr_small))
        assert refused.status_code == 429
        assert refused.json()["code"] == "queue_full"
        assert int(refused.headers["retry-after"]) > 0
    finally:
        for response in waiting:
            jobs.client.delete(f"/jobs/{response.json()['id']}")


def test_a_model_limited_to_one_call_runs_its_jobs_one_after_the_other(
    jobs: Jobs, pacs: PacsData
) -> None:
    ids = [
        jobs.submit(jobs.url(ONE_AT_A_TIME, item), **{"Cache-Control": "no-cache"}).json()["id"]
        for item in (pacs.series_a[0], pacs.series_b[0])
    ]
    first, second = (jobs.wait(job_id, finished) for job_id in ids)

    assert first["state"] == second["state"] == "succeeded"
    spans = sorted(
        [(first["inferringAt"], first["finishedAt"]), (second["inferringAt"], second["finishedAt"])]
    )
    assert spans[0][1] <= spans[1][0]


def test_a_job_past_its_models_time_limit_fails_with_a_timeout(jobs: Jobs, pacs: PacsData) -> None:
    response = jobs.client.get(
        jobs.url(TIME_LIMITED, pacs.ct_small), headers={"Cache-Control": "no-cache"}
    )
    job_id = response.json().get("id") or response.json()["jobId"]

    done = jobs.wait(job_id, finished)

    assert done["state"] == "failed"
    assert done["error"]["code"] == "model_timeout"
    result = jobs.client.get(f"/jobs/{job_id}/result")
    assert result.status_code == 504
    assert result.json()["jobId"] == job_id
