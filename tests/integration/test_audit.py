"""The audit log on the real stack: a ``model-proxy serve`` process on the session's Redis and
worker, asked with an API key and anonymously; its audit lines, and no key in any log."""

from __future__ import annotations

import json
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient

from devtools.processes import ManagedProcess, free_port, start_service
from model_proxy.broker.app import create_app
from tests.support.deployment import Deployment, Ids, PacsData
from tests.support.keys import with_keys

pytestmark = pytest.mark.integration


def _environ(deployment: Deployment, folder: Path, audit_log: str) -> dict[str, str]:
    return {
        **deployment.environ,
        "MODEL_PROXY_API_KEYS_FILE": str(folder / "api-keys.json"),
        "MODEL_PROXY_AUDIT_LOG": audit_log,
        "MODEL_PROXY_ANONYMOUS": "viewer",
        "PYTHONUNBUFFERED": "1",
    }


def _add_key(environ: dict[str, str], name: str) -> str:
    argv = [sys.executable, "-m", "model_proxy", "keys", "add", name]
    done = subprocess.run(argv, env=environ, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


@pytest.fixture()
def audited(
    deployment: Deployment, worker: ManagedProcess, tmp_path: Path
) -> Iterator[tuple[str, str, ManagedProcess]]:
    """A serve process with its audit log in tmp_path/audit.log; its URL and a viewer key."""
    environ = _environ(deployment, tmp_path, str(tmp_path / "audit.log"))
    key = _add_key(environ, "ward-7")
    port = free_port()
    argv = [sys.executable, "-m", "model_proxy", "serve", "--port", str(port)]
    url = f"http://127.0.0.1:{port}"
    serve = start_service("serve", argv, tmp_path / "serve.log", f"{url}/readyz", env=environ)
    try:
        yield url, key, serve
    finally:
        serve.stop()


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_access_and_refusal_has_its_line_and_no_log_holds_the_key(
    audited: tuple[str, str, ManagedProcess],
    pacs: PacsData,
    worker: ManagedProcess,
    tmp_path: Path,
) -> None:
    url, key, serve = audited
    item = pacs.ct_small
    viewer = f"{url}/segmentations/{Ids.SEGMENTATION}/studies/{item.study_uid}/series/"
    viewer += item.series_uid
    bearer = {"Authorization": f"Bearer {key}"}

    made = requests.get(viewer, headers={**bearer, "Cache-Control": "no-cache"}, timeout=60)
    assert made.status_code == 200, made.text
    job_id = made.headers["X-Job-Id"]
    assert requests.get(viewer, timeout=60).status_code == 200  # anonymous, from the cache
    assert requests.get(f"{url}/jobs/{job_id}", headers={"X-API-Key": key}, timeout=10).ok
    assert requests.get(f"{url}/jobs/{job_id}/result", timeout=10).ok
    assert requests.get(f"{url}/jobs", headers=bearer, timeout=10).ok
    assert requests.delete(f"{url}/jobs/{job_id}", headers=bearer, timeout=10).status_code == 409
    wrong = requests.get(viewer, headers={"X-API-Key": key[:-3] + "xyz"}, timeout=10)
    assert wrong.status_code == 401
    assert requests.get(f"{url}/healthz", timeout=10).ok  # not an access: no line
    serve.stop()

    audit = tmp_path / "audit.log"
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600
    lines = _lines(audit)
    # the listing has a line per job the key's name asked for (other tests' jobs of that name
    # in the session's Redis too), each with the count; this test's job is one of them
    listing = [line for line in lines if line["event"] == "jobs.list"]
    assert {line["jobs"] for line in listing} == {len(listing)}
    mine = next(line for line in listing if line["jobId"] == job_id)
    lines = [line for line in lines if line["event"] != "jobs.list" or line is mine]
    summary = [(line["event"], line["status"], line["principal"]) for line in lines]
    assert summary == [
        ("inference", 200, "ward-7"),
        ("inference", 200, "anonymous"),
        ("job.read", 200, "ward-7"),
        ("job.result", 200, "anonymous"),
        ("jobs.list", 200, "ward-7"),
        ("job.cancel", 409, "ward-7"),
        ("inference", 401, None),
    ]
    made_line, cached_line, *_, listed, cancel, refused = lines
    assert (made_line["source"], cached_line["source"]) == ("created", "cache")
    assert made_line["principalKind"] == "key" and cached_line["principalKind"] == "anonymous"
    assert all(line["client"] == "127.0.0.1" for line in lines)
    for line in (made_line, cached_line, *lines[2:5], cancel, refused):
        assert line["study"] == item.study_uid
        assert line["model"] == Ids.SEGMENTATION
        assert line["server"] == Ids.PACS  # the default server, also where no route saw it
        assert line["jobId"] == (None if line is refused else job_id)
    assert [line["series"] for line in lines[:5]] == [item.series_uid] * 5
    assert [line["format"] for line in lines[:5]] == [None, None, None, "json", None]
    # the listing's line of the job names its study, as a read does
    assert listed["route"] == "/jobs"
    assert cancel["error"] == "job_finished" and cancel["method"] == "DELETE"
    assert refused["error"] == "invalid_credentials"
    assert refused["route"] == "/segmentations/{model}/studies/{study}/series/{series}"

    for log in (audit, serve.log_path, worker.log_path):
        text = log.read_text(errors="replace")
        assert key not in text and key[4:20] not in text, log


def test_stdout_carries_only_audit_lines_and_the_service_log_none(
    deployment: Deployment, worker: ManagedProcess, tmp_path: Path
) -> None:
    environ = _environ(deployment, tmp_path, "stdout")
    key = _add_key(environ, "ward-8")
    port = free_port()
    argv = [sys.executable, "-m", "model_proxy", "serve", "--port", str(port)]
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    with out.open("wb") as stdout, err.open("wb") as stderr:
        process = subprocess.Popen(argv, env=environ, stdout=stdout, stderr=stderr)
        try:
            url = f"http://127.0.0.1:{port}"
            assert _wait_ready(f"{url}/readyz", process), err.read_text()
            assert requests.get(f"{url}/jobs", headers={"X-API-Key": key}, timeout=10).ok
            refused = requests.get(f"{url}/jobs", headers={"X-API-Key": "nope"}, timeout=10)
            assert refused.status_code == 401
        finally:
            process.terminate()
            process.wait(timeout=30)
    lines = _lines(out)
    assert [(line["principal"], line["status"]) for line in lines] == [("ward-8", 200), (None, 401)]
    service_log = err.read_text()
    assert "serving over" in service_log  # the service log is there, on stderr
    assert "jobs.list" not in service_log and key not in service_log + out.read_text()


def _wait_ready(url: str, process: subprocess.Popen[bytes]) -> bool:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and process.poll() is None:
        try:
            if requests.get(url, timeout=1).ok:
                return True
        except requests.ConnectionError:
            pass
        time.sleep(0.2)
    return False


def test_an_access_that_cannot_be_recorded_is_503_and_counted(
    deployment: Deployment, worker: ManagedProcess, tmp_path: Path
) -> None:
    folder = tmp_path / "audit"
    folder.mkdir()
    settings, headers = with_keys(deployment.settings, tmp_path, nurse="viewer")
    settings = settings.model_copy(update={"audit_log": str(folder / "audit.log")})
    with TestClient(create_app(settings, environ=deployment.environ)) as api:
        assert api.get("/jobs", headers=headers["nurse"]).status_code == 200
        shutil.rmtree(folder)  # the audit disk went away
        answer = api.get("/jobs", headers=headers["nurse"])
        assert answer.status_code == 503 and answer.json()["code"] == "audit_unavailable"
        assert "jobs" not in answer.json()
        deadline = time.monotonic() + 5
        while 'model_proxy_audit_failures_total{event="jobs.list"}' not in api.get("/metrics").text:
            assert time.monotonic() < deadline, "the failure was not counted"
            time.sleep(0.2)
