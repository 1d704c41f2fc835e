"""run_job on fakeredis with a fake PACS and a fake model: what the job record says at the end."""

from __future__ import annotations

import gzip
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, cast

import pytest
import redis

from model_proxy.shared.config import Catalog, ModelConfig
from model_proxy.shared.config.schema import Level, Task
from model_proxy.shared.dicomweb.sessions import ServerSessions
from model_proxy.shared.errors import (
    DicomNotFound,
    ModelFailed,
    ModelProxyError,
    ModelUnreachable,
    PacsFailed,
    PacsUnreachable,
    QueueUnavailable,
)
from model_proxy.shared.jobs import (
    Job,
    JobKeys,
    JobState,
    JobStore,
    Slot,
    StoredAnswer,
    decompressed_chunks,
    job_to_fields,
    new_job,
    read_answer,
)
from model_proxy.shared.metrics import Metrics
from model_proxy.shared.model_client import ModelClient
from model_proxy.shared.request import InferenceRequest
from model_proxy.shared.settings import Settings
from model_proxy.workers.context import WorkerContext
from model_proxy.workers.pipeline import JobRunResult, run_job
from model_proxy.workers.retry import RetryPolicy

MODEL_ID = "cf8063dc-d4bb-4b68-8e74-eba77c248c8b"
SERVER_ID = "b5208f48-f748-4339-9402-d1148dab571e"
TTL = 3600
KEYS = JobKeys()
INSTANCES = [b"first instance", b"second", b"third and last"]
ANSWER = b'{"1.2.3.1": {"label": "liver"}}'
# retries in microseconds: the policy's arithmetic is tested in test_retry.py
FAST = RetryPolicy(first_delay=0.001, max_delay=0.004, total_delay=1.0, max_attempts=3)


# --- fakes -------------------------------------------------------------------------------------


class FakeStream:
    """Plays InstanceStream: the instances of one retrieve."""

    def __init__(self, parts: list[bytes]) -> None:
        self._parts = parts
        self.bytes_read = 0
        self.read_seconds = 0.0
        self.series_counts: tuple[int | None, ...] | None = None

    def __iter__(self) -> Iterator[bytes]:
        for part in self._parts:
            self.bytes_read += len(part)
            yield part

    def close(self) -> None:
        pass


def whole_series(*uids: str | None) -> FakeStream:
    return FakeStream(INSTANCES)


@dataclass
class FakePacs:
    """Plays ServerSessions and the one DicomWebSource it hands out; ``open`` answers retrieves."""

    open: Callable[..., FakeStream] = whole_series
    retrieves: int = 0
    counts: int = 0
    server_id: str = SERVER_ID

    def source_for(self, server_id: str, model_id: str | None = None) -> FakePacs:
        return self

    def count_instances(self, study_uid: str, series_uid: str | None = None) -> int | None:
        self.counts += 1
        return len(INSTANCES)

    def retrieve(self, *uids: str | None) -> FakeStream:
        self.retrieves += 1
        return self.open(*uids)


