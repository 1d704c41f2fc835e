"""Who sees a job's callback URLs whole: the named principal that gave one, and admins; every
other caller, anonymous ones always, sees only the origin."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

import fakeredis
import pytest

from model_proxy.broker.access import ANONYMOUS, Principal
from model_proxy.broker.callbacks import dispatch_callbacks, job_callbacks
from model_proxy.broker.jobs import AsyncJobStore
from model_proxy.broker.requesters import Caller
from model_proxy.broker.services import BrokerServices
from model_proxy.shared.errors import QueueUnavailable
from model_proxy.shared.jobs import JobKeys, job_to_fields
from model_proxy.shared.settings import Settings
from model_proxy.shared.tasks import DELIVER_WEBHOOKS
from model_proxy.shared.webhooks.records import CallbackFields, register_call
from tests.unit.jobs.support import make_job, on_async_client, run_script

SECRET_HOOK = "https://hooks.example.org:8443/t/s3cr3t-path?token=abc#frag"
ORIGIN = "https://hooks.example.org:8443"
ANONYMOUS_HOOK = "https://hooks.example.org/anon/s3cr3t"

KEY_A = Caller(Principal("ward-7", "viewer"), "ward-7")
KEY_B = Caller(Principal("ward-8", "viewer"), "ward-8")
ADMIN = Caller(Principal("ops", "admin"), "ops")
ANON = Caller(ANONYMOUS, "anonymous@10.0.0.1")


@pytest.fixture()
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture()
def job_id(server: fakeredis.FakeServer) -> str:
    client = fakeredis.FakeRedis(server=server)
    job = make_job()
    client.hset(JobKeys().job(job.id), mapping=cast(Any, job_to_fields(job)))
    fields = CallbackFields("model-proxy")
    for url, by in ((SECRET_HOOK, "ward-7"), (ANONYMOUS_HOOK, "anonymous@10.0.0.1")):
        run_script(
            client, register_call(fields, JobKeys().job(job.id), job.id, url, by, 1.0, 5, 60)
        )
    return job.id


def urls_seen(server: fakeredis.FakeServer, job_id: str, who: Caller | None) -> list[str]:
    def on(client: Any) -> Any:
        services = SimpleNamespace(jobs=SimpleNamespace(redis=client), settings=Settings())
        return job_callbacks(cast(BrokerServices, services), job_id, who)

    return [view.url for view in on_async_client(server, on)]


def test_the_key_that_gave_a_callback_sees_it_whole_others_only_its_origin(
    server: fakeredis.FakeServer, job_id: str
) -> None:
    assert urls_seen(server, job_id, KEY_A) == [SECRET_HOOK, "https://hooks.example.org"]
    assert urls_seen(server, job_id, KEY_B) == [ORIGIN, "https://hooks.example.org"]
    assert urls_seen(server, job_id, None) == [ORIGIN, "https://hooks.example.org"]


def test_an_admin_sees_every_callback_whole(server: fakeredis.FakeServer, job_id: str) -> None:
    assert urls_seen(server, job_id, ADMIN) == [SECRET_HOOK, ANONYMOUS_HOOK]


def test_an_anonymous_caller_sees_only_origins_even_of_the_callback_it_gave(
    server: fakeredis.FakeServer, job_id: str
) -> None:
    # anonymous@<address> is everyone behind one proxy: it proves nothing about who gave it
    assert urls_seen(server, job_id, ANON) == [ORIGIN, "https://hooks.example.org"]


def test_a_webhook_the_api_queues_goes_to_the_webhook_queue(
    server: fakeredis.FakeServer, job_id: str
) -> None:
    """A cancel or a late registration queues the webhooks from the API: on the queue every
    worker reads, not the inference queue (workers run with ``--queues`` may not read it)."""
    sent: list[tuple[str, list[str], str]] = []
    settings = Settings(webhook_queue="hooks-only", queue_name="inference")

    async def send(task: str, args: list[str], queue: str) -> None:
        sent.append((task, args, queue))

    def on(client: Any) -> Any:
        jobs = AsyncJobStore(client, 60, JobKeys())
        services = SimpleNamespace(jobs=jobs, settings=settings, send=send)
        return dispatch_callbacks(cast(BrokerServices, services), job_id)

    on_async_client(server, on)

    assert [queue for _, _, queue in sent] == ["hooks-only", "hooks-only"]
    assert {task for task, _, _ in sent} == {DELIVER_WEBHOOKS}


def test_callbacks_the_broker_refuses_from_the_api_are_given_back_and_the_others_queued(
    server: fakeredis.FakeServer, job_id: str
) -> None:
    """A cancel while the broker refuses the first message: that callback is given back for
    the next dispatch (or the reaper), and the other is still queued."""
    sent: list[list[Any]] = []
    refusals = [QueueUnavailable("the job queue cannot be reached")]

    async def send(task: str, args: list[Any], queue: str) -> None:
        if refusals:
            raise refusals.pop()
        sent.append(args)

    def on(client: Any) -> Any:
        jobs = AsyncJobStore(client, 60, JobKeys())
        services = SimpleNamespace(jobs=jobs, settings=Settings(), send=send)
        return dispatch_callbacks(cast(BrokerServices, services), job_id)

    with pytest.raises(QueueUnavailable):
        on_async_client(server, on)

    client = fakeredis.FakeRedis(server=server)
    raw = client.hgetall(CallbackFields("model-proxy").key(job_id))
    sent_marks = [name for name in raw if name.startswith(b"sent:")]
    assert len(sent) == 1 and len(sent_marks) == 1  # the refused one is unclaimed again
    [(_, cid, claim, attempt)] = sent
    assert raw[f"sent:{cid}".encode()].decode() == claim and attempt == 1
    on_async_client(server, on)  # the next dispatch queues the one given back
    assert len(sent) == 2
