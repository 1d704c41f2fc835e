"""Which of the scripted steps (``shared/jobs/scripts.py``) announce a change on the events
channel."""

from __future__ import annotations

from collections.abc import Callable

import redis

from model_proxy.shared.jobs import (
    JobStore,
)
from tests.unit.jobs.support import (
    KEYS,
    LEASE,
    RESULT,
    Broker,
    announced,
    lapse,
    make_job,
    published,
)

# --- the events channel, step by step ---------------------------------------------------------


def test_which_steps_announce(client: redis.Redis, store: JobStore, broker: Broker) -> None:
    pubsub = client.pubsub()
    pubsub.subscribe(KEYS.events)
    pubsub.get_message()
    job = make_job()
    steps: list[tuple[str, Callable[[], object]]] = [
        ("create", lambda: broker.submit(job)),
        ("claim", lambda: store.claim(job, "worker-a", LEASE)),
        ("busy claim", lambda: store.claim(job, "worker-b", LEASE)),
        ("progress", lambda: store.update(job.id, "worker-a", {"bytes_fetched": "1"}, False)),
        ("stage", lambda: store.update(job.id, "worker-a", {"state": "inferring"}, True)),
        ("lost write", lambda: store.update(job.id, "worker-b", {"state": "inferring"}, True)),
        ("renew", lambda: store.renew_lease(job.id, "worker-a", LEASE)),
        ("lapse", lambda: lapse(client, job)),
        ("requeue", lambda: store.requeue_abandoned(job, 3)),
        ("claim again", lambda: store.claim(job, "worker-b", LEASE)),
        ("succeed", lambda: store.succeed(job, "worker-b", RESULT)),
        ("release", lambda: store.release_lease(job.id, "worker-b")),
        ("cancel too late", lambda: broker.cancel(job)),
    ]
    seen = {}
    for name, step in steps:
        step()
        seen[name] = len(announced(pubsub))
    pubsub.close()
    assert seen == {
        "create": 0,
        "claim": 1,
        "busy claim": 0,
        "progress": 0,
        "stage": 1,
        "lost write": 0,
        "renew": 0,
        "lapse": 0,
        "requeue": 1,
        "claim again": 1,
        "succeed": 1,
        "release": 0,
        "cancel too late": 0,
    }


def test_a_job_leaving_its_models_queue_tells_that_models_streams(
    client: redis.Redis, store: JobStore, broker: Broker
) -> None:
    """Claiming, finishing and cancelling a job publish ``queue:<model id>``: the jobs still
    queued behind it moved up (their own ids are not published)."""
    pubsub = client.pubsub()
    pubsub.subscribe(KEYS.events)
    pubsub.get_message()
    first, second, third = (make_job(study_uid=f"1.2.{n}") for n in (3, 4, 5))
    model = first.request.model_id
    for job in (first, second, third):
        assert broker.submit(job).created
    steps: list[tuple[str, Callable[[], object]]] = [
        ("create", lambda: None),
        ("claim", lambda: store.claim(first, "worker-a", LEASE)),
        ("progress", lambda: store.update(first.id, "worker-a", {"bytes_fetched": "1"}, True)),
        ("succeed", lambda: store.succeed(first, "worker-a", RESULT)),
        ("cancel", lambda: broker.cancel(third)),
    ]
    seen = {}
    for name, step in steps:
        step()
        seen[name] = [m for m in published(pubsub) if m.startswith("queue:")]
    pubsub.close()
    queue = [f"queue:{model}"]
    assert seen == {
        "create": [],
        "claim": queue,
        "progress": [],
        "succeed": queue,
        "cancel": queue,
    }
