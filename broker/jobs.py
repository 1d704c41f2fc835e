"""The broker's asyncio client of the job records, and waiting for a job without a thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator, Sequence
from typing import TypeVar

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript

from model_proxy.broker.background import BackgroundTask
from model_proxy.shared.errors import ModelProxyError
from model_proxy.shared.jobs import Job, JobKeys, JobState, job_from_fields
from model_proxy.shared.jobs.operations import JobOperations, ScriptCall, queue_event, text
from model_proxy.shared.jobs.outcomes import Admitted, Detached, Terminated
from model_proxy.shared.redis_errors import redis_errors

__all__ = ["AsyncJobStore", "JobEvents", "StreamSlot", "wait_for_job"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_RECHECK_SECONDS = 1.0
_PAGE = 200  # a requester's jobs read at once when only one state is listed


class AsyncJobStore:
    """The job records as the API sees them: record a request's job (or find the identical one
    already there), read jobs, results and queue lengths, and end a job from outside.

    It runs the same scripts, with the same keys and arguments, as the workers'
    :class:`~model_proxy.shared.jobs.JobStore` (both build them with
    :class:`~model_proxy.shared.jobs.operations.JobOperations`), so its guarantees are theirs:
    each change is atomic, identical unfinished requests share one job, and a finished job is
    never changed again. Redis being unreachable raises
    :class:`~model_proxy.shared.errors.QueueUnavailable`.
    """

    def __init__(self, client: aioredis.Redis, ttl_seconds: int, keys: JobKeys) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self.keys = keys
        self._operations = JobOperations(keys, ttl_seconds)
        self._scripts: dict[str, AsyncScript] = {}

    @property
    def redis(self) -> aioredis.Redis:
        return self._redis

    async def ping(self) -> None:
        with redis_errors():
            await self._redis.ping()

    async def create_or_attach(
        self, job: Job, use_cached: bool = True, requester: str = "", limit: int = 0
    ) -> Admitted:
        """Record ``job``, or answer the unfinished identical job if there is one (or, with
        ``use_cached``, one that has just succeeded), and record ``requester`` as one who asked
        for it. ``OVER_QUOTA`` when that would give ``requester`` more than ``limit`` unfinished
        jobs (0: no limit; a job it already waits for does not count twice)."""
        return await self.run(self._operations.create_or_attach(job, use_cached, requester, limit))

    async def note_asked(self, requester: str, job_id: str) -> None:
        """``requester`` was answered with the stored result of ``job_id``: it lists it."""
        await self.run(self._operations.note_asked(requester, job_id))

    async def detach(self, job: Job, requester: str, error: ModelProxyError) -> Detached:
        """``requester`` leaves ``job`` (all its asks); the last one out cancels it."""
        return await self.run(self._operations.detach(job, requester, error))

    async def cached(self, fingerprint: str) -> tuple[str, bytes] | None:
        """The id of the succeeded job of identical requests and its result, while both last
        (one round trip: this is the hot path of cached answers)."""
        return await self.run(self._operations.cached_result(fingerprint))

    async def get(self, job_id: str) -> Job | None:
        with redis_errors():
            return job_from_fields(await self._redis.hgetall(self.keys.job(job_id)))

    async def get_result(self, job_id: str) -> bytes | None:
        with redis_errors():
            value = await self._redis.get(self.keys.result(job_id))
        assert value is None or isinstance(value, bytes)
        return value

    async def get_object(self, job_id: str, name: str) -> bytes | None:
        """The DICOM object made from the job's answer named ``name`` (``JobOutput.key``)."""
        with redis_errors():
            value = await self._redis.get(self.keys.result_object(job_id, name))
        assert value is None or isinstance(value, bytes)
        return value

    async def objects_kept(self, job_id: str, names: Sequence[str]) -> bool:
        """Whether every one of the job's DICOM objects ``names`` is still stored (one round
        trip, no object read)."""
        keys = [self.keys.result_object(job_id, name) for name in names]
        with redis_errors():
            count = await self._redis.exists(*keys)
        return int(count) == len(keys)

    async def terminate(self, job: Job, state: JobState, error: ModelProxyError) -> Terminated:
        """End a job from outside its worker: ``cancelled``, or ``failed`` when it was never
        queued."""
        return await self.run(self._operations.terminate(job, state, error))

    async def queued_count(self, model_id: str) -> int:
        """Jobs of this model waiting for a worker (entries older than the TTL are dropped)."""
        key = self.keys.queued(model_id)
        with redis_errors():
            await self._redis.zremrangebyscore(key, "-inf", time.time() - self._ttl)
            return int(await self._redis.zcard(key))

    async def recent(self, limit: int, state: JobState | None = None) -> list[Job]:
        """The newest jobs first, optionally only those in ``state``.

        It reads the newest ``limit`` entries of the index of all jobs or of that state's index,
        then their records in one round trip: two round trips and ``limit + 1`` commands, however
        many jobs there are. (Indexes are pruned when jobs are created, not here.)
        """
        if limit <= 0:
            return []
        index = self.keys.index if state is None else self.keys.in_state(state.value)
        with redis_errors():
            ids = await self._redis.zrevrange(index, 0, limit - 1)
            if not ids:
                return []
            async with self._redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(self.keys.job(text(job_id)))
                records = await pipe.execute()
        jobs = (job_from_fields(record) for record in records)
        return [job for job in jobs if job is not None and (state is None or job.state is state)]

    async def asked_by(
        self, requester: str, limit: int, state: JobState | None = None
    ) -> list[Job]:
        """The jobs ``requester`` asked for, latest ask first, optionally only those in
        ``state``: its index read newest first, a page at a time, until ``limit`` are found."""
        if limit <= 0:
            return []
        index, start = self.keys.asked(requester), 0
        found: list[Job] = []
        page = max(limit, _PAGE) if state is not None else limit
        while len(found) < limit:
            with redis_errors():
                ids = await self._redis.zrevrange(index, start, start + page - 1)
                if not ids:
                    break
                async with self._redis.pipeline(transaction=False) as pipe:
                    for job_id in ids:
                        pipe.hgetall(self.keys.job(text(job_id)))
                    records = await pipe.execute()
            jobs = (job_from_fields(record) for record in records)
            found += [job for job in jobs if job is not None and state in (None, job.state)]
            start += page
        return found[:limit]

    async def run(self, call: ScriptCall[_T]) -> _T:
        """Run one job script (:mod:`~model_proxy.shared.jobs.operations`), loaded once."""
        if call.script not in self._scripts:
            self._scripts[call.script] = self._redis.register_script(call.script)
        with redis_errors():
            reply = await self._scripts[call.script](keys=call.keys, args=call.args)
        return call.reply(reply)


