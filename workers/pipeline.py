"""One inference job from start to end: claim it, fetch from the PACS, call the model, record.

A job is claimed with a lease that a heartbeat (:mod:`workers.lease`) renews while the worker
lives; a worker that dies lets it lapse and the reaper (:mod:`workers.reaper`) queues the job
again. Progress is written as instances arrive; every write tells whether the job was cancelled
meanwhile, and the run stops there. A transient failure (:mod:`workers.retry`) is tried again in
the same claim, within the job's time limit; any other error fails the job with its code. The
answer is gzipped once, here (``MODEL_PROXY_ANSWER_GZIP_LEVEL``), and stored so.

The time limit bounds the whole run in wall-clock time: a :class:`~workers.cutoff.Cutoff` cuts
the run's PACS and model connections at its deadline, even from a peer that trickles, and the job
fails with ``pacs_timeout`` (still fetching) or ``model_timeout`` (the model had the whole body).
A worker that stops (:mod:`workers.stopping`) cuts the runs that outlast its grace period; each
gives its job back at once (lease released, job queued again) and the task publishes it again.
UIDs read back from the job record are checked again before they go into a PACS URL.
"""

from __future__ import annotations

import logging
import math
import time
import uuid
from collections.abc import Iterator
from contextlib import closing
from dataclasses import dataclass
from enum import Enum

from model_proxy.shared.config import ModelConfig, Transport
from model_proxy.shared.dicomweb.source import DicomWebSource, InstanceStream
from model_proxy.shared.errors import (
    InternalError,
    ModelProxyError,
    ModelTimeout,
    PacsTimeout,
    QueueUnavailable,
)
from model_proxy.shared.inputs import InputPlan, InstanceList, Keyed, SingleInstance, plan_inputs
from model_proxy.shared.jobs import (
    Claim,
    Job,
    JobError,
    JobState,
    JobStore,
    Lease,
    Requeued,
    Slot,
    Written,
    pack_answer,
)
from model_proxy.shared.model_body import ModelBody, open_model_body
from model_proxy.shared.model_multipart import MultipartBody
from model_proxy.shared.request import InferenceRequest
from model_proxy.shared.uids import check_uid
from model_proxy.workers.context import WorkerContext
from model_proxy.workers.cutoff import Cutoff, CutReason
from model_proxy.workers.lease import LeaseHeartbeat
from model_proxy.workers.result_objects import ResultObjects, build_result_objects
from model_proxy.workers.result_series import own_series, without_own_series
from model_proxy.workers.result_store import StoredObjects, describe_objects, store_objects
from model_proxy.workers.retry import RetryPolicy
from model_proxy.workers.source_headers import SourceHeaders
from model_proxy.workers.timings import StageTimings, record_finished_run, remember_durations

__all__ = ["JobRunResult", "JobStopped", "run_job"]

log = logging.getLogger(__name__)


class JobRunResult(Enum):
    """What :func:`run_job` tells the task: the job is dealt with, or it must come back."""

    DONE = "done"  # finished, failed, stopped, or nothing to do
    DEFERRED = "deferred"  # the model has no free place: try again shortly
    HANDED_BACK = "handed_back"  # the worker is stopping; the job is queued: publish it again


class JobStopped(Exception):
    """The job was cancelled, or its lease went to another worker: stop without writing.

    ``why`` names the reason in the run's ending (``stopped_<why>``).
    """

    def __init__(self, why: str) -> None:
        super().__init__(why)
        self.why = why


class _HandedBack(JobStopped):
    """The worker is stopping and its grace period is over: give the job back."""

    def __init__(self) -> None:
        super().__init__(CutReason.HANDED_BACK.value)


_HANDED_BACK = "handed_back"  # the ending of a run that gave its job back


