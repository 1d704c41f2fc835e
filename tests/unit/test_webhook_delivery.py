"""One try of a webhook, on fakeredis and a real receiver on loopback: recorded once per try
number, checked against the allowlist again, redirects not followed; and queuing each
callback's first try once."""

from __future__ import annotations

import base64
import contextlib
import json
import socket
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, cast

import pytest
import redis
import requests

from model_proxy.shared.errors import QueueUnavailable
from model_proxy.shared.http import new_session
from model_proxy.shared.jobs import Job, JobKeys, JobState, JobStore, job_to_fields
from model_proxy.shared.schemas import CallbackView
from model_proxy.shared.settings import Settings
from model_proxy.shared.webhooks.records import (
    CallbackFields,
    Registration,
    callbacks_from_fields,
    claim_unsent_call,
    register_call,
)
from model_proxy.workers.context import WorkerContext
from model_proxy.workers.webhooks import deliver_webhook, dispatch_callbacks
from tests.support.webhook_receiver import WebhookReceiver
from tests.unit.jobs.support import make_job

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
TTL = 3600
CLAIM = "1000.5"  # the claim the tries' messages carry


@pytest.fixture(scope="module")
def receiver() -> Iterator[WebhookReceiver]:
    with WebhookReceiver() as hook:
        yield hook


def settings_for(*origins: str) -> Settings:
    return Settings(
        callback_origins=",".join(origins),
        webhook_secret=SECRET,
        webhook_backoff_max_seconds=5,
        webhook_retry_seconds=60,
        job_ttl_seconds=TTL,
    )


def context(client: redis.Redis, settings: Settings) -> WorkerContext:
    """What a try uses of the worker's context."""
    parts = SimpleNamespace(
        redis=client,
        settings=settings,
        store=JobStore(client, TTL, JobKeys(settings.redis_prefix)),
        webhook_session=new_session(1),
    )
    return cast(WorkerContext, parts)


def record(client: redis.Redis, state: JobState = JobState.SUCCEEDED) -> Job:
    job = make_job().model_copy(update={"state": state, "finished_at": time.time()})
    fields: dict[Any, Any] = job_to_fields(job)
    client.hset(JobKeys().job(job.id), mapping=fields)
    return job


def register(client: redis.Redis, job: Job, url: str) -> str:
    call = register_call(
        CallbackFields("model-proxy"), JobKeys().job(job.id), job.id, url, "me", 1.0, 10, TTL
    )
    outcome, _ = call.reply(client.register_script(call.script)(keys=call.keys, args=call.args))
    assert outcome is Registration.ADDED
    [callback] = callbacks_of(client, job)
    return callback.id


def queued(client: redis.Redis, job: Job, url: str) -> str:
    """Register ``url`` and claim its delivery as ``CLAIM``, as the dispatcher does before it
    queues the first try; the callback's id."""
    cid = register(client, job, url)
    call = claim_unsent_call(CallbackFields("model-proxy"), job.id, CLAIM)
    assert call.reply(client.register_script(call.script)(keys=call.keys, args=call.args)) == [
        (cid, 1)
    ]
    return cid


def callbacks_of(client: redis.Redis, job: Job) -> list[Any]:
    return callbacks_from_fields(client.hgetall(CallbackFields("model-proxy").key(job.id)))


def test_a_try_delivered_again_after_a_worker_died_is_not_posted_again(
    client: redis.Redis, receiver: WebhookReceiver
) -> None:
    job = record(client)
    cid = queued(client, job, f"{receiver.origin}/again")
    ctx = context(client, settings_for(receiver.origin))
    receiver.answer("/again", 503)

    first = deliver_webhook(ctx, job.id, cid, 1, CLAIM)
    redelivered = deliver_webhook(ctx, job.id, cid, 1, CLAIM)  # the same message, once more

    assert first == redelivered == 1.0
    assert len(receiver.posts("/again")) == 1
    assert deliver_webhook(ctx, job.id, cid, 2, CLAIM) is None  # 200: over
    [callback] = callbacks_of(client, job)
    assert [a.status for a in callback.attempts] == [503, 200]
    assert callback.delivered
    assert json.loads(receiver.posts("/again")[1].body)["state"] == "succeeded"


