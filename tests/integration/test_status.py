"""``/status`` for real: the real Orthanc with basic auth, a PACS behind a token server, the
example model, a live worker and Redis; then the page in a real browser (Debian's chromium),
with a screenshot in ``test-artifacts/status-page.png``."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
from fastapi.testclient import TestClient

from devtools.processes import ManagedProcess, free_port, require_binary
from model_proxy.broker.app import create_app
from model_proxy.shared.queue import create_celery, queue_keys
from model_proxy.shared.settings import Settings
from tests.support.deployment import (
    PACS_PASSWORD_ENV,
    BlackHole,
    Deployment,
    PacsData,
    start_token_server,
)
from tests.support.served import serve

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "test-artifacts" / "status-page.png"

ORTHANC = "3f0b6c1e-9d7a-4c52-8e11-5a0c00000001"
WRONG_PASSWORD = "3f0b6c1e-9d7a-4c52-8e11-5a0c00000002"
NO_STATUS_URI = "3f0b6c1e-9d7a-4c52-8e11-5a0c00000003"
BEHIND_TOKENS = "3f0b6c1e-9d7a-4c52-8e11-5a0c00000004"
HANGING = "3f0b6c1e-9d7a-4c52-8e11-5a0c00000005"
MODEL = "4a1c7d2f-0e8b-4d63-9f22-6b1d00000001"
REDIRECTED = "4a1c7d2f-0e8b-4d63-9f22-6b1d00000002"
CLOSED_PORT = "4a1c7d2f-0e8b-4d63-9f22-6b1d00000003"
MODEL_NO_STATUS_URI = "4a1c7d2f-0e8b-4d63-9f22-6b1d00000004"

WRONG = "not-the-Password-93"
TOKEN_USER = "status-reader"
TOKEN_PASSWORD = "st4tus-Token-Pass-8812"
OWN_QUEUE = "status-page-demo"
TIMEOUT = 2.0

EXPECTED = {
    "servers": {
        ORTHANC: "up",
        WRONG_PASSWORD: "down",
        NO_STATUS_URI: "unknown",
        BEHIND_TOKENS: "up",
        HANGING: "down",
    },
    "models": {MODEL: "up", REDIRECTED: "up", CLOSED_PORT: "down", MODEL_NO_STATUS_URI: "unknown"},
}


@pytest.fixture(scope="module")
def token_pacs(workdir: Path, pacs: PacsData) -> Iterator[str]:
    """The test token server in front of the real Orthanc, with one user."""
    url, process = start_token_server(pacs, workdir / "status-token-server.log")
    requests.post(
        f"{url}/_test/users",
        json={"username": TOKEN_USER, "password": TOKEN_PASSWORD},
        timeout=10,
    ).raise_for_status()
    yield url
    process.stop()


@pytest.fixture(scope="module")
def settings(
    deployment: Deployment,
    pacs: PacsData,
    example_model: str,
    token_pacs: str,
    black_hole: BlackHole,
    tmp_path_factory: pytest.TempPathFactory,
) -> Settings:
    here = tmp_path_factory.mktemp("status")
    orthanc = pacs.orthanc.dicomweb
    basic = {"authType": "basicAuth", "login": pacs.orthanc.user}
    servers = {
        ORTHANC: {
            "uri": orthanc,
            "isDefault": True,
            "statusUri": f"{orthanc}/studies",
            **basic,
            "password": "${" + PACS_PASSWORD_ENV + "}",
        },
        WRONG_PASSWORD: {
            "uri": orthanc,
            "statusUri": f"{orthanc}/studies",
            **basic,
            "password": WRONG,
        },
        NO_STATUS_URI: {"uri": orthanc, **basic, "password": WRONG},
        BEHIND_TOKENS: {
            "uri": f"{token_pacs}/pacs",
            "statusUri": f"{token_pacs}/pacs/studies",
            "authType": "zhivaAuth",
            "login": TOKEN_USER,
            "password": TOKEN_PASSWORD,
            "signInServer": f"{token_pacs}/sign-user",
            "signInTokenServer": f"{token_pacs}/generate-access-token",
            "refreshServer": f"{token_pacs}/refresh-token",
        },
        HANGING: {
            "uri": f"http://127.0.0.1:{black_hole.port}/dicom-web",
            "statusUri": f"http://127.0.0.1:{black_hole.port}/dicom-web/studies",
        },
    }
    segmentation = {"task": "segmentation", "supports": ["/studies/series"]}
    closed = f"http://127.0.0.1:{free_port()}"
    models = {
        MODEL: {
            "uri": f"{example_model}/segmentation",
            "statusUri": f"{example_model}/health",
            **segmentation,
        },
        # FastAPI answers /health/ with a redirect to /health, as zhiva's model sends / to /docs
        REDIRECTED: {
            "uri": f"{example_model}/segmentation",
            "statusUri": f"{example_model}/health/",
            "queue": OWN_QUEUE,
            **segmentation,
        },
        CLOSED_PORT: {"uri": f"{closed}/predict", "statusUri": f"{closed}/health", **segmentation},
        MODEL_NO_STATUS_URI: {"uri": f"{example_model}/segmentation", **segmentation},
    }
    (here / "servers.json").write_text(json.dumps(servers, indent=2))
    (here / "models.json").write_text(json.dumps(models, indent=2))
    return deployment.settings.model_copy(
        update={
            "show_status_page": True,
            "status_timeout": TIMEOUT,
            "servers_file": here / "servers.json",
            "models_file": here / "models.json",
        }
    )


@pytest.fixture(scope="module")
def status_api(
    deployment: Deployment, worker: ManagedProcess, settings: Settings
) -> Iterator[TestClient]:
    with TestClient(create_app(settings, environ=deployment.environ)) as client:
        yield client


@pytest.fixture()
def waiting_tasks(deployment: Deployment) -> Iterator[int]:
    """Tasks waiting in a queue no worker consumes, two of them on a priority list (kombu's
    lists, under the deployment's key prefix)."""
    client = redis.Redis.from_url(deployment.redis.url)
    options = create_celery(deployment.settings, deployment.redis.url).conf
    own, priority_3 = queue_keys(OWN_QUEUE, options.broker_transport_options)[:2]
    lists = {own: 1, priority_3: 2}
    for name, count in lists.items():
        client.rpush(name, *[json.dumps({"placeholder": i}) for i in range(count)])
    yield sum(lists.values())
    client.delete(*lists)
    client.close()


def secrets(pacs: PacsData, token_pacs: str) -> list[str]:
    """Everything that must never be shown: passwords and every token the server issued."""
    issued = requests.get(f"{token_pacs}/_test/issued", timeout=10).json()["tokens"]
    return [pacs.orthanc.password, WRONG, TOKEN_PASSWORD, *issued]


def assert_no_secrets(text: str, pacs: PacsData, token_pacs: str) -> None:
    found = [secret for secret in secrets(pacs, token_pacs) if secret in text]
    assert found == [], "a secret is shown"
    for header in ("Authorization", "Basic ", "Bearer "):
        assert header not in text


def test_status_checks_everything_at_once_and_answers_json(
    status_api: TestClient,
    pacs: PacsData,
    example_model: str,
    token_pacs: str,
    waiting_tasks: int,
) -> None:
    started = time.monotonic()
    response = status_api.get("/status")
    elapsed = time.monotonic() - started
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()

    assert {kind: {k: v["status"] for k, v in body[kind].items()} for kind in EXPECTED} == EXPECTED
    servers, models = body["servers"], body["models"]
    assert servers[ORTHANC]["statusCode"] == 200
    assert servers[ORTHANC]["uri"] == pacs.orthanc.dicomweb
    assert servers[ORTHANC]["statusUri"] == f"{pacs.orthanc.dicomweb}/studies"
    assert servers[ORTHANC]["latencyMs"] > 0
    assert "error" not in servers[ORTHANC]
    assert servers[WRONG_PASSWORD]["statusCode"] == 401
    assert servers[WRONG_PASSWORD]["error"].startswith("HTTP 401")
    assert servers[NO_STATUS_URI]["statusUri"] is None
    assert servers[NO_STATUS_URI]["statusCode"] is None
    assert servers[BEHIND_TOKENS]["statusCode"] == 200  # bearer tokens from the token server
    assert servers[HANGING]["error"] == f"timed out after {TIMEOUT:g} s"
    assert models[MODEL]["statusCode"] == 200
    assert models[REDIRECTED]["statusCode"] == 200  # after the redirect
    assert models[CLOSED_PORT]["statusCode"] is None
    assert models[CLOSED_PORT]["error"] == "connection refused"
    # all at once: the hanging server's timeout, not the sum of every check
    assert elapsed < TIMEOUT + 2.5

    assert body["overall"] == "degraded"
    named = " ".join(body["problems"])
    assert all(key in named for key in (WRONG_PASSWORD, HANGING, CLOSED_PORT))
    assert body["redis"]["status"] == "up" and body["redis"]["latencyMs"] >= 0
    workers = body["workers"]
    assert workers["status"] == "up" and workers["count"] == len(workers["names"]) >= 1
    assert f"celery@{socket.gethostname()}" in workers["names"]
    assert body["queues"] == {"inference": body["queues"]["inference"], OWN_QUEUE: waiting_tasks}
    assert isinstance(body["queues"]["inference"], int)
    assert set(body["jobs"]) == {
        "queued",
        "fetching",
        "inferring",
        "succeeded",
        "failed",
        "cancelled",
    }
    assert all(isinstance(count, int) for count in body["jobs"].values())
    assert body["checkedAt"].endswith("Z")
    assert_no_secrets(response.text, pacs, token_pacs)

    page = status_api.get("/status", headers={"Accept": "text/html"})
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert_no_secrets(page.text, pacs, token_pacs)


# --- in a real browser -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(deployment: Deployment, worker: ManagedProcess, settings: Settings) -> Iterator[str]:
    """The app served for real by uvicorn on a free port, in a thread."""
    with serve(create_app(settings, environ=deployment.environ), "status-uvicorn") as url:
        yield url


def chromium(binary: str, profile: Path, *arguments: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *arguments,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        stdin=subprocess.DEVNULL,
        check=False,
    )


class RenderedRows(HTMLParser):
    """The text of every table row that names a server or a model, with its data-status."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: dict[str, dict[str, Any]] = {}
        self.overall: str | None = None
        self._key: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "header":
            self.overall = attributes.get("data-overall")
        if tag == "td" and self._key is not None:
            self.rows[self._key]["text"] += " "
        if tag == "tr" and attributes.get("data-key"):
            self._key = str(attributes["data-key"])
            self.rows[self._key] = {
                "kind": attributes.get("data-kind"),
                "status": attributes.get("data-status"),
                "text": "",
            }

    def handle_endtag(self, tag: str) -> None:
        if tag == "tr":
            self._key = None

    def handle_data(self, data: str) -> None:
        if self._key is not None:
            self.rows[self._key]["text"] += data


def test_a_browser_shows_every_server_and_model_with_its_status(
    served: str, pacs: PacsData, token_pacs: str, tmp_path: Path
) -> None:
    binary = require_binary("/usr/bin/chromium", "chromium")
    url = f"{served}/status"  # the browser's own Accept header asks for text/html

    dumped = chromium(binary, tmp_path / "profile-dom", "--dump-dom", url)
    assert dumped.returncode == 0, dumped.stderr[-2000:]
    page = RenderedRows()
    page.feed(dumped.stdout)
    assert page.overall == "degraded"
    for kind, statuses in EXPECTED.items():
        for key, status in statuses.items():
            row = page.rows[key]
            assert (row["kind"] + "s", row["status"]) == (kind, status)
            words = row["text"].split()
            assert key in words and status in words
    assert "HTTP 401" in page.rows[WRONG_PASSWORD]["text"]
    assert "connection refused" in page.rows[CLOSED_PORT]["text"]
    assert "no statusUri configured" in page.rows[NO_STATUS_URI]["text"]
    assert f"{pacs.orthanc.dicomweb}" in page.rows[ORTHANC]["text"]  # one address, unbroken
    assert "Celery workers" in dumped.stdout and "Redis" in dumped.stdout
    assert_no_secrets(dumped.stdout, pacs, token_pacs)

    SCREENSHOT.parent.mkdir(exist_ok=True)
    SCREENSHOT.unlink(missing_ok=True)
    shot = chromium(
        binary,
        tmp_path / "profile-shot",
        f"--screenshot={SCREENSHOT}",
        "--window-size=1280,900",
        "--hide-scrollbars",
        url,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = SCREENSHOT.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 20_000  # a rendered page, not a blank one