@dataclass
class _ClaimedRun:
    """A claimed job: its guarded writes, throttled progress, and its cutoff (deadline, lease
    lost, hand-back).

    Progress is written and announced (so event streams see it) at most once per
    ``progress_every`` seconds, and always when it reaches ``instances_total`` (or at the end
    of the fetch when the total is unknown), never twice the same."""

    store: JobStore
    job: Job
    token: str
    cutoff: Cutoff
    time_limit: float
    progress_every: float = 0.25
    instances_total: int | None = None
    body_sent: bool = False  # the model has received the whole body
    _last_progress: float = -math.inf
    _written_progress: tuple[int, int] | None = None

    def write(self, fields: dict[str, str], announce: bool = True) -> None:
        written = self.store.update(self.job.id, self.token, fields, announce)
        if written is not Written.DONE:
            raise JobStopped(written.value)

    def start_fetch(self, instances_total: int | None) -> None:
        """A new attempt's fetch begins: its progress starts from zero."""
        self.instances_total = instances_total
        self._last_progress, self._written_progress = -math.inf, None

    def write_progress(self, instances: int, fetched: int) -> None:
        """A progress write, announced: skipped when it says nothing new, and while Redis is
        away, so a blip never aborts a model call."""
        if self._written_progress == (instances, fetched):
            return
        fields = {"instances_fetched": str(instances), "bytes_fetched": str(fetched)}
        try:
            self.write(fields, announce=True)
        except QueueUnavailable:
            log.warning("job=%s stage=progress skipped: Redis cannot be reached", self.job.id)
            return
        self._written_progress = (instances, fetched)

    def check(self) -> None:
        """Raise what ends the run when it was cut off (or ran past its deadline)."""
        why = self.cutoff.why()
        if why is CutReason.LEASE_LOST:
            raise JobStopped(Written.LOST.value)
        if why is CutReason.HANDED_BACK:
            raise _HandedBack()
        if why is CutReason.DEADLINE:
            raise self._timed_out()

    def _timed_out(self) -> ModelProxyError:
        limit = f"the job ran past its time limit ({self.time_limit:g} s)"
        request = self.job.request
        if self.body_sent:
            return ModelTimeout(f"{limit} waiting for model {request.model_id}")
        return PacsTimeout(f"{limit} fetching from server {request.server_id}")

    def time_left(self) -> float:
        return self.cutoff.time_left()

    def wait(self, seconds: float) -> None:
        """Sleep before a retry; stop at once if the run is cut off meanwhile."""
        if self.cutoff.wait(seconds):
            self.check()

    def progress(self, instances: int, fetched: int) -> None:
        now = time.monotonic()
        last = self.instances_total is not None and instances >= self.instances_total
        if not last and now - self._last_progress < self.progress_every:
            return
        self._last_progress = now
        self.check()
        self.write_progress(instances, fetched)


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
    if context.runs.stopping:
        log.info("job=%s stage=skipped reason=worker_stopping", job_id)
        return JobRunResult.HANDED_BACK
    model_id = job.request.model_id
    try:
        model = context.catalog.model(model_id)
    except ModelProxyError:
        model = None
    limit = model.max_concurrency if model is not None else None
    token = uuid.uuid4().hex  # this run's: its lease and its model slot
    if limit is not None:
        hold = context.settings.job_lease_seconds
        if store.acquire_slot(model_id, token, limit, hold) is Slot.FULL:
            return JobRunResult.DEFERRED
    try:
        return _run_claimed(
            job, model, context, policy or RetryPolicy.from_settings(context.settings), token
        )
    finally:
        if limit is not None:
            store.release_slot(model_id, token)


def _run_claimed(
    job: Job, model: ModelConfig | None, context: WorkerContext, policy: RetryPolicy, token: str
) -> JobRunResult:
    settings, store = context.settings, context.store
    claim = store.claim(job, token, settings.job_lease_seconds)
    if claim is not Claim.CLAIMED:
        log.info("job=%s stage=skipped reason=%s", job.id, claim.value)
        return JobRunResult.DONE
    time_limit = model.time_limit if model and model.time_limit else settings.job_time_limit
    cutoff = Cutoff(time_limit)
    heartbeat = LeaseHeartbeat(
        store,
        job,
        token,
        settings.job_lease_seconds,
        renew_slot=model is not None and model.max_concurrency is not None,
        on_lost=lambda: cutoff.cut(CutReason.LEASE_LOST),
    )
    run = _ClaimedRun(
        store, job, token, cutoff, time_limit, 1.0 / context.settings.progress_events_per_second
    )
    timings = StageTimings(queue_wait=max(time.time() - job.created_at, 0.0))
    started = time.perf_counter()
    _log_claimed(job, timings)
    with heartbeat, context.runs.running(job.id, cutoff), cutoff:
        try:
            ending = _run_to_end(run, context, policy, timings)
        finally:
            _release_lease(store, job, token)
    total = time.perf_counter() - started
    record_finished_run(context.metrics, job, ending, timings, total)
    if ending == "succeeded":
        remember_durations(context.redis, store.keys, settings, job, timings, total)
    return JobRunResult.HANDED_BACK if ending == _HANDED_BACK else JobRunResult.DONE


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
    while running), ``dropped_<why>`` (the same, noticed when storing the answer) or
    ``handed_back`` (the worker stopped and queued the job again).
    """
    try:
        answer = _call_model_with_retries(run, context, policy, timings)
        settings = context.settings
        made = _result_objects(run, context, answer)
        kept = _stow_objects(run, context, policy, made)
        packed = pack_answer(
            answer.result, settings.answer_gzip_level, settings.answer_gzip_min_bytes
        )
        return _store_result(run, packed, made, kept, policy)
    except _HandedBack:
        return _hand_back(run, context.settings.max_attempts)
    except JobStopped as stopped:
        return f"stopped_{stopped.why}"
    except ModelProxyError as error:
        return _fail(run, error)
    except Exception:
        log.exception("job=%s stage=error unexpected failure", run.job.id)
        return _fail(run, InternalError("the inference failed unexpectedly; see the worker log"))


@dataclass(frozen=True)
class _Answer:
    """The model's answer, and the headers of the instances it was sent when they are kept."""

    result: bytes
    sources: SourceHeaders | None = None


