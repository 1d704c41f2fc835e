"""``POST /jobs`` on the real stack: a request as JSON, answered 202 with its job or, with
``Prefer: wait=N``, with the model's answer; ``Idempotency-Key`` makes a retry (even a
concurrent one, even with ``fresh``) return the same job and make no second model call; bad
bodies get their documented codes."""

from __future__ import annotations

import json
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import requests
from fastapi.testclient import TestClient

from devtools.processes import ManagedProcess
from model_proxy.broker.app import create_app
from tests.support.deployment import Deployment, Ids, PacsData
from tests.support.keys import with_keys
from tests.support.served import serve

pytestmark = pytest.mark.integration


def _model_calls(model_log: str) -> int:
    return int(requests.get(model_log, timeout=5).json()["requests"])


def _body(pacs: PacsData, **changes: Any) -> dict[str, Any]:
    series = pacs.series_b[0]
    return {
        "task": "segmentations",
        "model": Ids.SEGMENTATION,
        "study": series.study_uid,
        "series": series.series_uid,
        **changes,
    }


@pytest.fixture(scope="module")
def client(deployment: Deployment, worker: ManagedProcess) -> Any:
    with TestClient(create_app(deployment.settings, environ=deployment.environ)) as api:
        yield api


def _key() -> dict[str, str]:
    return {"Idempotency-Key": f"retry-{uuid.uuid4()}"}


def test_a_retry_with_the_same_key_gets_the_same_job_and_one_model_call(
    client: TestClient, pacs: PacsData, model_log: str
) -> None:
    body = _body(pacs, fresh=True)
    headers = {**_key(), "Prefer": "wait=30"}

    first = client.post("/jobs", json=body, headers=headers)
    again = client.post("/jobs", json=body, headers=headers)

    assert first.status_code == again.status_code == 200, again.text
    assert again.headers["x-job-id"] == first.headers["x-job-id"]
    assert again.json() == first.json()
    assert _model_calls(model_log) == 1
    # without the key, `fresh` runs the model again: the key is what kept it to one call
    other = client.post("/jobs", json=body, headers={"Prefer": "wait=30"})
    assert other.headers["x-job-id"] != first.headers["x-job-id"]
    assert _model_calls(model_log) == 2


def test_the_same_key_with_another_body_is_refused(client: TestClient, pacs: PacsData) -> None:
    key = _key()
    made = client.post("/jobs", json=_body(pacs, fresh=True), headers={**key, "Prefer": "wait=30"})
    assert made.status_code == 200, made.text

    other = pacs.series_a[0]
    reused = client.post("/jobs", json=_body(pacs, series=other.series_uid), headers=key)

    assert reused.status_code == 422
    assert reused.json()["code"] == "idempotency_key_reused"


def test_prefer_wait_answers_with_the_models_answer(client: TestClient, pacs: PacsData) -> None:
    answer = client.post("/jobs", json=_body(pacs, fresh=True), headers={"Prefer": "wait=30"})

    assert answer.status_code == 200, answer.text
    assert answer.headers["preference-applied"] == "wait=30"
    assert answer.headers["content-type"] == "application/json"
    stored = client.get(f"/jobs/{answer.headers['x-job-id']}/result")
    assert answer.json() == stored.json()
    assert answer.headers["etag"] == stored.headers["etag"]


def test_without_a_wait_the_answer_is_202_and_the_job_is_polled(
    client: TestClient, pacs: PacsData
) -> None:
    accepted = client.post("/jobs", json=_body(pacs, fresh=True))

    assert accepted.status_code == 202, accepted.text
    job = accepted.json()
    assert accepted.headers["location"] == f"/jobs/{job['id']}"
    assert job["request"]["task"] == "segmentation"
    assert job["request"]["level"] == "/studies/series"
    deadline = time.monotonic() + 30
    while job["state"] != "succeeded" and time.monotonic() < deadline:
        time.sleep(0.2)
        job = client.get(accepted.headers["location"]).json()
    assert job["state"] == "succeeded"


def test_two_callers_with_one_key_get_two_jobs(
    deployment: Deployment, worker: ManagedProcess, pacs: PacsData, tmp_path: Path
) -> None:
    tag = uuid.uuid4().hex[:8]
    settings, headers = with_keys(
        deployment.settings, tmp_path, **{f"a-{tag}": "viewer", f"b-{tag}": "viewer"}
    )
    key = {**_key(), "Prefer": "wait=30"}  # waited for: no job of theirs runs into a later test
    with TestClient(create_app(settings, environ=deployment.environ)) as api:
        answers = [
            api.post("/jobs", json=_body(pacs, fresh=True), headers={**key, **auth})
            for auth in headers.values()
        ]
    assert [answer.status_code for answer in answers] == [200, 200], answers[0].text
    assert answers[0].headers["x-job-id"] != answers[1].headers["x-job-id"]


