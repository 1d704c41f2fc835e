"""A worker's limits, through the real stack: the time limit bounds a whole run, wall clock, even
against a PACS or a model that trickles; a worker stopped with SIGTERM finishes what fits in its
grace period and hands the rest back at once.

The fault-injecting proxy (devtools/fault_proxy.py) sits in front of the real Orthanc and of the
example model; the workers are real ``model-proxy worker`` processes on queues of their own.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from devtools.fault_proxy import Fault, FaultKind, FaultProxy
from devtools.processes import ManagedProcess
from model_proxy.broker.app import create_app
from tests.support.deployment import PACS_PASSWORD_ENV, Deployment, PacsData, start_worker

pytestmark = pytest.mark.integration

PROXIED_PACS = "c1d2e3f4-0000-4000-8000-00000000000a"  # Orthanc through the fault proxy
LIMITED = "c1d2e3f4-0000-4000-8000-00000000000b"  # timeLimit 2 s, model behind the fault proxy
STOPPING = "c1d2e3f4-0000-4000-8000-00000000000c"  # model behind the fault proxy, for SIGTERM
TIME_LIMIT = 2.0
TRICKLE = Fault(FaultKind.TRICKLE, delay=0.5)  # a byte every half second: no read timeout fires


@dataclass
class Stack:
    deployment: Deployment
    pacs_proxy: FaultProxy
    model_proxy: FaultProxy
    client: TestClient

    def submit(self, model: str, item: Any, server: str | None = None) -> str:
        path = f"/segmentations/{model}/studies/{item.study_uid}/series/{item.series_uid}"
        response = self.client.get(
            path,
            params={"server": server} if server else {},
            headers={"Prefer": "respond-async", "Cache-Control": "no-cache"},
        )
        assert response.status_code == 202, response.text
        job_id: str = response.json()["id"]
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        body: dict[str, Any] = self.client.get(f"/jobs/{job_id}").json()
        return body

    def wait(self, job_id: str, states: tuple[str, ...], timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.job(job_id)
            if job["state"] in states:
                return job
            assert time.monotonic() < deadline, f"job stayed {job['state']} for {timeout} s"
            time.sleep(0.05)

    def worker(self, name: str, queue: str, **environ: str) -> ManagedProcess:
        local = self.deployment
        env = {**local.environ, **environ}
        return start_worker(
            Deployment(local.settings, env, local.workdir, local.model_url, local.redis),
            name,
            concurrency=2,
            queues=queue,
        )


FINISHED = ("succeeded", "failed", "cancelled")


def _seconds(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


@pytest.fixture(scope="module")
def stack(
    deployment: Deployment, pacs: PacsData, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    here: Path = tmp_path_factory.mktemp("limits")
    pacs_proxy = FaultProxy(pacs.orthanc.dicomweb)
    model_proxy = FaultProxy(deployment.model_url)
    pacs_proxy.start()
    model_proxy.start()
    servers = json.loads(deployment.settings.servers_file.read_text())
    servers[PROXIED_PACS] = {
        "uri": pacs_proxy.url,
        "authType": "basicAuth",
        "login": pacs.orthanc.user,
        "password": "${" + PACS_PASSWORD_ENV + "}",
    }
    models = json.loads(deployment.settings.models_file.read_text())
    entry = {"task": "segmentation", "supports": ["/studies/series"]}
    models[LIMITED] = {
        **entry,
        "uri": f"{model_proxy.url}/segmentation",
        "queue": "limits",
        "timeLimit": TIME_LIMIT,
    }
    models[STOPPING] = {**entry, "uri": f"{model_proxy.url}/segmentation", "queue": "stopping"}
    (here / "servers.json").write_text(json.dumps(servers))
    (here / "models.json").write_text(json.dumps(models))
    environ = {
        **deployment.environ,
        "MODEL_PROXY_SERVERS_FILE": str(here / "servers.json"),
        "MODEL_PROXY_MODELS_FILE": str(here / "models.json"),
    }
    settings = deployment.settings.model_copy(
        update={"servers_file": here / "servers.json", "models_file": here / "models.json"}
    )
    local = Deployment(settings, environ, here, deployment.model_url, deployment.redis)
    with TestClient(create_app(settings, environ=environ)) as client:
        yield Stack(local, pacs_proxy, model_proxy, client)
    pacs_proxy.stop()
    model_proxy.stop()


@pytest.fixture(scope="module")
def limits_worker(stack: Stack) -> Iterator[ManagedProcess]:
    worker = stack.worker("limits-worker", "limits")
    yield worker
    worker.stop()


# --- the time limit ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("side", "code"), [("pacs", "pacs_timeout"), ("model", "model_timeout")], ids=["pacs", "model"]
)
def test_a_trickling_peer_fails_the_job_at_its_time_limit_and_the_next_job_succeeds(
    stack: Stack, limits_worker: ManagedProcess, pacs: PacsData, side: str, code: str
) -> None:
    proxy = stack.pacs_proxy if side == "pacs" else stack.model_proxy
    with proxy.injecting(TRICKLE):
        job_id = stack.submit(LIMITED, pacs.series_b[0], server=PROXIED_PACS)
        done = stack.wait(job_id, FINISHED, timeout=TIME_LIMIT + 10)

    assert done["state"] == "failed"
    assert done["error"]["code"] == code
    assert "time limit" in done["error"]["message"]
    ran = _seconds(done["finishedAt"]) - _seconds(done["startedAt"])
    assert ran < TIME_LIMIT + 3
    assert proxy.hits > 0
    assert stack.client.get(f"/jobs/{job_id}/result").status_code == 504

    again = stack.submit(LIMITED, pacs.series_b[0], server=PROXIED_PACS)
    assert stack.wait(again, FINISHED, timeout=20)["state"] == "succeeded"
    assert limits_worker.alive


# --- a graceful stop ---------------------------------------------------------------------------


def _terminate(worker: ManagedProcess) -> float:
    """SIGTERM, as ``docker stop`` sends it; returns when it was sent."""
    os.killpg(worker.process.pid, signal.SIGTERM)
    return time.time()


def test_a_job_that_ends_within_the_grace_period_succeeds_on_the_stopping_worker(
    stack: Stack, pacs: PacsData
) -> None:
    worker = stack.worker("graceful-worker", "stopping", MODEL_PROXY_SHUTDOWN_GRACE_SECONDS="8")
    try:
        with stack.model_proxy.injecting(Fault(FaultKind.SLOW_HEADERS, delay=2)):
            job_id = stack.submit(STOPPING, pacs.series_b[0])
            stack.wait(job_id, ("inferring",), timeout=20)
            _terminate(worker)
            done = stack.wait(job_id, FINISHED, timeout=15)
        worker.process.wait(timeout=15)
    finally:
        worker.stop()

    assert done["state"] == "succeeded"
    assert done["attempts"] == 1
    assert worker.process.returncode == 0


def test_a_job_that_outlasts_the_grace_period_is_handed_back_and_finished_by_another_worker(
    stack: Stack, pacs: PacsData
) -> None:
    grace = 1.0
    doomed = stack.worker(
        "stopping-worker", "stopping", MODEL_PROXY_SHUTDOWN_GRACE_SECONDS=str(grace)
    )
    rescuer: ManagedProcess | None = None
    try:
        with stack.model_proxy.injecting(Fault(FaultKind.HANG)):
            job_id = stack.submit(STOPPING, pacs.series_b[0])
            first = stack.wait(job_id, ("inferring",), timeout=20)
            rescuer = stack.worker("rescuing-worker", "stopping")
        terminated = _terminate(doomed)  # its model call hangs on; new calls are answered
        doomed.process.wait(timeout=grace + 10)
        done = stack.wait(job_id, FINISHED, timeout=20)
    finally:
        doomed.stop()
        if rescuer is not None:
            rescuer.stop()

    assert doomed.process.returncode == 0
    assert done["state"] == "succeeded"
    assert done["attempts"] == 2  # the stopping worker's run, then the rescuer's
    restarted = _seconds(done["startedAt"])
    assert restarted > _seconds(first["startedAt"])
    # taken up again at once, not after the lease (20 s) lapsed and the reaper (10 s) found it
    assert restarted - terminated < grace + 5
    assert "handed back" in doomed.log_text()
