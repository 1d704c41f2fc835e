"""Recent stage durations per model, kept in Redis for the API's queue estimates.

When a run ends with an answer, the worker folds its stage durations (queue wait, fetch, model
call, the whole run) into one small hash per model, ``<prefix>:durations:<model>``: exponentially
weighted averages, so a model's hash holds a fixed handful of fields however many jobs it runs,
and forgets a model left idle for ``MODEL_PROXY_ETA_HISTORY_TTL_SECONDS``. The fold is one Lua
script, so two workers finishing at once both count. The worker writes with the synchronous
client (:func:`record_run_durations`); the API reads with the asyncio one
(:func:`recent_durations`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, fields
from typing import Any

import redis
import redis.asyncio as aioredis

from model_proxy.shared.jobs.keys import JobKeys
from model_proxy.shared.jobs.operations import text
from model_proxy.shared.redis_errors import redis_errors

__all__ = ["RecentDurations", "RunDurations", "recent_durations", "record_run_durations"]

# KEYS: the model's hash.  ARGV: weight of the new run, ttl, now, name, seconds, ...
_FOLD = """
local weight = tonumber(ARGV[1])
for i = 4, #ARGV - 1, 2 do
  local seconds = tonumber(ARGV[i + 1])
  local old = tonumber(redis.call('HGET', KEYS[1], ARGV[i]))
  if old then seconds = old + weight * (seconds - old) end
  redis.call('HSET', KEYS[1], ARGV[i], string.format('%.6f', seconds))
end
redis.call('HINCRBY', KEYS[1], 'runs', 1)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[2])
"""


@dataclass(frozen=True)
class RunDurations:
    """Seconds of the stages of one run (or their averages): waiting in the queue, fetching
    from the PACS, the model call, and the whole run from claim to answer."""

    queue_wait: float
    fetch: float
    inference: float
    run: float


@dataclass(frozen=True)
class RecentDurations:
    """A model's average stage durations over its recent runs, how many runs were folded in,
    and when the latest one ended (Unix seconds)."""

    average: RunDurations
    runs: int
    updated_at: float


def record_run_durations(
    client: redis.Redis,
    keys: JobKeys,
    model_id: str,
    durations: RunDurations,
    weight: float,
    ttl_seconds: int,
) -> None:
    """Fold one run's ``durations`` into the model's averages: the new run counts ``weight``
    (0 < weight <= 1), the history ``1 - weight``; the hash lives ``ttl_seconds`` after it."""
    args: list[Any] = [weight, ttl_seconds, repr(time.time())]
    for field in fields(RunDurations):
        args += [field.name, repr(max(float(getattr(durations, field.name)), 0.0))]
    with redis_errors():
        client.eval(_FOLD, 1, keys.durations(model_id), *args)


async def recent_durations(
    client: aioredis.Redis, keys: JobKeys, model_id: str
) -> RecentDurations | None:
    """The model's recent averages, or None when no run of it has been recorded lately."""
    with redis_errors():
        stored = await client.hgetall(keys.durations(model_id))
    values = {text(name): text(value) for name, value in stored.items()}
    try:
        average = RunDurations(**{f.name: float(values[f.name]) for f in fields(RunDurations)})
        return RecentDurations(average, int(values["runs"]), float(values["updated_at"]))
    except (KeyError, ValueError):
        return None