def _result_objects(run: _ClaimedRun, context: WorkerContext, answer: _Answer) -> ResultObjects:
    """The DICOM objects the model's ``store`` asks for (none when it has no ``store``)."""
    model_id = run.job.request.model_id
    model = context.catalog.model(model_id)
    if model.store is None or answer.sources is None:
        return ResultObjects()
    started = time.perf_counter()
    made = build_result_objects(
        run.job.id,
        answer.result,
        answer.sources.headers,
        model_id,
        model,
        context.settings.max_result_object_bytes,
        answer.sources.problem(),
    )
    log.info(
        "job=%s stage=objects made=%d error=%s seconds=%.3f",
        run.job.id,
        len(made.objects),
        made.error.code if made.error else "-",
        time.perf_counter() - started,
    )
    return made


def _stow_objects(
    run: _ClaimedRun, context: WorkerContext, policy: RetryPolicy, made: ResultObjects
) -> StoredObjects:
    """Store the objects made into the source study on the model's ``store.server`` (default:
    the request's server); what it stored, and why not, go into the job record, never failing
    it (:mod:`~model_proxy.workers.result_store`)."""
    request = run.job.request
    model = context.catalog.model(request.model_id)
    server_id = (model.store.server if model.store else None) or request.server_id
    if not made.objects:
        return StoredObjects(())
    try:
        source = context.sources.source_for(server_id)
    except ModelProxyError as error:
        outputs = describe_objects(made.objects, server_id)
        return StoredObjects(outputs, JobError(code=error.code, message=error.message))
    kept = store_objects(
        run.job.id,
        made.objects,
        source,
        request.study_uid,
        policy,
        run.time_left,
        run.cutoff.wait,  # a cut run is not stopped here: the answer is recorded all the same
    )
    own_series(context).remember(request.study_uid, kept.outputs)
    return kept


def _call_model_with_retries(
    run: _ClaimedRun, context: WorkerContext, policy: RetryPolicy, timings: StageTimings
) -> _Answer:
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
        except Exception as error:
            run.check()  # cut off meanwhile: that is why the call failed
            if not isinstance(error, ModelProxyError):
                raise
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


def _store_result(
    run: _ClaimedRun,
    result: bytes,
    made: ResultObjects,
    kept: StoredObjects,
    policy: RetryPolicy,
) -> str:
    """Record the model's answer, packed (:func:`~model_proxy.shared.jobs.pack_answer`), with
    the DICOM objects made from it and what the PACS stored of them; a Redis blip is retried
    here, never by calling the model again."""
    tries, waited = 1, 0.0
    while True:
        try:
            written = run.store.succeed(
                run.job, run.token, result, made.objects, made.error, kept.outputs, kept.error
            )
        except QueueUnavailable as error:
            delay = policy.delay_before_retry(error, tries, waited)
            if delay is None:
                raise
            log.warning("job=%s stage=store retry=%d wait_s=%.3f", run.job.id, tries, delay)
            run.wait(delay)
            tries, waited = tries + 1, waited + delay
            continue
        return "succeeded" if written is Written.DONE else f"dropped_{written.value}"


def _hand_back(run: _ClaimedRun, max_attempts: int) -> str:
    """Give the job back at once: lease released, job queued again; the task publishes it."""
    job = run.job
    try:
        if run.store.release_lease(job.id, run.token) is not Lease.RELEASED:
            return f"stopped_{Written.LOST.value}"
        requeued = run.store.requeue_abandoned(job, max_attempts)
    except QueueUnavailable:
        # the lease lapses instead, and the reaper queues the job again
        log.warning("job=%s stage=stopping Redis cannot be reached to hand the job back", job.id)
        return "stopped_unreachable"
    if requeued is Requeued.REQUEUED:
        log.warning("job=%s stage=stopping handed back: queued again", job.id)
        return _HANDED_BACK
    if requeued is Requeued.FAILED:
        return "failed_worker_lost"
    return f"stopped_{requeued.value}"


