"""Queue position and ETA on the real stack: a model that runs one job at a time, its worker,
Redis, Orthanc and the slow example model.

This module runs its own worker (one job at a time, so jobs run in the order they were queued)
on a queue of its own.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest
import redis
from fastapi.testclient import TestClient

from devtools.processes import ManagedProcess
from model_proxy.broker.app import create_app
from model_proxy.shared.jobs import JobKeys
from tests.support.deployment import Deployment, PacsData, start_worker

pytestmark = pytest.mark.integration

ONE_AT_A_TIME = "e7a00000-0000-4000-8000-000000000001"  # maxConcurrency 1, DELAY s per call
# the model's delay: it dominates a run (whose other stages take hundredths of a second on an
# idle machine), so the ETA's basis is representative even when the machine's load varies
DELAY = 1.5
QUEUE = "eta"
FRESH = {"Cache-Control": "no-cache"}


@pytest.fixture(scope="module")
def setup(
    deployment: Deployment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Deployment, ManagedProcess]]:
    local = deployment.with_models(
        tmp_path_factory.mktemp("eta"),
        {
            ONE_AT_A_TIME: {
                "uri": f"{deployment.model_url}/segmentation?delay={DELAY}",
                "task": "segmentation",
                "supports": ["/studies/series/instances"],
                "queue": QUEUE,
                "maxConcurrency": 1,
            }
        },
    )
    worker = start_worker(local, "eta-worker", concurrency=1, queues=QUEUE)
    yield local, worker
    worker.stop()


class Viewer:
    def __init__(self, client: TestClient, pacs: PacsData, worker: ManagedProcess) -> None:
        self.client = client
        self.pacs = pacs
        self.worker = worker

    def url(self, number: int) -> str:
        item = self.pacs.series_a[number]
        return (
            f"/segmentations/{ONE_AT_A_TIME}/studies/{item.study_uid}"
            f"/series/{item.series_uid}/instances/{item.sop_uid}"
        )

    def submit(self, number: int) -> str:
        """Queue a fresh job on instance ``number``; its id."""
        answer = self.client.get(self.url(number), headers={"Prefer": "respond-async", **FRESH})
        assert answer.status_code == 202, answer.text
        return str(answer.json()["id"])

    def job(self, job_id: str) -> dict[str, Any]:
        answer = self.client.get(f"/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        return cast(dict[str, Any], answer.json())

    @contextmanager
    def behind_a_running_blocker(self) -> Iterator[str]:
        """A job holding the model's one place, its worker paused for the ``with`` block: no job
        is claimed or ends meanwhile, so the places read there are exact. (A blocker that ended
        before the pause, on a machine too slow to pause within its run, is replaced.)"""
        for _ in range(3):
            job_id = self.submit(0)
            deadline = time.monotonic() + 20
            while self.job(job_id)["state"] == "queued":
                assert time.monotonic() < deadline, "the blocker was never started"
                time.sleep(0.02)
            with self.worker.paused():
                if not finished(self.job(job_id)):
                    yield job_id
                    return
        pytest.fail("each blocker ended before its worker was paused")

    def five_queued(self) -> list[str]:
        return [self.submit(number) for number in range(1, 6)]


@pytest.fixture()
def viewer(setup: tuple[Deployment, ManagedProcess], pacs: PacsData) -> Iterator[Viewer]:
    local, worker = setup
    with TestClient(create_app(local.settings, environ=local.environ)) as client:
        yield Viewer(client, pacs, worker)


def finished(job: dict[str, Any]) -> bool:
    return job["state"] in ("succeeded", "failed", "cancelled")


def moment(value: str) -> float:
    return dt.datetime.fromisoformat(value).timestamp()


def test_five_queued_jobs_are_at_places_one_to_five_which_fall_as_jobs_finish(
    viewer: Viewer,
) -> None:
    with viewer.behind_a_running_blocker():
        ids = viewer.five_queued()
        first = [viewer.job(job_id) for job_id in ids]

    assert [job["queue"]["position"] for job in first] == [1, 2, 3, 4, 5]
    assert [job["queue"]["ahead"] for job in first] == [0, 1, 2, 3, 4]
    assert {job["queue"]["concurrency"] for job in first} == {1}
    # seeded with the places read while no job could be claimed
    places = {job["id"]: [job["queue"]["position"]] for job in first}
    deadline = time.monotonic() + 60
    while True:
        jobs = [viewer.job(job_id) for job_id in ids]
        for job in jobs:
            if job["state"] == "queued":
                places[job["id"]].append(job["queue"]["position"])
            else:
                assert job["queue"] is None
        if all(finished(job) for job in jobs):
            break
        assert time.monotonic() < deadline, "the queue did not drain"
        time.sleep(0.1)
    assert all(job["state"] == "succeeded" for job in jobs)
    assert all(job["estimatedStartAt"] is None for job in jobs)
    assert all(job["estimatedFinishAt"] is None for job in jobs)
    for seen in places.values():
        assert seen == sorted(seen, reverse=True)  # a place never rises
    last = places[ids[-1]]
    assert last[0] == 5 and set(last) >= {5, 4, 3, 2, 1}  # it moved up to the front


def test_the_last_queued_jobs_eta_is_within_a_factor_of_two_of_its_finish(
    viewer: Viewer,
) -> None:
    # runs that make the model's durations known: three, so that one slowed by a load spike
    # weighs less than half of the average
    for number in (0, 1, 2):
        assert viewer.client.get(viewer.url(number), headers=FRESH).status_code == 200
    with viewer.behind_a_running_blocker():
        *_, last_id = viewer.five_queued()
        asked = time.time()
        last = viewer.job(last_id)

    assert last["queue"]["position"] == 5
    start, finish = moment(last["estimatedStartAt"]), moment(last["estimatedFinishAt"])
    assert asked < start < finish
    deadline = time.monotonic() + 60
    while not finished(last := viewer.job(last_id)):
        assert time.monotonic() < deadline
        if last["state"] != "queued":
            assert last["queue"] is None and last["estimatedStartAt"] is None
        time.sleep(0.1)
    assert last["state"] == "succeeded"
    assert last["estimatedFinishAt"] is None
    estimated, actual = finish - asked, moment(last["finishedAt"]) - asked
    assert actual / 2 <= estimated <= actual * 2, (estimated, actual)


def test_the_worker_announces_its_queue_and_pool_size_in_redis(
    setup: tuple[Deployment, ManagedProcess],
) -> None:
    local, _ = setup
    client = redis.Redis.from_url(local.redis.url)
    try:
        members = client.zrangebyscore(JobKeys().consumers(QUEUE), time.time(), "+inf")
    finally:
        client.close()
    assert [member.decode().partition(":")[0] for member in members] == ["1"]
