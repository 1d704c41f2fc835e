"""The atomic steps of a job's life, as Redis Lua scripts.

Every change of a job record goes through one of these, so that no two processes can both
claim a job, a cancelled or finished job never comes back to life, a worker that lost its lease
cannot write, and a write after a record expired leaves nothing behind. Each script publishes
the job id on the events channel when the job changed visibly; one that moves a job out of its
model's queue (claimed, ended, requeued) also publishes ``queue:<model id>`` there, since the
positions of the jobs still queued behind it changed (:data:`QUEUE_EVENT_PREFIX`).
"""

from __future__ import annotations

from model_proxy.shared.jobs.model import ASKER_FIELD, JobState

__all__ = [
    "ACQUIRE_SLOT",
    "CACHED_RESULT",
    "CLAIM",
    "CREATE_OR_ATTACH",
    "DETACH",
    "FINISH",
    "NOTE_ASKED",
    "QUEUE_EVENT_PREFIX",
    "RECOVER_QUEUED",
    "RELEASE_LEASE",
    "RENEW_LEASE",
    "REQUEUE_IF_ABANDONED",
    "TERMINATE",
    "UPDATE",
]

QUEUE_EVENT_PREFIX = "queue:"
"""A message ``queue:<model id>`` on the events channel: that model's queue changed."""

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


# Who asked for a job. Each requester (a principal's name, or ``anonymous@<address>``) that
# asks for an unfinished job is a field ``asker:<name>`` of its record, counting its open asks,
# so the requesters expire with the record. Each ask is also noted in the requester's own index
# (``asked``: what it asked for, by time, pruned past the time to live) and, while it has a quota,
# in its set of unfinished jobs (``unfinished``), which is checked and pruned when it asks again.
# Requester '' records nothing and has no quota. These helpers expect, as KEYS[7] and KEYS[8],
# the requester's index and unfinished set; as ARGV: ARGV[2] ttl, ARGV[3] now, ARGV[4] the
# job-key prefix, ARGV[6] the requester, ARGV[7] its limit of unfinished jobs (0: none).
_ASKS = f"""
local asker = ARGV[6]
local field = '{ASKER_FIELD}' .. asker
local limit = tonumber(ARGV[7])
local oldest = tonumber(ARGV[3]) - tonumber(ARGV[2])
local function note(id)
  if asker == '' then return end
  redis.call('ZADD', KEYS[7], ARGV[3], id)
  redis.call('ZREMRANGEBYSCORE', KEYS[7], '-inf', oldest)
  redis.call('EXPIRE', KEYS[7], ARGV[2])
end
-- whether asking for one more job would take the requester past its limit; a job it already
-- waits for does not count twice
local function over_quota(job)
  if asker == '' or limit <= 0 then return false end
  if job and redis.call('HEXISTS', job, field) == 1 then return false end
  local count = 0
  for _, id in ipairs(redis.call('ZRANGE', KEYS[8], 0, -1)) do
    local key = ARGV[4] .. id
    local state = redis.call('HGET', key, 'state')
    if state and not {_FINISHED} and redis.call('HEXISTS', key, field) == 1 then
      count = count + 1
    else
      redis.call('ZREM', KEYS[8], id)
    end
  end
  return count >= limit
end
local function ask(job, id)
  if asker == '' then return end
  redis.call('HINCRBY', job, field, 1)
  if limit > 0 then
    redis.call('ZADD', KEYS[8], ARGV[3], id)
    redis.call('EXPIRE', KEYS[8], ARGV[2])
  end
  note(id)
end
"""

