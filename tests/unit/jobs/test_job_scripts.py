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
