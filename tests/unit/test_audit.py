"""The audit log (broker/audit.py): the line, the sink, and the middleware that writes it."""

from __future__ import annotations

import json
import shutil
import stat
from pathlib import Path
from typing import Any, Literal

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from model_proxy.broker.access import Authenticate
from model_proxy.broker.app import create_app
from model_proxy.broker.audit import FIELDS, AuditAccess, AuditLog, note, note_listing
from model_proxy.shared.api_keys import ApiKeyFile, ApiKeyReader
from model_proxy.shared.errors import ConfigError
from tests.unit.test_origins import _settings
from tests.unit.test_reaper import make_job

STUDY = "1.2.826.0.1.3680043.8.498.1"
SERIES = "1.2.826.0.1.3680043.8.498.2"
JOB_ID = "0123456789abcdef0123456789abcdef"


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_a_file_is_created_0600_and_each_record_appends_one_json_line(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"earlier":1}\n')
    path.chmod(0o600)
    path.unlink()  # created by the log, with its own mode
    audit = AuditLog(str(path))
    audit.check()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    audit.record({"event": "job.read", "study": STUDY})
    audit.record({"event": "job.cancel", "note": "two\nlines"})
    text = path.read_text()
    assert text.count("\n") == 2 and text.endswith("\n")
    assert _lines(path) == [
        {"event": "job.read", "study": STUDY},
        {"event": "job.cancel", "note": "two\nlines"},
    ]


