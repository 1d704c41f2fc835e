"""Jobs: the public record of one inference request, kept in Redis.

A job is a Redis hash ``model-proxy:job:{id}``; its result, the model's JSON document as bytes,
is ``model-proxy:result:{id}``. Every change of state is announced on the channel
``model-proxy:job-events`` (the message is the job id), so waiters wake at once. Records and
results expire after the configured time to live.

:class:`JobStore` is the workers' synchronous view; the broker has an asyncio twin built on the
same codec (:func:`job_to_fields`, :func:`job_from_fields`) and key names (:class:`JobKeys`).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from enum import StrEnum
from typing import Any, TypeVar

import redis
from pydantic import BaseModel

from shared.errors import ModelProxyError, QueueUnavailable
from shared.request import InferenceRequest

__all__ = [
    "UPDATE_IF_EXISTS",
    "Job",
    "JobError",
    "JobKeys",
    "JobState",
    "JobStore",
    "job_from_fields",
    "job_to_fields",
    "new_job",
    "update_arguments",
]

_T = TypeVar("_T")


class JobState(StrEnum):
    QUEUED = "queued"
    FETCHING = "fetching"
    INFERRING = "inferring"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class JobError(BaseModel):
    code: str
    message: str


class Job(BaseModel):
    id: str
    state: JobState
    request: InferenceRequest
    created_at: float
    updated_at: float
    error: JobError | None = None
    instances_fetched: int = 0
    bytes_fetched: int = 0


class JobKeys:
    """Redis key names, all under one prefix."""

    def __init__(self, prefix: str = "model-proxy") -> None:
        self.prefix = prefix
        self.events = f"{prefix}:job-events"

    def job(self, job_id: str) -> str:
        return f"{self.prefix}:job:{job_id}"

    def result(self, job_id: str) -> str:
        return f"{self.prefix}:result:{job_id}"


def new_job(request: InferenceRequest) -> Job:
    now = time.time()
    return Job(
        id=uuid.uuid4().hex,
        state=JobState.QUEUED,
        request=request,
        created_at=now,
        updated_at=now,
    )


def job_to_fields(job: Job) -> dict[Any, Any]:
    """The hash fields of a job record (typed loosely, as redis-py's mapping parameter)."""
    return {
        "id": job.id,
        "state": job.state.value,
        "request": job.request.model_dump_json(),
        "created_at": repr(job.created_at),
        "updated_at": repr(job.updated_at),
        "error": job.error.model_dump_json() if job.error else "",
        "instances_fetched": str(job.instances_fetched),
        "bytes_fetched": str(job.bytes_fetched),
    }


def job_from_fields(fields: Mapping[Any, Any]) -> Job | None:
    if not fields:
        return None
    text = {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in fields.items()
    }
    return Job(
        id=text["id"],
        state=JobState(text["state"]),
        request=InferenceRequest.model_validate_json(text["request"]),
        created_at=float(text["created_at"]),
        updated_at=float(text["updated_at"]),
        error=JobError.model_validate_json(text["error"]) if text.get("error") else None,
        instances_fetched=int(text.get("instances_fetched", 0)),
        bytes_fetched=int(text.get("bytes_fetched", 0)),
    )


# Changes fields of a job record only while it exists, so that a write after the record
# expired cannot leave half a record behind; then renews its expiry and announces the change.
# KEYS[1]: the job hash. ARGV: ttl, events channel, job id, announce (1/0), field, value, ...
UPDATE_IF_EXISTS = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], unpack(ARGV, 5))
redis.call('EXPIRE', KEYS[1], ARGV[1])
if ARGV[4] == '1' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 1
"""


def update_arguments(
    job_id: str, fields: dict[str, str], ttl: int, keys: JobKeys, announce: bool = True
) -> list[str]:
    """The KEYS and ARGV of :data:`UPDATE_IF_EXISTS` (``updated_at`` is added)."""
    pairs = [item for pair in {**fields, "updated_at": repr(time.time())}.items() for item in pair]
    return [keys.job(job_id), str(ttl), keys.events, job_id, "1" if announce else "0", *pairs]


class JobStore:
    """Synchronous job records for the workers."""

    def __init__(self, client: redis.Redis, ttl_seconds: int, keys: JobKeys | None = None) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self.keys = keys or JobKeys()

    def get(self, job_id: str) -> Job | None:
        return self._call(lambda: job_from_fields(self._redis.hgetall(self.keys.job(job_id))))

    def get_result(self, job_id: str) -> bytes | None:
        def read() -> bytes | None:
            value = self._redis.get(self.keys.result(job_id))
            assert value is None or isinstance(value, bytes)
            return value

        return self._call(read)

    def set_state(self, job_id: str, state: JobState) -> None:
        self._update(job_id, {"state": state.value})

    def set_progress(self, job_id: str, instances: int, nbytes: int) -> None:
        self._update(
            job_id,
            {"instances_fetched": str(instances), "bytes_fetched": str(nbytes)},
            announce=False,
        )

    def succeed(self, job_id: str, result: bytes) -> None:
        """Store the result, then mark the job succeeded (so waiters find the result)."""
        self._call(lambda: self._redis.set(self.keys.result(job_id), result, ex=self._ttl))
        if not self._update(job_id, {"state": JobState.SUCCEEDED.value}):
            self._call(lambda: self._redis.delete(self.keys.result(job_id)))

    def fail(self, job_id: str, error: ModelProxyError) -> None:
        self._update(
            job_id,
            {
                "state": JobState.FAILED.value,
                "error": JobError(code=error.code, message=error.message).model_dump_json(),
            },
        )

    def _update(self, job_id: str, fields: dict[str, str], announce: bool = True) -> bool:
        """Change fields of an existing record; False (and no change) if it has expired."""
        args = update_arguments(job_id, fields, self._ttl, self.keys, announce)
        return bool(self._call(lambda: self._redis.eval(UPDATE_IF_EXISTS, 1, *args)))

    def _call(self, operation: Callable[[], _T]) -> _T:
        with _redis_errors():
            return operation()


@contextmanager
def _redis_errors() -> Iterator[None]:
    try:
        yield
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        raise QueueUnavailable("Redis cannot be reached") from None
