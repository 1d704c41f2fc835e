"""A job's server-sent events (``text/event-stream``): ``GET /jobs/{id}/events``, and the viewer's
routes asked with ``Accept: text/event-stream``.

A stream sends the job at once, then again whenever its rendering changes, until it has
finished. Each event is the job resource exactly as ``GET /jobs/{id}`` renders it
(:func:`~model_proxy.broker.resources.render_job`), named by what changed:

- ``state``: the job's state changed (the first event of a stream is one too);
- ``progress``: the fetch progress changed;
- ``queue``: while queued, its place in its model's queue (or its estimate) changed;
- ``end``: the job has finished (``succeeded``, ``failed``, ``cancelled``); the stream ends.

The ``id`` of an event is ``<updatedAt in µs>-<digest>``: the job's ``updatedAt`` in
microseconds since the epoch (ordered by it, ids never go back, whichever API process sends
them), and 8 hex digits of a hash of the event's data, so the changes the record does not date
(a queue move) have ids of their own, the same in every process. A client that reconnects with
``Last-Event-ID`` equal to the current id provably has the job as it stands and is not sent it
again; any other gets it at once (a finished job's ``end`` event is always sent).

Each stream holds one of the process's ``MODEL_PROXY_MAX_EVENT_STREAMS`` slots from the moment
its response is built (:func:`reserve_stream`) until it ends or its response is done with.

No stream polls Redis: each is woken by :class:`~model_proxy.broker.jobs.JobEvents` (its job's
messages and, while queued, its model's ``queue:<model id>``), and re-reads the job only then or
at each heartbeat (``MODEL_PROXY_EVENT_HEARTBEAT_SECONDS``), a safety net for a lost message.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import weakref
from collections.abc import AsyncIterator, Mapping
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from model_proxy.broker.jobs import StreamSlot
from model_proxy.broker.requesters import Caller
from model_proxy.broker.resources import render_current
from model_proxy.broker.services import BrokerServices
from model_proxy.shared.errors import ServiceBusy
from model_proxy.shared.jobs import Job, JobState
from model_proxy.shared.schemas import ErrorBody

__all__ = [
    "EVENT_STREAM_RESPONSES",
    "EVENT_STREAM_TYPE",
    "HEARTBEAT",
    "event_id",
    "event_kind",
    "event_stream_response",
    "format_event",
    "job_events",
    "reserve_stream",
    "wants_events",
]

EVENT_STREAM_TYPE = "text/event-stream"
HEARTBEAT = b": keep-alive\n\n"
RETRY_MILLISECONDS = 2000  # the reconnection delay a client is told to use
_STREAM_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}

EVENT_STREAM_RESPONSES: dict[int | str, dict[str, object]] = {
    200: {
        "description": "The job's server-sent events: `event: state|progress|queue|end`, "
        "`id: <updatedAt in µs>-<8 hex digest of the data>`, "
        "`data: <the job resource as JSON>`; `: keep-alive` comments in between; the stream "
        "ends after `end`",
        "content": {EVENT_STREAM_TYPE: {"schema": {"type": "string"}}},
    },
    503: {
        "model": ErrorBody,
        "description": "This API process serves its limit of event streams (`busy`, with "
        "Retry-After), or Redis cannot be reached (`redis_unavailable`)",
    },
}


def wants_events(accept: str | None) -> bool:
    """Whether an ``Accept`` header asks for ``text/event-stream`` (with a ``q`` above 0)."""
    for element in (accept or "").split(","):
        media, *params = element.split(";")
        if media.strip().lower() != EVENT_STREAM_TYPE:
            continue
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                with contextlib.suppress(ValueError):
                    return float(value) > 0
                return False
        return True
    return False


def event_id(job: Job, rendered: Mapping[str, Any]) -> str:
    """The id of the event of ``job`` rendered as ``rendered``: its ``updated_at`` in
    microseconds, ``-``, and 8 hex digits of a hash of the rendering (the same for the same
    rendering, in any process)."""
    document = json.dumps(rendered, separators=(",", ":"), sort_keys=True)
    digest = hashlib.blake2s(document.encode(), digest_size=4).hexdigest()
    return f"{round(job.updated_at * 1_000_000)}-{digest}"


def event_kind(before: Mapping[str, Any] | None, after: Mapping[str, Any]) -> str:
    """What changed from ``before`` (``None``: nothing sent yet) to ``after``, two renderings."""
    if JobState(after["state"]).finished:
        return "end"
    if before is None or before["state"] != after["state"]:
        return "state"
    if before["progress"] != after["progress"]:
        return "progress"
    return "queue" if after["state"] == JobState.QUEUED.value else "state"


def format_event(kind: str, ident: str, data: Mapping[str, Any]) -> bytes:
    """One event in the ``text/event-stream`` framing; ``data`` as one line of JSON."""
    document = json.dumps(data, separators=(",", ":"))
    return f"event: {kind}\nid: {ident}\ndata: {document}\n\n".encode()


async def job_events(
    services: BrokerServices,
    job: Job,
    *,
    who: Caller | None = None,
    last_event_id: str | None = None,
    slot: StreamSlot | None = None,
) -> AsyncIterator[bytes]:
    """The stream's bytes: the retry hint, the job now (unless ``last_event_id`` shows the
    client has it), each change, heartbeats, and the ``end`` event; or nothing more once the
    stream has been open ``MODEL_PROXY_MAX_EVENT_STREAM_SECONDS`` or the record expired. The
    stream's ``slot``, if given, is released when it ends."""
    settings, events = services.settings, services.events
    loop = asyncio.get_running_loop()
    closes_at = loop.time() + settings.max_event_stream_seconds
    sent: dict[str, Any] | None = None
    try:
        yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
        while True:
            model = job.request.model_id if job.state is JobState.QUEUED else None
            with events.watch(job.id, model) as wake:
                current = await services.jobs.get(job.id)  # after watching: no change missed
                if current is None:
                    return
                job, rendered = await render_current(services, current, who)
                if rendered != sent:
                    ident = event_id(job, rendered)
                    if sent is not None or ident != last_event_id or job.state.finished:
                        yield format_event(event_kind(sent, rendered), ident, rendered)
                    sent = rendered
                if job.state.finished:
                    return
                remaining = closes_at - loop.time()
                if remaining <= 0:
                    return
                try:
                    await asyncio.wait_for(
                        wake.wait(), min(settings.event_heartbeat_seconds, remaining)
                    )
                except TimeoutError:
                    if loop.time() < closes_at:
                        yield HEARTBEAT
    finally:
        if slot is not None:
            slot.release()


