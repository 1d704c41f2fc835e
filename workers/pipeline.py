"""One inference job from start to end: claim it, fetch from the PACS, call the model, record.

A job is claimed with a lease that a heartbeat (:mod:`workers.lease`) renews while the worker
lives; a worker that dies lets it lapse and the reaper (:mod:`workers.reaper`) queues the job
again. Progress is written as instances arrive; every write tells whether the job was cancelled
meanwhile, and the run stops there. A transient failure (:mod:`workers.retry`) is tried again in
the same claim, within the job's time limit; any other error fails the job with its code.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from contextlib import closing
from dataclasses import dataclass, field
from enum import Enum

from model_proxy.shared.config import ModelConfig
from model_proxy.shared.dicomweb.source import DicomWebSource
from model_proxy.shared.errors import InternalError, ModelProxyError, ModelTimeout, QueueUnavailable
from model_proxy.shared.inputs import InputPlan, InstanceList, Keyed, SingleInstance, plan_inputs
from model_proxy.shared.jobs import Claim, Job, JobState, JobStore, Slot, Written
from model_proxy.shared.model_body import open_model_body
from model_proxy.workers.context import WorkerContext
from model_proxy.workers.lease import LeaseHeartbeat
from model_proxy.workers.retry import RetryPolicy
from model_proxy.workers.timings import StageTimings, record_finished_run

__all__ = ["JobRunResult", "JobStopped", "run_job"]

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 0.25  # seconds between progress writes


class JobRunResult(Enum):
    """What :func:`run_job` tells the task: the job is dealt with, or it must come back."""

    DONE = "done"  # finished, failed, stopped, or nothing to do
    DEFERRED = "deferred"  # the model has no free place: try again shortly


class JobStopped(Exception):
    """The job was cancelled, or its lease went to another worker: stop without writing."""

    def __init__(self, written: Written) -> None:
        super().__init__(written.value)
        self.written = written


@dataclass
class _ClaimedRun:
    """A claimed job: its guarded writes, throttled progress, deadline and lease state."""

    store: JobStore
    job: Job
    token: str
    deadline: float  # time.monotonic() past which the job has run too long
    lease_lost: threading.Event = field(default_factory=threading.Event)
    _last_progress: float = 0.0

    def write(self, fields: dict[str, str], announce: bool = True) -> None:
        written = self.store.update(self.job.id, self.token, fields, announce)
        if written is not Written.DONE:
            raise JobStopped(written)

    def write_progress(self, fields: dict[str, str]) -> None:
        """A progress write: skipped while Redis is away, so a blip never aborts a model call."""
        try:
            self.write(fields, announce=False)
        except QueueUnavailable:
            log.warning("job=%s stage=progress skipped: Redis cannot be reached", self.job.id)

    def check(self) -> None:
        if self.lease_lost.is_set():
            raise JobStopped(Written.LOST)
        if time.monotonic() > self.deadline:
            raise ModelTimeout("the job ran past its time limit")

    def time_left(self) -> float:
        return self.deadline - time.monotonic()

    def wait(self, seconds: float) -> None:
        """Sleep before a retry; stop at once if the lease goes to another worker meanwhile."""
        if self.lease_lost.wait(seconds):
            raise JobStopped(Written.LOST)

    def progress(self, instances: int, fetched: int) -> None:
        now = time.monotonic()
        if now - self._last_progress < _PROGRESS_EVERY:
            return
        self._last_progress = now
        self.check()
        self.write_progress({"instances_fetched": str(instances), "bytes_fetched": str(fetched)})


def run_job(job_id: str, context: WorkerContext, policy: RetryPolicy | None = None) -> JobRunResult:
    """Run one job to its end and record how it ended in its job record.

    Nothing happens when the job is unknown, already finished, or held by another worker. When
    its model limits concurrent calls and none is free, the job is left as it is and
    :attr:`JobRunResult.DEFERRED` asks the task to come back. Otherwise the job is claimed, its
    DICOM fetched and sent to the model, and the record ends ``succeeded`` with the answer or
    ``failed`` with the error's code; transient failures are first retried as ``policy`` says
    (by default the one of ``context.settings``). Errors of Redis before the claim propagate,
    for the task to retry.
    """
    store = context.store
    job = store.get(job_id)
    if job is None or job.state.finished:
        log.info("job=%s stage=skipped reason=%s", job_id, "missing" if job is None else job.state)
        return JobRunResult.DONE
    model_id = job.request.model_id
    try:
        model = context.catalog.model(model_id)
    except ModelProxyError:
        model = None
    limit = model.max_concurrency if model is not None else None
    if limit is not None:
        hold = context.settings.job_lease_seconds
        if store.acquire_slot(model_id, job.id, limit, hold) is Slot.FULL:
            return JobRunResult.DEFERRED
    try:
        _run_claimed(job, model, context, policy or RetryPolicy.from_settings(context.settings))
    finally:
        if limit is not None:
            store.release_slot(model_id, job.id)
    return JobRunResult.DONE


def _run_claimed(
    job: Job, model: ModelConfig | None, context: WorkerContext, policy: RetryPolicy
) -> None:
    settings, store = context.settings, context.store
    token = uuid.uuid4().hex
    claim = store.claim(job, token, settings.job_lease_seconds)
    if claim is not Claim.CLAIMED:
        log.info("job=%s stage=skipped reason=%s", job.id, claim.value)
        return
    time_limit = model.time_limit if model and model.time_limit else settings.job_time_limit
    heartbeat = LeaseHeartbeat(
        store,
        job,
        token,
        settings.job_lease_seconds,
        renew_slot=model is not None and model.max_concurrency is not None,
    )
    run = _ClaimedRun(store, job, token, time.monotonic() + time_limit, heartbeat.lost)
    timings = StageTimings(queue_wait=max(time.time() - job.created_at, 0.0))
    started = time.perf_counter()
    _log_claimed(job, timings)
    with heartbeat:
        try:
            ending = _run_to_end(run, context, policy, timings)
        finally:
            _release_lease(store, job, token)
    record_finished_run(context.metrics, job, ending, timings, time.perf_counter() - started)


def _log_claimed(job: Job, timings: StageTimings) -> None:
    # one line per stage, key=value: the job id, durations and outcome; no UIDs, no secrets
    request = job.request
    log.info(
        "job=%s stage=claimed attempt=%d task=%s model=%s server=%s level=%s queue_wait_s=%.3f",
        job.id,
        job.attempts + 1,
        request.task.value,
        request.model_id,
        request.server_id,
        request.level.value,
        timings.queue_wait,
    )


def _run_to_end(
    run: _ClaimedRun, context: WorkerContext, policy: RetryPolicy, timings: StageTimings
) -> str:
    """Run the claimed job and record how it ended; returns the ending's label.

    The label is ``succeeded``, ``failed_<code>``, ``stopped_<why>`` (cancelled or taken over
    while running) or ``dropped_<why>`` (the same, noticed when storing the answer).
    """
    try:
        result = _call_model_with_retries(run, context, policy, timings)
        return _store_result(run, result, policy)
    except JobStopped as stopped:
        return f"stopped_{stopped.written.value}"
    except ModelProxyError as error:
        return _fail(run, error)
    except Exception:
        log.exception("job=%s stage=error unexpected failure", run.job.id)
        return _fail(run, InternalError("the inference failed unexpectedly; see the worker log"))


def _call_model_with_retries(
    run: _ClaimedRun, context: WorkerContext, policy: RetryPolicy, timings: StageTimings
) -> bytes:
    """Fetch and call the model until it answers; the last error when the policy gives up.

    Each retry is a new attempt in the job record: back to ``fetching``, progress from zero,
    ``attempts`` counted up.
    """
    job = run.job
    attempts = job.attempts + 1  # the claim counted this run
    waited = 0.0
    while True:
        try:
            if attempts > job.attempts + 1:
                run.write(
                    {
                        "state": JobState.FETCHING.value,
                        "attempts": str(attempts),
                        "instances_fetched": "0",
                        "bytes_fetched": "0",
                    }
                )
            return _fetch_and_call_model(run, context, timings)
        except ModelProxyError as error:
            delay = policy.delay_before_retry(error, attempts, waited, run.time_left())
            if delay is None:
                raise
            log.warning(
                "job=%s stage=retry attempt=%d error=%s wait_s=%.3f",
                job.id,
                attempts,
                error.code,
                delay,
            )
        run.wait(delay)
        waited += delay
        attempts += 1


def _store_result(run: _ClaimedRun, result: bytes, policy: RetryPolicy) -> str:
    """Record the model's answer; a Redis blip is retried here, never by calling the model again."""
    tries, waited = 1, 0.0
    while True:
        try:
            written = run.store.succeed(run.job, run.token, result)
        except QueueUnavailable as error:
            delay = policy.delay_before_retry(error, tries, waited)
            if delay is None:
                raise
            log.warning("job=%s stage=store retry=%d wait_s=%.3f", run.job.id, tries, delay)
            run.wait(delay)
            tries, waited = tries + 1, waited + delay
            continue
        return "succeeded" if written is Written.DONE else f"dropped_{written.value}"


