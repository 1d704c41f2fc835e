"""The fault matrix: every part around model-proxy misbehaving, one fault at a time.

A fault-injecting proxy (``devtools/fault_proxy.py``) sits in front of the real Orthanc, the
example model and the test token server; Redis and the workers are real processes that the tests
restart, pause, kill and stop. For each fault the job ends in its documented state and code, the
next job on the same worker succeeds, no job is left unfinished, and no secret reaches a log.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient

from devtools.fault_proxy import Fault, FaultKind, FaultProxy
from devtools.processes import ManagedProcess, wait_until
from devtools.redis_server import RedisServer
from model_proxy.broker.app import create_app
from model_proxy.shared.settings import Settings
from tests.support.deployment import (
    PACS_PASSWORD_ENV,
    Deployment,
    PacsData,
    start_token_server,
    start_worker,
)

pytestmark = pytest.mark.integration

PACS = "0f000000-0000-4000-8000-000000000001"  # basic auth, through the PACS proxy
TOKEN_PACS = "0f000000-0000-4000-8000-000000000002"  # zhivaAuth, token server behind a proxy
MODEL = "0f000000-0000-4000-8000-00000000000a"  # the example model through the model proxy
SLOW_MODEL = "0f000000-0000-4000-8000-00000000000b"  # the example model, 2 s per call
TIME_LIMIT = 8  # seconds: models.json timeLimit of MODEL
TOKEN_USER, TOKEN_PASSWORD = "fault-reader", "f4ult-Matrix-Pass-9"
FINISHED = {"succeeded", "failed", "cancelled"}


@dataclass
class Matrix:
    api: TestClient
    pacs: PacsData
    redis: RedisServer
    deployment: Deployment
    workers: list[ManagedProcess]
    pacs_proxy: FaultProxy
    model_proxy: FaultProxy
    token_proxy: FaultProxy
    jobs: list[str]

    def submit(self, model: str = MODEL, server: str = PACS) -> str:
        """A fresh run of the test series, answered at once with its job."""
        item = self.pacs.series_b[0]
        answer = self.api.get(
            f"/segmentations/{model}/studies/{item.study_uid}/series/{item.series_uid}",
            params={"server": server},
            headers={"Prefer": "respond-async", "Cache-Control": "no-cache"},
        )
        assert answer.status_code == 202, answer.text
        job_id: str = answer.json()["id"]
        self.jobs.append(job_id)
        return job_id

    def job(self, job_id: str) -> dict[str, Any]:
        answer = self.api.get(f"/jobs/{job_id}")
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def poll(self, job_id: str) -> dict[str, Any] | None:
        """The job, or None while Redis is away (the API says so with 503)."""
        answer = self.api.get(f"/jobs/{job_id}")
        if answer.status_code == 503:
            assert answer.json()["code"] == "redis_unavailable", answer.text
            return None
        assert answer.status_code == 200, answer.text
        body: dict[str, Any] = answer.json()
        return body

    def wait_finished(self, job_id: str, timeout: float = 45) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            job = self.poll(job_id)
            if job is not None and job["state"] in FINISHED:
                return job
            assert time.monotonic() < deadline, f"job not finished after {timeout} s: {job}"
            time.sleep(0.2)

    def wait_state(self, job_id: str, states: set[str], timeout: float = 20) -> None:
        wait_until(lambda: self.job(job_id)["state"] in states, timeout, f"job in {states}")

    def restart_exited_workers(self, settle: float = 8) -> None:
        """Do what a supervisor does: start a worker again that exited (within ``settle``
        seconds), which it may only do with a failure status."""
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline and all(w.alive for w in self.workers):
            time.sleep(0.2)
        for index, worker in enumerate(self.workers):
            if worker.alive:
                continue
            assert worker.process.returncode != 0, f"{worker.name} exited with status 0"
            worker.stop()
            self.workers[index] = start_worker(self.deployment, f"{worker.name}-again", 2)

    def forget_tokens(self) -> None:
        client = self.redis.client()
        try:
            for key in client.scan_iter(match="*tokens*"):
                client.delete(key)
        finally:
            client.close()


def _configs(
    here: Path, pacs: PacsData, model_url: str, token_url: str, pacs_url: str, token_pacs: str
) -> None:
    servers = {
        PACS: {
            "uri": pacs_url,
            "isDefault": True,
            "authType": "basicAuth",
            "login": pacs.orthanc.user,
            "password": "${" + PACS_PASSWORD_ENV + "}",
        },
        TOKEN_PACS: {
            "uri": token_pacs,
            "authType": "zhivaAuth",
            "login": TOKEN_USER,
            "password": "${MP_TEST_FAULT_TOKEN_PASSWORD}",
            "signInServer": f"{token_url}/sign-user",
            "signInTokenServer": f"{token_url}/generate-access-token",
            "refreshServer": f"{token_url}/refresh-token",
        },
    }
    levels = ["/studies", "/studies/series"]
    models = {
        MODEL: {
            "uri": f"{model_url}/segmentation",
            "task": "segmentation",
            "supports": levels,
            "timeLimit": TIME_LIMIT,
            "maxAnswerBytes": 5_000_000,
        },
        SLOW_MODEL: {
            "uri": f"{model_url}/segmentation?delay=2",
            "task": "segmentation",
            "supports": levels,
        },
    }
    (here / "servers.json").write_text(json.dumps(servers, indent=2))
    (here / "models.json").write_text(json.dumps(models, indent=2))


@pytest.fixture(scope="module")
def matrix(workdir: Path, pacs: PacsData, example_model: str) -> Iterator[Matrix]:
    here = workdir / "fault-matrix"
    here.mkdir()
    token_url, token_process = start_token_server(pacs, here / "token-server.log")
    requests.post(
        f"{token_url}/_test/users",
        json={"username": TOKEN_USER, "password": TOKEN_PASSWORD},
        timeout=10,
    ).raise_for_status()
    pacs_proxy = FaultProxy(pacs.orthanc.dicomweb)
    model_proxy = FaultProxy(example_model)
    token_proxy = FaultProxy(token_url)
    for proxy in (pacs_proxy, model_proxy, token_proxy):
        proxy.start()
    _configs(here, pacs, model_proxy.url, token_proxy.url, pacs_proxy.url, f"{token_url}/pacs")
    redis_server = RedisServer(here / "redis", appendonly=True)
    environ = {
        **os.environ,
        PACS_PASSWORD_ENV: pacs.orthanc.password,
        "MP_TEST_FAULT_TOKEN_PASSWORD": TOKEN_PASSWORD,
        "MODEL_PROXY_REDIS_URL": redis_server.url,
        "MODEL_PROXY_SERVERS_FILE": str(here / "servers.json"),
        "MODEL_PROXY_MODELS_FILE": str(here / "models.json"),
        "MODEL_PROXY_PACS_READ_TIMEOUT": "2",
        "MODEL_PROXY_MODEL_READ_TIMEOUT": "4",
        "MODEL_PROXY_RETRY_FIRST_DELAY": "0.1",
        "MODEL_PROXY_RETRY_MAX_DELAY": "0.2",
        "MODEL_PROXY_RETRY_TOTAL_DELAY": "1",
        "MODEL_PROXY_JOB_LEASE_SECONDS": "8",
        "MODEL_PROXY_REAPER_INTERVAL_SECONDS": "1",
        "MODEL_PROXY_SHUTDOWN_GRACE_SECONDS": "2",
        "MODEL_PROXY_QUEUED_RECOVERY_SECONDS": "10",
        "MODEL_PROXY_LOG_LEVEL": "INFO",
    }
    settings = Settings(
        redis_url=redis_server.url,
        servers_file=here / "servers.json",
        models_file=here / "models.json",
    )
    deployment = Deployment(settings, environ, here, example_model, redis_server)
    workers = [start_worker(deployment, "fault-worker-1", concurrency=2)]
    app = create_app(settings, environ=environ)
    try:
        with TestClient(app) as api:
            yield Matrix(
                api, pacs, redis_server, deployment, workers, pacs_proxy, model_proxy,
                token_proxy, [],
            )  # fmt: skip
    finally:
        for worker in workers:
            worker.stop()
        for proxy in (pacs_proxy, model_proxy, token_proxy):
            proxy.stop()
        token_process.stop()
        redis_server.stop()


@dataclass(frozen=True)
class Case:
    name: str
    proxy: str  # which proxy: pacs, model or token
    fault: Fault
    code: str  # the job's error code

    def __str__(self) -> str:
        return self.name


CASES = [
    Case("pacs-refuses", "pacs", Fault(FaultKind.REFUSE), "pacs_unreachable"),
    Case("pacs-500", "pacs", Fault(FaultKind.STATUS, status=500), "pacs_error"),
    Case("pacs-401", "pacs", Fault(FaultKind.STATUS, status=401), "pacs_auth_failed"),
    Case("pacs-slow-headers", "pacs", Fault(FaultKind.SLOW_HEADERS, delay=6), "pacs_timeout"),
    Case(
        "pacs-trickles", "pacs", Fault(FaultKind.TRICKLE, after_bytes=4000, delay=1), "pacs_timeout"
    ),
    Case(
        "pacs-resets-mid-multipart",
        "pacs",
        Fault(FaultKind.RESET, after_bytes=4000),
        "pacs_error",
    ),
    Case(
        "pacs-truncates-multipart",
        "pacs",
        Fault(FaultKind.TRUNCATE, after_bytes=4000),
        "pacs_error",
    ),
    Case("model-refuses", "model", Fault(FaultKind.REFUSE), "model_unreachable"),
    Case("model-500", "model", Fault(FaultKind.STATUS, status=500), "model_error"),
    Case("model-times-out", "model", Fault(FaultKind.HANG), "model_timeout"),
    Case(
        "model-answers-html",
        "model",
        Fault(FaultKind.BODY, body=b"<html>busy</html>", content_type="text/html"),
        "model_bad_response",
    ),
    Case(
        "model-answers-too-much",
        "model",
        Fault(FaultKind.BODY, body=b'{"a": 1}', body_size=50_000_000),
        "model_answer_too_large",
    ),
    Case("model-resets", "model", Fault(FaultKind.RESET, after_bytes=20), "model_unreachable"),
    Case("token-server-down", "token", Fault(FaultKind.REFUSE), "pacs_unreachable"),
    Case("token-server-500", "token", Fault(FaultKind.STATUS, status=500), "pacs_auth_failed"),
    Case("token-server-slow", "token", Fault(FaultKind.SLOW_HEADERS, delay=6), "pacs_timeout"),
]


def _secrets(matrix: Matrix) -> list[str]:
    return [matrix.pacs.orthanc.password, TOKEN_PASSWORD]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_a_fault_ends_the_job_with_its_code_and_the_next_job_succeeds(
    matrix: Matrix, case: Case
) -> None:
    proxy = {"pacs": matrix.pacs_proxy, "model": matrix.model_proxy, "token": matrix.token_proxy}
    server = TOKEN_PACS if case.proxy == "token" else PACS
    if case.proxy == "token":
        matrix.forget_tokens()  # so that the job must ask the token server
    started = time.monotonic()
    with proxy[case.proxy].injecting(case.fault):
        job = matrix.wait_finished(matrix.submit(server=server))
    assert (job["state"], (job["error"] or {}).get("code")) == ("failed", case.code)
    assert time.monotonic() - started < TIME_LIMIT + 20
    after = matrix.wait_finished(matrix.submit(server=server))
    assert after["state"] == "succeeded", after


def test_redis_restarted_mid_job_loses_nothing(matrix: Matrix) -> None:
    job_id = matrix.submit(model=SLOW_MODEL)
    matrix.wait_state(job_id, {"inferring"})
    matrix.redis.restart()  # append-only: the job record survives
    job = matrix.wait_finished(job_id)
    assert job["state"] == "succeeded", job
    # Celery's consumer may give up on a broker connection lost while a task is unacknowledged
    # (kombu cannot restore the message on a closed connection): the worker then exits with a
    # failure status, for its supervisor (compose: restart: unless-stopped) to start it again.
    matrix.restart_exited_workers()
    assert matrix.wait_finished(matrix.submit())["state"] == "succeeded"


def test_redis_paused_mid_job_delays_it_but_loses_nothing(matrix: Matrix) -> None:
    job_id = matrix.submit(model=SLOW_MODEL)
    matrix.wait_state(job_id, {"inferring"})
    pid = matrix.redis.process.process.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(3)
    finally:
        os.kill(pid, signal.SIGCONT)
    job = matrix.wait_finished(job_id)
    assert job["state"] == "succeeded", job
    matrix.restart_exited_workers()
    assert matrix.wait_finished(matrix.submit())["state"] == "succeeded"


def test_a_worker_killed_mid_job_is_replaced_by_another(matrix: Matrix) -> None:
    spare = start_worker(matrix.deployment, "fault-worker-2", concurrency=2)
    matrix.workers.append(spare)
    job_id = matrix.submit(model=SLOW_MODEL)
    matrix.wait_state(job_id, {"inferring"})
    first = matrix.workers[0]
    killed_here = job_id in first.log_text()
    victim = first if killed_here else spare
    victim.kill()
    job = matrix.wait_finished(job_id, timeout=60)
    assert job["state"] == "succeeded", job
    assert job["attempts"] >= 2
    matrix.workers.remove(victim)
    matrix.workers.insert(0, start_worker(matrix.deployment, "fault-worker-3", concurrency=2))


def test_a_worker_stopped_mid_job_hands_it_over(matrix: Matrix) -> None:
    assert len(matrix.workers) == 2
    job_id = matrix.submit(model=SLOW_MODEL)
    matrix.wait_state(job_id, {"inferring"})
    holder = next(w for w in matrix.workers if job_id in w.log_text())
    holder.stop()  # SIGTERM: finish within the grace period, else hand the job back
    job = matrix.wait_finished(job_id, timeout=60)
    assert job["state"] == "succeeded", job
    matrix.workers.remove(holder)


def test_nothing_is_left_unfinished_and_no_secret_is_logged(matrix: Matrix) -> None:
    states = {job_id: matrix.job(job_id)["state"] for job_id in matrix.jobs}
    assert {j: s for j, s in states.items() if s not in FINISHED} == {}
    logs = [p for p in matrix.deployment.workdir.rglob("*.log") if p.name != "token-server.log"]
    assert logs
    for secret in _secrets(matrix):
        assert [p.name for p in logs if secret in p.read_text(errors="replace")] == []