def reserve_stream(services: BrokerServices) -> StreamSlot:
    """One of this process's event-stream slots, or :class:`ServiceBusy` (503 ``busy``) when it
    already keeps ``MODEL_PROXY_MAX_EVENT_STREAMS`` open (or reserved)."""
    limit = services.settings.max_event_streams
    slot = services.events.reserve_stream(limit)
    if slot is None:
        raise ServiceBusy(f"this API process already serves {limit} event streams; try again")
    return slot


class _EventStreamResponse(StreamingResponse):
    """A streaming answer holding an event-stream slot: released when the answer is done with,
    whether its stream ran, was cut short, or never started (a client gone first); and, should
    the answer never be sent at all, when it is dropped."""

    def __init__(self, content: AsyncIterator[bytes], slot: StreamSlot) -> None:
        super().__init__(content, media_type=EVENT_STREAM_TYPE, headers=_STREAM_HEADERS)
        self.slot = slot
        weakref.finalize(self, slot.release)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.slot.release()


def event_stream_response(
    services: BrokerServices,
    job: Job,
    *,
    who: Caller | None = None,
    last_event_id: str | None = None,
    slot: StreamSlot | None = None,
) -> StreamingResponse:
    """The job's events as the answer, holding ``slot`` (reserved first by a caller that must
    know before it acts, e.g. before it makes a job) or a slot reserved here:
    :class:`ServiceBusy` (503 ``busy``) when this process already keeps
    ``MODEL_PROXY_MAX_EVENT_STREAMS`` open."""
    held = reserve_stream(services) if slot is None else slot
    stream = job_events(services, job, who=who, last_event_id=last_event_id, slot=held)
    return _EventStreamResponse(stream, held)
