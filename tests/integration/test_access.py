"""Who may ask, on the real stack: API keys with anonymous access refused, and ``serve`` beyond
loopback, which needs a decision on anonymous access (or a key) and says so in one line."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from fastapi.testclient import TestClient

from devtools.processes import free_port
from model_proxy.broker.app import create_app
from tests.support.deployment import Deployment, Ids, PacsData
from tests.unit.test_origins import MODELS, SERVERS

pytestmark = pytest.mark.integration


def _serve_environment(tmp_path: Path, **environ: str) -> dict[str, str]:
    """The environment of a ``serve`` with the configs, data and key file in ``tmp_path``."""
    (tmp_path / "servers.json").write_text(SERVERS)
    (tmp_path / "models.json").write_text(MODELS)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODEL_PROXY_")}
    return env | {
        "MODEL_PROXY_SERVERS_FILE": str(tmp_path / "servers.json"),
        "MODEL_PROXY_MODELS_FILE": str(tmp_path / "models.json"),
        "MODEL_PROXY_DATA_DIR": str(tmp_path / "data"),
        "MODEL_PROXY_API_KEYS_FILE": str(tmp_path / "api-keys.json"),
        **environ,
    }


def _serve(tmp_path: Path, *extra: str, **environ: str) -> subprocess.CompletedProcess[str]:
    env = _serve_environment(tmp_path, **environ)
    argv = [sys.executable, "-m", "model_proxy", "serve", "--port", str(free_port()), *extra]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


def test_serve_beyond_loopback_without_a_decision_refuses_to_start(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--host", "0.0.0.0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "MODEL_PROXY_ANONYMOUS=viewer" in lines[0] and "=none" in lines[0]
    assert not (tmp_path / "data").exists()  # nothing was started


def test_an_invalid_decision_is_refused_with_its_name(tmp_path: Path) -> None:
    done = _serve(tmp_path, "--host", "0.0.0.0", MODEL_PROXY_ANONYMOUS="everyone")
    assert done.returncode == 2
    assert "anonymous" in done.stderr.lower() and "Traceback" not in done.stderr


def _keys(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = _serve_environment(folder)
    argv = [sys.executable, "-m", "model_proxy", "keys", *args]
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)


@pytest.fixture()
def closed_api(deployment: Deployment, worker: object, tmp_path: Path) -> Iterator[TestClient]:
    """The API with anonymous access refused and its key file in ``tmp_path``."""
    settings = deployment.settings.model_copy(
        update={"anonymous": "none", "api_keys_file": tmp_path / "api-keys.json"}
    )
    with TestClient(create_app(settings, environ=deployment.environ)) as client:
        yield client


def test_a_viewer_key_opens_the_api_until_it_is_revoked(
    closed_api: TestClient, pacs: PacsData, tmp_path: Path
) -> None:
    added = _keys(tmp_path, "add", "ward-7")
    assert added.returncode == 0, added.stderr
    key = added.stdout.strip().splitlines()[-1]
    item = pacs.ct_small
    url = f"/segmentations/{Ids.SEGMENTATION}/studies/{item.study_uid}/series/{item.series_uid}"

    assert closed_api.get(url).status_code == 401
    assert closed_api.get(url).json()["code"] == "unauthenticated"
    bearer = closed_api.get(url, headers={"Authorization": f"Bearer {key}"})
    assert bearer.status_code == 200, bearer.text
    assert closed_api.get(url, headers={"X-API-Key": key}).status_code == 200
    wrong = closed_api.get(url, headers={"X-API-Key": key[:-2] + "xx"})
    assert wrong.status_code == 401 and wrong.json()["code"] == "invalid_credentials"

    listed = _keys(tmp_path, "list")
    assert "ward-7" in listed.stdout and "viewer" in listed.stdout and key not in listed.stdout
    revoked = _keys(tmp_path, "revoke", "ward-7")
    assert revoked.returncode == 0, revoked.stderr
    deadline = time.monotonic() + 5
    while closed_api.get(url, headers={"X-API-Key": key}).status_code != 401:
        assert time.monotonic() < deadline, "the revoked key still works"
        time.sleep(0.2)
    assert closed_api.get(url, headers={"Authorization": f"Bearer {key}"}).status_code == 401


def test_keys_refuse_a_duplicate_or_unknown_name_in_one_line(tmp_path: Path) -> None:
    assert _keys(tmp_path, "add", "ward-7", "--role", "admin").returncode == 0
    for args in (("add", "ward-7"), ("revoke", "ward-8")):
        done = _keys(tmp_path, *args)
        assert done.returncode == 2
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def test_serve_beyond_loopback_with_a_key_file_refuses_anonymous_requests(
    tmp_path: Path,
) -> None:
    assert _keys(tmp_path, "add", "ward-7").returncode == 0
    port = free_port()
    env = _serve_environment(tmp_path)
    argv = [sys.executable, "-m", "model_proxy", "serve", "--host", "0.0.0.0", "--port", str(port)]
    process = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/jobs", timeout=2)
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.2)
        assert answer.status_code == 401
        assert answer.json()["code"] == "unauthenticated"
    finally:
        process.terminate()
        process.wait(timeout=30)
