"""The callbacks of a job, kept in Redis beside its record (a finished job's record never
changes, so they have a key of their own).

``<prefix>:callbacks:{job id}`` is a hash, kept as long as job records
(``MODEL_PROXY_JOB_TTL_SECONDS``, renewed at each change), whose fields are, per callback
(``<cid>``: a digest of its URL, so one URL is kept once):

- ``url:<cid>``, ``by:<cid>``, ``at:<cid>``: the URL, who gave it, when;
- ``sent:<cid>``: when its delivery was queued: the claim of whoever queued it (claimed again
  only by the reaper, when the delivery stalled: :mod:`model_proxy.workers.webhook_recovery`);
  each try's message carries the claim it was queued under, and a message whose claim is no
  longer the callback's makes no try (its delivery was queued again);
- ``first:<cid>``: when the first try began;
- ``try:<cid>:<n>``: try ``n``: ``{"at", "status", "error"}`` (never the answer's body);
- ``end:<cid>``: ``delivered`` or ``failed``, once it is over.

``<prefix>:callbacks:pending`` is a sorted set of the jobs whose callbacks may not all be over,
scored by when the reaper should look at them (again): at once when one is registered.

This module only names the fields, builds the registration script and reads the hash back;
the broker's and the workers' clients run the commands.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from model_proxy.shared.jobs.operations import ScriptCall, text

__all__ = [
    "CLAIM_UNSENT",
    "FORGET_OVER",
    "RECLAIM",
    "REGISTER",
    "RELEASE",
    "Callback",
    "CallbackAttempt",
    "CallbackFields",
    "Registration",
    "callback_id",
    "callbacks_from_fields",
    "claim_unsent_call",
    "forget_over_call",
    "new_claim",
    "reclaim_call",
    "register_call",
    "release_call",
]


class Registration(StrEnum):
    """What registering a callback did."""

    ADDED = "added"
    KNOWN = "known"  # the job already had this URL
    FULL = "full"  # the job has as many callbacks as it may
    MISSING = "missing"  # the job is gone


class CallbackAttempt(BaseModel):
    """One try: when, and the HTTP status answered or the code of the error met."""

    model_config = ConfigDict(frozen=True)

    at: float
    status: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class Callback:
    """A callback URL of a job, who gave it, and its tries so far."""

    id: str
    url: str
    requester: str
    registered_at: float
    sent_at: float | None = None  # when its delivery was last queued
    first_try_at: float | None = None
    attempts: tuple[CallbackAttempt, ...] = field(default=())
    outcome: str | None = None  # "delivered" or "failed" once over

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"

    @property
    def sent(self) -> bool:
        return self.sent_at is not None

    def claimed_by(self, claim: str) -> bool:
        """Whether its delivery is queued under ``claim`` (and not queued again since)."""
        try:
            return self.sent_at == float(claim)
        except ValueError:
            return False

    @property
    def last_activity(self) -> float:
        """When its delivery last moved: registered, queued, or a try began."""
        return max(
            self.registered_at,
            self.sent_at or 0.0,
            *(attempt.at for attempt in self.attempts),
        )


def callback_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class CallbackFields:
    """The key and field names of the callbacks of jobs under ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, job_id: str) -> str:
        return f"{self.prefix}:callbacks:{job_id}"

    @property
    def pending(self) -> str:
        return f"{self.prefix}:callbacks:pending"

    @staticmethod
    def sent(cid: str) -> str:
        return f"sent:{cid}"

    @staticmethod
    def first(cid: str) -> str:
        return f"first:{cid}"

    @staticmethod
    def attempt(cid: str, number: int) -> str:
        return f"try:{cid}:{number}"

    @staticmethod
    def end(cid: str) -> str:
        return f"end:{cid}"


# KEYS: the job's record, its callbacks, the pending jobs. ARGV: cid, url, requester, now, cap,
# ttl, job id. Answers {registration, job state}. The URL is kept once; at most `cap` per job.
# Pending jobs not looked at for a whole ttl (no reaper ran: their records are gone) are dropped.
REGISTER = """
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {'missing', ''} end
if redis.call('HEXISTS', KEYS[2], 'url:' .. ARGV[1]) == 1 then return {'known', state} end
if tonumber(redis.call('HGET', KEYS[2], 'count') or '0') >= tonumber(ARGV[5]) then
  return {'full', state}
end
redis.call('HSET', KEYS[2], 'url:' .. ARGV[1], ARGV[2], 'by:' .. ARGV[1], ARGV[3],
  'at:' .. ARGV[1], ARGV[4])
redis.call('HINCRBY', KEYS[2], 'count', 1)
redis.call('EXPIRE', KEYS[2], ARGV[6])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', tonumber(ARGV[4]) - tonumber(ARGV[6]))
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[7])
return {'added', state}
"""


def register_call(
    fields: CallbackFields,
    job_key: str,
    job_id: str,
    url: str,
    requester: str,
    now: float,
    cap: int,
    ttl: int,
) -> ScriptCall[tuple[Registration, str]]:
    """The script call that adds ``url`` to the job's callbacks; its reply is what it did and
    the job's state then."""

    def reply(value: Any) -> tuple[Registration, str]:
        outcome, state = value
        return Registration(text(outcome)), text(state)

    return ScriptCall(
        REGISTER,
        [job_key, fields.key(job_id), fields.pending],
        [callback_id(url), url, requester, repr(now), cap, ttl, job_id],
        reply,
    )


