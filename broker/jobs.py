"""The broker's asyncio view of the job records, and waiting for a job without a thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import TypeVar

import redis.asyncio as aioredis
import redis.exceptions

from shared.errors import ModelProxyError, QueueUnavailable
from shared.jobs import (
    UPDATE_IF_EXISTS,
    Job,
    JobError,
    JobKeys,
    JobState,
    job_from_fields,
    job_to_fields,
    update_arguments,
)

__all__ = ["AsyncJobStore", "JobEvents", "wait_for_job"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_RECHECK_SECONDS = 1.0


class AsyncJobStore:
    def __init__(self, client: aioredis.Redis, ttl_seconds: int, keys: JobKeys) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self.keys = keys

    async def create(self, job: Job) -> None:
        async def write() -> None:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.job(job.id), mapping=job_to_fields(job))
                pipe.expire(self.keys.job(job.id), self._ttl)
                await pipe.execute()

        await _call(write)

    async def ping(self) -> None:
        await _call(self._redis.ping)

    async def get(self, job_id: str) -> Job | None:
        async def read() -> Job | None:
            return job_from_fields(await self._redis.hgetall(self.keys.job(job_id)))

        return await _call(read)

    async def fail(self, job_id: str, error: ModelProxyError) -> None:
        fields = {
            "state": JobState.FAILED.value,
            "error": JobError(code=error.code, message=error.message).model_dump_json(),
        }
        args = update_arguments(job_id, fields, self._ttl, self.keys)

        async def write() -> None:
            await self._redis.eval(UPDATE_IF_EXISTS, 1, *args)

        await _call(write)

    async def get_result(self, job_id: str) -> bytes | None:
        async def read() -> bytes | None:
            value = await self._redis.get(self.keys.result(job_id))
            assert value is None or isinstance(value, bytes)
            return value

        return await _call(read)


async def _call(operation: Callable[[], Awaitable[_T]]) -> _T:
    try:
        return await operation()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        raise QueueUnavailable("Redis cannot be reached; try again shortly") from None


class JobEvents:
    """One subscription to the job-events channel for the whole process, fanned out to waiters."""

    def __init__(self, client: aioredis.Redis, channel: str) -> None:
        self._redis = client
        self._channel = channel
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self._listen(), name="job-events")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def watch(self, job_id: str) -> Iterator[asyncio.Event]:
        event = asyncio.Event()
        self._waiters[job_id].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(job_id)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[job_id]

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    delay = 0.1
                    async for message in pubsub.listen():
                        job_id = message["data"]
                        if isinstance(job_id, bytes):
                            job_id = job_id.decode()
                        for event in self._waiters.get(job_id, ()):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: waiters fall back to re-checking
                log.warning("job events: subscription lost (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


async def wait_for_job(
    store: AsyncJobStore, events: JobEvents, job_id: str, timeout: float
) -> Job | None:
    """The job once it has finished, or as it stands when ``timeout`` seconds have passed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    with events.watch(job_id) as event:
        while True:
            event.clear()
            job = await store.get(job_id)
            remaining = deadline - loop.time()
            if job is None or job.state.finished or remaining <= 0:
                return job
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, _RECHECK_SECONDS))
