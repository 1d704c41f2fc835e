"""The deployment the integration tests run against: its config keys, its parts, its processes.

The fixtures in ``tests/integration/conftest.py`` build it; test modules that start extra parts
(another worker, the token server) use the functions here.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fastapi.testclient import TestClient

from devtools.dicom import DicomFile
from devtools.orthanc import OrthancServer
from devtools.processes import (
    ManagedProcess,
    start_on_free_port,
    wait_until_worker_ready,
)
from devtools.redis_server import RedisServer
from model_proxy.broker.app import create_app
from model_proxy.shared.settings import Settings

__all__ = [
    "PACS_PASSWORD_ENV",
    "STUDY_UID",
    "BlackHole",
    "Deployment",
    "Ids",
    "PacsData",
    "own_api_and_worker",
    "start_token_server",
    "start_worker",
    "write_configs",
]

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
    # answers made into DICOM objects ("store")
    SEG_OBJECTS = "7b1e3c4d-5f60-4a71-8b82-c93d0e1f2a3b"
    ANNOTATION_OBJECTS = "8c2f4d5e-6071-4b82-9c93-da4e1f2a3b4c"
    PREDICTION_OBJECTS = "9d305e6f-7182-4c93-8da4-eb5f2a3b4c5d"
    SEG_STORE_REFUSED = "ae416f70-8293-4da4-9eb5-fc603b4c5d6e"  # store.server: wrong password
    # the same models, with "transport": "multipart"
    MULTIPART = {
        SEGMENTATION: "14b8d5d6-e7f8-490a-a415-900112233445",
        PREDICTION: "25c9e6e7-f809-4a1b-b526-a01122334456",
        STUDY_FILTERS: "36daf7f8-091a-4b2c-8637-b12233445567",
        SERIES_FILTERS: "47eb0809-1a2b-4c3d-9748-c23344556678",
        NESTED_FILTERS: "58fc191a-2b3c-4d4e-a859-d34455667789",
    }
    MULTIPART_DEADLINE = "690d2a2b-3c4d-4e5f-b96a-e4556677889a"  # slow, timeLimit 1.5 s
    ALL_SERIES = "7a1e3b3c-4d5e-4f60-8a7b-0a1b2c3d4e5f"  # includeNonImageSeries
    OWN_RESULTS = "8b2f4c4d-5e6f-4071-9b8c-1b2c3d4e5f60"  # and includeOwnResults


@dataclass(frozen=True)
class PacsData:
    """The test Orthanc and the DICOM files stored in it."""

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
    """What a process of the deployment under test needs: settings, environment, Redis."""

    settings: Settings
    environ: dict[str, str]
    workdir: Path
    model_url: str
    redis: RedisServer

    def with_models(self, workdir: Path, models: Mapping[str, object]) -> Deployment:
        """The same deployment with ``models`` added to its models.json (written in
        ``workdir``), for a test module's own models and workers."""
        merged = {**json.loads(self.settings.models_file.read_text()), **models}
        models_file = workdir / "models.json"
        models_file.write_text(json.dumps(merged))
        environ = {**self.environ, "MODEL_PROXY_MODELS_FILE": str(models_file)}
        settings = self.settings.model_copy(update={"models_file": models_file})
        return Deployment(settings, environ, workdir, self.model_url, self.redis)

    def with_settings(self, values: Mapping[str, str]) -> Deployment:
        """The same deployment with the settings ``values`` (by field name, as the environment
        gives them) in its settings and in its processes' environment."""
        parsed = Settings(**values)
        settings = self.settings.model_copy(update={name: getattr(parsed, name) for name in values})
        named = {f"MODEL_PROXY_{name.upper()}": value for name, value in values.items()}
        return Deployment(
            settings, {**self.environ, **named}, self.workdir, self.model_url, self.redis
        )


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


class ClosedPort:
    """A loopback port bound and never listened on, held until :meth:`close`: connecting is
    refused, and no server of the run can be given the port meanwhile (a port found free and
    let go could be handed to one, which would then answer)."""

    def __init__(self) -> None:
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self.port: int = self._sock.getsockname()[1]

    def close(self) -> None:
        self._sock.close()


def _model(uri: str, task: str, supports: list[str], **extra: object) -> dict[str, object]:
    """One models.json entry."""
    return {"uri": uri, "task": task, "supports": supports, **extra}


