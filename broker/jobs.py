"""The broker's asyncio view of the job records, and waiting for a job without a thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

import redis.asyncio as aioredis
import redis.exceptions
from redis.commands.core import AsyncScript

from model_proxy.shared.errors import ModelProxyError, QueueUnavailable
from model_proxy.shared.jobs import (
    Job,
    JobError,
    JobKeys,
    JobState,
    job_from_fields,
    job_to_fields,
    scripts,
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
        self._scripts: dict[str, AsyncScript] = {}

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    async def ping(self) -> None:
        await _call(self._redis.ping)

    async def create_or_attach(self, job: Job, use_cached: bool = True) -> str:
        """Record ``job``, or return the id of the unfinished identical job if there is one
        (or, with ``use_cached``, of one that has just succeeded)."""
        keys = self.keys
        fields = job_to_fields(job)
        value = await self._eval(
            scripts.CREATE_OR_ATTACH,
            [
                keys.job(job.id),
                keys.active(job.fingerprint),
                keys.index,
                keys.queued(job.request.model_id),
                keys.cached(job.fingerprint),
            ],
            [
                job.id,
                self._ttl,
                repr(job.created_at),
                keys.job(""),
                "1" if use_cached else "0",
                *[item for pair in fields.items() for item in pair],
            ],
        )
        return value.decode() if isinstance(value, bytes) else str(value)

    async def cached(self, fingerprint: str) -> tuple[str, bytes] | None:
        """The id of the succeeded job of identical requests and its result, while both last
        (one round trip: this is the hot path of cached answers)."""
        found = await self._eval(
            scripts.CACHED_RESULT,
            [self.keys.cached(fingerprint)],
            [self.keys.job(""), self.keys.result("")],
        )
        if not found:
            return None
        job_id, result = found
        return _text(job_id), bytes(result)

    async def get(self, job_id: str) -> Job | None:
        async def read() -> Job | None:
            return job_from_fields(await self._redis.hgetall(self.keys.job(job_id)))

        return await _call(read)

    async def get_result(self, job_id: str) -> bytes | None:
        async def read() -> bytes | None:
            value = await self._redis.get(self.keys.result(job_id))
            assert value is None or isinstance(value, bytes)
            return value

        return await _call(read)

    async def terminate(self, job: Job, state: JobState, error: ModelProxyError) -> str:
        """End a job from outside its worker: ``cancelled``, or ``failed`` when it was never
        queued. Returns ``missing``, ``finished`` or the state set."""
        keys = self.keys
        value = await self._eval(
            scripts.TERMINATE,
            [
                keys.job(job.id),
                keys.running,
                keys.queued(job.request.model_id),
                keys.active(job.fingerprint),
            ],
            [
                repr(time.time()),
                keys.events,
                job.id,
                state.value,
                JobError(code=error.code, message=error.message).model_dump_json(),
            ],
        )
        return value.decode() if isinstance(value, bytes) else str(value)

    async def queued_count(self, model_id: str) -> int:
        """Jobs of this model waiting for a worker (entries older than the TTL are dropped)."""
        key = self.keys.queued(model_id)

        async def count() -> int:
            await self._redis.zremrangebyscore(key, "-inf", time.time() - self._ttl)
            return int(await self._redis.zcard(key))

        return await _call(count)

    async def recent(self, limit: int, state: JobState | None = None) -> list[Job]:
        """The newest jobs first, optionally only those in ``state``."""
        index = self.keys.index

        async def read() -> list[Job]:
            await self._redis.zremrangebyscore(index, "-inf", time.time() - self._ttl)
            found: list[Job] = []
            start = 0
            batch = max(limit, 50)
            while len(found) < limit:
                ids = await self._redis.zrevrange(index, start, start + batch - 1)
                if not ids:
                    break
                async with self._redis.pipeline(transaction=False) as pipe:
                    for job_id in ids:
                        pipe.hgetall(self.keys.job(_text(job_id)))
                    records = await pipe.execute()
                for record in records:
                    job = job_from_fields(record)
                    if job is not None and (state is None or job.state is state):
                        found.append(job)
                start += batch
            return found[:limit]

        return await _call(read)

    async def _eval(self, script: str, keys: list[str], args: list[Any]) -> Any:
        if script not in self._scripts:
            self._scripts[script] = self._redis.register_script(script)
        runner = self._scripts[script]
        return await _call(lambda: runner(keys=keys, args=args))


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


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
