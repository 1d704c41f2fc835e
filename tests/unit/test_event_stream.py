"""A job's server-sent events (``broker/event_stream.py``) on fakeredis: the framing, the ids,
what wakes a stream, heartbeats, the lifetime and the cap."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from types import SimpleNamespace
from typing import Any, cast

import fakeredis
import pytest

from model_proxy.broker.event_stream import (
    HEARTBEAT,
    event_id,
    event_kind,
    event_stream_response,
    format_event,
    job_events,
    wants_events,
)
from model_proxy.broker.jobs import AsyncJobStore, JobEvents
from model_proxy.broker.resources import render_job
from model_proxy.broker.services import BrokerServices
from model_proxy.shared.config import Catalog
from model_proxy.shared.errors import ServiceBusy
from model_proxy.shared.jobs import Job, JobStore
from model_proxy.shared.settings import Settings
from tests.unit.jobs.support import KEYS, LEASE, RESULT, TTL, Broker, make_job

# --- framing ----------------------------------------------------------------------------------


def test_an_event_is_its_kind_id_and_one_line_of_json() -> None:
    framed = format_event("state", "17", {"id": "j", "note": "two\nlines"})
    assert framed == b'event: state\nid: 17\ndata: {"id":"j","note":"two\\nlines"}\n\n'


def test_the_id_is_updated_at_in_microseconds_and_a_digest_of_the_data() -> None:
    job = make_job().model_copy(update={"updated_at": 1700000000.123456})
    ident = event_id(job, {"state": "queued", "queue": {"position": 2}})
    number, digest = ident.split("-")
    assert number == "1700000000123456" and len(digest) == 8 and int(digest, 16) >= 0
    assert event_id(job, {"queue": {"position": 2}, "state": "queued"}) == ident  # stable
    moved = event_id(job, {"state": "queued", "queue": {"position": 1}})
    assert moved != ident and moved.startswith("1700000000123456-")
    later = job.model_copy(update={"updated_at": 1700000000.123457})
    assert event_id(later, {"state": "queued"}).startswith("1700000000123457-")


@pytest.mark.parametrize(
    ("before", "after", "kind"),
    [
        (None, {"state": "queued", "progress": 0}, "state"),
        ({"state": "queued", "progress": 0}, {"state": "fetching", "progress": 0}, "state"),
        ({"state": "fetching", "progress": 0}, {"state": "fetching", "progress": 1}, "progress"),
        ({"state": "queued", "progress": 0, "x": 1}, {"state": "queued", "progress": 0}, "queue"),
        ({"state": "inferring", "progress": 1}, {"state": "succeeded", "progress": 1}, "end"),
        (None, {"state": "failed", "progress": 0}, "end"),
    ],
)
def test_the_kind_names_what_changed(
    before: dict[str, Any] | None, after: dict[str, Any], kind: str
) -> None:
    assert event_kind(before, after) == kind


@pytest.mark.parametrize(
    ("accept", "wanted"),
    [
        ("text/event-stream", True),
        ("application/json, text/event-stream;q=0.5", True),
        ("Text/Event-Stream", True),
        ("text/event-stream;q=0", False),
        ("application/json", False),
        ("*/*", False),
        (None, False),
    ],
)
def test_only_an_accept_naming_the_event_stream_asks_for_one(
    accept: str | None, wanted: bool
) -> None:
    assert wants_events(accept) is wanted


# --- a stream on fakeredis --------------------------------------------------------------------


def _services(client: Any, events: JobEvents, **settings: Any) -> BrokerServices:
    values = {"event_heartbeat_seconds": 5.0, **settings}
    return cast(
        BrokerServices,
        SimpleNamespace(
            settings=Settings(**values),
            catalog=Catalog(servers={}, models={}, default_server_id=""),
            jobs=AsyncJobStore(client, TTL, KEYS),
            events=events,
        ),
    )


Scenario = Callable[[BrokerServices, JobStore], Awaitable[None]]


def streaming(server: fakeredis.FakeServer, scenario: Scenario, **settings: Any) -> None:
    """Run ``scenario`` with the broker's services on fakeredis and the workers' store."""

    async def main() -> None:
        client = fakeredis.FakeAsyncRedis(server=server)
        events = JobEvents(client, KEYS.events)
        await events.start()
        while (await client.pubsub_numsub(KEYS.events))[0][1] < 1:
            await asyncio.sleep(0.01)
        store = JobStore(fakeredis.FakeRedis(server=server), TTL, KEYS)
        try:
            await asyncio.wait_for(scenario(_services(client, events, **settings), store), 10)
        finally:
            await events.stop()
            await client.aclose()

    asyncio.run(main())


async def _next(stream: AsyncIterator[bytes], timeout: float = 2.0) -> bytes:
    return await asyncio.wait_for(anext(stream), timeout)


def _parse(chunk: bytes) -> tuple[str, str, dict[str, Any]]:
    fields = dict(line.split(": ", 1) for line in chunk.decode().strip().split("\n"))
    return fields["event"], fields["id"], json.loads(fields["data"])


@pytest.fixture
def server() -> fakeredis.FakeServer:
    return fakeredis.FakeServer()


@pytest.fixture
def queued(server: fakeredis.FakeServer) -> Job:
    job = make_job()
    assert Broker(server).submit(job).created
    return job


@pytest.fixture
def behind(server: fakeredis.FakeServer, queued: Job) -> Job:
    """A job of the same model queued after ``queued``: second in line."""
    job = make_job(study_uid="1.2.0")
    Broker(server).submit(job)
    return job


async def _opening(stream: AsyncIterator[bytes]) -> tuple[str, str, dict[str, Any]]:
    """The first event of a stream, after its retry hint."""
    await _next(stream)
    return _parse(await _next(stream))


def _same_update_new_id(ident: str, before: str) -> bool:
    """An id for a change the record does not date: the same number, another digest."""
    return ident != before and ident.split("-")[0] == before.split("-")[0]


def test_a_stream_sends_the_job_then_each_change_and_ends_after_the_end_event(
    server: fakeredis.FakeServer, queued: Job
) -> None:
    async def scenario(services: BrokerServices, store: JobStore) -> None:
        stream = job_events(services, queued)
        assert await _next(stream) == b"retry: 2000\n\n"
        kind, first_id, data = _parse(await _next(stream))
        assert (kind, data["state"]) == ("state", "queued")
        assert data["links"] == {
            "self": f"/jobs/{queued.id}",
            "result": f"/jobs/{queued.id}/result",
        }
        store.claim(queued, "worker-a", LEASE)
        kind, fetching_id, data = _parse(await _next(stream))
        assert (kind, data["state"]) == ("state", "fetching")
        store.update(queued.id, "worker-a", {"instances_fetched": "2"}, True)
        kind, _, data = _parse(await _next(stream))
        assert (kind, data["progress"]["instancesFetched"]) == ("progress", 2)
        store.succeed(queued, "worker-a", RESULT)
        kind, _, data = _parse(await _next(stream))
        assert (kind, data["state"]) == ("end", "succeeded")
        with pytest.raises(StopAsyncIteration):
            await _next(stream)
        assert int(fetching_id.split("-")[0]) > int(first_id.split("-")[0])
        assert services.events.open_streams == 0

    streaming(server, scenario)


def test_a_client_that_has_the_current_state_is_not_sent_it_again(
    server: fakeredis.FakeServer, queued: Job
) -> None:
    async def scenario(services: BrokerServices, store: JobStore) -> None:
        first = job_events(services, queued)
        await _next(first)
        _, current, _ = _parse(await _next(first))
        await first.aclose()
        stream = job_events(services, queued, last_event_id=current)
        await _next(stream)  # retry
        assert await _next(stream) == HEARTBEAT  # nothing new to send: only the heartbeat
        number, digest = current.split("-")
        stale = job_events(services, queued, last_event_id=f"{int(number) - 1}-{digest}")
        await _next(stale)
        kind, ident, _ = _parse(await _next(stale))
        assert (kind, ident) == ("state", current)
        await stream.aclose()
        await stale.aclose()

    streaming(server, scenario, event_heartbeat_seconds=0.2)


def test_a_reconnecting_client_is_sent_at_once_a_queue_move_it_missed(
    server: fakeredis.FakeServer, queued: Job, behind: Job
) -> None:
    """A queue move leaves ``updatedAt`` as it was; the id's digest still tells the client's
    last event (second in line) from the job now (first)."""

    async def scenario(services: BrokerServices, store: JobStore) -> None:
        stream = job_events(services, behind)
        _, last_id, data = await _opening(stream)
        assert data["queue"]["position"] == 2
        await stream.aclose()  # the client goes away; the job ahead is claimed meanwhile
        store.claim(queued, "worker-a", LEASE)
        resumed = job_events(services, behind, last_event_id=last_id)
        kind, ident, data = await _opening(resumed)  # at once: the heartbeat is 5 s away
        assert (kind, data["queue"]["position"]) == ("state", 1)
        assert _same_update_new_id(ident, last_id)
        await resumed.aclose()

    streaming(server, scenario, event_heartbeat_seconds=5.0)


def test_a_finished_job_sends_its_end_event_even_to_a_client_that_has_it(
    server: fakeredis.FakeServer, queued: Job
) -> None:
    async def scenario(services: BrokerServices, store: JobStore) -> None:
        store.claim(queued, "worker-a", LEASE)
        store.succeed(queued, "worker-a", RESULT)
        done = await services.jobs.get(queued.id)
        assert done is not None
        ident = event_id(done, await render_job(services, done))
        stream = job_events(services, done, last_event_id=ident)
        chunks = [chunk async for chunk in stream]
        assert [_parse(chunk)[0] for chunk in chunks[1:]] == ["end"]

    streaming(server, scenario)


def test_a_queued_job_is_woken_when_its_models_queue_moves(
    server: fakeredis.FakeServer, queued: Job, behind: Job
) -> None:
    """The job ahead of it claimed publishes only its own id and ``queue:<model>``; the queued
    job's stream re-renders and sends ``queue`` with its new place."""

    async def scenario(services: BrokerServices, store: JobStore) -> None:
        stream = job_events(services, behind)
        _, first_id, data = await _opening(stream)
        assert data["queue"]["position"] == 2
        store.claim(queued, "worker-a", LEASE)
        kind, ident, data = _parse(await _next(stream, timeout=1.0))  # before any heartbeat
        assert (kind, data["queue"]["position"]) == ("queue", 1)
        assert _same_update_new_id(ident, first_id)
        await stream.aclose()

    streaming(server, scenario)


