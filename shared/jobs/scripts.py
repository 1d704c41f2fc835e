"""The atomic steps of a job's life, as Redis Lua scripts.

Every change of a job record goes through one of these, so that no two processes can both
claim a job, a cancelled or finished job never comes back to life, a worker that lost its lease
cannot write, and a write after a record expired leaves nothing behind. Each script publishes
the job id on the events channel when the job changed visibly.
"""

from __future__ import annotations

from model_proxy.shared.jobs.model import JobState

__all__ = [
    "ACQUIRE_SLOT",
    "CACHED_RESULT",
    "CLAIM",
    "CREATE_OR_ATTACH",
    "FINISH",
    "RECOVER_QUEUED",
    "RELEASE_LEASE",
    "RENEW_LEASE",
    "REQUEUE_IF_ABANDONED",
    "TERMINATE",
    "UPDATE",
]

_FINISHED = "(state == 'succeeded' or state == 'failed' or state == 'cancelled')"
_STATES = ", ".join(f"'{state.value}'" for state in JobState)

# Every job is in the sorted set of its state, ``<prefix>:jobs:<state>``, scored by creation
# time, so a listing of one state reads only that state's newest entries. A script that changes
# a job's state moves it between them (``states`` is the key prefix of those sets, passed as the
# script's last KEY).
_MOVE = """
local function move(states, job, id, from, to)
  if from == to then return end
  if from then redis.call('ZREM', states .. from, id) end
  local created = redis.call('HGET', job, 'created_at') or '0'
  redis.call('ZADD', states .. to, created, id)
end
"""


def _unfinished_or(gone: str, ended: str, lost: str | None = None) -> str:
    """Lua that returns ``gone`` when the job's record (KEYS[1]) is missing, ``ended`` when it
    has finished, and, given ``lost``, that when its lease (KEYS[2]) is not this run's (ARGV[4]).
    It leaves the job's state in ``state``."""
    lines = [
        "local state = redis.call('HGET', KEYS[1], 'state')",
        f"if not state then return {gone} end",
        f"if {_FINISHED} then return {ended} end",
    ]
    if lost is not None:
        lines.append(f"if redis.call('GET', KEYS[2]) ~= ARGV[4] then return {lost} end")
    return "\n".join(lines)


# KEYS: job, active, index, queued, cached, state-index prefix.
# ARGV: id, ttl, now, job-key prefix, use cached (1/0), field, value, ...
# Returns {id, 'attached'} for the unfinished identical job if there is one, else creates this
# one: {id, 'created'}. With ARGV[5] == '1' (no fresh run asked for), a job that succeeded
# meanwhile (KEYS[5], the cached pointer) is returned too, {id, 'cached'}: a request must not
# start a second run because the first finished between its cache lookup and this script.
CREATE_OR_ATTACH = f"""
local existing = redis.call('GET', KEYS[2])
if existing then
  local state = redis.call('HGET', ARGV[4] .. existing, 'state')
  if state and not {_FINISHED} then return {{existing, 'attached'}} end
end
if ARGV[5] == '1' then
  local done = redis.call('GET', KEYS[5])
  if done and redis.call('HGET', ARGV[4] .. done, 'state') == 'succeeded' then
    return {{done, 'cached'}}
  end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[6] .. 'queued', ARGV[3], ARGV[1])
-- pruned on write: entries of jobs older than the records' time to live leave every index
local oldest = tonumber(ARGV[3]) - tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', oldest)
for _, state in ipairs({{{_STATES}}}) do
  redis.call('ZREMRANGEBYSCORE', KEYS[6] .. state, '-inf', oldest)
end
return {{ARGV[1], 'created'}}
"""

# The stored answer of identical requests, in one round trip: {job id, result} or nil.
# KEYS: cached pointer.  ARGV: job-key prefix, result-key prefix.
CACHED_RESULT = """
local id = redis.call('GET', KEYS[1])
if not id then return nil end
if redis.call('HGET', ARGV[1] .. id, 'state') ~= 'succeeded' then return nil end
local result = redis.call('GET', ARGV[2] .. id)
if not result then return nil end
return {id, result}
"""

# KEYS: job, lease, running, queued, state-index prefix.
# ARGV: token, lease ms, now, channel, id, ttl
CLAIM = f"""
{_MOVE}
{_unfinished_or("'missing'", "'finished'")}
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 'busy' end
redis.call('EXPIRE', KEYS[1], ARGV[6])
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'state', 'fetching', 'started_at', ARGV[3], 'updated_at', ARGV[3])
move(KEYS[5], KEYS[1], ARGV[5], state, 'fetching')
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[5])
redis.call('ZREM', KEYS[4], ARGV[5])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 'claimed'
"""

