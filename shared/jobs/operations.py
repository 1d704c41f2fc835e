"""Every scripted step of a job's life as a description: which script, which KEYS and ARGV,
and what its reply means.

The workers' :class:`~model_proxy.shared.jobs.store.JobStore` and the broker's asyncio store
build their calls here and only execute them, so the layout of each script's keys and arguments
is written once, next to nothing else. Building a call does no I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from model_proxy.shared.errors import ModelProxyError
from model_proxy.shared.jobs import outcomes, scripts
from model_proxy.shared.jobs.keys import JobKeys
from model_proxy.shared.jobs.model import Job, JobError, JobState, job_to_fields

__all__ = ["JobOperations", "ScriptCall", "queue_event", "text"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class ScriptCall(Generic[_T]):
    """One run of a Lua script: its source, KEYS, ARGV, and how to read its reply."""

    script: str
    keys: list[str]
    args: list[Any]
    reply: Callable[[Any], _T]


def text(value: object) -> str:
    """A Redis reply (bytes, or str with ``decode_responses``) as text."""
    return value.decode() if isinstance(value, bytes) else str(value)


def queue_event(model_id: str) -> str:
    """The message on the events channel that says model ``model_id``'s queue changed."""
    return scripts.QUEUE_EVENT_PREFIX + model_id


def _admitted(reply: Any) -> outcomes.Admitted:
    job_id, admission = reply
    return outcomes.Admitted(text(job_id), outcomes.Admission(text(admission)))


def _cached(reply: Any) -> tuple[str, bytes] | None:
    if not reply:
        return None
    job_id, result = reply
    return text(job_id), bytes(result)


def _as(enum: Callable[[str], _T]) -> Callable[[Any], _T]:
    return lambda reply: enum(text(reply))


