"""The inference service behind the viewer's routes and ``POST /jobs``: validate, answer from the
cache, or record a job (or join the same one already running) for the caller, within its quota,
queue it, wait for it, and answer with it."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable
from functools import partial

from fastapi import Response

from model_proxy.broker.answers import accepted, answer_for_job, result_answer
from model_proxy.broker.audit import note_inference
from model_proxy.broker.callbacks import check_callback, register_callback
from model_proxy.broker.deps import AnswerOptions
from model_proxy.broker.errors import status_for
from model_proxy.broker.event_stream import event_stream_response, reserve_stream
from model_proxy.broker.idempotency import IdempotencyKey
from model_proxy.broker.jobs import wait_for_job
from model_proxy.broker.negotiation import Negotiated
from model_proxy.broker.requesters import Caller
from model_proxy.broker.services import BrokerServices
from model_proxy.broker.validation import ViewerPath, build_request
from model_proxy.shared.config import Task
from model_proxy.shared.errors import (
    ModelProxyError,
    QueueFull,
    TooManyJobs,
    UnknownJob,
)
from model_proxy.shared.jobs import Admission, Admitted, JobState, new_job, read_answer
from model_proxy.shared.request import InferenceRequest

__all__ = ["answer_viewer", "submit_job"]


async def answer_viewer(
    services: BrokerServices,
    task: Task,
    path: ViewerPath,
    options: AnswerOptions,
    who: Caller,
    client_gone: Callable[[], Awaitable[bool]],
    events: bool = False,
) -> Response:
    """Answer the viewer's GET and count the answer by route, model, server and status.

    With ``events`` (``Accept: text/event-stream``) the answer is the job's event stream
    (:mod:`~model_proxy.broker.event_stream`), whose ``end`` event links to the result.

    ``who`` is recorded as a requester of the job; ``client_gone`` says whether the client
    still waits for the answer: the wait ends when it has gone, but the job runs on (a client
    that went away, a reload, a proxy that gave up, asks again and finds the answer; only a
    cancel, ``DELETE /jobs/{id}``, leaves a job)."""
    labels = _request_labels(services, task, path)
    try:
        inference = build_request(services.catalog, task, path, options.query)
        if events:
            response = await _stream_job(services, inference, options, who)
        else:
            response = await _answer(services, inference, options, who, client_gone)
    except ModelProxyError as error:
        services.metrics.add("requests", {**labels, "status": str(status_for(error))})
        raise
    services.metrics.add("requests", {**labels, "status": str(response.status_code)})
    return response


def _request_labels(services: BrokerServices, task: Task, path: ViewerPath) -> dict[str, str]:
    # only configured keys become label values: unknown ones would grow without bound
    catalog = services.catalog
    model = path.model_id.lower()
    server = (path.server_id or catalog.default_server_id).lower()
    return {
        "route": f"{task.route_prefix}:{path.level.name.lower()}",
        "model": model if model in catalog.models else "unknown",
        "server": server if server in catalog.servers else "unknown",
    }


async def submit_job(
    services: BrokerServices,
    inference: InferenceRequest,
    options: AnswerOptions,
    who: Caller,
    client_gone: Callable[[], Awaitable[bool]],
    key: IdempotencyKey | None = None,
) -> Response:
    """Answer a request submitted as JSON (``POST /jobs``), validated into ``inference``: as the
    viewer's routes answer (:func:`_answer`) and, given an ``Idempotency-Key``, with the key's
    job once it names one (:mod:`~model_proxy.broker.idempotency`): a retry never makes a
    second job."""
    if key is None:
        return await _answer(services, inference, options, who, client_gone)
    keys = services.idempotency
    claim = await keys.claim(who.requester, key)
    if claim.job_id is not None:  # a retry: the key's job, whatever became of it
        note_inference(inference, claim.job_id, "retry")
        return await _answer_job(services, claim.job_id, options, client_gone, waits=True)
    try:
        return await _answer(
            services, inference, options, who, client_gone, partial(keys.record, claim)
        )
    except BaseException:
        with contextlib.suppress(ModelProxyError):
            await keys.release(claim)  # no-op once the job was named; else a retry makes it
        raise


async def _answer(
    services: BrokerServices,
    inference: InferenceRequest,
    options: AnswerOptions,
    who: Caller,
    client_gone: Callable[[], Awaitable[bool]],
    on_job: Callable[[str], Awaitable[None]] | None = None,
) -> Response:
    """Answer from the cache, or with the job made or joined for ``inference``; ``on_job`` is
    told the id of the job that answers, before any wait. A ``callback`` is checked before any
    job is made, and registered with the job (a stored answer's job too: a finished job's
    callback is posted at once)."""
    if not options.fresh and options.callback is None:
        cached = await _cached_answer(services, inference, who, options.negotiated)
        if cached is not None:
            if on_job is not None:
                await on_job(cached[0])
            return cached[1]
    admitted = await _admit(services, inference, options, who)
    if on_job is not None:
        await on_job(admitted.job_id)
    waits = admitted.admission is not Admission.CACHED
    return await _answer_job(services, admitted.job_id, options, client_gone, waits=waits)


async def _answer_job(
    services: BrokerServices,
    job_id: str,
    options: AnswerOptions,
    client_gone: Callable[[], Awaitable[bool]],
    *,
    waits: bool,
) -> Response:
    """The job's answer (:func:`answer_for_job`) once it finished, or 202 with it when it has
    not finished within the wait the options ask for (none with ``respond_async``)."""
    waits = waits and not options.respond_async
    wait = 0.0
    if waits:
        asked = options.wait_seconds
        wait = services.settings.sync_wait_seconds if asked is None else asked
    current = await wait_for_job(
        services.jobs, services.events, job_id, wait, client_gone if waits else None
    )
    if current is None:
        raise UnknownJob(f"job {job_id} has expired")
    if waits and not current.state.finished and await client_gone():
        # nobody reads it; the job runs on for the client's next ask
        return await accepted(services, current)
    return await answer_for_job(services, current, options.negotiated)


async def _stream_job(
    services: BrokerServices, inference: InferenceRequest, options: AnswerOptions, who: Caller
) -> Response:
    """The events of the request's job, created or joined as :func:`_answer` does (a stored
    answer's job when there is one: its stream is its ``end`` event), with its ``callback``.
    The stream's slot is taken first: a stream refused (503 ``busy``) makes no job."""
    slot = reserve_stream(services)
    try:
        admitted = await _admit(services, inference, options, who)
        job = await services.jobs.get(admitted.job_id)
        if job is None:
            raise UnknownJob(f"job {admitted.job_id} has expired")
    except BaseException:
        slot.release()
        raise
    return event_stream_response(services, job, who=who, slot=slot)


