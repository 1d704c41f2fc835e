"""What each state-changing call of the job stores answers, as enums rather than bare values."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

__all__ = [
    "Admission",
    "Admitted",
    "Claim",
    "Detached",
    "Lease",
    "Requeued",
    "Slot",
    "Terminated",
    "Written",
]


class Admission(StrEnum):
    """How a request's job was recorded."""

    CREATED = "created"  # a new job, to be enqueued
    ATTACHED = "attached"  # an unfinished identical job is already there
    CACHED = "cached"  # an identical job succeeded a moment ago
    OVER_QUOTA = "over_quota"  # refused: the requester has its limit of unfinished jobs


@dataclass(frozen=True)
class Admitted:
    """The job that answers a request, and whether it is new."""

    job_id: str
    admission: Admission

    @property
    def created(self) -> bool:
        return self.admission is Admission.CREATED


class Claim(StrEnum):
    """What became of a worker's claim of a job."""

    CLAIMED = "claimed"
    BUSY = "busy"  # another worker holds the job's lease
    FINISHED = "finished"
    MISSING = "missing"


class Written(StrEnum):
    """What became of a worker's write to its job."""

    DONE = "done"
    GONE = "gone"  # the record expired
    ENDED = "ended"  # finished or cancelled meanwhile
    LOST = "lost"  # the lease went to another worker


class Terminated(StrEnum):
    """What became of ending a job from outside its worker."""

    TERMINATED = "terminated"
    FINISHED = "finished"  # it had already finished
    MISSING = "missing"  # unknown, or expired


class Detached(StrEnum):
    """What became of a requester leaving a job."""

    DETACHED = "detached"  # it left (or had left); others still wait, the job runs on
    CANCELLED = "cancelled"  # it was the last requester: the job is cancelled
    NOT_REQUESTER = "not_requester"  # it never asked for this job
    FINISHED = "finished"  # the job had already finished
    MISSING = "missing"  # unknown, or expired


class Lease(StrEnum):
    """What became of renewing or releasing a worker's lease on its job."""

    RENEWED = "renewed"
    RELEASED = "released"
    LOST = "lost"  # the lease lapsed or went to another worker


class Requeued(StrEnum):
    """What became of a job whose worker may have died."""

    REQUEUED = "requeued"  # back in the queue
    FAILED = "failed"  # failed for good after too many attempts
    SKIPPED = "skipped"  # its lease is alive, or it is no longer running


class Slot(StrEnum):
    """Whether a job got one of its model's places for concurrent calls."""

    TAKEN = "taken"
    FULL = "full"
