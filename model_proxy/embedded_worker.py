"""A Celery worker inside the ``serve`` process, for the one-command, one-machine set-up."""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery import Celery

__all__ = ["InProcessWorker"]

log = logging.getLogger(__name__)


class InProcessWorker:
    """Consumes the queues from a background thread with a pool of worker threads."""

    def __init__(self, app: Celery, queues: list[str], concurrency: int) -> None:
        self._app = app
        self._queues = queues
        self._concurrency = concurrency
        self._controller: Any = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._controller = self._app.WorkController(
            app=self._app,
            pool_cls="threads",
            concurrency=self._concurrency,
            queues=self._queues,
            without_heartbeat=True,
            without_mingle=True,
            without_gossip=True,
            hostname=f"embedded@{threading.get_native_id()}",
            loglevel=logging.getLogger().level,
        )
        self._thread = threading.Thread(
            target=self._controller.start, name="model-proxy-worker", daemon=True
        )
        self._thread.start()
        log.info("in-process worker started with %d threads", self._concurrency)

    def stop(self) -> None:
        if self._controller is not None:
            self._controller.stop()
        if self._thread is not None:
            self._thread.join(timeout=10)
