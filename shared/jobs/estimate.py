"""What the job resource shows of a job's future: its queue place and estimated times (made by
:mod:`model_proxy.broker.estimates`; in ``shared`` because the job resource is)."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["NO_ESTIMATE", "JobEstimate", "QueuePlace"]


@dataclass(frozen=True)
class QueuePlace:
    """A queued job's place: 1-based ``position``, the jobs ``ahead`` of it, and how many of
    its model's jobs run at once (``concurrency``)."""

    position: int
    ahead: int
    concurrency: int


@dataclass(frozen=True)
class JobEstimate:
    """What the job resource shows of the future: the queue place (while queued) and the
    estimated start and finish (Unix seconds; None when unknown)."""

    queue: QueuePlace | None = None
    start_at: float | None = None
    finish_at: float | None = None


NO_ESTIMATE = JobEstimate()