async def _admit(
    services: BrokerServices, inference: InferenceRequest, options: AnswerOptions, who: Caller
) -> Admitted:
    """The job made or joined for ``inference`` (:func:`_start_or_join_job`), with the options'
    ``callback`` checked before any job is made and registered with the job after."""
    callback = options.callback
    if callback is not None:
        check_callback(services, callback)
    admitted = await _start_or_join_job(services, inference, who, use_cached=not options.fresh)
    if callback is not None:
        await register_callback(services, admitted.job_id, callback, who.requester)
    return admitted


async def _cached_answer(
    services: BrokerServices, inference: InferenceRequest, who: Caller, wanted: Negotiated
) -> tuple[str, Response] | None:
    """The stored answer of an earlier job on the same request, if one is still kept, and the
    job's id. A named caller lists it among its jobs (one more round trip); an anonymous one is
    answered with the single lookup (none while the answer is kept in memory)."""
    fingerprint = inference.fingerprint()
    cached = services.results.get(fingerprint)
    if cached is None:
        stored = await services.jobs.cached(fingerprint)
        if stored is None:
            return None
        cached = stored[0], read_answer(stored[1])
        services.results.put(fingerprint, *cached)
    job_id, answer = cached
    services.metrics.add("cache_hits", {"model": inference.model_id})
    note_inference(inference, job_id, "cache")
    if not who.anonymous:
        await services.jobs.note_asked(who.requester, job_id)
    return job_id, result_answer(job_id, answer, wanted)


async def _start_or_join_job(
    services: BrokerServices, inference: InferenceRequest, who: Caller, *, use_cached: bool
) -> Admitted:
    """The job that answers ``inference``, asked for by ``who``: a new one, recorded then
    queued, or the same request's job already queued or running. Refused when the model's
    queue is full, or when ``who`` already waits for its limit of unfinished jobs."""
    settings = services.settings
    config = services.catalog.model(inference.model_id)
    limit = config.max_queued or settings.max_queued_per_model
    if await services.jobs.queued_count(inference.model_id) >= limit:
        raise QueueFull(
            f"model {inference.model_id} has {limit} jobs waiting; try again shortly",
            retry_after=settings.queue_full_retry_after,
        )
    job = new_job(inference, queue=config.queue or settings.queue_name)
    admitted = await services.jobs.create_or_attach(
        job, use_cached, who.requester, settings.max_queued_per_client
    )
    if admitted.admission is Admission.OVER_QUOTA:
        raise TooManyJobs(
            f"you already wait for {settings.max_queued_per_client} unfinished jobs; try again "
            "when one has finished",
            retry_after=settings.queue_full_retry_after,
        )
    note_inference(inference, admitted.job_id, "created" if admitted.created else "attached")
    if not admitted.created:
        services.metrics.add("shared_jobs", {"model": inference.model_id})
        return admitted
    try:
        await services.enqueue(job)
    except ModelProxyError as error:
        await services.jobs.terminate(job, JobState.FAILED, error)
        raise
    return admitted