def test_an_idle_stream_sends_heartbeats_and_ends_at_its_lifetime(
    server: fakeredis.FakeServer, queued: Job
) -> None:
    async def scenario(services: BrokerServices, store: JobStore) -> None:
        chunks = [chunk async for chunk in job_events(services, queued)]
        assert chunks[0].startswith(b"retry:") and _parse(chunks[1])[0] == "state"
        assert chunks[2:] and set(chunks[2:]) == {HEARTBEAT}
        assert 2 <= len(chunks[2:]) <= 4  # about 0.6 s of 0.2 s heartbeats

    streaming(server, scenario, event_heartbeat_seconds=0.2, max_event_stream_seconds=0.7)


def test_one_stream_over_the_cap_is_busy(server: fakeredis.FakeServer, queued: Job) -> None:
    async def scenario(services: BrokerServices, store: JobStore) -> None:
        stream = job_events(services, queued, slot=services.events.reserve_stream(1))
        await _next(stream)
        assert services.events.open_streams == 1
        with pytest.raises(ServiceBusy) as refused:
            event_stream_response(services, queued)
        assert refused.value.code == "busy" and refused.value.retry_after == 1
        await stream.aclose()
        assert services.events.open_streams == 0
        assert event_stream_response(services, queued).media_type == "text/event-stream"

    streaming(server, scenario, max_event_streams=1)


