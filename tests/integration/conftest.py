"""Real parts for the integration tests, started once per session.

A real Orthanc with DICOMweb and basic auth (loaded with pydicom's CT_small and MR_small and a
generated two-series CT study), a real Redis, the example model API over HTTP, a real
``model-proxy worker`` process, and the API built with ``create_app``.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient

from model_proxy.broker.app import create_app
from model_proxy.shared.settings import Settings
from tests.support.dicom import DicomFile, ct_series, sample_file
from tests.support.orthanc import OrthancServer
from tests.support.processes import (
    ManagedProcess,
    free_port,
    start_service,
    wait_until_worker_ready,
)
from tests.support.redis_server import RedisServer

pytestmark = pytest.mark.integration

STUDY_UID = "1.2.826.0.1.3680043.8.498.4242.1"
PACS_PASSWORD_ENV = "MP_TEST_PACS_PASSWORD"


class Ids:
    """Keys of servers.json and models.json used by the tests."""

    PACS = "b5208f48-f748-4339-9402-d1148dab571e"
    PACS_WRONG_PASSWORD = "0c5c2d3e-5a55-4a4e-8f11-9a7b2f8c1d01"
    PACS_UNREACHABLE = "1d6d3e4f-6b66-4b5f-9a22-ab8c3f9d2e02"
    PACS_SLOW = "2e7e4f50-7c77-4c60-8b33-bc9d40ae3f03"
    SEGMENTATION = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"
    ANNOTATION = "7a1e2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"
    PREDICTION = "8b2f3c4d-5e6f-4071-9b8c-0d1e2f3a4b5c"
    SERIES_ONLY = "9c304d5e-6f70-4182-8c9d-1e2f3a4b5c6d"
    WRAPPED = "ad415e6f-7081-4293-9dae-2f3a4b5c6d7e"
    STUDY_FILTERS = "be526f70-8192-43a4-8ebf-3a4b5c6d7e8f"
    SERIES_FILTERS = "cf637081-92a3-44b5-9fc0-4b5c6d7e8f90"
    NESTED_FILTERS = "d0748192-a3b4-45c6-a0d1-5c6d7e8f9001"
    FAILING = "e185a2a3-b4c5-46d7-b1e2-6d7e8f900112"
    MODEL_UNREACHABLE = "f296b3b4-c5d6-47e8-82f3-7e8f90011223"
    SLOW_MODEL = "03a7c4c5-d6e7-48f9-9304-8f9001122334"


@dataclass(frozen=True)
class PacsData:
    orthanc: OrthancServer
    series_a: list[DicomFile]
    series_b: list[DicomFile]
    ct_small: DicomFile
    mr_small: DicomFile

    @property
    def study_uid(self) -> str:
        return self.series_a[0].study_uid


@dataclass(frozen=True)
class Deployment:
    settings: Settings
    environ: dict[str, str]
    workdir: Path
    model_url: str
    redis: RedisServer


class BlackHole:
    """A TCP server that accepts connections and never answers: a PACS that hangs."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._held: list[socket.socket] = []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            self._held.append(conn)

    def close(self) -> None:
        self._sock.close()
        for conn in self._held:
            conn.close()


@pytest.fixture(scope="session")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("model-proxy")


@pytest.fixture(scope="session")
def pacs(workdir: Path) -> Iterator[PacsData]:
    orthanc = OrthancServer(workdir / "orthanc")
    series_a = ct_series(study_uid=STUDY_UID, slices=6, rows=64, columns=64, seed=1)
    series_b = ct_series(
        study_uid=STUDY_UID, slices=4, rows=48, columns=32, seed=2, series_number=2
    )
    ct_small = sample_file("CT_small.dcm")
    mr_small = sample_file("MR_small.dcm")
    for item in [*series_a, *series_b, ct_small, mr_small]:
        orthanc.upload(item.data)
    yield PacsData(orthanc, series_a, series_b, ct_small, mr_small)
    orthanc.stop()


@pytest.fixture(scope="session")
def redis_server(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir / "redis")
    yield server
    server.stop()


