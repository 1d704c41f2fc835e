"""Queue place and ETA: the arithmetic, and the estimate of a job from Redis (fakeredis)."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Awaitable, Callable
from types import SimpleNamespace
from typing import Any, TypeVar, cast

import fakeredis
import pytest
import redis

from model_proxy.broker.estimates import JobEstimate, QueuePlace, estimate_job, seconds_until_start
from model_proxy.broker.jobs import AsyncJobStore
from model_proxy.broker.resources import render_job
from model_proxy.broker.services import BrokerServices
from model_proxy.shared.config import Catalog, ModelConfig
from model_proxy.shared.jobs import Job, JobState, JobStore
from model_proxy.shared.jobs.consumers import announce_consumer
from model_proxy.shared.jobs.durations import RunDurations, record_run_durations
from model_proxy.shared.settings import Settings
from tests.unit.jobs.support import (
    KEYS,
    LEASE,
    MODEL,
    OTHER_MODEL,
    TTL,
    Broker,
    make_job,
    on_async_client,
)

T = TypeVar("T")
RUN = 10.0  # seconds: the model's average run once one is recorded


# --- the arithmetic ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("position", "concurrency", "running", "seconds"),
    [
        (1, 1, [], 0.0),  # nothing runs: the first starts now
        (5, 1, [], 40.0),  # four whole runs before it
        (5, 1, [4.0], 46.0),  # ceil(5 / 1) runs, less the 4 s the running one has done
        (1, 1, [15.0], 0.0),  # the running one is overdue: any moment now
        (1, 2, [3.0], 0.0),  # concurrency 2, one place free
        (2, 2, [3.0], 7.0),  # the second waits for the running one
        (3, 2, [3.0], 10.0),  # then the first queued one's place
        (4, 2, [3.0], 17.0),
        (4, 2, [3.0, 8.0], 17.0),  # ceil(4 / 2) runs, less 3 s
        (3, 2, [], 10.0),
    ],
)
def test_the_start_is_waves_of_the_average_run_less_the_running_jobs_elapsed_time(
    position: int, concurrency: int, running: list[float], seconds: float
) -> None:
    assert seconds_until_start(position, concurrency, RUN, running) == pytest.approx(seconds)


def test_more_running_jobs_than_the_concurrency_count_as_places() -> None:
    # three run on a model thought to run one at a time: each frees a place
    assert seconds_until_start(2, 1, RUN, [9.0, 8.0, 7.0]) == pytest.approx(2.0)


# --- a job's estimate from Redis ---------------------------------------------------------------


class World:
    """Jobs of MODEL queued and claimed on one fake Redis, and the API's services on it."""

    def __init__(self, server: fakeredis.FakeServer, client: redis.Redis, **model: Any) -> None:
        self.server = server
        self.client = client
        self.store = JobStore(client, TTL, KEYS)
        config = ModelConfig.model_validate(
            {"uri": "http://model.test/predict", "task": "segmentation", "supports": ["/studies"]}
            | model
        )
        self.catalog = Catalog(servers={}, models={MODEL: config}, default_server_id="")
        self.now = time.time()

    def queue(self, count: int, model_id: str = MODEL) -> list[Job]:
        jobs = []
        for number in range(count):
            job = make_job(model_id=model_id, study_uid=f"1.2.3.{number}")
            Broker(self.server).submit(job)
            jobs.append(job)
        return jobs

    def claim(self, job: Job, seconds_ago: float) -> None:
        self.store.claim(job, f"token-{job.id}", LEASE)
        self.client.zadd(KEYS.running, {job.id: time.time() - seconds_ago})
        self.client.hset(KEYS.job(job.id), "started_at", repr(time.time() - seconds_ago))

    def history(self, run: float = RUN) -> None:
        durations = RunDurations(queue_wait=1.0, fetch=2.0, inference=run - 2.0, run=run)
        record_run_durations(self.client, KEYS, MODEL, durations, weight=0.3, ttl_seconds=TTL)

    def run(self, operation: Callable[[BrokerServices], Awaitable[T]]) -> T:
        def on(client: Any) -> Awaitable[T]:
            jobs = AsyncJobStore(client, TTL, KEYS)
            services = SimpleNamespace(jobs=jobs, catalog=self.catalog, settings=Settings())
            return operation(cast(BrokerServices, services))

        return on_async_client(self.server, on)

    def estimate(self, job: Job) -> JobEstimate:
        current = self.store.get(job.id)
        assert current is not None
        return self.run(lambda services: estimate_job(services, current, now=self.now))


