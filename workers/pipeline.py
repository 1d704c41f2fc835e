"""One inference job from start to end: claim it, fetch from the PACS, call the model, record.

A job is claimed with a lease that a heartbeat renews while the worker lives; a worker that
dies lets it lapse and the reaper (:mod:`workers.reaper`) queues the job again. Progress is
written as instances arrive; every write tells whether the job was cancelled meanwhile, and the
run stops there.
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
from model_proxy.shared.errors import InternalError, ModelProxyError, ModelTimeout
from model_proxy.shared.inputs import InputPlan, InstanceList, Keyed, SingleInstance, plan_inputs
from model_proxy.shared.jobs import Claim, Job, JobState, JobStore, Lease, Slot, Written
from model_proxy.shared.model_body import open_model_body
from model_proxy.workers.context import WorkerContext

__all__ = ["Outcome", "run_job"]

log = logging.getLogger(__name__)

_PROGRESS_EVERY = 0.25  # seconds between progress writes


class Outcome(Enum):
    DONE = "done"  # finished, failed, stopped, or nothing to do
    DEFERRED = "deferred"  # the model has no free place: try again shortly


class JobStopped(Exception):
    """The job was cancelled, or its lease went to another worker: stop without writing."""

    def __init__(self, written: Written) -> None:
        super().__init__(written.value)
        self.written = written


@dataclass
class _Run:
    """A claimed job: its writes, throttled progress and the lease heartbeat."""

    store: JobStore
    job: Job
    token: str
    lease_seconds: float
    deadline: float
    lease_lost: threading.Event = field(default_factory=threading.Event)
    _stop_heartbeat: threading.Event = field(default_factory=threading.Event)
    _last_progress: float = 0.0

    def write(self, fields: dict[str, str], announce: bool = True) -> None:
        written = self.store.update(self.job.id, self.token, fields, announce)
        if written is not Written.DONE:
            raise JobStopped(written)

    def check(self) -> None:
        if self.lease_lost.is_set():
            raise JobStopped(Written.LOST)
        if time.monotonic() > self.deadline:
            raise ModelTimeout("the job ran past its time limit")

    def progress(self, instances: int, fetched: int) -> None:
        now = time.monotonic()
        if now - self._last_progress < _PROGRESS_EVERY:
            return
        self._last_progress = now
        self.check()
        self.write(
            {"instances_fetched": str(instances), "bytes_fetched": str(fetched)}, announce=False
        )

    def heartbeat(self, renew_slot: bool) -> None:
        interval = self.lease_seconds / 3
        while not self._stop_heartbeat.wait(interval):
            try:
                lease = self.store.renew_lease(self.job.id, self.token, self.lease_seconds)
                if renew_slot:
                    model = self.job.request.model_id
                    self.store.renew_slot(model, self.job.id, self.lease_seconds)
            except ModelProxyError:
                continue  # Redis away for a moment: the lease outlasts a few misses
            if lease is Lease.LOST:
                self.lease_lost.set()
                return

    def stop_heartbeat(self) -> None:
        self._stop_heartbeat.set()


def run_job(job_id: str, context: WorkerContext) -> Outcome:
    """Run the job unless it is unknown, finished, or held by another worker."""
    store = context.store
    job = store.get(job_id)
    if job is None or job.state.finished:
        log.info("job=%s stage=skipped reason=%s", job_id, "missing" if job is None else job.state)
        return Outcome.DONE
    model_id = job.request.model_id
    try:
        model = context.catalog.model(model_id)
    except ModelProxyError:
        model = None
    if model is not None and model.max_concurrency is not None:
        hold = context.settings.job_lease_seconds
        if store.acquire_slot(model_id, job.id, model.max_concurrency, hold) is Slot.FULL:
            return Outcome.DEFERRED
    try:
        _run_claimed(job, model, context)
    finally:
        if model is not None and model.max_concurrency is not None:
            store.release_slot(model_id, job.id)
    return Outcome.DONE


@dataclass
class _Timings:
    """Where a job's time went, for the stage log lines and the stage histograms."""

    queue_wait: float = 0.0
    fetch: float = 0.0
    encode: float = 0.0
    model_call: float = 0.0
    instances: int = 0
    nbytes: int = 0

    def log_fields(self) -> str:
        return (
            f"queue_wait_s={self.queue_wait:.3f} fetch_s={self.fetch:.3f} "
            f"encode_s={self.encode:.3f} model_s={self.model_call:.3f} "
            f"instances={self.instances} bytes={self.nbytes}"
        )