@pytest.fixture(scope="session")
def example_model(workdir: Path) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = start_service(
        "example-model",
        [
            sys.executable,
            "-m",
            "model_proxy.example_model",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ],
        workdir / "example-model.log",
        f"{url}/health",
    )
    yield url
    process.stop()


@pytest.fixture(scope="session")
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


def _write_configs(workdir: Path, pacs: PacsData, model_url: str, hole: BlackHole) -> None:
    closed_port = free_port()
    basic = {"authType": "basicAuth", "login": pacs.orthanc.user}
    servers = {
        Ids.PACS: {
            "uri": pacs.orthanc.dicomweb,
            "isDefault": True,
            "statusUri": f"{pacs.orthanc.dicomweb}/studies",
            **basic,
            "password": "${" + PACS_PASSWORD_ENV + "}",
        },
        Ids.PACS_WRONG_PASSWORD: {
            "uri": pacs.orthanc.dicomweb,
            **basic,
            "password": "not-the-Password-71",
        },
        Ids.PACS_UNREACHABLE: {"uri": f"http://127.0.0.1:{closed_port}/dicom-web"},
        Ids.PACS_SLOW: {"uri": f"http://127.0.0.1:{hole.port}/dicom-web"},
    }
    every_level = ["/studies", "/studies/series", "/studies/series/instances"]
    models = {
        Ids.SEGMENTATION: {
            "uri": f"{model_url}/segmentation",
            "task": "segmentation",
            "supports": every_level,
            "statusUri": f"{model_url}/health",
        },
        Ids.ANNOTATION: {
            "uri": f"{model_url}/annotation",
            "task": "annotation",
            "supports": every_level,
        },
        Ids.PREDICTION: {
            "uri": f"{model_url}/prediction",
            "task": "prediction",
            "supports": every_level,
        },
        Ids.SERIES_ONLY: {
            "uri": f"{model_url}/segmentation",
            "task": "segmentation",
            "supports": ["/studies/series"],
        },
        Ids.WRAPPED: {
            "uri": f"{model_url}/segmentation?wrap=true",
            "task": "segmentation",
            "supports": ["/studies/series"],
        },
        Ids.STUDY_FILTERS: {
            "uri": f"{model_url}/segmentation",
            "task": "segmentation",
            "supports": ["/studies"],
            "dataFilter": [
                {"dataKey": "series-one", "title": "First series"},
                {"dataKey": "series-two", "title": "Second series"},
            ],
        },
        Ids.SERIES_FILTERS: {
            "uri": f"{model_url}/segmentation",
            "task": "segmentation",
            "supports": ["/studies/series"],
            "dataFilter": [
                {"dataKey": "first", "title": "First slice"},
                {"dataKey": "last", "title": "Last slice"},
            ],
        },
        Ids.NESTED_FILTERS: {
            "uri": f"{model_url}/annotation",
            "task": "annotation",
            "supports": ["/studies"],
            "dataFilter": [
                {
                    "dataKey": "pre",
                    "title": "Pre-contrast",
                    "dataFilter": [{"dataKey": "slice", "title": "A slice"}],
                },
                {"dataKey": "post", "title": "Post-contrast"},
            ],
        },
        Ids.FAILING: {
            "uri": f"{model_url}/segmentation?fail=500",
            "task": "segmentation",
            "supports": every_level,
        },
        Ids.MODEL_UNREACHABLE: {
            "uri": f"http://127.0.0.1:{closed_port}/predict",
            "task": "segmentation",
            "supports": every_level,
        },
        Ids.SLOW_MODEL: {
            "uri": f"{model_url}/segmentation?delay=30",
            "task": "segmentation",
            "supports": every_level,
        },
    }
    (workdir / "servers.json").write_text(json.dumps(servers, indent=2))
    (workdir / "models.json").write_text(json.dumps(models, indent=2))


