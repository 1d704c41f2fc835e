"""Tokens in Redis, one entry per server, shared by the API and every worker.

Each entry carries the fingerprint of the server's auth settings; an entry whose fingerprint
differs from the current one (a changed login or ``authToken`` in servers.json) is ignored, so the
sign-in starts over. Entries have no expiry: with a persistent Redis they survive restarts of
everything, which a one-off ``authToken`` needs. A per-server lock makes one process at a time
talk to the token server; a holder that dies releases it when its timeout passes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager, suppress

import redis
from redis.exceptions import LockError

from model_proxy.shared.auth.tokens import TokenSet
from model_proxy.shared.redis_errors import redis_errors

__all__ = ["TokenStore"]


class TokenStore:
    """The tokens of each server in Redis, shared by every process, with a lock per server."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        lock_timeout: float,
        wait_timeout: float,
        prefix: str = "model-proxy",
    ) -> None:
        self._redis = client
        self._lock_timeout = lock_timeout
        self._wait_timeout = wait_timeout
        self._prefix = prefix

    def _key(self, server_id: str) -> str:
        return f"{self._prefix}:tokens:{server_id}"

    def load(self, server_id: str, fingerprint: str) -> TokenSet | None:
        """The stored tokens of this server, if they were obtained with these auth settings."""
        with redis_errors():
            raw = self._redis.get(self._key(server_id))
        if raw is None:
            return None
        tokens = TokenSet.from_dict(json.loads(raw))
        return tokens if tokens.fingerprint == fingerprint else None

    def save(self, server_id: str, tokens: TokenSet) -> None:
        with redis_errors():
            self._redis.set(self._key(server_id), json.dumps(tokens.to_dict()))

    @contextmanager
    def locked(self, server_id: str) -> Iterator[bool]:
        """Hold the server's token lock; yields False if it could not be had in time."""
        lock = self._redis.lock(
            self._key(server_id) + ":lock",
            timeout=self._lock_timeout,
            blocking_timeout=self._wait_timeout,
            thread_local=False,
        )
        with redis_errors():
            acquired = bool(lock.acquire())
        try:
            yield acquired
        finally:
            if acquired:
                # held past its timeout and taken over: nothing left to release
                with suppress(LockError):
                    lock.release()
