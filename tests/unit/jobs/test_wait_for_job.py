"""Waiting for a job without a thread (``broker/jobs.py``: :class:`JobEvents`,
:func:`wait_for_job`)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import fakeredis
import pytest

from model_proxy.broker import jobs as broker_jobs
from model_proxy.broker.jobs import AsyncJobStore, JobEvents, wait_for_job
from model_proxy.shared.errors import JobCancelled
from model_proxy.shared.jobs import (
    Job,
    JobState,
    JobStore,
    Terminated,
    Written,
)
from tests.unit.jobs.support import (
    KEYS,
    RESULT,
    TTL,
    T,
)

# --- wait_for_job -----------------------------------------------------------------------------


class _ReadSignal(AsyncJobStore):
    """Tells when the waiter has read the job once, so a test changes it only afterwards."""

    def __init__(self, client: Any) -> None:
        super().__init__(client, TTL, KEYS)
        self.read = asyncio.Event()

    async def get(self, job_id: str) -> Job | None:
        job = await super().get(job_id)
        self.read.set()
        return job


def waiting(
    server: fakeredis.FakeServer,
    scenario: Callable[[_ReadSignal, JobEvents], Awaitable[T]],
) -> T:
    """Run ``scenario`` with the broker's store and its events subscription started."""

    async def main() -> T:
        client = fakeredis.FakeAsyncRedis(server=server)
        events = JobEvents(client, KEYS.events)
        await events.start()
        try:
            return await asyncio.wait_for(scenario(_ReadSignal(client), events), 10)
        finally:
            await events.stop()
            await client.aclose()

    return asyncio.run(main())


async def _subscribed(client: Any) -> None:
    while (await client.pubsub_numsub(KEYS.events))[0][1] < 1:
        await asyncio.sleep(0.01)


def test_wait_returns_a_finished_job_at_once(
    server: fakeredis.FakeServer, store: JobStore, running: Job
) -> None:
    assert store.succeed(running, "worker-a", RESULT) is Written.DONE
    found = waiting(server, lambda jobs, events: wait_for_job(jobs, events, running.id, 60))
    assert found is not None and found.state is JobState.SUCCEEDED


def test_wait_for_a_missing_job_is_none(server: fakeredis.FakeServer) -> None:
    assert waiting(server, lambda jobs, events: wait_for_job(jobs, events, "no-such", 60)) is None


@pytest.mark.parametrize("timeout", [0.0, 0.05])
def test_wait_returns_the_job_as_it_stands_after_the_timeout(
    server: fakeredis.FakeServer, job: Job, timeout: float
) -> None:
    found = waiting(server, lambda jobs, events: wait_for_job(jobs, events, job.id, timeout))
    assert found == job


def test_wait_wakes_when_the_worker_finishes_the_job(
    server: fakeredis.FakeServer,
    store: JobStore,
    running: Job,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(broker_jobs, "_RECHECK_SECONDS", 60.0)  # only an event can wake it

    async def scenario(jobs: _ReadSignal, events: JobEvents) -> Job | None:
        async def worker() -> None:
            await jobs.read.wait()
            await _subscribed(jobs.redis)
            assert store.succeed(running, "worker-a", RESULT) is Written.DONE

        finishing = asyncio.create_task(worker())
        found = await wait_for_job(jobs, events, running.id, 60)
        await finishing
        return found

    found = waiting(server, scenario)
    assert found is not None and found.state is JobState.SUCCEEDED


def test_wait_wakes_when_another_request_cancels_the_job(
    server: fakeredis.FakeServer, job: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_jobs, "_RECHECK_SECONDS", 60.0)

    async def scenario(jobs: _ReadSignal, events: JobEvents) -> Job | None:
        async def cancel() -> None:
            await jobs.read.wait()
            await _subscribed(jobs.redis)
            outcome = await jobs.terminate(job, JobState.CANCELLED, JobCancelled("no"))
            assert outcome is Terminated.TERMINATED

        cancelling = asyncio.create_task(cancel())
        found = await wait_for_job(jobs, events, job.id, 60)
        await cancelling
        return found

    found = waiting(server, scenario)
    assert found is not None and found.state is JobState.CANCELLED


def test_an_announcement_of_an_unfinished_change_keeps_the_waiter_waiting(
    server: fakeredis.FakeServer, store: JobStore, running: Job, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(broker_jobs, "_RECHECK_SECONDS", 60.0)

    async def scenario(jobs: _ReadSignal, events: JobEvents) -> Job | None:
        async def stage() -> None:
            await jobs.read.wait()
            await _subscribed(jobs.redis)
            fields = {"state": JobState.INFERRING.value}
            assert store.update(running.id, "worker-a", fields, True) is Written.DONE

        staging = asyncio.create_task(stage())
        found = await wait_for_job(jobs, events, running.id, 0.3)
        await staging
        return found

    found = waiting(server, scenario)
    assert found is not None and found.state is JobState.INFERRING
