"""A job: the public record of one inference request, and how it is kept in a Redis hash."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, TypeAdapter

from model_proxy.shared.request import InferenceRequest

__all__ = [
    "ASKER_FIELD",
    "JOB_STATES",
    "Job",
    "JobError",
    "JobOutput",
    "JobState",
    "job_from_fields",
    "job_to_fields",
    "new_job",
    "output_fields",
]


class JobState(StrEnum):
    """Where a job is in its life; the last three are final."""

    QUEUED = "queued"
    FETCHING = "fetching"
    INFERRING = "inferring"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED})
JOB_STATES: tuple[str, ...] = tuple(state.value for state in JobState)
"""Every state's name, in the order of a job's life: the one list for menus, tables, choices."""


ASKER_FIELD = "asker:"
"""The prefix of the record's fields that name its requesters: ``asker:<name>`` holds how many
of that requester's asks are open (see :mod:`~model_proxy.shared.jobs.scripts`)."""


class JobError(BaseModel):
    """Why a job failed or was cancelled: a stable ``code`` and a message safe to show."""

    model_config = ConfigDict(frozen=True)

    code: str
    message: str


class JobOutput(BaseModel):
    """One DICOM object made from a job's answer (``format``: ``seg``, ``sr``) and where it
    went: its UIDs, the series it was made on (a SEG's one source series), the servers.json key
    of the PACS it was meant for, and whether that PACS stored it."""

    model_config = ConfigDict(frozen=True)

    format: str
    sop_class_uid: str | None = None
    series_instance_uid: str | None = None
    sop_instance_uid: str | None = None
    source_series_instance_uid: str | None = None
    server: str | None = None
    stored: bool = False

    @property
    def key(self) -> str:
        """What names the kept object among the job's: its SOP Instance UID (older records:
        its format)."""
        return self.sop_instance_uid or self.format


class Job(BaseModel):
    """The public record of one inference request: what was asked, where it stands, how far its
    fetch has got, and why it failed if it did.

    It is what clients see through ``/jobs/{id}`` and what every process reads from Redis; the
    Celery task carries only its id. A job is created ``queued`` and changes only through the
    job stores' atomic steps; once finished (succeeded, failed or cancelled) it never changes
    again and expires with its result. Times are Unix seconds.
    """

    id: str
    state: JobState
    request: InferenceRequest
    queue: str  # the Celery queue its task was sent to
    created_at: float
    updated_at: float
    started_at: float | None = None  # last claimed by a worker
    inferring_at: float | None = None  # the model had the whole input and began its answer
    finished_at: float | None = None
    error: JobError | None = None
    instances_fetched: int = 0
    instances_total: int | None = None
    bytes_fetched: int = 0
    attempts: int = 0  # runs and in-run retries of transient failures
    lost_runs: int = 0  # runs whose worker died (the reaper found their lease lapsed)
    requesters: tuple[str, ...] = ()  # who asked for it and has not left it, sorted
    outputs: tuple[JobOutput, ...] = ()  # the DICOM objects made from its answer
    output_error: JobError | None = None  # why an object its model asks for was not made
    store_error: JobError | None = None  # why an object made was not stored into the PACS

    @property
    def output_formats(self) -> tuple[str, ...]:
        """The formats of the objects made: ``seg``, ``sr``."""
        return tuple(output.format for output in self.outputs)

    @property
    def fingerprint(self) -> str:
        return self.request.fingerprint()


def new_job(request: InferenceRequest, queue: str) -> Job:
    now = time.time()
    return Job(
        id=uuid.uuid4().hex,
        state=JobState.QUEUED,
        request=request,
        queue=queue,
        created_at=now,
        updated_at=now,
    )


_REQUIRED = frozenset({"id", "state", "request", "created_at", "updated_at"})
_FLOATS = ("created_at", "updated_at", "started_at", "inferring_at", "finished_at")
_INTS = ("instances_fetched", "instances_total", "bytes_fetched", "attempts", "lost_runs")


def job_to_fields(job: Job) -> dict[str, str]:
    """The hash fields of a new job record; absent values are left out."""
    fields = {
        "id": job.id,
        "state": job.state.value,
        "request": job.request.model_dump_json(),
        "queue": job.queue,
        "model": job.request.model_id,
    }
    for name in (*_FLOATS, *_INTS):
        value = getattr(job, name)
        if value is not None:
            fields[name] = repr(value) if isinstance(value, float) else str(value)
    if job.error is not None:
        fields["error"] = job.error.model_dump_json()
    fields.update(output_fields(job.outputs, job.output_error, job.store_error))
    return fields


_OUTPUTS = TypeAdapter(tuple[JobOutput, ...])


def output_fields(
    outputs: Sequence[JobOutput], error: JobError | None, store_error: JobError | None = None
) -> dict[str, str]:
    """The hash fields that record a job's DICOM objects, why any was not made, and why any
    made was not stored."""
    fields = {"outputs": _OUTPUTS.dump_json(tuple(outputs)).decode()} if outputs else {}
    if error is not None:
        fields["output_error"] = error.model_dump_json()
    if store_error is not None:
        fields["store_error"] = store_error.model_dump_json()
    return fields


def _outputs(value: str) -> tuple[JobOutput, ...]:
    """The ``outputs`` field: a JSON list, or the comma-separated formats of older records."""
    if value.startswith("["):
        return _OUTPUTS.validate_json(value)
    return tuple(JobOutput(format=kind) for kind in value.split(",") if kind)


def _error(value: str | None) -> JobError | None:
    return JobError.model_validate_json(value) if value else None


def job_from_fields(fields: Mapping[Any, Any]) -> Job | None:
    """A job from its hash, or None when the hash is gone or incomplete."""
    text = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    if not text.keys() >= _REQUIRED:
        return None
    values: dict[str, Any] = {name: float(text[name]) for name in _FLOATS if text.get(name)} | {
        name: int(text[name]) for name in _INTS if text.get(name)
    }
    requesters = sorted(
        name.removeprefix(ASKER_FIELD) for name in text if name.startswith(ASKER_FIELD)
    )
    return Job(
        id=text["id"],
        state=JobState(text["state"]),
        request=InferenceRequest.model_validate_json(text["request"]),
        queue=text.get("queue", ""),
        error=_error(text.get("error")),
        requesters=tuple(requesters),
        outputs=_outputs(text.get("outputs", "")),
        output_error=_error(text.get("output_error")),
        store_error=_error(text.get("store_error")),
        **values,
    )