def write_configs(
    workdir: Path, pacs: PacsData, model_url: str, hole: BlackHole, closed: ClosedPort
) -> None:
    """servers.json and models.json with every server and model that ``Ids`` names."""
    closed_port = closed.port
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
    series = ["/studies/series"]
    segmentation = f"{model_url}/segmentation"
    models = {
        Ids.SEGMENTATION: _model(
            segmentation, "segmentation", every_level, statusUri=f"{model_url}/health"
        ),
        Ids.ANNOTATION: _model(f"{model_url}/annotation", "annotation", every_level),
        Ids.PREDICTION: _model(f"{model_url}/prediction", "prediction", every_level),
        Ids.SERIES_ONLY: _model(segmentation, "segmentation", series),
        Ids.WRAPPED: _model(f"{segmentation}?wrap=true", "segmentation", series),
        Ids.STUDY_FILTERS: _model(
            segmentation,
            "segmentation",
            ["/studies"],
            dataFilter=[
                {"dataKey": "series-one", "title": "First series"},
                {"dataKey": "series-two", "title": "Second series"},
            ],
        ),
        Ids.SERIES_FILTERS: _model(
            segmentation,
            "segmentation",
            series,
            dataFilter=[
                {"dataKey": "first", "title": "First slice"},
                {"dataKey": "last", "title": "Last slice"},
            ],
        ),
        Ids.NESTED_FILTERS: _model(
            f"{model_url}/annotation",
            "annotation",
            ["/studies"],
            dataFilter=[
                {
                    "dataKey": "pre",
                    "title": "Pre-contrast",
                    "dataFilter": [{"dataKey": "slice", "title": "A slice"}],
                },
                {"dataKey": "post", "title": "Post-contrast"},
            ],
        ),
        Ids.FAILING: _model(f"{segmentation}?fail=500", "segmentation", every_level),
        Ids.MODEL_UNREACHABLE: _model(
            f"http://127.0.0.1:{closed_port}/predict", "segmentation", every_level
        ),
        Ids.SLOW_MODEL: _model(f"{segmentation}?delay=30", "segmentation", every_level),
    }
    for with_objects, original, objects in (
        (Ids.SEG_OBJECTS, Ids.SEGMENTATION, ["seg"]),
        (Ids.ANNOTATION_OBJECTS, Ids.ANNOTATION, ["sr"]),
        (Ids.PREDICTION_OBJECTS, Ids.PREDICTION, ["sr"]),
    ):
        models[with_objects] = {
            **models[original],
            "name": "Threshold finder",
            "version": "2.1.0",
            "store": {"objects": objects},
        }
    models[Ids.SEG_STORE_REFUSED] = {
        **models[Ids.SEG_OBJECTS],
        "store": {"objects": ["seg"], "server": Ids.PACS_WRONG_PASSWORD},
    }
    for original, twin in Ids.MULTIPART.items():
        models[twin] = {**models[original], "transport": "multipart"}
    models[Ids.MULTIPART_DEADLINE] = {
        **models[Ids.SLOW_MODEL],
        "transport": "multipart",
        "timeLimit": 1.5,
    }
    models[Ids.ALL_SERIES] = {**models[Ids.SEGMENTATION], "includeNonImageSeries": True}
    models[Ids.OWN_RESULTS] = {**models[Ids.ALL_SERIES], "includeOwnResults": True}
    (workdir / "servers.json").write_text(json.dumps(servers, indent=2))
    (workdir / "models.json").write_text(json.dumps(models, indent=2))


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


def start_token_server(pacs: PacsData, log_path: Path) -> tuple[str, ManagedProcess]:
    """The test token server (tests/support/token_server.py) in front of the real Orthanc."""

    def argv(port: int) -> list[str]:
        return [
            sys.executable, "-m", "tests.support.token_server", "--port", str(port),
            "--upstream", pacs.orthanc.base,
            "--upstream-user", pacs.orthanc.user,
            "--upstream-password", pacs.orthanc.password,
        ]  # fmt: skip

    return start_on_free_port("token-server", argv, log_path, "/_test/health", timeout=30)


@contextmanager
def own_api_and_worker(
    deployment: Deployment,
    here: Path,
    queue: str,
    *,
    servers: Mapping[str, object] | None = None,
    models: Mapping[str, object] | None = None,
    concurrency: int = 2,
    worker_queues: str | None = None,
) -> Iterator[TestClient]:
    """An API and a worker process of their own queue on the session's Redis, with their own
    servers.json and/or models.json (written to ``here``; the session's where not given); the
    worker is started with ``--queues=worker_queues`` when given."""
    environ = {**deployment.environ, "MODEL_PROXY_QUEUE_NAME": queue}
    update: dict[str, object] = {"queue_name": queue}
    for name, document in (("servers", servers), ("models", models)):
        if document is not None:
            (here / f"{name}.json").write_text(json.dumps(document))
            environ[f"MODEL_PROXY_{name.upper()}_FILE"] = str(here / f"{name}.json")
            update[f"{name}_file"] = here / f"{name}.json"
    settings = deployment.settings.model_copy(update=update)
    local = Deployment(settings, environ, here, deployment.model_url, deployment.redis)
    worker = start_worker(local, f"{queue}-worker", concurrency=concurrency, queues=worker_queues)
    try:
        app = create_app(settings, environ=environ)
        with TestClient(app, headers={"Cache-Control": "no-cache"}) as client:
            yield client
    finally:
        worker.stop()