def test_an_existing_file_is_appended_to(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    path.write_text('{"earlier":1}\n')
    AuditLog(path).record({"event": "jobs.list"})
    assert _lines(path) == [{"earlier": 1}, {"event": "jobs.list"}]


@pytest.mark.parametrize("target", ["stdout", "-"])
def test_stdout_gets_the_lines_and_stderr_nothing(
    target: str, capfd: pytest.CaptureFixture[str]
) -> None:
    audit = AuditLog(target)
    audit.check()
    audit.record({"event": "job.read"})
    out, err = capfd.readouterr()
    assert out == '{"event":"job.read"}\n' and err == ""


def test_a_path_that_cannot_be_written_stops_the_start_naming_the_setting(
    tmp_path: Path,
) -> None:
    with pytest.raises(ConfigError, match="MODEL_PROXY_AUDIT_LOG"):
        AuditLog(tmp_path / "missing" / "audit.log").check()
    with pytest.raises(ConfigError, match="MODEL_PROXY_AUDIT_LOG"):
        create_app(
            _settings(tmp_path, audit_log=str(tmp_path / "missing" / "a.log")),
            redis_url="redis://127.0.0.1:1/0",
        )


def _audited_app(
    folder: Path, audit_path: Path, anonymous: Literal["viewer", "none"] = "viewer"
) -> TestClient:
    """Routes named as the API's, behind the real authentication and the audit middleware."""
    app = FastAPI()

    @app.get("/jobs/{job_id}", name="get_job")
    async def get_job(job_id: str) -> dict[str, str]:
        note(model="m-1", server="pacs-1", study=STUDY)
        return {"id": job_id}

    @app.get("/jobs", name="list_jobs")
    async def list_jobs() -> dict[str, list[str]]:
        note(jobs=2)
        return {"jobs": ["a", "b"]}

    @app.get("/segmentations/{model}/studies/{study}/series/{series}", tags=["inference"])
    async def segmentations_series(model: str, study: str, series: str) -> dict[str, str]:
        return {"answer": "the model's secret finding"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    app.add_middleware(
        Authenticate, keys=ApiKeyReader(folder / "api-keys.json"), anonymous=anonymous
    )
    app.add_middleware(
        AuditAccess, audit=AuditLog(audit_path), routes=app.routes, default_server="pacs-0"
    )
    return TestClient(app, raise_server_exceptions=False)


def test_each_access_has_one_line_with_who_what_and_the_outcome(tmp_path: Path) -> None:
    _, key = ApiKeyFile(tmp_path / "api-keys.json").add("ward-7")
    path = tmp_path / "audit.log"
    api = _audited_app(tmp_path, path)
    assert api.get(f"/jobs/{JOB_ID}", headers={"X-API-Key": key}).status_code == 200
    url = f"/segmentations/m-2/studies/{STUDY}/series/{SERIES}?server=pacs-2&series-one={SERIES}"
    answer = api.get(url, headers={"Authorization": f"Bearer {key}"})
    assert answer.status_code == 200
    assert api.get("/jobs").status_code == 200
    assert api.get("/healthz").status_code == 200  # not patient data: no line

    read, inference, listed = _lines(path)
    assert all(list(line) == list(FIELDS) for line in (read, inference, listed))
    assert read["time"].endswith("Z") and "T" in read["time"]
    assert {k: read[k] for k in ("event", "status", "principal", "principalKind")} == {
        "event": "job.read",
        "status": 200,
        "principal": "ward-7",
        "principalKind": "key",
    }
    assert (read["jobId"], read["model"], read["server"], read["study"]) == (
        JOB_ID,
        "m-1",
        "pacs-1",
        STUDY,
    )
    assert (read["method"], read["route"], read["client"]) == (
        "GET",
        "/jobs/{job_id}",
        "testclient",
    )
    # the viewer's route: what it names comes from the path and the server query parameter
    assert inference["event"] == "inference"
    assert inference["route"] == "/segmentations/{model}/studies/{study}/series/{series}"
    assert (inference["model"], inference["server"]) == ("m-2", "pacs-2")
    assert (inference["study"], inference["series"]) == (STUDY, SERIES)
    assert listed["event"] == "jobs.list" and listed["jobs"] == 2
    assert (listed["principal"], listed["principalKind"]) == ("anonymous", "anonymous")
    text = path.read_text()
    assert key not in text and "secret finding" not in text
    assert "series-one" not in text  # the query (data filters) is not logged


def test_a_refused_attempt_is_recorded_with_its_code_and_without_the_credential(
    tmp_path: Path,
) -> None:
    ApiKeyFile(tmp_path / "api-keys.json").add("ward-7")
    path = tmp_path / "audit.log"
    api = _audited_app(tmp_path, path)
    wrong = "mpk_not-a-key-4711"
    answer = api.get(f"/jobs/{JOB_ID}", headers={"Authorization": f"Bearer {wrong}"})
    assert answer.status_code == 401 and answer.json()["code"] == "invalid_credentials"
    (line,) = _lines(path)
    assert (line["event"], line["status"], line["error"]) == (
        "job.read",
        401,
        "invalid_credentials",
    )
    assert line["principal"] is None and line["principalKind"] is None
    assert line["jobId"] == JOB_ID
    assert wrong not in path.read_text()


def test_a_line_that_cannot_be_written_withholds_the_data_with_503(tmp_path: Path) -> None:
    folder = tmp_path / "audit"
    folder.mkdir()
    api = _audited_app(tmp_path, folder / "audit.log")
    assert api.get(f"/jobs/{JOB_ID}").status_code == 200
    shutil.rmtree(folder)  # the disk went away
    answer = api.get(f"/jobs/{JOB_ID}")
    assert answer.status_code == 503
    assert answer.json()["code"] == "audit_unavailable"
    assert JOB_ID not in answer.text


def test_a_request_that_fails_inside_still_has_its_line(tmp_path: Path) -> None:
    # without its lifespan the app has no services: the route fails with 500
    path = tmp_path / "audit.log"
    app = create_app(_settings(tmp_path, audit_log=str(path)), redis_url="redis://127.0.0.1:1/0")
    api = TestClient(app, raise_server_exceptions=False)
    assert api.get(f"/jobs/{JOB_ID}/result").status_code == 500
    assert api.get("/openapi.json").status_code == 200
    assert api.get(f"/jobs/{JOB_ID}/result", params={"format": "seg"}).status_code == 500
    line, seg = _lines(path)
    assert (line["event"], line["status"], line["jobId"]) == ("job.result", 500, JOB_ID)
    assert line["principalKind"] == "anonymous" and line["route"] == "/jobs/{job_id}/result"
    # a result read names the format asked for (json by default)
    assert (line["format"], seg["format"]) == ("json", "seg")


def test_the_api_records_a_cancel_refused_for_its_origin(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    app = create_app(_settings(tmp_path, audit_log=str(path)), redis_url="redis://127.0.0.1:1/0")
    api = TestClient(app, raise_server_exceptions=False)
    answer = api.delete(f"/jobs/{JOB_ID}", headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403
    (line,) = _lines(path)
    assert (line["event"], line["method"], line["status"]) == ("job.cancel", "DELETE", 403)
    assert line["error"] == "origin_not_allowed"


def test_what_the_request_names_is_cut_to_a_bounded_length(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    api = _audited_app(tmp_path, path)
    api.get(f"/segmentations/{'m' * 5000}/studies/{STUDY}/series/{SERIES}")
    (line,) = _lines(path)
    assert len(line["model"]) < 200 and len(path.read_text()) < 4096


def test_a_refused_request_without_server_names_the_default_server(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    api = _audited_app(tmp_path, path, anonymous="none")
    assert api.get(f"/segmentations/m-2/studies/{STUDY}/series/{SERIES}").status_code == 401
    assert api.get(f"/segmentations/m-2/studies/{STUDY}/series/{SERIES}?server=").status_code == 401
    named = api.get(f"/segmentations/m-2/studies/{STUDY}/series/{SERIES}?server=pacs-2")
    assert named.status_code == 401
    assert [line["server"] for line in _lines(path)] == ["pacs-0", "pacs-0", "pacs-2"]


def _listing_app(audit_path: Path, shown: list[Any]) -> TestClient:
    app = FastAPI()

    @app.get("/jobs", name="list_jobs")
    async def list_jobs() -> dict[str, int]:
        note_listing(shown)
        return {"jobs": len(shown)}

    app.add_middleware(AuditAccess, audit=AuditLog(audit_path), routes=app.routes)
    return TestClient(app)


def test_a_listing_has_one_line_per_job_it_showed_naming_its_study(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    shown = [make_job(f"{SERIES}.{n}") for n in range(3)]
    assert _listing_app(path, shown).get("/jobs").status_code == 200
    lines = _lines(path)
    assert all(list(line) == list(FIELDS) for line in lines)
    assert [(line["event"], line["jobs"], line["status"]) for line in lines] == [
        ("jobs.list", 3, 200)
    ] * 3
    assert [line["jobId"] for line in lines] == [job.id for job in shown]
    assert [line["series"] for line in lines] == [job.request.series_uid for job in shown]
    for line, job in zip(lines, shown, strict=True):
        assert (line["model"], line["server"], line["study"], line["instance"]) == (
            job.request.model_id,
            job.request.server_id,
            job.request.study_uid,
            None,
        )
    assert len({line["time"] for line in lines}) == 1  # one access, one time


def test_an_empty_listing_has_one_line_with_no_job(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    assert _listing_app(path, []).get("/jobs").status_code == 200
    (line,) = _lines(path)
    assert (line["event"], line["jobs"], line["jobId"], line["study"]) == (
        "jobs.list",
        0,
        None,
        None,
    )
