"""``Idempotency-Key`` on ``POST /jobs`` (IETF draft-ietf-httpapi-idempotency-key-header): a
retried submit names the job its first submit made, for a day, whatever became of that job.

A key belongs to its caller (the requester name of :mod:`~model_proxy.broker.requesters`): the
same key sent by two callers names two jobs. Each key is one Redis hash,
``<prefix>:idempotency:<digest of caller and key>``, holding the fingerprint of the request body
that first came with it and, once made, the id of its job:

* the first submit *claims* the key (atomically: of two concurrent first submits one claims it,
  the other waits for the job to be named), makes or finds its job, then *records* the job's id
  for ``MODEL_PROXY_IDEMPOTENCY_KEY_TTL_SECONDS``; when making the job fails (a full queue, a
  quota, Redis away) the claim is *released*, so a retry may make it;
* a later submit with the same key and body gets that job (202, or its answer, as any submit);
  with another body, 422 ``idempotency_key_reused``;
* a claim whose request died before naming its job is forgotten after :data:`CLAIM_SECONDS`.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from model_proxy.shared.errors import (
    BadIdempotencyKey,
    IdempotencyKeyInFlight,
    IdempotencyKeyReused,
)
from model_proxy.shared.redis_errors import redis_errors

__all__ = ["CLAIM_SECONDS", "MAX_KEY_LENGTH", "Claim", "IdempotencyKey", "IdempotencyKeys"]

MAX_KEY_LENGTH = 255
CLAIM_SECONDS = 30
"""How long a claimed key waits for its job's id: making a job takes milliseconds; a request
that died meanwhile must not hold its key for a day."""
_POLL_SECONDS = 0.05

# KEYS[1]: the key's hash. ARGV: the body's fingerprint, the claim's time to live.
# {'claimed', ''}: the key was free and is now this request's; {'found', id}: the key's job
# ('' while its first request is making it); {'reused', ''}: the key came with another body.
_CLAIM = """
local fingerprint = redis.call('HGET', KEYS[1], 'fingerprint')
if not fingerprint then
  redis.call('HSET', KEYS[1], 'fingerprint', ARGV[1], 'job_id', '')
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return {'claimed', ''}
end
if fingerprint ~= ARGV[1] then return {'reused', ''} end
return {'found', redis.call('HGET', KEYS[1], 'job_id') or ''}
"""

# KEYS[1]: the key's hash. Forget a claim that never named its job.
_RELEASE = """
if redis.call('HGET', KEYS[1], 'job_id') == '' then redis.call('DEL', KEYS[1]) end
"""


@dataclass(frozen=True)
class IdempotencyKey:
    """An ``Idempotency-Key`` header as sent, and the fingerprint of the body it came with."""

    key: str
    fingerprint: str

    @classmethod
    def checked(cls, key: str, fingerprint: str) -> IdempotencyKey:
        """Raise :class:`BadIdempotencyKey` unless ``key`` is 1 to 255 printable ASCII
        characters (a quoted string, as the draft writes it, is taken without its quotes)."""
        if len(key) >= 2 and key[0] == key[-1] == '"':
            key = key[1:-1]
        if not 1 <= len(key) <= MAX_KEY_LENGTH or not all(" " <= c <= "~" for c in key):
            raise BadIdempotencyKey(
                f"Idempotency-Key must be 1 to {MAX_KEY_LENGTH} printable ASCII characters"
            )
        return cls(key, fingerprint)


@dataclass(frozen=True)
class Claim:
    """A key as one submit found it: ``job_id`` is its job, or ``None`` when this submit
    claimed it and makes the job."""

    redis_key: str
    fingerprint: str
    job_id: str | None


class IdempotencyKeys:
    """The idempotency keys of one deployment (its Redis and key prefix)."""

    def __init__(
        self, client: aioredis.Redis, prefix: str, ttl_seconds: int, wait_seconds: float
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._ttl = ttl_seconds
        self._wait = wait_seconds
        self._claim = client.register_script(_CLAIM)
        self._release = client.register_script(_RELEASE)

    def redis_key(self, requester: str, key: str) -> str:
        """The hash of ``requester``'s ``key`` (digested: neither is written as sent)."""
        digest = hashlib.sha256(f"{len(requester)}:{requester}:{key}".encode()).hexdigest()
        return f"{self._prefix}:idempotency:{digest}"

    async def claim(self, requester: str, key: IdempotencyKey) -> Claim:
        """The key's job, or the key claimed for this submit. A key whose first submit is still
        making its job is waited for (``MODEL_PROXY_IDEMPOTENCY_WAIT_SECONDS``), then 409
        ``idempotency_key_in_flight``; a key used with another body: 422
        ``idempotency_key_reused``."""
        redis_key = self.redis_key(requester, key.key)
        deadline = time.monotonic() + self._wait
        while True:
            with redis_errors():
                outcome, job_id = await self._claim(
                    keys=[redis_key], args=[key.fingerprint, CLAIM_SECONDS]
                )
            if outcome == b"reused":
                raise IdempotencyKeyReused(
                    "this Idempotency-Key was used with a different request body; use a new key "
                    "for a new request"
                )
            if outcome == b"claimed":
                return Claim(redis_key, key.fingerprint, None)
            if job_id:
                return Claim(redis_key, key.fingerprint, job_id.decode())
            if time.monotonic() >= deadline:
                raise IdempotencyKeyInFlight(
                    "the first request with this Idempotency-Key is still being answered; "
                    "try again shortly"
                )
            await asyncio.sleep(_POLL_SECONDS)

    async def record(self, claim: Claim, job_id: str) -> None:
        """The claimed key names ``job_id`` from now on, for the keys' time to live."""
        with redis_errors():
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(
                    claim.redis_key, mapping={"fingerprint": claim.fingerprint, "job_id": job_id}
                )
                pipe.expire(claim.redis_key, self._ttl)
                await pipe.execute()

    async def release(self, claim: Claim) -> None:
        """Forget a claim whose job was not made, so that a retry makes it."""
        with redis_errors():
            await self._release(keys=[claim.redis_key])