# KEYS: the job's callbacks. ARGV: the claim. Marks each callback whose delivery is not queued
# yet as queued under the claim and answers {id, tries recorded} of each: whoever calls it
# queues exactly those, once (a delivery given back after tries goes on after them).
CLAIM_UNSENT = """
local names = redis.call('HKEYS', KEYS[1])
local tries = {}
for _, name in ipairs(names) do
  local cid = string.match(name, '^try:(.+):%d+$')
  if cid then tries[cid] = (tries[cid] or 0) + 1 end
end
local claimed = {}
for _, name in ipairs(names) do
  if string.sub(name, 1, 4) == 'url:' then
    local cid = string.sub(name, 5)
    if redis.call('HSETNX', KEYS[1], 'sent:' .. cid, ARGV[1]) == 1 then
      table.insert(claimed, {cid, tries[cid] or 0})
    end
  end
end
return claimed
"""


def new_claim() -> str:
    """A claim on a delivery: the time it is queued (``sent:<cid>`` holds it)."""
    return repr(time.time())


def claim_unsent_call(
    fields: CallbackFields, job_id: str, claim: str
) -> ScriptCall[list[tuple[str, int]]]:
    """The script call that claims, as ``claim``, the job's callbacks not yet queued for
    delivery; answers each one's id and the number of its next try (1 unless tries were
    recorded before its delivery was given back). Each of their messages carries ``claim``."""
    return ScriptCall(
        CLAIM_UNSENT,
        [fields.key(job_id)],
        [claim],
        lambda reply: [(text(cid), int(tries) + 1) for cid, tries in reply],
    )


# KEYS: the job's callbacks. ARGV: cid, the `sent` value seen ('' for none), the try to queue,
# the new claim. Claims the callback's delivery again, unless it is over, someone queued it
# since it was seen, or that try has been made since.
RECLAIM = """
if redis.call('HEXISTS', KEYS[1], 'url:' .. ARGV[1]) == 0 then return 0 end
if redis.call('HEXISTS', KEYS[1], 'end:' .. ARGV[1]) == 1 then return 0 end
if (redis.call('HGET', KEYS[1], 'sent:' .. ARGV[1]) or '') ~= ARGV[2] then return 0 end
if redis.call('HEXISTS', KEYS[1], 'try:' .. ARGV[1] .. ':' .. ARGV[3]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'sent:' .. ARGV[1], ARGV[4])
return 1
"""


def reclaim_call(
    fields: CallbackFields, job_id: str, cid: str, seen_sent: str, attempt: int, claim: str
) -> ScriptCall[bool]:
    """The script call that claims again, as ``claim``, the delivery of a callback seen stalled
    with ``seen_sent`` as its ``sent`` field ('' when it had none), to queue its try
    ``attempt``: true when this caller queues it."""
    return ScriptCall(
        RECLAIM,
        [fields.key(job_id)],
        [cid, seen_sent, attempt, claim],
        lambda reply: bool(reply),
    )


# KEYS: the job's callbacks. ARGV: cid, claim. Gives a claim back (its message could not be
# queued), unless another has replaced it.
RELEASE = """
if redis.call('HGET', KEYS[1], 'sent:' .. ARGV[1]) == ARGV[2] then
  return redis.call('HDEL', KEYS[1], 'sent:' .. ARGV[1])
end
return 0
"""


def release_call(fields: CallbackFields, job_id: str, cid: str, claim: str) -> ScriptCall[bool]:
    """The script call that gives back ``claim`` on the callback's delivery, so the next call
    of :data:`CLAIM_UNSENT` (or the reaper) queues it."""
    return ScriptCall(RELEASE, [fields.key(job_id)], [cid, claim], lambda reply: bool(reply))


# KEYS: the pending jobs, the job's callbacks. ARGV: the job id, when to look again. Forgets
# the job when every callback it has is over (or it has none left: expired); else scores it.
FORGET_OVER = """
for _, name in ipairs(redis.call('HKEYS', KEYS[2])) do
  if string.sub(name, 1, 4) == 'url:' then
    if redis.call('HEXISTS', KEYS[2], 'end:' .. string.sub(name, 5)) == 0 then
      redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
      return 0
    end
  end
end
redis.call('ZREM', KEYS[1], ARGV[1])
return 1
"""


def forget_over_call(fields: CallbackFields, job_id: str, look_again_at: float) -> ScriptCall[bool]:
    """The script call that drops the job from the pending set once all its callbacks are over
    (true), or keeps it to be looked at again at ``look_again_at`` (false)."""
    return ScriptCall(
        FORGET_OVER,
        [fields.pending, fields.key(job_id)],
        [job_id, repr(look_again_at)],
        lambda reply: bool(reply),
    )


def callbacks_from_fields(raw: Mapping[Any, Any]) -> list[Callback]:
    """The callbacks of a job from its hash, in the order they were given."""
    values = {text(k): text(v) for k, v in raw.items()}
    found = []
    for name, url in values.items():
        if not name.startswith("url:"):
            continue
        cid = name.removeprefix("url:")
        tries = sorted(
            (int(key.rsplit(":", 1)[1]), CallbackAttempt.model_validate_json(value))
            for key, value in values.items()
            if key.startswith(f"try:{cid}:")
        )
        found.append(
            Callback(
                id=cid,
                url=url,
                requester=values.get(f"by:{cid}", ""),
                registered_at=float(values.get(f"at:{cid}", "0")),
                sent_at=_moment(values.get(CallbackFields.sent(cid))),
                first_try_at=_moment(values.get(CallbackFields.first(cid))),
                attempts=tuple(attempt for _, attempt in tries),
                outcome=values.get(CallbackFields.end(cid)),
            )
        )
    return sorted(found, key=lambda callback: callback.registered_at)


def _moment(value: str | None) -> float | None:
    """A time field; None when absent."""
    return float(value) if value else None