@dataclass
class FakeModel:
    """Plays ModelClient: reads the whole body, then answers with ``answer(call number)``."""

    answer: Callable[[int], bytes]
    calls: int = 0
    bodies: list[bytes] = field(default_factory=list)
    headers: list[Mapping[str, str]] = field(default_factory=list)

    def infer(
        self,
        model_id: str,
        uri: str,
        body: Iterable[bytes] | bytes,
        time_left: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        self.calls += 1
        self.headers.append(headers or {})
        self.bodies.append(body if isinstance(body, bytes) else b"".join(body))
        return self.answer(self.calls)


def answers(*replies: bytes | ModelProxyError) -> Callable[[int], bytes]:
    """The model's replies in turn (the last one repeats): an answer, or an error it raises."""

    def answer(call: int) -> bytes:
        reply = replies[min(call, len(replies)) - 1]
        if isinstance(reply, ModelProxyError):
            raise reply
        return reply

    return answer


def model_config(**extra: Any) -> ModelConfig:
    return ModelConfig.model_validate(
        {
            "uri": "http://model.test/predict",
            "task": "segmentation",
            "supports": ["/studies/series"],
        }
        | extra
    )


@dataclass
class World:
    """A worker context on fakeredis, with the fakes it calls and the job it runs."""

    client: redis.Redis
    store: JobStore
    pacs: FakePacs
    model: FakeModel
    context: WorkerContext
    job: Job

    def run(self, policy: RetryPolicy = FAST) -> JobRunResult:
        return run_job(self.job.id, self.context, policy)

    def record(self) -> Job:
        found = self.store.get(self.job.id)
        assert found is not None
        return found

    def stored(self) -> StoredAnswer:
        value = self.store.get_result(self.job.id)
        assert value is not None
        return read_answer(value)

    def answer(self) -> bytes:
        """The JSON document the job's stored result holds."""
        return b"".join(decompressed_chunks(self.stored()))


def make_world(
    client: redis.Redis,
    model: ModelConfig | None = None,
    store: JobStore | None = None,
    settings: Settings | None = None,
) -> World:
    store = store or JobStore(client, TTL, KEYS)
    catalog = Catalog(servers={}, models={MODEL_ID: model or model_config()}, default_server_id="")
    pacs = FakePacs()
    fake_model = FakeModel(answers(ANSWER))
    context = WorkerContext(
        settings=settings or Settings(job_lease_seconds=30.0),
        redis=client,
        catalog=catalog,
        store=store,
        metrics=Metrics(client),
        sources=cast(ServerSessions, pacs),
        model_client=cast(ModelClient, fake_model),
    )
    request = InferenceRequest(
        task=Task.SEGMENTATION,
        model_id=MODEL_ID,
        server_id=SERVER_ID,
        level=Level.SERIES,
        study_uid="1.2.3",
        series_uid="1.2.3.1",
    )
    job = new_job(request, queue="inference")
    fields: dict[Any, Any] = job_to_fields(job)
    client.hset(KEYS.job(job.id), mapping=fields)
    client.zadd(KEYS.queued(MODEL_ID), {job.id: job.created_at})
    return World(client, store, pacs, fake_model, context, job)


@pytest.fixture
def world(client: redis.Redis) -> World:
    return make_world(client)


def error_of(job: Job) -> str | None:
    return None if job.error is None else job.error.code


# --- a job that works --------------------------------------------------------------------------


def test_a_job_that_works_ends_succeeded_with_the_answer_and_its_progress(
    world: World, client: redis.Redis
) -> None:
    assert world.run() is JobRunResult.DONE

    job = world.record()
    assert job.state is JobState.SUCCEEDED
    assert error_of(job) is None
    assert job.attempts == 1
    assert job.instances_total == len(INSTANCES)
    assert job.instances_fetched == len(INSTANCES)
    assert job.bytes_fetched == sum(len(part) for part in INSTANCES)
    assert job.started_at is not None and job.inferring_at is not None
    assert world.answer() == ANSWER
    assert world.model.calls == 1
    assert client.get(KEYS.lease(job.id)) is None  # the lease is given back
    assert client.zscore(KEYS.running, job.id) is None


def test_a_json_model_gets_the_zhiva_body(world: World) -> None:
    world.run()

    assert world.model.headers == [{"Content-Type": "application/json"}]
    assert world.model.bodies[0].startswith(b'["[')


def test_a_multipart_model_gets_the_files_as_they_are(client: redis.Redis) -> None:
    world = make_world(client, model_config(transport="multipart"))
    assert world.run() is JobRunResult.DONE

    assert world.record().state is JobState.SUCCEEDED
    [headers] = world.model.headers
    content_type = headers["Content-Type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    assert headers["X-Model-Proxy-Level"] == "/studies/series"
    boundary = content_type.rsplit("=", 1)[1].encode()
    parts = world.model.bodies[0].split(b"--" + boundary)
    files = [part.split(b"\r\n\r\n", 1)[1][:-2] for part in parts[1:-1]]
    assert files == INSTANCES
    assert parts[-1] == b"--\r\n"


def _mask_answer(slices: int) -> bytes:
    """A segmentation-like answer: rows of 0/1 values, mostly runs, some noise."""
    rng = random.Random(7)
    row = ",".join(
        "1" if 20 < column < 200 or rng.random() < 0.05 else "0" for column in range(256)
    )
    return ("{" + ",".join(f'"1.2.{i}":[[{row}]]' for i in range(slices)) + "}").encode()


def test_a_large_answer_is_stored_gzipped_once_and_decompresses_to_what_the_model_said(
    client: redis.Redis,
) -> None:
    document = _mask_answer(200)
    world = make_world(client)
    world.model.answer = answers(document)
    world.run()
    stored = world.stored()
    assert stored.gzipped
    assert gzip.decompress(stored.body) == document
    assert stored.size == len(document)
    assert len(stored.body) * 10 < len(document)
    assert world.answer() == document


def test_with_compression_off_the_answer_is_stored_as_the_model_said(client: redis.Redis) -> None:
    document = _mask_answer(200)
    world = make_world(client, settings=Settings(job_lease_seconds=30.0, answer_gzip_level=0))
    world.model.answer = answers(document)
    world.run()
    stored = world.stored()
    assert not stored.gzipped
    assert stored.body == document


def test_a_small_answer_stays_uncompressed(world: World) -> None:
    world.run()
    assert world.record().state is JobState.SUCCEEDED
    assert not world.stored().gzipped
    assert world.stored().body == ANSWER


def test_a_finished_job_runs_no_more(world: World) -> None:
    world.run()
    world.run()

    assert world.model.calls == 1
    assert world.record().state is JobState.SUCCEEDED


def test_an_unknown_job_is_nothing_to_do(world: World) -> None:
    assert run_job("no-such-job", world.context, FAST) is JobRunResult.DONE
    assert world.model.calls == 0


def test_a_job_held_by_another_worker_is_left_to_it(world: World, client: redis.Redis) -> None:
    client.set(KEYS.lease(world.job.id), "another-worker", px=30_000)

    assert world.run() is JobRunResult.DONE

    assert world.model.calls == 0
    assert world.record().state is JobState.QUEUED


def test_a_model_without_a_free_place_defers_the_job_untouched(client: redis.Redis) -> None:
    world = make_world(client, model_config(maxConcurrency=1))
    assert world.store.acquire_slot(MODEL_ID, "another-job", 1, 30.0) is Slot.TAKEN

    assert world.run() is JobRunResult.DEFERRED

    assert world.model.calls == 0
    assert world.record().state is JobState.QUEUED


def test_a_model_with_a_limit_gets_its_place_back_after_the_job(client: redis.Redis) -> None:
    world = make_world(client, model_config(maxConcurrency=1))

    assert world.run() is JobRunResult.DONE

    assert world.record().state is JobState.SUCCEEDED
    assert client.zcard(KEYS.model_slots(MODEL_ID)) == 0


def test_a_duplicate_delivery_of_a_running_job_keeps_the_running_runs_place(
    client: redis.Redis,
) -> None:
    """maxConcurrency 1: while the first run calls the model, a second delivery of its job
    (another run: it waits for a place, or finds the job busy) must not free the first run's
    place for the next job."""
    world = make_world(client, model_config(maxConcurrency=1))
    waiting = new_job(world.job.request.model_copy(update={"series_uid": "1.2.3.9"}), "inference")
    client.hset(KEYS.job(waiting.id), mapping=cast(Any, job_to_fields(waiting)))
    during_the_call: list[JobRunResult] = []

    def answer(call: int) -> bytes:
        if call == 1:  # the first run is calling the model
            during_the_call.append(run_job(world.job.id, world.context, FAST))
            during_the_call.append(run_job(waiting.id, world.context, FAST))
        return ANSWER

    world.model.answer = answer

    assert world.run() is JobRunResult.DONE

    assert during_the_call[1] is JobRunResult.DEFERRED  # the next job waits for the place
    assert world.model.calls == 1
    waiting_now = world.store.get(waiting.id)
    assert waiting_now is not None and waiting_now.state is JobState.QUEUED
    assert world.record().state is JobState.SUCCEEDED
    assert client.zcard(KEYS.model_slots(MODEL_ID)) == 0


# --- permanent errors fail at once -------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ModelFailed("model m answered HTTP 500", status=500), "model_error"),
        (ModelFailed("model m answered HTTP 400", status=400), "model_error"),
    ],
)
def test_a_permanent_model_error_fails_the_job_at_once_with_its_code(
    world: World, error: ModelProxyError, code: str
) -> None:
    world.model.answer = answers(error)

    world.run()

    job = world.record()
    assert job.state is JobState.FAILED
    assert error_of(job) == code
    assert job.attempts == 1
    assert world.model.calls == 1
    assert world.store.get_result(job.id) is None


