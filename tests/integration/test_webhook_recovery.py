"""Webhooks whose delivery was lost are delivered all the same, on the real stack: an API and a
worker process (whose reaper looks every half second) on the session's Redis, Orthanc and
example model, and a webhook receiver on loopback.

The losses are made where they happen: a callback kept by an API that was stopped before it
queued the delivery, and a delivery claimed by a worker killed before it queued the message.
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
from redis.client import Pipeline

from model_proxy.shared.jobs import JobKeys
from model_proxy.shared.queue import create_celery, deliveries_with_messages, queue_keys
from model_proxy.shared.tasks import DELIVER_WEBHOOKS, RUN_INFERENCE
from model_proxy.shared.webhooks.records import CallbackFields, claim_unsent_call, register_call
from tests.support.deployment import Deployment, Ids, PacsData, own_api_and_worker
from tests.support.webhook_receiver import Received, WebhookReceiver, signed_body

pytestmark = pytest.mark.integration

KEY = b"recovery test key, 32 bytes long"
SECRET = "whsec_" + base64.b64encode(KEY).decode()
VALUES = {
    "webhook_secret": SECRET,
    "webhook_recovery_seconds": "1",
    "webhook_connect_timeout_seconds": "1",
    "webhook_timeout_seconds": "2",  # a delivery still for 1 + 1 + 2 * 2 s has stalled
    "reaper_interval_seconds": "0.5",
    "webhook_queue": "recovery-deliveries",  # delivered by this module's worker only
    # keys of its own: the session's worker, whose reaper looks with a 600 s recovery, never
    # looks at this module's jobs
    "redis_prefix": "webhook-recovery-test",
}


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


@pytest.fixture(scope="module")
def api(
    deployment: Deployment, receiver: WebhookReceiver, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[TestClient]:
    local = deployment.with_settings({**VALUES, "callback_origins": receiver.origin})
    here: Path = tmp_path_factory.mktemp("webhook-recovery")
    with own_api_and_worker(local, here, "webhook-recovery") as client:
        yield client


@pytest.fixture
def client(deployment: Deployment) -> Iterator[redis.Redis]:
    connection = redis.Redis.from_url(deployment.redis.url)
    yield connection
    connection.close()


@pytest.fixture
def prefix() -> str:
    return VALUES["redis_prefix"]


def verified(received: Received) -> dict[str, Any]:
    return signed_body(received, KEY)


def finished_job(api: TestClient, pacs: PacsData, number: int) -> str:
    """A job answered synchronously, without a callback; its id."""
    item = pacs.series_a[number]
    url = f"/segmentations/{Ids.SEGMENTATION}/studies/{item.study_uid}/series/{item.series_uid}"
    response = api.get(url)
    assert response.status_code == 200, response.text
    return response.headers["X-Job-Id"]


def keep_callback(client: redis.Redis | Pipeline, prefix: str, job_id: str, url: str) -> None:
    """What the API does with a callback before it queues its delivery: it is kept beside the
    job (the API is stopped right after)."""
    job_key = JobKeys(prefix).job(job_id)
    call = register_call(CallbackFields(prefix), job_key, job_id, url, "", time.time(), 10, 60)
    client.register_script(call.script)(keys=call.keys, args=call.args)


def delivered(api: TestClient, job_id: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        callbacks = api.get(f"/jobs/{job_id}").json().get("callbacks", [])
        if callbacks and callbacks[0]["delivered"]:
            return dict(callbacks[0])
        time.sleep(0.2)
    raise AssertionError(f"the callback of {job_id} was not delivered: {callbacks}")


def test_a_callback_kept_by_an_api_stopped_before_queuing_it_is_posted(
    api: TestClient,
    receiver: WebhookReceiver,
    pacs: PacsData,
    client: redis.Redis,
    prefix: str,
) -> None:
    job_id = finished_job(api, pacs, 0)

    keep_callback(client, prefix, job_id, f"{receiver.origin}/kept")

    [post] = receiver.wait_for("/kept", 1, timeout=30)
    body = verified(post)
    assert body["id"] == job_id and body["state"] == "succeeded"
    callback = delivered(api, job_id)
    assert [attempt["status"] for attempt in callback["attempts"]] == [200]


def test_a_delivery_claimed_by_a_worker_killed_before_queuing_it_is_posted(
    api: TestClient,
    receiver: WebhookReceiver,
    pacs: PacsData,
    client: redis.Redis,
    prefix: str,
) -> None:
    job_id = finished_job(api, pacs, 1)
    # the callback is kept, and the worker that ended the job claims its delivery, in one step
    # (the reaper must not queue it first); the worker dies before sending the message
    with client.pipeline(transaction=True) as pipe:
        keep_callback(pipe, prefix, job_id, f"{receiver.origin}/claimed")
        claim = claim_unsent_call(CallbackFields(prefix), job_id, repr(time.time()))
        pipe.register_script(claim.script)(keys=claim.keys, args=claim.args)
        _, claimed = pipe.execute()
    assert len(claimed) == 1

    [post] = receiver.wait_for("/claimed", 1, timeout=30)

    assert verified(post)["id"] == job_id
    assert [attempt["status"] for attempt in delivered(api, job_id)["attempts"]] == [200]


def test_what_task_messages_wait_for_is_read_from_the_real_broker(
    deployment: Deployment, client: redis.Redis
) -> None:
    """The recovery's view of the broker, from messages Celery itself wrote: a delivery names its
    job and callback, any other task its job."""
    celery = create_celery(deployment.settings, deployment.redis.url)
    options = celery.conf.broker_transport_options
    queue = "recovery-nobody-reads-this"
    try:
        celery.send_task(
            DELIVER_WEBHOOKS, args=["job-a", "cid-1", "1.5"], kwargs={"attempt": 2}, queue=queue
        )
        celery.send_task(DELIVER_WEBHOOKS, args=["job-a", "cid-2"], queue=queue)  # no claim
        celery.send_task(RUN_INFERENCE, args=["job-b"], queue=queue)

        jobs, deliveries = deliveries_with_messages(client, [queue], options)

        assert "job-b" in jobs and "job-a" not in jobs
        assert {("job-a", "cid-1"), ("job-a", "cid-2")} <= deliveries
    finally:
        client.delete(*queue_keys(queue, options))