def _run_claimed(job: Job, model: ModelConfig | None, context: WorkerContext) -> None:
    settings = context.settings
    token = uuid.uuid4().hex
    claim = context.store.claim(job, token, settings.job_lease_seconds)
    if claim is not Claim.CLAIMED:
        log.info("job=%s stage=skipped reason=%s", job.id, claim.value)
        return
    time_limit = model.time_limit if model and model.time_limit else settings.job_time_limit
    run = _Run(context.store, job, token, settings.job_lease_seconds, time.monotonic() + time_limit)
    heartbeat = threading.Thread(
        target=run.heartbeat,
        args=(model is not None and model.max_concurrency is not None,),
        name=f"lease-{job.id[:8]}",
        daemon=True,
    )
    heartbeat.start()
    request = job.request
    timings = _Timings(queue_wait=max(time.time() - job.created_at, 0.0))
    started = time.perf_counter()
    # one line per stage, key=value: the job id, durations and outcome; no UIDs, no secrets
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
    outcome = "succeeded"
    try:
        result = _infer(job, run, context, timings)
        written = context.store.succeed(job, token, result)
        if written is not Written.DONE:
            outcome = f"dropped_{written.value}"
    except JobStopped as stopped:
        outcome = f"stopped_{stopped.written.value}"
    except ModelProxyError as error:
        outcome = f"failed_{error.code}"
        context.store.fail(job, token, error)
    except Exception:
        log.exception("job=%s stage=error unexpected failure", job.id)
        outcome = "failed_internal_error"
        unexpected = InternalError("the inference failed unexpectedly; see the worker log")
        context.store.fail(job, token, unexpected)
    finally:
        run.stop_heartbeat()
        context.store.release_lease(job.id, token)
    total = time.perf_counter() - started
    level = logging.INFO if outcome == "succeeded" else logging.WARNING
    log.log(
        level,
        "job=%s stage=finished outcome=%s total_s=%.3f %s",
        job.id,
        outcome,
        total,
        timings.log_fields(),
    )
    _record(context, job, outcome, timings, total)


def _record(
    context: WorkerContext, job: Job, outcome: str, timings: _Timings, total: float
) -> None:
    metrics = context.metrics
    model, server = job.request.model_id, job.request.server_id
    metrics.inc("jobs", {"model": model, "server": server, "outcome": outcome})
    metrics.inc("bytes_fetched", {"server": server}, timings.nbytes)
    metrics.inc("instances_fetched", {"server": server}, timings.instances)
    for stage, seconds in (
        ("queue_wait", timings.queue_wait),
        ("fetch", timings.fetch),
        ("encode", timings.encode),
        ("model_call", timings.model_call),
        ("total", total),
    ):
        metrics.observe("stage_seconds", {"stage": stage, "model": model}, seconds)


def _infer(job: Job, run: _Run, context: WorkerContext, timings: _Timings) -> bytes:
    request = job.request
    model = context.catalog.model(request.model_id)
    source = context.sources.source_for(request.server_id)
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
        remaining = max(run.deadline - time.monotonic(), 1.0)
        called = time.perf_counter()
        try:
            result = context.model_client.infer(request.model_id, model.uri, body, remaining)
        finally:
            timings.model_call = time.perf_counter() - called
            timings.fetch, timings.encode = body.fetch_seconds, body.encode_seconds
            timings.instances, timings.nbytes = body.instances_sent, body.bytes_fetched
    run.write(
        {"instances_fetched": str(body.instances_sent), "bytes_fetched": str(body.bytes_fetched)},
        announce=False,
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