def test_a_series_the_pacs_does_not_have_fails_before_the_model_is_called(world: World) -> None:
    def missing(*uids: str | None) -> FakeStream:
        raise DicomNotFound("the series was not found on server s")

    world.pacs.open = missing

    world.run()

    job = world.record()
    assert (job.state, error_of(job), job.attempts) == (JobState.FAILED, "dicom_not_found", 1)
    assert world.pacs.retrieves == 1
    assert world.model.calls == 0


def test_an_unexpected_exception_fails_the_job_as_an_internal_error(world: World) -> None:
    def broken(call: int) -> bytes:
        raise RuntimeError("a bug, with details that stay in the log")

    world.model.answer = broken

    world.run()

    job = world.record()
    assert (job.state, error_of(job)) == (JobState.FAILED, "internal_error")
    assert job.error is not None and "details" not in job.error.message


# --- transient errors are retried --------------------------------------------------------------


def test_a_model_that_answers_503_once_is_called_again_and_the_job_succeeds(world: World) -> None:
    world.model.answer = answers(ModelFailed("model m answered HTTP 503", status=503), ANSWER)

    world.run()

    job = world.record()
    assert job.state is JobState.SUCCEEDED
    assert error_of(job) is None
    assert job.attempts == 2
    assert world.model.calls == 2
    assert world.model.bodies[0] == world.model.bodies[1]  # the second call got the whole body
    assert job.instances_fetched == len(INSTANCES)  # progress of the last attempt, not the sum
    assert world.answer() == ANSWER