def test_without_history_a_queued_job_has_its_place_and_no_times(
    server: fakeredis.FakeServer, client: redis.Redis
) -> None:
    world = World(server, client, maxConcurrency=1)
    jobs = world.queue(3)

    estimates = [world.estimate(job) for job in jobs]

    assert [e.queue for e in estimates] == [QueuePlace(n, n - 1, 1) for n in (1, 2, 3)]
    assert all(e.start_at is None and e.finish_at is None for e in estimates)


def test_with_one_run_recorded_the_times_follow_the_place(
    server: fakeredis.FakeServer, client: redis.Redis
) -> None:
    world = World(server, client, maxConcurrency=1)
    running, *queued = world.queue(3)
    world.claim(running, seconds_ago=4.0)
    world.history()

    second = world.estimate(queued[1])

    assert second.queue == QueuePlace(2, 1, 1)
    assert second.start_at == pytest.approx(world.now + 6.0 + RUN, abs=0.5)
    assert second.finish_at == pytest.approx(world.now + 6.0 + 2 * RUN, abs=0.5)
    ongoing = world.estimate(running)
    assert ongoing.queue is None and ongoing.start_at is None
    assert ongoing.finish_at == pytest.approx(world.now + 6.0, abs=0.5)


def test_with_concurrency_two_two_jobs_run_in_each_wave(
    server: fakeredis.FakeServer, client: redis.Redis
) -> None:
    world = World(server, client, maxConcurrency=2)
    jobs = world.queue(4)
    world.history()

    starts = [world.estimate(job).start_at for job in jobs]

    offsets = [start - world.now for start in starts if start is not None]
    assert offsets == pytest.approx([0.0, 0.0, RUN, RUN], abs=0.5)


def test_running_jobs_of_other_models_do_not_delay_it(
    server: fakeredis.FakeServer, client: redis.Redis
) -> None:
    world = World(server, client, maxConcurrency=1)
    (other,) = world.queue(1, model_id=OTHER_MODEL)
    world.claim(other, seconds_ago=1.0)
    (job,) = world.queue(1)
    world.history()

    assert world.estimate(job).start_at == pytest.approx(world.now, abs=0.5)


def test_without_max_concurrency_the_live_workers_on_its_queue_set_it(
    server: fakeredis.FakeServer, client: redis.Redis
) -> None:
    world = World(server, client)
    (job,) = world.queue(1)
    assert world.estimate(job).queue == QueuePlace(1, 0, 1)  # no worker announced: 1

    announce_consumer(client, KEYS, [job.queue], "worker-a", 3, ttl_seconds=30)
    announce_consumer(client, KEYS, ["elsewhere"], "worker-b", 8, ttl_seconds=30)

    assert world.estimate(job).queue == QueuePlace(1, 0, 3)


def test_a_finished_job_has_no_estimate(server: fakeredis.FakeServer, client: redis.Redis) -> None:
    world = World(server, client, maxConcurrency=1)
    (job,) = world.queue(1)
    world.history()
    world.claim(job, seconds_ago=1.0)
    world.store.succeed(job, f"token-{job.id}", b"{}")

    assert world.estimate(job) == JobEstimate()


def test_the_rendered_resource_shows_the_place_and_iso_times_while_queued(
    server: fakeredis.FakeServer, client: redis.Redis
) -> None:
    world = World(server, client, maxConcurrency=1)
    _, second = world.queue(2)
    world.history()
    job = world.store.get(second.id)
    assert job is not None

    body = world.run(lambda services: render_job(services, job))

    assert body["queue"] == {"position": 2, "ahead": 1, "concurrency": 1}
    start = dt.datetime.fromisoformat(body["estimatedStartAt"])
    finish = dt.datetime.fromisoformat(body["estimatedFinishAt"])
    assert (finish - start).total_seconds() == pytest.approx(RUN)
    assert "requestedBy" not in body


def test_a_job_claimed_between_its_read_and_its_render_is_shown_as_it_is_now(
    server: fakeredis.FakeServer, client: redis.Redis
) -> None:
    world = World(server, client, maxConcurrency=1)
    (job,) = world.queue(1)
    read = world.store.get(job.id)
    assert read is not None and read.state is JobState.QUEUED
    world.claim(job, seconds_ago=0.0)

    stale = world.run(lambda services: estimate_job(services, read))
    body = world.run(lambda services: render_job(services, read))

    assert stale is None  # the record read says queued, the queue no longer has it
    assert body["state"] == "fetching"  # never "queued" without a place in the queue
    assert body["queue"] is None