# KEYS: job, active, index, queued, cached, state-index prefix, requester's index, requester's
# unfinished jobs.
# ARGV: id, ttl, now, job-key prefix, use cached (1/0), requester, its limit, field, value, ...
# Returns {id, 'attached'} for the unfinished identical job if there is one, else creates this
# one: {id, 'created'}. With ARGV[5] == '1' (no fresh run asked for), a job that succeeded
# meanwhile (KEYS[5], the cached pointer) is returned too, {id, 'cached'}: a request must not
# start a second run because the first finished between its cache lookup and this script.
# {'', 'over_quota'} when attaching or creating would take the requester past its limit.
CREATE_OR_ATTACH = f"""
{_ASKS}
local existing = redis.call('GET', KEYS[2])
if existing then
  local job = ARGV[4] .. existing
  local state = redis.call('HGET', job, 'state')
  if state and not {_FINISHED} then
    if over_quota(job) then return {{'', 'over_quota'}} end
    ask(job, existing)
    return {{existing, 'attached'}}
  end
end
if ARGV[5] == '1' then
  local done = redis.call('GET', KEYS[5])
  if done and redis.call('HGET', ARGV[4] .. done, 'state') == 'succeeded' then
    note(done)
    return {{done, 'cached'}}
  end
end
if over_quota(nil) then return {{'', 'over_quota'}} end
redis.call('HSET', KEYS[1], unpack(ARGV, 8))
redis.call('EXPIRE', KEYS[1], ARGV[2])
ask(KEYS[1], ARGV[1])
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[4], ARGV[3], ARGV[1])
redis.call('ZADD', KEYS[6] .. 'queued', ARGV[3], ARGV[1])
-- pruned on write: entries of jobs older than the records' time to live leave every index
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', oldest)
for _, state in ipairs({{{_STATES}}}) do
  redis.call('ZREMRANGEBYSCORE', KEYS[6] .. state, '-inf', oldest)
end
return {{ARGV[1], 'created'}}
"""

# A requester answered from the cache saw that job: noted in its index (not in the job, which
# has finished). KEYS: the requester's index.  ARGV: id, ttl, now.
NOTE_ASKED = """
redis.call('ZADD', KEYS[1], ARGV[3], ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', tonumber(ARGV[3]) - tonumber(ARGV[2]))
redis.call('EXPIRE', KEYS[1], ARGV[2])
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
# ARGV: token, lease ms, now, channel, id, ttl, queue message
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
redis.call('PUBLISH', ARGV[4], ARGV[7])
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
# ARGV: ttl, channel, id, token, final state, queue message, field, value, ...   Returns as
# UPDATE. (The queue message: a finished run changes the estimates of the jobs still queued.)
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
redis.call('HSET', KEYS[1], 'state', ARGV[5], unpack(ARGV, 7))
move(KEYS[8], KEYS[1], ARGV[3], state, ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[3])
if redis.call('GET', KEYS[4]) == ARGV[3] then redis.call('DEL', KEYS[4]) end
if ARGV[5] == 'succeeded' then redis.call('SET', KEYS[5], ARGV[3], 'EX', ARGV[1]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
redis.call('PUBLISH', ARGV[2], ARGV[6])
return 'done'
"""

# Ends an unfinished job from outside its worker, with KEYS[1..5] and ARGV[1..6] as TERMINATE
# takes them; expects ``state`` set and ``move`` defined.
_END = """
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'finished_at', ARGV[1], 'updated_at', ARGV[1],
           'error', ARGV[5])
move(KEYS[5], KEYS[1], ARGV[3], state, ARGV[4])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('ZREM', KEYS[3], ARGV[3])
if redis.call('GET', KEYS[4]) == ARGV[3] then redis.call('DEL', KEYS[4]) end
redis.call('PUBLISH', ARGV[2], ARGV[3])
redis.call('PUBLISH', ARGV[2], ARGV[6])
"""

# Ends a job from outside its worker (an admin's cancel, or a failed enqueue).
# KEYS: job, running, queued, active, state-index prefix.
# ARGV: now, channel, id, final state, error json, queue message
# Returns 'terminated', 'finished' (already) or 'missing'.
TERMINATE = f"""
{_MOVE}
{_unfinished_or("'missing'", "'finished'")}
{_END}
return 'terminated'
"""

# A requester leaves a job (its cancel): all its asks. The job is cancelled when no requester is
# left, so two leaving at once never leave it running for nobody, nor cancel it under one still
# attached.
# KEYS: as TERMINATE, then the requester's index.
# ARGV: as TERMINATE, then the requester (ARGV[7]).
# Returns 'detached' (it left, or had left already; others remain), 'cancelled' (it was the last),
# 'not_requester', 'finished' or 'missing'.
DETACH = f"""
{_MOVE}
{_unfinished_or("'missing'", "'finished'")}
local field = '{ASKER_FIELD}' .. ARGV[7]
local asks = tonumber(redis.call('HGET', KEYS[1], field) or '0')
if asks == 0 then
  if redis.call('ZSCORE', KEYS[6], ARGV[3]) then return 'detached' end
  return 'not_requester'
end
redis.call('HDEL', KEYS[1], field)
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  if string.sub(name, 1, {len(ASKER_FIELD)}) == '{ASKER_FIELD}' then return 'detached' end
end
{_END}
return 'cancelled'
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
