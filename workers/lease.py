"""The lease heartbeat: while a worker runs a job, it keeps renewing the job's lease.

A claimed job carries a lease that expires ``lease_seconds`` after its last renewal. The
heartbeat renews it (and the job's place among its model's concurrent calls, when the model
has a limit) three times per lease; a worker that dies stops renewing, the lease lapses, and
the reaper queues the job again. When a renewal finds the lease held by someone else, the
heartbeat sets :attr:`LeaseHeartbeat.lost`, calls ``on_lost`` (the pipeline cuts the run's
connections) and stops; the run stops at its next check.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType

from model_proxy.shared.errors import ModelProxyError
from model_proxy.shared.jobs import Job, JobStore, Lease

__all__ = ["LeaseHeartbeat"]


@dataclass
class LeaseHeartbeat:
    """A daemon thread renewing one job's lease; use it as a context manager around the run."""

    store: JobStore
    job: Job
    token: str
    lease_seconds: float
    renew_slot: bool = False
    on_lost: Callable[[], None] | None = None
    lost: threading.Event = field(default_factory=threading.Event, init=False)
    _stopped: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._thread = threading.Thread(
            target=self._beat, name=f"lease-{self.job.id[:8]}", daemon=True
        )

    def __enter__(self) -> LeaseHeartbeat:
        self._thread.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self._stopped.set()

    def renew_once(self) -> bool:
        """Renew the lease (and the model slot); False when the lease is another worker's."""
        lease = self.store.renew_lease(self.job.id, self.token, self.lease_seconds)
        if self.renew_slot:
            model_id = self.job.request.model_id
            self.store.renew_slot(model_id, self.token, self.lease_seconds)
        return lease is not Lease.LOST

    def _beat(self) -> None:
        while not self._stopped.wait(self.lease_seconds / 3):
            try:
                alive = self.renew_once()
            except ModelProxyError:
                continue  # Redis away for a moment: the lease outlasts a few misses
            if not alive:
                self.lost.set()
                if self.on_lost is not None:
                    self.on_lost()
                return