def test_a_pacs_that_stays_unreachable_fails_with_pacs_unreachable_after_the_retries(
    world: World,
) -> None:
    def refused(*uids: str | None) -> FakeStream:
        raise PacsUnreachable("server s cannot be reached")

    world.pacs.open = refused

    world.run()

    job = world.record()
    assert (job.state, error_of(job)) == (JobState.FAILED, "pacs_unreachable")
    assert job.attempts == FAST.max_attempts
    assert world.pacs.retrieves == FAST.max_attempts
    assert world.model.calls == 0


def test_a_pacs_gateway_error_is_retried(world: World) -> None:
    calls: list[int] = []

    def flaky(*uids: str | None) -> FakeStream:
        calls.append(1)
        if len(calls) == 1:
            raise PacsFailed("server s answered HTTP 502", status=502)
        return FakeStream(INSTANCES)

    world.pacs.open = flaky

    world.run()

    job = world.record()
    assert (job.state, job.attempts, world.model.calls) == (JobState.SUCCEEDED, 2, 1)


def test_a_retry_never_starts_past_the_jobs_deadline(client: redis.Redis) -> None:
    world = make_world(client, model_config(timeLimit=0.2))
    world.model.answer = answers(ModelUnreachable("model m cannot be reached"))
    slow = RetryPolicy(first_delay=5.0, max_delay=5.0, total_delay=60.0, max_attempts=5)

    started = time.monotonic()
    world.run(slow)

    assert time.monotonic() - started < 1.0  # no 5 s wait: it would end past the time limit
    job = world.record()
    assert (job.state, error_of(job), job.attempts) == (JobState.FAILED, "model_unreachable", 1)
    assert world.model.calls == 1


