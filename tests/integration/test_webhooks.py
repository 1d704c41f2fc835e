"""Webhooks on the real stack: an API and a worker process of their own queue (started with
``--queues`` naming only it: it delivers from the webhook queue all the same), the session's
Orthanc, Redis and example model, and a webhook receiver on loopback.

The receiver checks each signature with the Standard Webhooks algorithm written here from the
specification, not with our signer.
"""

from __future__ import annotations

import base64
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from tests.support.deployment import Deployment, Ids, PacsData, own_api_and_worker
from tests.support.webhook_receiver import Received, WebhookReceiver, signed_body

pytestmark = pytest.mark.integration

KEY = b"webhook test key, 32 bytes long!"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
PUBLIC_URL = "https://proxy.example.org"


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


@pytest.fixture(scope="module")
def api(
    deployment: Deployment, receiver: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    values = {
        "callback_origins": receiver.origin,
        "webhook_secret": SECRET,
        "webhook_retry_seconds": "20",
        "webhook_backoff_max_seconds": "0.3",  # tries 0.3 s apart
        "webhook_timeout_seconds": "3",
        "public_url": PUBLIC_URL,
        "webhook_queue": "webhooks-deliveries",  # not the queue the worker is told to consume
    }
    local = deployment.with_settings(values)
    here: Path = tmp_path_factory.mktemp("webhooks")
    # started like a deployment's `--queues gpu` worker: it consumes the webhook queue too
    with own_api_and_worker(local, here, "webhooks", worker_queues="webhooks") as client:
        yield client


def verify(received: Received) -> dict[str, Any]:
    return signed_body(received, KEY)


def series_url(model: str, pacs: PacsData) -> str:
    item = pacs.series_a[0]
    return f"/segmentations/{model}/studies/{item.study_uid}/series/{item.series_uid}"


def submit(api: TestClient, url: str, callback: str, **headers: str) -> dict[str, Any]:
    response = api.get(url, params={"callback": callback}, headers=headers)
    assert response.status_code in (200, 202), response.text
    job_id = response.headers.get("Location", "").rsplit("/", 1)[-1] or response.headers.get(
        "X-Job-Id", ""
    )
    assert job_id, response.headers
    return {"id": job_id, "status": response.status_code}


def callbacks_when_over(api: TestClient, job_id: str, timeout: float = 30) -> list[Any]:
    """The job's ``callbacks`` once each is delivered or failed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        callbacks: list[Any] = api.get(f"/jobs/{job_id}").json().get("callbacks", [])
        if callbacks and all(c["delivered"] or c["failed"] for c in callbacks):
            return callbacks
        time.sleep(0.1)
    raise AssertionError(f"callbacks of {job_id} not over: {callbacks}")


def test_a_finished_job_is_posted_once_signed(
    api: TestClient, receiver: WebhookReceiver, pacs: PacsData
) -> None:
    hook = f"{receiver.origin}/done?ticket=abc"

    job = submit(api, series_url(Ids.SEGMENTATION, pacs), hook)

    assert job["status"] == 202  # a callback implies Prefer: respond-async
    [post] = receiver.wait_for("/done?ticket=abc", 1)
    body = verify(post)
    assert body["id"] == job["id"]
    assert body["state"] == "succeeded"
    assert body["links"]["self"] == f"{PUBLIC_URL}/jobs/{job['id']}"
    assert body["links"]["result"] == f"{PUBLIC_URL}/jobs/{job['id']}/result"
    assert "callbacks" not in body
    [callback] = callbacks_when_over(api, job["id"])
    assert callback["url"] == receiver.origin  # to an anonymous caller, only the origin
    assert callback["delivered"] is True
    assert [attempt["status"] for attempt in callback["attempts"]] == [200]
    time.sleep(0.5)
    assert len(receiver.posts("/done?ticket=abc")) == 1


def test_a_receiver_that_fails_twice_gets_three_tries_all_recorded(
    api: TestClient, receiver: WebhookReceiver, pacs: PacsData
) -> None:
    receiver.answer("/flaky", 500, 500)

    job = submit(api, series_url(Ids.SEGMENTATION, pacs), f"{receiver.origin}/flaky")

    posts = receiver.wait_for("/flaky", 3)
    bodies = [verify(post) for post in posts]
    assert {body["id"] for body in bodies} == {job["id"]}
    assert len({post.headers["webhook-id"] for post in posts}) == 1  # one message, retried
    [callback] = callbacks_when_over(api, job["id"])
    assert [attempt["status"] for attempt in callback["attempts"]] == [500, 500, 200]
    assert callback["delivered"] is True


def test_a_refusal_ends_the_tries_as_failed(
    api: TestClient, receiver: WebhookReceiver, pacs: PacsData
) -> None:
    receiver.answer("/gone", 404)

    job = submit(api, series_url(Ids.SEGMENTATION, pacs), f"{receiver.origin}/gone")

    [callback] = callbacks_when_over(api, job["id"])
    assert [attempt["status"] for attempt in callback["attempts"]] == [404]
    assert callback["delivered"] is False
    assert callback["failed"] is True
    assert len(receiver.posts("/gone")) == 1


@pytest.mark.parametrize(
    ("callback", "accept"),
    [
        ("http://127.0.0.2:9/x", "application/json"),  # another origin
        ("https://example.org/x", "application/json"),
        ("ftp://127.0.0.1/x", "application/json"),
        ("https://example.org/x", "text/event-stream"),  # an event stream's too
    ],
)
def test_a_callback_outside_the_allowlist_is_refused_and_no_job_is_made(
    api: TestClient, deployment: Deployment, pacs: PacsData, callback: str, accept: str
) -> None:
    client = redis.Redis.from_url(deployment.redis.url)
    index = f"{deployment.settings.redis_prefix}:jobs"
    before = client.zcard(index)

    response = api.get(
        series_url(Ids.SEGMENTATION, pacs),
        params={"callback": callback},
        headers={"Accept": accept},
    )

    assert response.status_code == 422
    assert response.json()["code"] == "callback_not_allowed"
    assert "MODEL_PROXY_CALLBACK_ORIGINS" in response.json()["message"]
    assert client.zcard(index) == before


def test_userinfo_and_overlong_urls_are_refused(
    api: TestClient, receiver: WebhookReceiver, pacs: PacsData
) -> None:
    host = receiver.origin.removeprefix("http://")
    for callback in (f"http://me:pw@{host}/x", f"{receiver.origin}/{'a' * 2048}"):
        response = api.get(series_url(Ids.SEGMENTATION, pacs), params={"callback": callback})
        assert response.status_code == 422
        assert response.json()["code"] == "callback_not_allowed"


def test_a_failed_job_is_posted_too(
    api: TestClient, receiver: WebhookReceiver, pacs: PacsData
) -> None:
    job = submit(api, series_url(Ids.FAILING, pacs), f"{receiver.origin}/failed")

    [post] = receiver.wait_for("/failed", 1)
    body = verify(post)
    assert body["id"] == job["id"]
    assert body["state"] == "failed"
    assert body["error"]["code"]


def test_a_cancelled_job_is_posted_too(
    api: TestClient, receiver: WebhookReceiver, pacs: PacsData
) -> None:
    job = submit(api, series_url(Ids.SLOW_MODEL, pacs), f"{receiver.origin}/cancelled")

    assert api.delete(f"/jobs/{job['id']}").status_code == 200

    [post] = receiver.wait_for("/cancelled", 1)
    body = verify(post)
    assert body["id"] == job["id"]
    assert body["state"] == "cancelled"


def test_a_callback_given_to_a_job_already_finished_is_posted_at_once(
    api: TestClient, receiver: WebhookReceiver, pacs: PacsData
) -> None:
    url = series_url(Ids.ANNOTATION, pacs).replace("/segmentations/", "/annotations/")
    first = submit(api, url, f"{receiver.origin}/first")
    receiver.wait_for("/first", 1)

    # the same request, answered from the finished job (no Cache-Control: no-cache)
    again = submit(api, url, f"{receiver.origin}/second", **{"Cache-Control": "max-age=0"})

    assert again["id"] == first["id"]
    [post] = receiver.wait_for("/second", 1)
    assert verify(post)["state"] == "succeeded"
    assert len(receiver.posts("/first")) == 1


def test_a_json_submit_with_a_callback_is_posted_signed(
    api: TestClient, receiver: WebhookReceiver, pacs: PacsData
) -> None:
    item = pacs.series_a[0]
    body = {
        "task": "segmentations",
        "model": Ids.SEGMENTATION,
        "study": item.study_uid,
        "series": item.series_uid,
        "fresh": True,
        "callback": f"{receiver.origin}/submitted",
    }

    response = api.post("/jobs", json=body)

    assert response.status_code == 202, response.text
    job_id = response.json()["id"]
    [post] = receiver.wait_for("/submitted", 1)
    assert verify(post)["id"] == job_id
    [callback] = callbacks_when_over(api, job_id)
    assert callback["delivered"] is True


def test_a_json_submit_with_a_callback_outside_the_allowlist_makes_no_job(
    api: TestClient, deployment: Deployment, pacs: PacsData
) -> None:
    client = redis.Redis.from_url(deployment.redis.url)
    index = f"{deployment.settings.redis_prefix}:jobs"
    before = client.zcard(index)
    body = {
        "task": "segmentations",
        "model": Ids.SEGMENTATION,
        "study": pacs.series_a[0].study_uid,
        "fresh": True,
        "callback": "https://elsewhere.example.org/hook",
    }

    response = api.post("/jobs", json=body)

    assert response.status_code == 422
    assert response.json()["code"] == "callback_not_allowed"
    assert client.zcard(index) == before


def test_an_event_stream_requests_callback_is_posted_when_its_job_ends(
    api: TestClient, receiver: WebhookReceiver, pacs: PacsData
) -> None:
    response = api.get(
        series_url(Ids.SEGMENTATION, pacs),
        params={"callback": f"{receiver.origin}/streamed"},
        headers={"Accept": "text/event-stream"},
    )

    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    [post] = receiver.wait_for("/streamed", 1)
    body = verify(post)
    assert body["state"] == "succeeded"
    assert body["id"] in response.text  # the job the stream was of