class StreamSlot:
    """An event stream's place among those its process may keep open
    (:meth:`JobEvents.reserve_stream`); :meth:`release` gives it back, once however often it is
    called (the stream's end, its response's end, or the response dropped unsent)."""

    def __init__(self, events: JobEvents) -> None:
        self._events: JobEvents | None = events

    @property
    def held(self) -> bool:
        return self._events is not None

    def release(self) -> None:
        events, self._events = self._events, None
        if events is not None:
            events._release_stream()


class JobEvents:
    """One subscription to the job-events channel for the whole process, fanned out to waiters.

    A waiter watches one job; a stream of a queued job also watches its model's queue, woken by
    the ``queue:<model id>`` messages of the jobs that leave it. ``open_streams`` counts the
    event-stream slots this process has given out (:mod:`~model_proxy.broker.event_stream`)."""

    def __init__(self, client: aioredis.Redis, channel: str) -> None:
        self._redis = client
        self._channel = channel
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._listener = BackgroundTask("job-events", self._listen)
        self.open_streams = 0

    async def start(self) -> None:
        self._listener.start()

    async def stop(self) -> None:
        await self._listener.stop()

    @contextlib.contextmanager
    def watch(self, job_id: str, model_id: str | None = None) -> Iterator[asyncio.Event]:
        """An event set whenever ``job_id`` changes, and, given ``model_id``, whenever that
        model's queue does."""
        event = asyncio.Event()
        topics = [job_id] if model_id is None else [job_id, queue_event(model_id)]
        for topic in topics:
            self._waiters[topic].add(event)
        try:
            yield event
        finally:
            for topic in topics:
                waiters = self._waiters.get(topic)
                if waiters is not None:
                    waiters.discard(event)
                    if not waiters:
                        del self._waiters[topic]

    def reserve_stream(self, limit: int) -> StreamSlot | None:
        """One of this process's ``limit`` event-stream slots, or None when all are taken. No
        await between the check and the count: atomic in the event loop, so a burst of requests
        cannot all pass the check before any stream starts."""
        if self.open_streams >= limit:
            return None
        self.open_streams += 1
        return StreamSlot(self)

    def _release_stream(self) -> None:
        self.open_streams -= 1

    async def _listen(self) -> None:
        delay = 0.1
        while True:
            try:
                async with self._redis.pubsub(ignore_subscribe_messages=True) as pubsub:
                    await pubsub.subscribe(self._channel)
                    delay = 0.1
                    async for message in pubsub.listen():
                        topic = message["data"]
                        if isinstance(topic, bytes):
                            topic = topic.decode()
                        for event in self._waiters.get(topic, ()):
                            event.set()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis went away: waiters fall back to re-checking
                log.warning("job events: subscription lost (%s); retrying", type(exc).__name__)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)


async def wait_for_job(
    store: AsyncJobStore,
    events: JobEvents,
    job_id: str,
    timeout: float,
    client_gone: Callable[[], Awaitable[bool]] | None = None,
) -> Job | None:
    """The job once it has finished, or as it stands when ``timeout`` seconds have passed or
    ``client_gone`` (asked at least every second) says the client no longer waits."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    with events.watch(job_id) as event:
        while True:
            event.clear()
            job = await store.get(job_id)
            remaining = deadline - loop.time()
            if job is None or job.state.finished or remaining <= 0:
                return job
            if client_gone is not None and await client_gone():
                return job
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), min(remaining, _RECHECK_SECONDS))
