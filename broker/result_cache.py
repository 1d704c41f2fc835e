"""A short-lived copy, in the API process, of stored answers that are asked for often.

Identical requests are answered from Redis while the stored result lasts; under load the same
answer is fetched again and again. This keeps recently served answers in memory for a few
seconds (``MODEL_PROXY_LOCAL_CACHE_SECONDS``; 0 turns it off), bounded in count and bytes. An
answer replaced by a fresh run (``Cache-Control: no-cache``) is seen here at most that long later.
Answers are held as stored (gzipped, :class:`~model_proxy.shared.jobs.StoredAnswer`), and count
by their stored size.
"""

from __future__ import annotations

import time
from collections import OrderedDict

from model_proxy.shared.jobs import StoredAnswer

__all__ = ["ResultCache"]


class ResultCache:
    def __init__(self, seconds: float, max_entries: int = 1024, max_bytes: int = 64 << 20) -> None:
        self._seconds = seconds
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._entries: OrderedDict[str, tuple[float, str, StoredAnswer]] = OrderedDict()
        self._bytes = 0

    def get(self, fingerprint: str) -> tuple[str, StoredAnswer] | None:
        entry = self._entries.get(fingerprint)
        if entry is None:
            return None
        expires, job_id, result = entry
        if expires < time.monotonic():
            self._drop(fingerprint)
            return None
        self._entries.move_to_end(fingerprint)
        return job_id, result

    def put(self, fingerprint: str, job_id: str, result: StoredAnswer) -> None:
        if self._seconds <= 0 or len(result.body) > self._max_bytes // 8:
            return
        self._drop(fingerprint)
        self._entries[fingerprint] = (time.monotonic() + self._seconds, job_id, result)
        self._bytes += len(result.body)
        while len(self._entries) > self._max_entries or self._bytes > self._max_bytes:
            self._drop(next(iter(self._entries)))

    def _drop(self, fingerprint: str) -> None:
        entry = self._entries.pop(fingerprint, None)
        if entry is not None:
            self._bytes -= len(entry[2].body)
