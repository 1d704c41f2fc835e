"""Following a job through its server-sent events (``GET /jobs/{id}/events``), for
``model-proxy infer`` and ``model-proxy jobs watch``; the caller polls when this gives up."""

from __future__ import annotations

import time
from collections.abc import Callable

from model_proxy.api_client import ApiClient, ApiError, JobResource, StreamUnavailable

__all__ = ["follow_events"]

_MAX_RECONNECTS = 100  # streams that ended (their lifetime) before the job did, in a row


def follow_events(
    client: ApiClient,
    job: JobResource,
    show: Callable[[str, JobResource], None],
    deadline: float | None = None,
) -> JobResource | None:
    """Show each event (its kind and job) until the job has finished, reconnecting with
    ``Last-Event-ID`` when a stream ends before it (the server's stream lifetime). The finished
    job; the last job seen when ``deadline`` (``time.monotonic()``) passes; ``None`` when no
    stream could be opened (an error answer too: an API without the route, a busy one; the
    polling that follows reports a real error such as an unknown job) or one broke (a proxy
    that strips streaming): poll then."""
    last_id: str | None = None
    seen: JobResource | None = None
    for _ in range(_MAX_RECONNECTS):
        timeout = None if deadline is None else max(deadline - time.monotonic(), 0.01)
        try:
            for event, current in client.events(job.id, last_id, read_timeout=timeout):
                last_id, seen = event.id, current
                show(event.kind, current)
                if current.finished:
                    return current
                if deadline is not None and time.monotonic() >= deadline:
                    return current
        except (StreamUnavailable, ApiError):
            return None
        if last_id is None:
            return None  # a stream that ends at once sends nothing worth following
    return seen