def test_a_callback_the_settings_no_longer_allow_is_not_posted(
    client: redis.Redis, receiver: WebhookReceiver
) -> None:
    job = record(client)
    cid = queued(client, job, f"{receiver.origin}/moved")
    ctx = context(client, settings_for("https://elsewhere.example.org"))

    assert deliver_webhook(ctx, job.id, cid, 1, CLAIM) is None

    assert receiver.posts("/moved") == []
    [callback] = callbacks_of(client, job)
    assert [a.error for a in callback.attempts] == ["callback_not_allowed"]
    assert callback.outcome == "failed"


def test_a_redirect_is_not_followed_and_ends_the_tries(
    client: redis.Redis, receiver: WebhookReceiver
) -> None:
    job = record(client)
    cid = queued(client, job, f"{receiver.origin}/redirecting")
    receiver.answer("/redirecting", 307)

    assert (
        deliver_webhook(context(client, settings_for(receiver.origin)), job.id, cid, 1, CLAIM)
        is None
    )

    assert receiver.posts("/redirected") == []
    [callback] = callbacks_of(client, job)
    assert [a.status for a in callback.attempts] == [307]
    assert callback.outcome == "failed"


def test_an_unreachable_receiver_is_retried_until_the_total_time(
    client: redis.Redis, receiver: WebhookReceiver
) -> None:
    job = record(client)
    closed = "http://127.0.0.1:9"  # discard: nothing listens
    cid = queued(client, job, f"{closed}/x")
    ctx = context(client, settings_for(closed))

    assert deliver_webhook(ctx, job.id, cid, 1, CLAIM) == 1.0
    client.hset(CallbackFields("model-proxy").key(job.id), f"first:{cid}", repr(time.time() - 58))
    assert deliver_webhook(ctx, job.id, cid, 2, CLAIM) is None  # 58 s + 2 s would pass the 60 s

    [callback] = callbacks_of(client, job)
    assert [a.error for a in callback.attempts] == ["unreachable", "unreachable"]
    assert callback.outcome == "failed"


@pytest.mark.parametrize(
    "error",
    [
        requests.exceptions.InvalidURL,
        requests.exceptions.InvalidSchema,
        requests.exceptions.MissingSchema,
    ],
)
def test_a_url_the_http_client_cannot_send_to_fails_at_once(
    client: redis.Redis, receiver: WebhookReceiver, error: type[Exception]
) -> None:
    job = record(client)
    cid = queued(client, job, f"{receiver.origin}/bad")
    ctx = context(client, settings_for(receiver.origin))

    def refuse(*args: object, **kwargs: object) -> None:
        raise error("bad URL")

    cast(Any, ctx).webhook_session = SimpleNamespace(post=refuse)

    assert deliver_webhook(ctx, job.id, cid, 1, CLAIM) is None  # no retry

    [callback] = callbacks_of(client, job)
    assert [a.error for a in callback.attempts] == ["invalid_url"]
    assert callback.outcome == "failed"


def test_each_callback_of_an_ended_job_is_queued_once(
    client: redis.Redis, receiver: WebhookReceiver
) -> None:
    job = record(client)
    register(client, job, f"{receiver.origin}/a")
    register(client, record(client, JobState.INFERRING), f"{receiver.origin}/b")  # runs on
    ctx = context(client, settings_for(receiver.origin))
    sent: list[tuple[str, str, str]] = []

    def send(job_id: str, cid: str, claim: str, attempt: int) -> None:
        assert attempt == 1
        sent.append((job_id, cid, claim))

    assert dispatch_callbacks(ctx, job.id, send) == 1
    assert dispatch_callbacks(ctx, job.id, send) == 0
    assert [job_id for job_id, _, _ in sent] == [job.id]
    [(_, cid, claim)] = sent
    [callback] = callbacks_of(client, job)
    assert callback.id == cid and callback.claimed_by(claim)  # its message carries its claim