# KEYS: job, lease, state-index prefix.  ARGV: ttl, channel, id, token, announce (1/0), field,
# value, ...  Returns 'done', 'gone' (record expired), 'ended' (finished or cancelled meanwhile)
# or 'lost' (the lease went to another worker).
UPDATE = f"""
{_MOVE}
{_unfinished_or("'gone'", "'ended'", "'lost'")}
for i = 6, #ARGV - 1, 2 do
  if ARGV[i] == 'state' then move(KEYS[3], KEYS[1], ARGV[3], state, ARGV[i + 1]) end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 6))
redis.call('EXPIRE', KEYS[1], ARGV[1])
if ARGV[5] == '1' then redis.call('PUBLISH', ARGV[2], ARGV[3]) end
return 'done'
"""

# KEYS: job, lease, running, active, cached, staged result, result, state-index prefix.
# ARGV: ttl, channel, id, token, final state, field, value, ...   Returns as UPDATE.
# A succeeding worker stages its result under a key of its own; only the run that still holds
# the lease moves it into place, so a late worker can neither overwrite nor delete it.
FINISH = f"""
{_MOVE}
local function refuse(code)
  redis.call('DEL', KEYS[6])
  return code
end
{_unfinished_or("refuse('gone')", "refuse('ended')", "refuse('lost')")}
if redis.call('EXISTS', KEYS[6]) == 1 then redis.call('RENAME', KEYS[6], KEYS[7]) end
redis.call('HSET', KEYS[1], 'state', ARGV[5], unpack(ARGV, 6))
move(KEYS[8], KEYS[1], ARGV[3], state, ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[3])
if redis.call('GET', KEYS[4]) == ARGV[3] then redis.call('DEL', KEYS[4]) end
if ARGV[5] == 'succeeded' then redis.call('SET', KEYS[5], ARGV[3], 'EX', ARGV[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 'done'
"""

# Ends a job from outside its worker (cancel, or a failed enqueue).
# KEYS: job, running, queued, active, state-index prefix.
# ARGV: now, channel, id, final state, error json
# Returns 'terminated', 'finished' (already) or 'missing'.
TERMINATE = f"""
{_MOVE}
{_unfinished_or("'missing'", "'finished'")}
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'finished_at', ARGV[1], 'updated_at', ARGV[1],
           'error', ARGV[5])
move(KEYS[5], KEYS[1], ARGV[3], state, ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
if redis.call('GET', KEYS[4]) == ARGV[3] then redis.call('DEL', KEYS[4]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 'terminated'
"""

# KEYS: lease.  ARGV: token, lease ms.  Returns 'renewed' or 'lost'.
RENEW_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lost' end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 'renewed'
"""

# KEYS: lease, running.  ARGV: token, id.  Returns 'released' or 'lost'.
RELEASE_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 'lost' end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 'released'
"""

# A claimed job whose lease expired (its worker died): back to the queue, or failed for good
# once its workers died max-lost-runs times (counted in 'lost_runs'; retries of transient
# failures within a run count in 'attempts', not here).
# KEYS: job, lease, running, queued, active, state-index prefix.
# ARGV: now, channel, id, max lost runs, error json.  Returns 'requeued', 'failed' or 'skipped'.
REQUEUE_IF_ABANDONED = f"""
{_MOVE}
if redis.call('EXISTS', KEYS[2]) == 1 then return 'skipped' end
local state = redis.call('HGET', KEYS[1], 'state')
redis.call('ZREM', KEYS[3], ARGV[3])
if state ~= 'fetching' and state ~= 'inferring' then return 'skipped' end
if redis.call('HINCRBY', KEYS[1], 'lost_runs', 1) >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'state', 'failed', 'error', ARGV[5], 'finished_at', ARGV[1],
             'updated_at', ARGV[1])
  move(KEYS[6], KEYS[1], ARGV[3], state, 'failed')
  if redis.call('GET', KEYS[5]) == ARGV[3] then redis.call('DEL', KEYS[5]) end
  redis.call('PUBLISH', ARGV[2], ARGV[3])
  return 'failed'
end
redis.call('HSET', KEYS[1], 'state', 'queued', 'updated_at', ARGV[1])
move(KEYS[6], KEYS[1], ARGV[3], state, 'queued')
redis.call('ZADD', KEYS[4], ARGV[1], ARGV[3])
redis.call('PUBLISH', ARGV[2], ARGV[3])
return 'requeued'
"""

# A job still queued, unchanged since before a bound, whose task message the reaper could not
# find (lost): marked as queued again now, so that it is sent once per bound at most.
# KEYS: job.  ARGV: now, bound (queued, unchanged since before it).  Returns 'requeued' or
# 'skipped' (no longer queued, or changed since).
RECOVER_QUEUED = """
if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return 'skipped' end
if tonumber(redis.call('HGET', KEYS[1], 'updated_at') or '0') >= tonumber(ARGV[2]) then
  return 'skipped'
end
redis.call('HSET', KEYS[1], 'updated_at', ARGV[1])
return 'requeued'
"""

# A place among a model's concurrent calls, held by one run.  KEYS: slots.
# ARGV: now, expires at, limit, the run's token.
# Returns 'taken' or 'full'.
ACQUIRE_SLOT = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZSCORE', KEYS[1], ARGV[4]) then
  redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
  return 'taken'
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[3]) then return 'full' end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[4])
return 'taken'
"""
