"""The workers' synchronous view of the job records (the broker has an asyncio twin)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, TypeVar

import redis
from redis.commands.core import Script

from model_proxy.shared.errors import ModelProxyError, QueueUnavailable
from model_proxy.shared.jobs import scripts
from model_proxy.shared.jobs.keys import JobKeys
from model_proxy.shared.jobs.model import Job, JobError, JobState, job_from_fields

__all__ = ["Claim", "JobStore", "Written", "redis_errors"]

_T = TypeVar("_T")


class Claim(StrEnum):
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

    @classmethod
    def from_script(cls, value: int) -> Written:
        return {1: cls.DONE, 0: cls.GONE, -1: cls.ENDED, -2: cls.LOST}[value]


class JobStore:
    def __init__(self, client: redis.Redis, ttl_seconds: int, keys: JobKeys | None = None) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self.keys = keys or JobKeys()
        self._scripts: dict[str, Script] = {}

    def get(self, job_id: str) -> Job | None:
        return self._call(lambda: job_from_fields(self._redis.hgetall(self.keys.job(job_id))))

    def get_result(self, job_id: str) -> bytes | None:
        def read() -> bytes | None:
            value = self._redis.get(self.keys.result(job_id))
            assert value is None or isinstance(value, bytes)
            return value

        return self._call(read)

    def claim(self, job: Job, token: str, lease_seconds: float) -> Claim:
        keys = self.keys
        outcome = self._eval(
            scripts.CLAIM,
            [keys.job(job.id), keys.lease(job.id), keys.running, keys.queued(job.request.model_id)],
            [token, int(lease_seconds * 1000), repr(time.time()), keys.events, job.id, self._ttl],
        )
        return Claim(outcome.decode() if isinstance(outcome, bytes) else outcome)

    def update(self, job_id: str, token: str, fields: dict[str, str], announce: bool) -> Written:
        keys = self.keys
        pairs = _pairs({**fields, "updated_at": repr(time.time())})
        value = self._eval(
            scripts.UPDATE,
            [keys.job(job_id), keys.lease(job_id)],
            [self._ttl, keys.events, job_id, token, "1" if announce else "0", *pairs],
        )
        return Written.from_script(int(value))

    def succeed(self, job: Job, token: str, result: bytes) -> Written:
        """Store the result and mark the job succeeded, at once: waiters find both."""
        staged = self.keys.staged_result(job.id, token)
        self._call(lambda: self._redis.set(staged, result, ex=self._ttl))
        return self._finish(job, token, JobState.SUCCEEDED, {})

    def fail(self, job: Job, token: str, error: ModelProxyError) -> Written:
        record = JobError(code=error.code, message=error.message).model_dump_json()
        return self._finish(job, token, JobState.FAILED, {"error": record})

    def _finish(self, job: Job, token: str, state: JobState, fields: dict[str, str]) -> Written:
        keys = self.keys
        now = repr(time.time())
        pairs = _pairs({**fields, "finished_at": now, "updated_at": now})
        value = self._eval(
            scripts.FINISH,
            [
                keys.job(job.id),
                keys.lease(job.id),
                keys.running,
                keys.active(job.fingerprint),
                keys.cached(job.fingerprint),
                keys.staged_result(job.id, token),
                keys.result(job.id),
            ],
            [self._ttl, keys.events, job.id, token, state.value, *pairs],
        )
        return Written.from_script(int(value))

    def renew_lease(self, job_id: str, token: str, lease_seconds: float) -> bool:
        value = self._eval(
            scripts.RENEW_LEASE, [self.keys.lease(job_id)], [token, int(lease_seconds * 1000)]
        )
        return bool(value)

    def release_lease(self, job_id: str, token: str) -> None:
        self._eval(
            scripts.RELEASE_LEASE, [self.keys.lease(job_id), self.keys.running], [token, job_id]
        )

    def acquire_slot(self, model_id: str, job_id: str, limit: int, hold_seconds: float) -> bool:
        """One of the model's ``limit`` places for concurrent calls, held ``hold_seconds``."""
        now = time.time()
        value = self._eval(
            scripts.ACQUIRE_SLOT,
            [self.keys.model_slots(model_id)],
            [repr(now), repr(now + hold_seconds), limit, job_id],
        )
        return bool(value)

    def renew_slot(self, model_id: str, job_id: str, hold_seconds: float) -> None:
        expires = time.time() + hold_seconds
        key = self.keys.model_slots(model_id)
        self._call(lambda: self._redis.zadd(key, {job_id: expires}, xx=True))

    def release_slot(self, model_id: str, job_id: str) -> None:
        self._call(lambda: self._redis.zrem(self.keys.model_slots(model_id), job_id))

    def abandoned(self) -> list[str]:
        """Ids of claimed jobs whose lease has expired: their worker is gone."""
        running = self._call(lambda: self._redis.zrange(self.keys.running, 0, -1))
        ids = [item.decode() if isinstance(item, bytes) else str(item) for item in running]
        if not ids:
            return []
        with self._redis.pipeline(transaction=False) as pipe:
            for job_id in ids:
                pipe.exists(self.keys.lease(job_id))
            alive = self._call(pipe.execute)
        return [job_id for job_id, held in zip(ids, alive, strict=True) if not held]

    def forget_running(self, job_id: str) -> None:
        """Drop a job whose record expired from the running set."""
        self._call(lambda: self._redis.zrem(self.keys.running, job_id))

    def requeue_abandoned(self, job: Job, max_attempts: int) -> int:
        """1: back in the queue; -1: failed after too many attempts; 0: nothing to do."""
        keys = self.keys
        error = JobError(
            code="worker_lost",
            message=f"the worker running this job stopped, {max_attempts} times; giving up",
        ).model_dump_json()
        value = self._eval(
            scripts.REQUEUE_IF_ABANDONED,
            [
                keys.job(job.id),
                keys.lease(job.id),
                keys.running,
                keys.queued(job.request.model_id),
                keys.active(job.fingerprint),
            ],
            [repr(time.time()), keys.events, job.id, max_attempts, error],
        )
        return int(value)

    def _eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        if script not in self._scripts:  # EVALSHA, loading the script when Redis lacks it
            self._scripts[script] = self._redis.register_script(script)
        return self._call(lambda: self._scripts[script](keys=keys, args=args))

    def _call(self, operation: Callable[[], _T]) -> _T:
        with redis_errors():
            return operation()


def _pairs(fields: dict[str, str]) -> list[str]:
    return [item for pair in fields.items() for item in pair]


@contextmanager
def redis_errors() -> Iterator[None]:
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        raise QueueUnavailable("Redis cannot be reached") from None