def _fail(run: _ClaimedRun, error: ModelProxyError) -> str:
    run.store.fail(run.job, run.token, error)
    return f"failed_{error.code}"


def _release_lease(store: JobStore, job: Job, token: str) -> None:
    try:
        store.release_lease(job.id, token)
    except QueueUnavailable:
        log.warning("job=%s stage=release skipped: Redis cannot be reached", job.id)


def _fetch_and_call_model(run: _ClaimedRun, context: WorkerContext, timings: StageTimings) -> bytes:
    """One attempt: open the PACS retrieves, stream them to the model, return its answer."""
    job = run.job
    request = job.request
    model = context.catalog.model(request.model_id)
    source = context.sources.source_for(request.server_id, request.model_id)
    plan = plan_inputs(request, model)
    total = _count_instances(plan, source)
    if total is not None:
        run.write({"instances_total": str(total)}, announce=False)
    body = open_model_body(plan, source)
    with closing(body):
        body.on_instance = run.progress
        run.check()
        run.write({"state": JobState.INFERRING.value, "inferring_at": repr(time.time())})
        log.info("job=%s stage=inferring instances_total=%s", job.id, total)
        remaining = max(run.time_left(), 1.0)
        called = time.perf_counter()
        try:
            result = context.model_client.infer(request.model_id, model.uri, body, remaining)
        finally:
            timings.model_call += time.perf_counter() - called
            timings.fetch += body.fetch_seconds
            timings.encode += body.encode_seconds
            timings.instances += body.instances_sent
            timings.nbytes += body.bytes_fetched
    run.write_progress(
        {"instances_fetched": str(body.instances_sent), "bytes_fetched": str(body.bytes_fetched)}
    )
    run.check()
    return result


def _count_instances(plan: InputPlan, source: DicomWebSource) -> int | None:
    """The instances the plan will send, when the PACS says how many a series has."""
    if isinstance(plan, SingleInstance):
        return 1
    if isinstance(plan, InstanceList):
        return source.count_instances(plan.study_uid, plan.series_uid)
    assert isinstance(plan, Keyed)
    counts = [_count_instances(inner, source) for _, inner in plan.entries]
    return None if None in counts else sum(c for c in counts if c is not None)