def test_concurrent_first_submits_with_one_key_make_one_job(
    deployment: Deployment, worker: ManagedProcess, pacs: PacsData, model_log: str
) -> None:
    body = _body(pacs, fresh=True)
    headers = {**_key(), "Prefer": "wait=30"}
    app = create_app(deployment.settings, environ=deployment.environ)
    with serve(app, "submit-api") as url, ThreadPoolExecutor(4) as pool:
        answers = list(
            pool.map(
                lambda _: requests.post(f"{url}/jobs", json=body, headers=headers, timeout=40),
                range(4),
            )
        )
    assert [a.status_code for a in answers] == [200] * 4, answers[0].text
    assert len({a.headers["x-job-id"] for a in answers}) == 1
    assert _model_calls(model_log) == 1


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"colour": "blue"}, 422, "invalid_request"),
        ({"study": None}, 422, "invalid_request"),
        ({"series": None, "instance": "1.2.3"}, 422, "invalid_request"),
        ({"series": "1.2.x"}, 422, "invalid_uid"),
        ({"model": "no-such-model"}, 404, "unknown_model"),
        ({"server": "no-such-server"}, 404, "unknown_server"),
        ({"task": "classifications"}, 422, "invalid_request"),
        ({"dataFilters": [{"dataKey": "a"}]}, 400, "invalid_data_filter"),
    ],
    ids=[
        "unknown-field",
        "no-study",
        "instance-without-series",
        "bad-uid",
        "unknown-model",
        "unknown-server",
        "unknown-task",
        "bad-filter",
    ],
)
def test_bad_bodies_get_their_codes(
    client: TestClient, pacs: PacsData, change: dict[str, Any], status: int, code: str
) -> None:
    body = {k: v for k, v in _body(pacs, **change).items() if v is not None}
    answer = client.post("/jobs", json=body)

    assert answer.status_code == status, answer.text
    assert answer.json()["code"] == code


def test_a_body_too_large_or_not_json_is_refused(client: TestClient, pacs: PacsData) -> None:
    large = client.post("/jobs", json=_body(pacs, dataFilters=[{"dataKey": "x" * 9000}]))
    text = client.post(
        "/jobs", content=b"task=segmentations", headers={"Content-Type": "text/plain"}
    )
    untyped = client.post("/jobs", content=b"{}")
    broken = client.post("/jobs", content=b"{", headers={"Content-Type": "application/json"})

    assert (large.status_code, large.json()["code"]) == (413, "body_too_large")
    assert (text.status_code, text.json()["code"]) == (415, "unsupported_media_type")
    assert (untyped.status_code, untyped.json()["code"]) == (415, "unsupported_media_type")
    assert (broken.status_code, broken.json()["code"]) == (422, "invalid_request")


def test_a_bad_idempotency_key_is_refused(client: TestClient, pacs: PacsData) -> None:
    for key in (b"", b"x" * 256, "caf\u00e9".encode(), b"tab\tkey"):
        answer = client.post("/jobs", json=_body(pacs), headers={"Idempotency-Key": key})
        assert answer.status_code == 400, (key, answer.text)
        assert answer.json()["code"] == "bad_idempotency_key"


def test_each_submit_has_its_audit_line(
    deployment: Deployment, worker: ManagedProcess, pacs: PacsData, tmp_path: Path
) -> None:
    audit = tmp_path / "audit.log"
    settings = deployment.settings.model_copy(update={"audit_log": str(audit)})
    headers = {**_key(), "Prefer": "wait=30"}
    with TestClient(create_app(settings, environ=deployment.environ)) as api:
        made = api.post("/jobs", json=_body(pacs, fresh=True), headers=headers)
        again = api.post("/jobs", json=_body(pacs, fresh=True), headers=headers)
    assert made.status_code == again.status_code == 200, again.text

    lines = [json.loads(text) for text in audit.read_text().splitlines()]
    assert [(line["event"], line["source"], line["status"]) for line in lines] == [
        ("job.submit", "created", 200),
        ("job.submit", "retry", 200),
    ]
    for line in lines:
        assert (line["method"], line["route"]) == ("POST", "/jobs")
        assert line["jobId"] == made.headers["x-job-id"]
        assert (line["model"], line["study"]) == (Ids.SEGMENTATION, pacs.study_uid)


def test_a_foreign_web_page_cannot_submit(client: TestClient, pacs: PacsData) -> None:
    answer = client.post("/jobs", json=_body(pacs), headers={"Origin": "https://elsewhere.example"})

    assert answer.status_code == 403
    assert answer.json()["code"] == "origin_not_allowed"