def test_the_sum_of_the_waits_is_capped(world: World) -> None:
    world.model.answer = answers(ModelUnreachable("model m cannot be reached"))
    capped = RetryPolicy(
        first_delay=0.01, max_delay=0.01, total_delay=0.015, max_attempts=10, random=lambda: 1.0
    )

    world.run(capped)

    job = world.record()
    assert (job.state, error_of(job)) == (JobState.FAILED, "model_unreachable")
    assert world.model.calls == 2  # a second wait of 10 ms would pass 15 ms in all


def test_a_redis_blip_when_storing_the_answer_does_not_call_the_model_again(
    client: redis.Redis,
) -> None:
    class BlippingStore(JobStore):
        blips = 1

        def succeed(self, job: Job, token: str, result: bytes, *objects: Any) -> Any:
            if self.blips:
                self.blips -= 1
                raise QueueUnavailable("Redis cannot be reached")
            return super().succeed(job, token, result, *objects)

    world = make_world(client, store=BlippingStore(client, TTL, KEYS))

    world.run()

    job = world.record()
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)
    assert world.model.calls == 1
    assert world.answer() == ANSWER


def test_a_redis_blip_on_a_progress_write_does_not_abort_the_model_call(
    client: redis.Redis,
) -> None:
    class BlippingStore(JobStore):
        def update(self, job_id: str, token: str, fields: dict[str, str], announce: bool) -> Any:
            if "instances_fetched" in fields:
                raise QueueUnavailable("Redis cannot be reached")
            return super().update(job_id, token, fields, announce)

    world = make_world(client, store=BlippingStore(client, TTL, KEYS))

    world.run()

    job = world.record()
    assert (job.state, job.attempts) == (JobState.SUCCEEDED, 1)
    assert world.model.calls == 1


# --- the job stops when it is no longer this worker's ------------------------------------------


def test_a_job_cancelled_during_the_model_call_keeps_its_state_and_no_answer(
    world: World, client: redis.Redis
) -> None:
    def cancel_then_answer(call: int) -> bytes:
        client.hset(KEYS.job(world.job.id), "state", JobState.CANCELLED.value)
        return ANSWER

    world.model.answer = cancel_then_answer

    world.run()

    job = world.record()
    assert job.state is JobState.CANCELLED
    assert error_of(job) is None
    assert world.store.get_result(job.id) is None


def test_a_job_cancelled_while_waiting_to_retry_is_not_tried_again(
    world: World, client: redis.Redis
) -> None:
    def fail_then_cancel(call: int) -> bytes:
        client.hset(KEYS.job(world.job.id), "state", JobState.CANCELLED.value)
        raise ModelUnreachable("model m cannot be reached")

    world.model.answer = fail_then_cancel

    world.run()

    job = world.record()
    assert job.state is JobState.CANCELLED
    assert world.model.calls == 1


# --- UIDs read back from the record, the time limit, a stopping worker ------------------------


@pytest.mark.parametrize("field", ["study_uid", "series_uid"])
def test_a_record_with_a_uid_that_is_no_uid_fails_before_any_pacs_url(
    client: redis.Redis, field: str
) -> None:
    world = make_world(client)
    request = world.job.request.model_copy(update={field: "1.2/../../studies"})
    client.hset(KEYS.job(world.job.id), "request", request.model_dump_json())

    world.run()

    job = world.record()
    assert (job.state, error_of(job)) == (JobState.FAILED, "invalid_uid")
    assert world.pacs.retrieves == 0 and world.pacs.counts == 0
    assert world.model.calls == 0


def test_a_model_call_past_the_time_limit_fails_with_model_timeout(client: redis.Redis) -> None:
    world = make_world(client, model_config(timeLimit=0.2))

    def cut_at_the_deadline(call: int) -> bytes:
        time.sleep(0.3)  # as a trickling model would, until the cutoff closes its connection
        raise ModelUnreachable("model m cannot be reached")

    world.model.answer = cut_at_the_deadline

    world.run()

    job = world.record()
    assert (job.state, error_of(job)) == (JobState.FAILED, "model_timeout")
    assert job.error is not None and "time limit (0.2 s)" in job.error.message


