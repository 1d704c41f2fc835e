"""Real parts for the integration tests, started once per session.

A real Orthanc with DICOMweb and basic auth (loaded with pydicom's CT_small and MR_small and a
generated two-series CT study), a real Redis, the example model API over HTTP, a real
``model-proxy worker`` process, and the API built with ``create_app``.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient

from devtools.dicom import ct_series, sample_file
from devtools.orthanc import OrthancServer
from devtools.processes import ManagedProcess, start_on_free_port
from devtools.redis_server import RedisServer
from model_proxy.broker.app import create_app
from model_proxy.shared.settings import Settings
from tests.support.deployment import (
    PACS_PASSWORD_ENV,
    STUDY_UID,
    BlackHole,
    ClosedPort,
    Deployment,
    PacsData,
    start_worker,
    write_configs,
)

pytestmark = pytest.mark.integration


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
    def argv(port: int) -> list[str]:
        return [sys.executable, "-m", "model_proxy.example_model", "--host", "127.0.0.1",
                "--port", str(port)]  # fmt: skip

    url, process = start_on_free_port(
        "example-model", argv, workdir / "example-model.log", "/health"
    )
    yield url
    process.stop()


@pytest.fixture(scope="session")
def black_hole() -> Iterator[BlackHole]:
    hole = BlackHole()
    yield hole
    hole.close()


@pytest.fixture(scope="session")
def closed_port() -> Iterator[ClosedPort]:
    closed = ClosedPort()
    yield closed
    closed.close()


@pytest.fixture(scope="session")
def deployment(
    workdir: Path,
    pacs: PacsData,
    redis_server: RedisServer,
    example_model: str,
    black_hole: BlackHole,
    closed_port: ClosedPort,
) -> Deployment:
    write_configs(workdir, pacs, example_model, black_hole, closed_port)
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
