"""The worker's announcement of the queues it reads and the jobs it runs at once.

While the worker lives, a daemon thread renews its entry on each of its queues
(:mod:`model_proxy.shared.jobs.consumers`) three times per ``MODEL_PROXY_WORKER_PRESENCE_SECONDS``;
a worker that stops withdraws it, and one that dies drops out when it expires. The API counts
the live entries as the concurrency of models without ``maxConcurrency`` (the ETA).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import redis

from model_proxy.shared.errors import ModelProxyError
from model_proxy.shared.jobs import JobKeys
from model_proxy.shared.jobs.consumers import announce_consumer, withdraw_consumer

__all__ = ["WorkerPresence"]

log = logging.getLogger(__name__)


@dataclass
class WorkerPresence:
    """Announces worker ``name`` (``slots`` jobs at once) on ``queues`` until stopped."""

    client: redis.Redis
    keys: JobKeys
    queues: Sequence[str]
    name: str
    slots: int
    ttl_seconds: float
    _stopped: threading.Event = field(default_factory=threading.Event, init=False, repr=False)
    _thread: threading.Thread | None = field(default=None, init=False, repr=False)

    def announce(self) -> None:
        """One renewal (the thread calls it; a Redis blip is logged and skipped)."""
        try:
            announce_consumer(
                self.client, self.keys, self.queues, self.name, self.slots, self.ttl_seconds
            )
        except ModelProxyError as error:
            log.warning("worker presence not announced (%s)", error.code)

    def start(self) -> None:
        self.announce()
        self._thread = threading.Thread(target=self._beat, name="worker-presence", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stopped.set()
        try:
            withdraw_consumer(self.client, self.keys, self.queues, self.name, self.slots)
        except ModelProxyError as error:
            log.warning("worker presence not withdrawn (%s); it expires", error.code)

    def _beat(self) -> None:
        while not self._stopped.wait(self.ttl_seconds / 3):
            self.announce()