def test_a_fetch_past_the_time_limit_fails_with_pacs_timeout(client: redis.Redis) -> None:
    world = make_world(client, model_config(timeLimit=0.2))

    def trickling(*uids: str | None) -> FakeStream:
        time.sleep(0.3)
        raise PacsUnreachable("server s cannot be reached")

    world.pacs.open = trickling

    world.run()

    job = world.record()
    assert (job.state, error_of(job)) == (JobState.FAILED, "pacs_timeout")
    assert world.model.calls == 0


def test_a_run_cut_by_a_stopping_worker_hands_its_job_back(
    world: World, client: redis.Redis
) -> None:
    def stopped_meanwhile(call: int) -> bytes:
        world.context.runs.stop(0.0)
        time.sleep(0.2)  # the grace period ends and the run's connections are cut
        raise ModelUnreachable("model m cannot be reached")

    world.model.answer = stopped_meanwhile

    assert world.run() is JobRunResult.HANDED_BACK

    job = world.record()
    assert (job.state, job.attempts, error_of(job)) == (JobState.QUEUED, 1, None)
    assert client.get(KEYS.lease(job.id)) is None
    assert client.zscore(KEYS.queued(MODEL_ID), job.id) is not None
    assert world.model.calls == 1  # no retry on a stopping worker


def test_a_stopping_worker_starts_no_new_job(world: World) -> None:
    world.context.runs.stop(30.0)

    assert world.run() is JobRunResult.HANDED_BACK

    assert world.record().state is JobState.QUEUED
    assert world.record().attempts == 0
    assert world.pacs.retrieves == 0


# --- the model's recent durations --------------------------------------------------------------


def test_a_run_that_answers_is_folded_into_its_models_recent_durations(
    world: World, client: redis.Redis
) -> None:
    world.run()

    recorded = client.hgetall(KEYS.durations(MODEL_ID))
    assert recorded[b"runs"] == b"1"
    assert float(recorded[b"run"]) >= float(recorded[b"inference"]) >= 0.0
    assert {b"queue_wait", b"fetch", b"updated_at"} <= set(recorded)


def test_a_run_that_fails_leaves_the_recent_durations_alone(
    world: World, client: redis.Redis
) -> None:
    world.model.answer = answers(ModelFailed("model m answered HTTP 500", status=500))

    world.run()

    assert world.record().state is JobState.FAILED
    assert client.exists(KEYS.durations(MODEL_ID)) == 0


# --- progress announced, throttled -------------------------------------------------------------


class _RecordingStore(JobStore):
    """The job store, noting the progress it wrote and announced."""

    def __init__(self, client: redis.Redis) -> None:
        super().__init__(client, TTL, KEYS)
        self.announced_progress: list[int] = []

    def update(self, job_id: str, token: str, fields: dict[str, str], announce: bool) -> Any:
        written = super().update(job_id, token, fields, announce)
        if announce and "instances_fetched" in fields:
            self.announced_progress.append(int(fields["instances_fetched"]))
        return written


@pytest.mark.parametrize(
    ("per_second", "expected"),
    [(1e9, [1, 2, 3]), (0.001, [1, 3])],
    ids=["every-instance", "first-and-last"],
)
def test_progress_is_announced_at_most_at_the_rate_and_always_at_the_total(
    client: redis.Redis, per_second: float, expected: list[int]
) -> None:
    store = _RecordingStore(client)
    settings = Settings(job_lease_seconds=30.0, progress_events_per_second=per_second)
    world = make_world(client, store=store, settings=settings)
    pubsub = client.pubsub()
    pubsub.subscribe(KEYS.events)
    pubsub.get_message()

    assert world.run() is JobRunResult.DONE

    assert store.announced_progress == expected  # the total once, never repeated at the end
    announced = [m["data"] for m in iter(pubsub.get_message, None)]
    pubsub.close()
    job_messages = [m for m in announced if m == world.job.id.encode()]
    # claim, each progress write, inferring, succeeded
    assert len(job_messages) == 3 + len(expected)
    assert world.record().instances_fetched == len(INSTANCES)