def _pairs(fields: Mapping[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


def _error_json(code: str, message: str) -> str:
    return JobError(code=code, message=message).model_dump_json()


class JobOperations:
    """Builds the script calls of the job records under ``keys``, kept ``ttl_seconds``."""

    def __init__(self, keys: JobKeys, ttl_seconds: int) -> None:
        self.keys = keys
        self.ttl = ttl_seconds

    def create_or_attach(
        self, job: Job, use_cached: bool, requester: str = "", limit: int = 0
    ) -> ScriptCall[outcomes.Admitted]:
        """Record ``job`` for ``requester`` (none when empty), who may wait for at most ``limit``
        unfinished jobs at once (0: no limit)."""
        keys, fingerprint = self.keys, job.fingerprint
        return ScriptCall(
            scripts.CREATE_OR_ATTACH,
            [
                keys.job(job.id),
                keys.active(fingerprint),
                keys.index,
                keys.queued(job.request.model_id),
                keys.cached(fingerprint),
                keys.states,
                keys.asked(requester),
                keys.unfinished(requester),
            ],
            [
                job.id,
                self.ttl,
                repr(job.created_at),
                keys.job(""),
                "1" if use_cached else "0",
                requester,
                limit,
                *_pairs(job_to_fields(job)),
            ],
            _admitted,
        )

    def note_asked(self, requester: str, job_id: str) -> ScriptCall[None]:
        """Note in ``requester``'s index that it was answered with ``job_id``'s result."""
        return ScriptCall(
            scripts.NOTE_ASKED,
            [self.keys.asked(requester)],
            [job_id, self.ttl, repr(time.time())],
            lambda _: None,
        )

    def detach(
        self, job: Job, requester: str, error: ModelProxyError
    ) -> ScriptCall[outcomes.Detached]:
        """``requester`` leaves the job (all its asks). The job is cancelled with ``error`` when
        no requester is left."""
        keys = self.keys
        return ScriptCall(
            scripts.DETACH,
            [keys.job(job.id), *self._places(job), keys.states, keys.asked(requester)],
            [
                *self._ending(job, JobState.CANCELLED, error),
                requester,
            ],
            _as(outcomes.Detached),
        )

    def cached_result(self, fingerprint: str) -> ScriptCall[tuple[str, bytes] | None]:
        keys = self.keys
        return ScriptCall(
            scripts.CACHED_RESULT,
            [keys.cached(fingerprint)],
            [keys.job(""), keys.result("")],
            _cached,
        )

    def claim(self, job: Job, token: str, lease_seconds: float) -> ScriptCall[outcomes.Claim]:
        keys = self.keys
        return ScriptCall(
            scripts.CLAIM,
            [
                keys.job(job.id),
                keys.lease(job.id),
                keys.running,
                keys.queued(job.request.model_id),
                keys.states,
            ],
            [
                token,
                int(lease_seconds * 1000),
                repr(time.time()),
                keys.events,
                job.id,
                self.ttl,
                queue_event(job.request.model_id),
            ],
            _as(outcomes.Claim),
        )

    def update(
        self, job_id: str, token: str, fields: Mapping[str, str], announce: bool
    ) -> ScriptCall[outcomes.Written]:
        keys = self.keys
        pairs = _pairs({**fields, "updated_at": repr(time.time())})
        return ScriptCall(
            scripts.UPDATE,
            [keys.job(job_id), keys.lease(job_id), keys.states],
            [self.ttl, keys.events, job_id, token, "1" if announce else "0", *pairs],
            _as(outcomes.Written),
        )

    def succeed(
        self, job: Job, token: str, fields: Mapping[str, str] | None = None
    ) -> ScriptCall[outcomes.Written]:
        """Move the result staged under :meth:`JobKeys.staged_result` into place; ``fields``
        are written to the record with the state (its DICOM objects)."""
        return self._finish(job, token, JobState.SUCCEEDED, dict(fields or {}))

    def fail(self, job: Job, token: str, error: ModelProxyError) -> ScriptCall[outcomes.Written]:
        return self._finish(
            job, token, JobState.FAILED, {"error": _error_json(error.code, error.message)}
        )

    def _finish(
        self, job: Job, token: str, state: JobState, fields: dict[str, str]
    ) -> ScriptCall[outcomes.Written]:
        keys, fingerprint = self.keys, job.fingerprint
        now = repr(time.time())
        return ScriptCall(
            scripts.FINISH,
            [
                keys.job(job.id),
                keys.lease(job.id),
                keys.running,
                keys.active(fingerprint),
                keys.cached(fingerprint),
                keys.staged_result(job.id, token),
                keys.result(job.id),
                keys.states,
            ],
            [
                self.ttl,
                keys.events,
                job.id,
                token,
                state.value,
                queue_event(job.request.model_id),
                *_pairs({**fields, "finished_at": now, "updated_at": now}),
            ],
            _as(outcomes.Written),
        )

    def terminate(
        self, job: Job, state: JobState, error: ModelProxyError
    ) -> ScriptCall[outcomes.Terminated]:
        keys = self.keys
        return ScriptCall(
            scripts.TERMINATE,
            [keys.job(job.id), *self._places(job), keys.states],
            self._ending(job, state, error),
            _as(outcomes.Terminated),
        )

    def _ending(self, job: Job, state: JobState, error: ModelProxyError) -> list[Any]:
        """ARGV of ending a job from outside its worker, as TERMINATE and DETACH take them."""
        return [
            repr(time.time()),
            self.keys.events,
            job.id,
            state.value,
            _error_json(error.code, error.message),
            queue_event(job.request.model_id),
        ]

    def _places(self, job: Job) -> list[str]:
        """The running and queued sets and the active pointer, which a job leaves when it ends
        and re-enters when it is queued again: KEYS in this order for both scripts."""
        keys = self.keys
        return [keys.running, keys.queued(job.request.model_id), keys.active(job.fingerprint)]

    def renew_lease(
        self, job_id: str, token: str, lease_seconds: float
    ) -> ScriptCall[outcomes.Lease]:
        return ScriptCall(
            scripts.RENEW_LEASE,
            [self.keys.lease(job_id)],
            [token, int(lease_seconds * 1000)],
            _as(outcomes.Lease),
        )

    def release_lease(self, job_id: str, token: str) -> ScriptCall[outcomes.Lease]:
        return ScriptCall(
            scripts.RELEASE_LEASE,
            [self.keys.lease(job_id), self.keys.running],
            [token, job_id],
            _as(outcomes.Lease),
        )

    def requeue_abandoned(self, job: Job, max_attempts: int) -> ScriptCall[outcomes.Requeued]:
        """Queue again a job whose worker died, or fail it when its workers have died
        ``max_attempts`` times (its in-run retries are not worker deaths, and do not count)."""
        keys = self.keys
        message = f"the worker running this job stopped {max_attempts} times; giving up"
        return ScriptCall(
            scripts.REQUEUE_IF_ABANDONED,
            [keys.job(job.id), keys.lease(job.id), *self._places(job), keys.states],
            [
                repr(time.time()),
                keys.events,
                job.id,
                max_attempts,
                _error_json("worker_lost", message),
            ],
            _as(outcomes.Requeued),
        )

    def recover_queued(self, job_id: str, unchanged_since: float) -> ScriptCall[outcomes.Requeued]:
        return ScriptCall(
            scripts.RECOVER_QUEUED,
            [self.keys.job(job_id)],
            [repr(time.time()), repr(unchanged_since)],
            _as(outcomes.Requeued),
        )

    def acquire_slot(
        self, model_id: str, token: str, limit: int, hold_seconds: float
    ) -> ScriptCall[outcomes.Slot]:
        now = time.time()
        return ScriptCall(
            scripts.ACQUIRE_SLOT,
            [self.keys.model_slots(model_id)],
            [repr(now), repr(now + hold_seconds), limit, token],
            _as(outcomes.Slot),
        )
