"""Jobs on fakeredis for the job-store tests: one request, its jobs, the broker's store run
from plain code, and what a client would look at."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import fakeredis
import redis

from model_proxy.broker.jobs import AsyncJobStore
from model_proxy.shared.config.schema import Level, Task
from model_proxy.shared.errors import DicomNotFound, JobCancelled
from model_proxy.shared.jobs import (
    Admitted,
    Job,
    JobKeys,
    JobState,
    JobStore,
    Terminated,
    Written,
    new_job,
)
from model_proxy.shared.jobs.operations import ScriptCall
from model_proxy.shared.request import DataFilter, InferenceRequest

T = TypeVar("T")

TTL = 3600
LEASE = 30.0
KEYS = JobKeys()
MODEL = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"
OTHER_MODEL = "0d5e3c1a-7f1b-4a43-9d1e-2b9a8c7e6f50"
RESULT = b'{"1.2.3": {"metadata": []}}'

REQUEST = InferenceRequest(
    task=Task.SEGMENTATION,
    model_id=MODEL,
    server_id="b5208f48-f748-4339-9402-d1148dab571e",
    level=Level.STUDY,
    study_uid="1.2.3",
    data_filters=(
        DataFilter(
            data_key="series-two",
            uuid="1.2.3.2",
            data_filter=(DataFilter(data_key="top", uuid="1.2.3.2.1"),),
        ),
    ),
)


def make_job(**request_changes: Any) -> Job:
    """A new job as the broker builds it, for REQUEST changed by ``request_changes``."""
    return new_job(REQUEST.model_copy(update=request_changes), queue="gpu")


class Broker:
    """The broker's AsyncJobStore; each call runs on its own event loop and client."""

    def __init__(self, server: fakeredis.FakeServer) -> None:
        self.server = server

    def run(self, operation: Callable[[AsyncJobStore], Awaitable[T]]) -> T:
        async def main() -> T:
            client = fakeredis.FakeAsyncRedis(server=self.server)
            try:
                return await operation(AsyncJobStore(client, TTL, KEYS))
            finally:
                await client.aclose()

        return asyncio.run(main())

    def submit(self, job: Job, use_cached: bool = True) -> Admitted:
        return self.run(lambda jobs: jobs.create_or_attach(job, use_cached))

    def cancel(self, job: Job) -> Terminated:
        error = JobCancelled("cancelled by a client")
        return self.run(lambda jobs: jobs.terminate(job, JobState.CANCELLED, error))

    def get(self, job_id: str) -> Job | None:
        return self.run(lambda jobs: jobs.get(job_id))

    def cached(self, fingerprint: str) -> tuple[str, bytes] | None:
        return self.run(lambda jobs: jobs.cached(fingerprint))

    def queued_count(self, model_id: str = MODEL) -> int:
        return self.run(lambda jobs: jobs.queued_count(model_id))

    def recent(self, limit: int, state: JobState | None = None) -> list[Job]:
        return self.run(lambda jobs: jobs.recent(limit, state))


def on_async_client(server: fakeredis.FakeServer, operation: Callable[[Any], Awaitable[T]]) -> T:
    """``operation`` run on an asyncio client of ``server``, on its own event loop."""

    async def main() -> T:
        client = fakeredis.FakeAsyncRedis(server=server)
        try:
            return await operation(client)
        finally:
            await client.aclose()

    return asyncio.run(main())


def run_script(client: redis.Redis, call: ScriptCall[T]) -> T:
    """One scripted step on a synchronous client, as the stores run it."""
    return call.reply(client.register_script(call.script)(keys=call.keys, args=call.args))


def published(pubsub: Any) -> list[str]:
    """Every message published on the events channel since the last look."""
    messages = []
    while (message := pubsub.get_message()) is not None:
        messages.append(message["data"].decode())
    return messages


def announced(pubsub: Any) -> list[str]:
    """The job ids published on the events channel since the last look (not the messages
    that a model's queue changed)."""
    return [message for message in published(pubsub) if not message.startswith("queue:")]


def lapse(client: redis.Redis, job: Job) -> None:
    """The job's lease runs out, as when its worker was killed."""
    client.delete(KEYS.lease(job.id))


def expire(client: redis.Redis, job: Job) -> None:
    """The job's record reaches the end of its time to live."""
    client.delete(KEYS.job(job.id))


def current(store: JobStore, job: Job) -> Job:
    found = store.get(job.id)
    assert found is not None
    return found


# Three ways a job finishes, for tests that take each in turn.


def succeed_job(store: JobStore, broker: Broker, job: Job) -> None:
    assert store.succeed(job, "worker-a", b"{}") is Written.DONE


def fail_job(store: JobStore, broker: Broker, job: Job) -> None:
    assert store.fail(job, "worker-a", DicomNotFound("no such series")) is Written.DONE


def cancel_job(store: JobStore, broker: Broker, job: Job) -> None:
    assert broker.cancel(job) is Terminated.TERMINATED
