"""The workers' synchronous client of the job records (the broker has an asyncio twin)."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import TypeVar

import redis
from redis.commands.core import Script

from model_proxy.shared.errors import ModelProxyError
from model_proxy.shared.jobs.keys import JobKeys
from model_proxy.shared.jobs.model import (
    Job,
    JobError,
    JobOutput,
    JobState,
    job_from_fields,
    output_fields,
)
from model_proxy.shared.jobs.operations import JobOperations, ScriptCall, text
from model_proxy.shared.jobs.outcomes import Claim, Lease, Requeued, Slot, Written
from model_proxy.shared.redis_errors import redis_errors

__all__ = ["JobStore"]

_T = TypeVar("_T")


class JobStore:
    """The job records as a worker (and the reaper) sees them: claim a job, report progress,
    finish it, hold its lease and its model's concurrency slot.

    Every change runs as one Lua script (see :mod:`model_proxy.shared.jobs.operations`), so it
    is atomic: two workers never both claim a job; a worker whose lease lapsed, or whose job was
    cancelled, finished or expired meanwhile, writes nothing and is told so by the returned enum;
    a result becomes visible together with the ``succeeded`` state. Records live ``ttl_seconds``.
    Redis being unreachable raises :class:`~model_proxy.shared.errors.QueueUnavailable`.
    """

    def __init__(self, client: redis.Redis, ttl_seconds: int, keys: JobKeys | None = None) -> None:
        self._redis = client
        self._ttl = ttl_seconds
        self.keys = keys or JobKeys()
        self._operations = JobOperations(self.keys, ttl_seconds)
        self._scripts: dict[str, Script] = {}

    def get(self, job_id: str) -> Job | None:
        with redis_errors():
            return job_from_fields(self._redis.hgetall(self.keys.job(job_id)))

    def get_result(self, job_id: str) -> bytes | None:
        with redis_errors():
            value = self._redis.get(self.keys.result(job_id))
        assert value is None or isinstance(value, bytes)
        return value

    def claim(self, job: Job, token: str, lease_seconds: float) -> Claim:
        return self.run(self._operations.claim(job, token, lease_seconds))

    def update(self, job_id: str, token: str, fields: dict[str, str], announce: bool) -> Written:
        return self.run(self._operations.update(job_id, token, fields, announce))

    def succeed(
        self,
        job: Job,
        token: str,
        result: bytes,
        objects: Mapping[str, bytes] | None = None,
        object_error: JobError | None = None,
        outputs: Sequence[JobOutput] | None = None,
        store_error: JobError | None = None,
    ) -> Written:
        """Store the result and mark the job succeeded, at once: waiters find both. The DICOM
        ``objects`` made from it (``JobOutput.key`` -> file) are stored first, as long-lived as
        the result, and named in the record (``outputs``: what became of each; by default
        only its format) with ``object_error`` (why one asked for was not made) and
        ``store_error`` (why one made was not stored into the PACS)."""
        objects = objects or {}
        if outputs is None:
            outputs = [JobOutput(format=kind) for kind in objects]
        with redis_errors(), self._redis.pipeline(transaction=False) as pipe:
            for kind, data in objects.items():
                pipe.set(self.keys.result_object(job.id, kind), data, ex=self._ttl)
            pipe.set(self.keys.staged_result(job.id, token), result, ex=self._ttl)
            pipe.execute()
        fields = output_fields(outputs, object_error, store_error)
        return self.run(self._operations.succeed(job, token, fields))

    def get_objects(self, job_id: str, names: Sequence[str]) -> dict[str, bytes]:
        """The DICOM objects of the job named ``names`` (:attr:`JobOutput.key`) still kept."""
        with redis_errors():
            values = self._redis.mget([self.keys.result_object(job_id, name) for name in names])
        return {
            name: value
            for name, value in zip(names, values, strict=True)
            if isinstance(value, bytes)
        }

    def record_store(
        self, job_id: str, outputs: Sequence[JobOutput], store_error: JobError | None
    ) -> bool:
        """Record what a later store of a succeeded job's objects did (its ``outputs`` and
        ``store_error``), the one change a finished record takes; False when the job is no
        longer there or not succeeded. The record keeps its time to live."""
        key = self.keys.job(job_id)
        fields = output_fields(outputs, None, store_error)
        with redis_errors(), self._redis.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key)
                    if text(pipe.hget(key, "state") or b"") != JobState.SUCCEEDED.value:
                        return False
                    pipe.multi()
                    for name, value in fields.items():
                        pipe.hset(key, name, value)
                    if store_error is None:
                        pipe.hdel(key, "store_error")
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue

    def fail(self, job: Job, token: str, error: ModelProxyError) -> Written:
        return self.run(self._operations.fail(job, token, error))

    def renew_lease(self, job_id: str, token: str, lease_seconds: float) -> Lease:
        """``RENEWED`` while this run holds the job's lease, else ``LOST``."""
        return self.run(self._operations.renew_lease(job_id, token, lease_seconds))

    def release_lease(self, job_id: str, token: str) -> Lease:
        """``RELEASED``, or ``LOST`` when another run holds it (that run's lease is kept)."""
        return self.run(self._operations.release_lease(job_id, token))

    def acquire_slot(self, model_id: str, token: str, limit: int, hold_seconds: float) -> Slot:
        """One of the model's ``limit`` places for concurrent calls, held ``hold_seconds`` by
        the run holding ``token``: only that run renews or releases it, so a second delivery
        of the same job (another run, another token) can never free the first run's place."""
        return self.run(self._operations.acquire_slot(model_id, token, limit, hold_seconds))

    def renew_slot(self, model_id: str, token: str, hold_seconds: float) -> None:
        """Keep the place of the run holding ``token`` (a place it no longer holds stays free)."""
        expires = time.time() + hold_seconds
        with redis_errors():
            self._redis.zadd(self.keys.model_slots(model_id), {token: expires}, xx=True)

    def release_slot(self, model_id: str, token: str) -> None:
        """Free the place of the run holding ``token``; other runs' places are untouched."""
        with redis_errors():
            self._redis.zrem(self.keys.model_slots(model_id), token)

    def abandoned(self) -> list[str]:
        """Ids of claimed jobs whose lease has expired: their worker is gone."""
        with redis_errors():
            ids = [text(item) for item in self._redis.zrange(self.keys.running, 0, -1)]
            if not ids:
                return []
            with self._redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.exists(self.keys.lease(job_id))
                alive = pipe.execute()
        return [job_id for job_id, held in zip(ids, alive, strict=True) if not held]

    def forget_running(self, job_id: str) -> None:
        """Drop a job whose record expired from the running set."""
        with redis_errors():
            self._redis.zrem(self.keys.running, job_id)

    def requeue_abandoned(self, job: Job, max_attempts: int) -> Requeued:
        """Back to the queue, or failed for good after ``max_attempts`` runs."""
        return self.run(self._operations.requeue_abandoned(job, max_attempts))

    def long_queued(self, unchanged_since: float, limit: int = 1000) -> list[Job]:
        """Queued jobs created, and unchanged, since before ``unchanged_since`` (oldest first,
        at most ``limit``): those whose task message may have been lost."""
        with redis_errors():
            ids = self._redis.zrangebyscore(
                self.keys.in_state("queued"), "-inf", unchanged_since, start=0, num=limit
            )
            if not ids:
                return []
            with self._redis.pipeline(transaction=False) as pipe:
                for job_id in ids:
                    pipe.hgetall(self.keys.job(text(job_id)))
                records = pipe.execute()
        jobs = (job_from_fields(record) for record in records)
        return [
            job
            for job in jobs
            if job is not None and job.state is JobState.QUEUED and job.updated_at < unchanged_since
        ]

    def recover_queued(self, job: Job, unchanged_since: float) -> Requeued:
        """``REQUEUED`` (marked as queued again now: send its task) when the job is still queued
        and unchanged since ``unchanged_since``; else ``SKIPPED``."""
        return self.run(self._operations.recover_queued(job.id, unchanged_since))

    def run(self, call: ScriptCall[_T]) -> _T:
        """Run one job script (:mod:`~model_proxy.shared.jobs.operations`), loaded once."""
        if call.script not in self._scripts:  # EVALSHA, loading the script when Redis lacks it
            self._scripts[call.script] = self._redis.register_script(call.script)
        with redis_errors():
            reply = self._scripts[call.script](keys=call.keys, args=call.args)
        return call.reply(reply)