def test_the_cap_counts_responses_built_but_not_yet_streaming(
    server: fakeredis.FakeServer, queued: Job
) -> None:
    """A burst of requests: each response takes its slot when built, before its stream runs."""

    async def scenario(services: BrokerServices, store: JobStore) -> None:
        first = event_stream_response(services, queued)
        with pytest.raises(ServiceBusy):
            event_stream_response(services, queued)
        await first(*_gone_client())  # the client left before its stream began
        assert services.events.open_streams == 0
        second = event_stream_response(services, queued)
        with pytest.raises(ServiceBusy):
            event_stream_response(services, queued)
        chunks = [chunk async for chunk in second.body_iterator]  # runs to its lifetime
        assert chunks[0].startswith(b"retry:")
        assert services.events.open_streams == 0
        event_stream_response(services, queued)

    streaming(server, scenario, max_event_streams=1, max_event_stream_seconds=0.1)


def test_a_response_never_sent_gives_its_slot_back_when_dropped(
    server: fakeredis.FakeServer, queued: Job
) -> None:
    async def scenario(services: BrokerServices, store: JobStore) -> None:
        response = event_stream_response(services, queued)
        assert services.events.open_streams == 1
        del response
        gc.collect()
        assert services.events.open_streams == 0
        event_stream_response(services, queued)

    streaming(server, scenario, max_event_streams=1)


def _gone_client() -> tuple[dict[str, Any], Callable[[], Awaitable[dict[str, Any]]], Any]:
    """An ASGI call whose client has already disconnected."""

    async def receive() -> dict[str, Any]:
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        pass

    return {"type": "http", "asgi": {"spec_version": "2.3"}}, receive, send