def test_a_running_jobs_callbacks_wait_for_its_end(
    client: redis.Redis, receiver: WebhookReceiver
) -> None:
    job = record(client, JobState.INFERRING)
    register(client, job, f"{receiver.origin}/later")
    ctx = context(client, settings_for(receiver.origin))

    assert dispatch_callbacks(ctx, job.id, lambda job_id, cid, claim, attempt: None) == 0


def test_one_url_is_kept_once_and_a_job_keeps_at_most_its_cap(client: redis.Redis) -> None:
    job = record(client)
    fields, key = CallbackFields("model-proxy"), JobKeys().job(job.id)

    def add(url: str) -> Registration:
        call = register_call(fields, key, job.id, url, "me", time.time(), 2, TTL)
        return call.reply(client.register_script(call.script)(keys=call.keys, args=call.args))[0]

    assert [add("http://a/1"), add("http://a/1"), add("http://a/2"), add("http://a/3")] == [
        Registration.ADDED,
        Registration.KNOWN,
        Registration.ADDED,
        Registration.FULL,
    ]
    assert client.ttl(fields.key(job.id)) > 0
    missing = register_call(fields, JobKeys().job("gone"), "gone", "http://a/1", "", 0.0, 2, TTL)
    reply = client.register_script(missing.script)(keys=missing.keys, args=missing.args)
    assert missing.reply(reply)[0] is Registration.MISSING


def test_others_see_only_a_callbacks_origin() -> None:
    [callback] = callbacks_from_fields(
        {"url:c1": "https://a.example/hook/s3cr3t?token=abc#frag", "by:c1": "me", "at:c1": "1"}
    )

    assert CallbackView.from_callback(callback, show_url=True).url.endswith("?token=abc#frag")
    assert CallbackView.from_callback(callback, show_url=False).url == "https://a.example"


def test_a_callback_whose_message_could_not_be_sent_is_queued_by_the_next_call(
    client: redis.Redis, receiver: WebhookReceiver
) -> None:
    job = record(client)
    register(client, job, f"{receiver.origin}/retry-send")
    ctx = context(client, settings_for(receiver.origin))

    def broker_away(job_id: str, cid: str, claim: str, attempt: int) -> None:
        raise ConnectionError("broker away")

    with pytest.raises(QueueUnavailable):
        dispatch_callbacks(ctx, job.id, broker_away)
    assert dispatch_callbacks(ctx, job.id, lambda job_id, cid, claim, attempt: None) == 1


@pytest.fixture()
def trickling() -> Iterator[str]:
    """A receiver on loopback that answers 200 and then a byte every 50 ms, for 5 s."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n")
                for _ in range(100):
                    if stop.wait(0.05):
                        return
                    conn.sendall(b"x")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    listener.close()
    thread.join(timeout=5)


def test_a_try_ends_within_the_webhook_timeout_in_all_however_the_answer_trickles(
    client: redis.Redis, trickling: str
) -> None:
    job = record(client)
    cid = queued(client, job, f"{trickling}/slow")
    settings = settings_for(trickling).model_copy(update={"webhook_timeout_seconds": 0.5})
    started = time.monotonic()

    assert deliver_webhook(context(client, settings), job.id, cid, 1, CLAIM) is None

    assert time.monotonic() - started < 1.5  # not 5 s: no read took 0.5 s, the total did
    [callback] = callbacks_of(client, job)
    assert [a.status for a in callback.attempts] == [200]


def test_webhook_posts_connect_within_their_own_short_timeout(
    client: redis.Redis, receiver: WebhookReceiver
) -> None:
    job = record(client)
    cid = queued(client, job, f"{receiver.origin}/timeouts")
    seen: list[Any] = []

    def post(*args: object, **kwargs: Any) -> None:
        seen.append(kwargs["timeout"])
        raise requests.exceptions.ConnectTimeout("slow")

    ctx = context(client, settings_for(receiver.origin))
    cast(Any, ctx).webhook_session = SimpleNamespace(post=post)

    assert deliver_webhook(ctx, job.id, cid, 1, CLAIM) == 1.0

    assert seen == [(3.0, 10.0)]  # connect, read: the defaults
