"""Callbacks from the API's side: check a callback URL at submit, keep it beside its job, queue
its delivery when the job has ended, and show the callbacks in the job resource.

A worker delivers them (:mod:`model_proxy.workers.webhooks`); the records are
:mod:`model_proxy.shared.webhooks.records`.
"""

from __future__ import annotations

import time
from typing import Any

from model_proxy.broker.requesters import Caller
from model_proxy.broker.services import BrokerServices
from model_proxy.shared.errors import QueueUnavailable, TooManyCallbacks, UnknownJob
from model_proxy.shared.jobs import JobState
from model_proxy.shared.redis_errors import redis_errors
from model_proxy.shared.schemas import CallbackView
from model_proxy.shared.tasks import DELIVER_WEBHOOKS
from model_proxy.shared.webhooks import check_callback_url, parse_origins
from model_proxy.shared.webhooks.records import (
    Callback,
    CallbackFields,
    Registration,
    callbacks_from_fields,
    claim_unsent_call,
    new_claim,
    register_call,
    release_call,
)

__all__ = [
    "check_callback",
    "dispatch_callbacks",
    "job_callbacks",
    "register_callback",
    "shows_url",
]


def check_callback(services: BrokerServices, url: str) -> str:
    """``url`` when the settings allow it as a callback, else
    :class:`~model_proxy.shared.errors.CallbackNotAllowed` (422): call it before any job is
    made."""
    return check_callback_url(url, parse_origins(services.settings.callback_origins))


async def register_callback(
    services: BrokerServices, job_id: str, url: str, requester: str = ""
) -> None:
    """Keep ``url`` (checked again here) as a callback of job ``job_id``, given by
    ``requester``; the job's webhook is POSTed there when it ends, at once if it already has.
    A URL the job already has is kept once; past ``max_callbacks_per_job`` it is refused
    (422 ``too_many_callbacks``)."""
    settings = services.settings
    check_callback(services, url)
    fields = CallbackFields(settings.redis_prefix)
    registration, state = await services.jobs.run(
        register_call(
            fields,
            services.jobs.keys.job(job_id),
            job_id,
            url,
            requester,
            time.time(),
            settings.max_callbacks_per_job,
            settings.job_ttl_seconds,
        ),
    )
    if registration is Registration.MISSING:
        raise UnknownJob(f"job {job_id} has expired")
    if registration is Registration.FULL:
        raise TooManyCallbacks(
            f"job {job_id} already has {settings.max_callbacks_per_job} callbacks"
        )
    if JobState(state).finished:
        await dispatch_callbacks(services, job_id)


async def dispatch_callbacks(services: BrokerServices, job_id: str) -> None:
    """Queue the delivery of each callback of the ended job ``job_id`` not queued yet (each is
    queued once, whoever calls this: the worker that finished it, a cancel, a registration).
    When the broker refuses some, they are given back and
    :class:`~model_proxy.shared.errors.QueueUnavailable` is raised once the others were
    queued."""
    fields, claim = CallbackFields(services.settings.redis_prefix), new_claim()
    refused: QueueUnavailable | None = None
    for cid, attempt in await services.jobs.run(claim_unsent_call(fields, job_id, claim)):
        try:
            await services.send(
                DELIVER_WEBHOOKS, [job_id, cid, claim, attempt], services.settings.webhook_queue
            )
        except QueueUnavailable as error:  # left for the next call (or the reaper) to queue
            await services.jobs.run(release_call(fields, job_id, cid, claim))
            refused = error
    if refused is not None:
        raise refused


async def job_callbacks(
    services: BrokerServices, job_id: str, who: Caller | None
) -> list[CallbackView]:
    """The job's callbacks as ``who`` sees them (``None``: a caller known only by holding the
    job's id): each URL in full when :func:`shows_url`, else only its origin."""
    key = CallbackFields(services.settings.redis_prefix).key(job_id)
    with redis_errors():
        raw: dict[Any, Any] = await services.jobs.redis.hgetall(key)
    return [
        CallbackView.from_callback(callback, show_url=shows_url(callback, who))
        for callback in callbacks_from_fields(raw)
    ]


def shows_url(callback: Callback, who: Caller | None) -> bool:
    """Whether ``who`` sees the callback's whole URL: a named principal (an API key or a token)
    that gave it, or an admin. An anonymous caller never does: ``anonymous@<address>`` is
    shared by everyone behind one proxy."""
    if who is None or who.anonymous:
        return False
    return who.admin or callback.requester == who.requester