@pytest.fixture(scope="session")
def deployment(
    workdir: Path,
    pacs: PacsData,
    redis_server: RedisServer,
    example_model: str,
    black_hole: BlackHole,
) -> Deployment:
    _write_configs(workdir, pacs, example_model, black_hole)
    environ = {
        **os.environ,
        PACS_PASSWORD_ENV: pacs.orthanc.password,
        "MODEL_PROXY_REDIS_URL": redis_server.url,
        "MODEL_PROXY_SERVERS_FILE": str(workdir / "servers.json"),
        "MODEL_PROXY_MODELS_FILE": str(workdir / "models.json"),
        "MODEL_PROXY_PACS_READ_TIMEOUT": "3",
        "MODEL_PROXY_MODEL_READ_TIMEOUT": "4",
        "MODEL_PROXY_SYNC_WAIT_SECONDS": "60",
        "MODEL_PROXY_LOG_LEVEL": "INFO",
    }
    settings = Settings(
        redis_url=redis_server.url,
        servers_file=workdir / "servers.json",
        models_file=workdir / "models.json",
        sync_wait_seconds=60,
    )
    return Deployment(settings, environ, workdir, example_model, redis_server)


def start_worker(
    deployment: Deployment, name: str, concurrency: int = 4, queues: str | None = None
) -> ManagedProcess:
    """A real ``model-proxy worker`` process; returns once it consumes its queues."""
    argv = [sys.executable, "-m", "model_proxy", "worker", "--concurrency", str(concurrency)]
    if queues:
        argv.append(f"--queues={queues}")
    process = ManagedProcess(
        name,
        argv,
        deployment.workdir / f"{name}.log",
        env={**deployment.environ, "PYTHONUNBUFFERED": "1"},
    )
    wait_until_worker_ready(process)
    return process


@contextmanager
def own_api_and_worker(
    deployment: Deployment,
    here: Path,
    queue: str,
    *,
    servers: Mapping[str, object] | None = None,
    models: Mapping[str, object] | None = None,
    concurrency: int = 2,
) -> Iterator[TestClient]:
    """An API and a worker process of their own queue on the session's Redis, with their own
    servers.json and/or models.json (written to ``here``; the session's where not given)."""
    environ = {**deployment.environ, "MODEL_PROXY_QUEUE_NAME": queue}
    update: dict[str, object] = {"queue_name": queue}
    for name, document in (("servers", servers), ("models", models)):
        if document is not None:
            (here / f"{name}.json").write_text(json.dumps(document))
            environ[f"MODEL_PROXY_{name.upper()}_FILE"] = str(here / f"{name}.json")
            update[f"{name}_file"] = here / f"{name}.json"
    settings = deployment.settings.model_copy(update=update)
    local = Deployment(settings, environ, here, deployment.model_url, deployment.redis)
    worker = start_worker(local, f"{queue}-worker", concurrency=concurrency)
    try:
        app = create_app(settings, environ=environ)
        with TestClient(app, headers={"Cache-Control": "no-cache"}) as client:
            yield client
    finally:
        worker.stop()


def start_token_server(pacs: PacsData, log_path: Path) -> tuple[str, ManagedProcess]:
    """The test token server (tests/support/token_server.py) in front of the real Orthanc."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [
        sys.executable, "-m", "tests.support.token_server", "--port", str(port),
        "--upstream", pacs.orthanc.base,
        "--upstream-user", pacs.orthanc.user,
        "--upstream-password", pacs.orthanc.password,
    ]  # fmt: skip
    return url, start_service("token-server", argv, log_path, f"{url}/_test/health", timeout=30)


@pytest.fixture(scope="session")
def worker(deployment: Deployment) -> Iterator[ManagedProcess]:
    process = start_worker(deployment, "worker-1")
    yield process
    process.stop()


@pytest.fixture(scope="session")
def api(deployment: Deployment, worker: ManagedProcess) -> Iterator[TestClient]:
    """A viewer that asks for a fresh run each time, so each test sees its own model call."""
    app = create_app(deployment.settings, environ=deployment.environ)
    with TestClient(app, headers={"Cache-Control": "no-cache"}) as client:
        yield client


@pytest.fixture()
def model_log(example_model: str) -> Iterator[str]:
    """The example model's log of received requests, emptied before the test."""
    requests.post(f"{example_model}/_debug/reset", timeout=5).raise_for_status()
    yield f"{example_model}/_debug/received"