def _fail(run: _ClaimedRun, error: ModelProxyError) -> str:
    run.store.fail(run.job, run.token, error)
    return f"failed_{error.code}"


def _release_lease(store: JobStore, job: Job, token: str) -> None:
    try:
        store.release_lease(job.id, token)
    except QueueUnavailable:
        log.warning("job=%s stage=release skipped: Redis cannot be reached", job.id)


def _fetch_and_call_model(
    run: _ClaimedRun, context: WorkerContext, timings: StageTimings
) -> _Answer:
    """One attempt: open the PACS retrieves, stream them to the model, return its answer (with
    the instances' headers when the model's answers become DICOM objects)."""
    job = run.job
    request = job.request
    model = context.catalog.model(request.model_id)
    source = context.sources.source_for(request.server_id, request.model_id)
    plan = plan_inputs(request, model)
    plan = without_own_series(plan, model, context)
    _check_uids(plan)
    body = _open_body(request, model, plan, source)
    try:
        total = _count_instances(plan, source, iter(body.streams))
    except BaseException:
        body.close()
        raise
    run.start_fetch(total)
    if total is not None:
        run.write({"instances_total": str(total)}, announce=False)
    sources = None
    if model.store is not None:
        sources = SourceHeaders(context.settings.max_source_header_bytes)
    with closing(body):
        body.on_instance = run.progress
        body.on_data = sources
        run.check()
        remaining = max(run.time_left(), 1.0)
        called = time.perf_counter()
        try:
            result = context.model_client.infer(
                request.model_id, model.uri, _sending(body, run), remaining, headers=body.headers
            )
        finally:
            timings.model_call += time.perf_counter() - called
            timings.fetch += body.fetch_seconds
            timings.encode += body.encode_seconds
            timings.instances += body.instances_sent
            timings.nbytes += body.bytes_fetched
    run.write_progress(body.instances_sent, body.bytes_fetched)
    run.check()
    return _Answer(result, sources)


def _open_body(
    request: InferenceRequest, model: ModelConfig, plan: InputPlan, source: DicomWebSource
) -> ModelBody:
    """The body in the model's ``transport``: the zhiva JSON body unless it asks for files."""
    if model.transport is Transport.MULTIPART:
        return MultipartBody.open(plan, source, level=request.level)
    return open_model_body(plan, source)


def _sending(body: ModelBody, run: _ClaimedRun) -> Iterator[bytes]:
    """The body's chunks, then the job is ``inferring``: the series streams to the model as it
    is fetched, so the job is ``fetching`` (its progress rising to the total) until the model
    has the whole input, and ``inferring`` while it computes its answer."""
    yield from body
    run.body_sent = True
    run.write_progress(body.instances_sent, body.bytes_fetched)
    try:
        run.write({"state": JobState.INFERRING.value, "inferring_at": repr(time.time())})
    except QueueUnavailable:  # a blip never aborts a model call; the state catches up at the end
        log.warning("job=%s stage=inferring not recorded: Redis cannot be reached", run.job.id)
        return
    log.info("job=%s stage=inferring instances=%s", run.job.id, body.instances_sent)


def _check_uids(plan: InputPlan) -> None:
    """Every UID of the plan is a DICOM UID, or :class:`~shared.errors.InvalidUid`.

    The UIDs come from the job record, which anything that reaches Redis can write (or an older
    version wrote): they are checked again here, before any of them goes into a PACS URL.
    """
    if isinstance(plan, Keyed):
        for _, inner in plan.entries:
            _check_uids(inner)
        return
    check_uid(plan.study_uid, "the study UID")
    if plan.series_uid is not None:
        check_uid(plan.series_uid, "the series UID")
    if isinstance(plan, SingleInstance):
        check_uid(plan.instance_uid, "the instance UID")


def _count_instances(
    plan: InputPlan, source: DicomWebSource, streams: Iterator[InstanceStream]
) -> int | None:
    """The instances the plan will send, when the PACS says how many a series has; ``streams``
    are the body's retrieves, one per leaf of the plan in its order. A study retrieved by its
    listed series (some left out) counts those series' instances from that list (no second
    query), and is unknown when the list does not give them all."""
    if isinstance(plan, SingleInstance):
        next(streams)
        return 1
    if isinstance(plan, InstanceList):
        listed = next(streams).series_counts
        if listed is not None:
            return None if None in listed else sum(c for c in listed if c is not None)
        return source.count_instances(plan.study_uid, plan.series_uid)
    assert isinstance(plan, Keyed)
    counts = [_count_instances(inner, source, streams) for _, inner in plan.entries]
    return None if None in counts else sum(c for c in counts if c is not None)
