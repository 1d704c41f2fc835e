"""The callbacks of a job, kept in Redis beside its record (a finished job's record never
changes, so they have a key of their own).

``<prefix>:callbacks:{job id}`` is a hash, kept as long as job records
(``MODEL_PROXY_JOB_TTL_SECONDS``, renewed at each change), whose fields are, per callback
(``<cid>``: a digest of its URL, so one URL is kept once):

- ``url:<cid>``, ``by:<cid>``, ``at:<cid>``: the URL, who gave it, when;
- ``sent:<cid>``: its delivery was queued (set once: only one delivery per callback);
- ``first:<cid>``: when the first try began;
- ``try:<cid>:<n>``: try ``n``: ``{"at", "status", "error"}`` (never the answer's body);
- ``end:<cid>``: ``delivered`` or ``failed``, once it is over.

This module only names the fields, builds the registration script and reads the hash back;
the broker's and the workers' clients run the commands.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from model_proxy.shared.jobs.operations import ScriptCall, text

__all__ = [
    "CLAIM_UNSENT",
    "REGISTER",
    "Callback",
    "CallbackAttempt",
    "CallbackFields",
    "Registration",
    "callback_id",
    "callbacks_from_fields",
    "claim_unsent_call",
    "register_call",
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
    sent: bool = False
    first_try_at: float | None = None
    attempts: tuple[CallbackAttempt, ...] = field(default=())
    outcome: str | None = None  # "delivered" or "failed" once over

    @property
    def delivered(self) -> bool:
        return self.outcome == "delivered"


def callback_id(url: str) -> str:
    return hashlib.sha256(url.encode()).hexdigest()[:16]


class CallbackFields:
    """The key and field names of the callbacks of jobs under ``prefix``."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def key(self, job_id: str) -> str:
        return f"{self.prefix}:callbacks:{job_id}"

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


# KEYS: the job's record, its callbacks. ARGV: cid, url, requester, now, cap, ttl.
# Answers {registration, job state}. The URL is kept once; at most `cap` per job.
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
        [job_key, fields.key(job_id)],
        [callback_id(url), url, requester, repr(now), cap, ttl],
        reply,
    )


# KEYS: the job's callbacks. Marks each callback whose delivery is not queued yet as queued
# and answers their ids: whoever calls it queues exactly those, once.
CLAIM_UNSENT = """
local claimed = {}
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, 4) == 'url:' then
    local cid = string.sub(name, 5)
    if redis.call('HSETNX', KEYS[1], 'sent:' .. cid, '1') == 1 then
      table.insert(claimed, cid)
    end
  end
end
return claimed
"""


def claim_unsent_call(fields: CallbackFields, job_id: str) -> ScriptCall[list[str]]:
    """The script call that claims the job's callbacks not yet queued for delivery."""
    return ScriptCall(
        CLAIM_UNSENT, [fields.key(job_id)], [], lambda reply: [text(cid) for cid in reply]
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
        first = values.get(CallbackFields.first(cid))
        found.append(
            Callback(
                id=cid,
                url=url,
                requester=values.get(f"by:{cid}", ""),
                registered_at=float(values.get(f"at:{cid}", "0")),
                sent=CallbackFields.sent(cid) in values,
                first_try_at=float(first) if first else None,
                attempts=tuple(attempt for _, attempt in tries),
                outcome=values.get(CallbackFields.end(cid)),
            )
        )
    return sorted(found, key=lambda callback: callback.registered_at)
