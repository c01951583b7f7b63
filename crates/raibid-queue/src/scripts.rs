//! The Lua scripts that make each state change atomic.
//!
//! Each script checks the job's current stream entry (`entry` field) before acting, so an agent
//! that was presumed dead and comes back cannot ack or heartbeat a job that has since been
//! requeued under a new entry.
//!
//! They are the queue's hot path, and in Redis 7 the Lua layer (argument tables, reply
//! conversion, one dispatch per `redis.call`) costs about as much as the commands themselves
//! (BENCHMARKS.md, queue), so they keep to a few habits:
//! - numeric arguments are passed as strings (`'0'`, `'10000'`): Redis formats a Lua number with
//!   `%.17g` on every call;
//! - a log's end marker is written only to a log that exists: a stream costs 4 KiB of Redis
//!   memory even for one entry, and a job that printed nothing needs none (followers ask the
//!   job's status instead, see `logs.rs`);
//! - replies carry only what the caller does not already know.

use std::sync::LazyLock;

use redis::Script;

/// Trimming that never removes an entry a consumer group has yet to read or to ack.
///
/// `MAXLEN ~` drops the oldest entries whatever their state, and in Redis 7 an `XCLAIM` (our
/// heartbeat) of a pending entry that is no longer in the stream silently drops it from the
/// pending list: a long job whose entry aged out while newer jobs streamed past would end up
/// running forever in the records with nothing left for the reaper to find. So streams are
/// trimmed with `MINID ~` up to the oldest entry any group still needs (its oldest pending
/// entry, else its last delivered one). So the stream holds what is owed (lag + pending, which
/// backpressure keeps within `maxlen`) and the entries acked after the oldest job still
/// running: as many as the pool finishes while that job runs, bounded by its timeout (a dead
/// agent's entry is handed back by the reaper). An entry is a few dozen bytes; the job records
/// and logs, pruned by `retain_jobs`, are what costs memory.
///
/// `trim_done(stream, group, cap, how)` returns the lag + pending of `group`, or the stream's
/// length when it has no such group (nothing was read, so everything is owed). `how` is `=` or
/// `~`: pool streams are trimmed exactly (this runs once per `maxlen - depth` enqueues, and `~`
/// would leave up to a node of 100 entries beyond `maxlen`), the events stream by whole nodes.
/// A stream without any group is trimmed to `cap` entries, or not at all when `cap` is nil.
const TRIM_FN: &str = r#"
local function id_before(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, bm = tonumber(am), tonumber(bm)
  return am < bm or (am == bm and tonumber(as) < tonumber(bs))
end
local function trim_done(stream, group, cap, how)
  local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', stream)
  if not ok then return 0 end
  local bound, depth = nil, nil
  for _, g in ipairs(groups) do
    local info = {}
    for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
    local keep = info['last-delivered-id']
    if info['pending'] > 0 then
      local oldest = redis.call('XPENDING', stream, info['name'])[2]
      if id_before(oldest, keep) then keep = oldest end
    end
    if not bound or id_before(keep, bound) then bound = keep end
    if info['name'] == group then
      depth = (tonumber(info['lag']) or 0) + info['pending']
    end
  end
  if bound then
    redis.call('XTRIM', stream, 'MINID', how, bound)
  elseif cap then
    redis.call('XTRIM', stream, 'MAXLEN', how, cap)
  end
  return depth or redis.call('XLEN', stream)
end
"#;

/// Idempotency check, backpressure and trimming, XADD, the job record and its indexes.
///
/// KEYS: job, stream, all, by-status(the status), by-repo, by-pool, pools, delivery (or ""),
///       events, repos
/// ARGV: id, maxlen, group, pool, delivery ttl (s), spec (JSON), created_at (ms), events
///       maxlen, status ("queued", or "blocked": no stream entry until approved), repo
/// Returns {"dup", existing id} | {"full", depth} | {"ok", entry ("" when blocked)}
pub(crate) static ENQUEUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            TRIM_FN,
            r#"
if KEYS[8] ~= '' then
  local existing = redis.call('GET', KEYS[8])
  if existing then return {'dup', existing} end
end
local entry = ''
-- A blocked job (waiting for approval) gets its stream entry when it is approved (APPROVE).
if ARGV[9] == 'queued' then
  local maxlen = tonumber(ARGV[2])
  if redis.call('XLEN', KEYS[2]) >= maxlen then
    -- Refuse rather than drop jobs nobody has run yet (see TRIM_FN).
    local depth = trim_done(KEYS[2], ARGV[3], nil, '=')
    if depth >= maxlen then return {'full', tostring(depth)} end
  end
  entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
end
-- The record's layout is record.rs's; field names are literals here because every argument
-- costs a Lua string and a table slot.
redis.call('HSET', KEYS[1], 'entry', entry, 'id', ARGV[1], 'spec', ARGV[6], 'status', ARGV[9],
  'attempt', '0', 'created_at', ARGV[7])
redis.call('ZADD', KEYS[3], '0', ARGV[1])
redis.call('ZADD', KEYS[4], '0', ARGV[1])
redis.call('ZADD', KEYS[5], '0', ARGV[1])
redis.call('ZADD', KEYS[6], '0', ARGV[1])
redis.call('ZADD', KEYS[10], 'GT', ARGV[7], ARGV[10])
-- Every time, not once per pool: after Redis lost its data this rebuilds the set the reaper
-- walks to recreate missing consumer groups.
redis.call('SADD', KEYS[7], ARGV[4])
if KEYS[8] ~= '' then redis.call('SET', KEYS[8], ARGV[1], 'EX', ARGV[5]) end
redis.call('XADD', KEYS[9], '*', 'job', ARGV[1], 'status', ARGV[9])
-- The events stream is trimmed here only, once per job, keeping what the status reporter's
-- group has not handled yet; a group nobody reads any more (a reporter switched off) cannot
-- pin it for ever: past 20 times its size the oldest events go regardless.
if redis.call('XLEN', KEYS[9]) > tonumber(ARGV[8]) then
  local hard = tonumber(ARGV[8]) * 20
  -- '' names no group, so trim_done returns the length it left.
  if trim_done(KEYS[9], '', ARGV[8], '~') > hard then
    local cap = string.format('%d', hard)
    redis.log(redis.LOG_WARNING, 'raibid: ' .. KEYS[9] .. ' trimmed to ' .. cap ..
      ' entries before every consumer group read them')
    redis.call('XTRIM', KEYS[9], 'MAXLEN', '~', cap)
  end
end
return {'ok', entry}
"#,
        ]
        .concat(),
    )
});

/// Shared by START and CLAIM: marks a delivered entry's job running, or acks and skips an entry
/// that no longer stands for a runnable job (cancelled while queued, superseded, pruned).
/// Returns the fields the caller cannot know (id, spec, created_at, attempt; the whole record for
/// one written before `spec` existed), or nil and the reason for skipping.
const START_JOB_FN: &str = r#"
local function start_job(jobkey, stream, group, entry, consumer, now, id, queued, running, events)
  local cur = redis.call('HMGET', jobkey, 'status', 'entry', 'attempt', 'spec', 'created_at')
  local status, current = cur[1], cur[2]
  if not status or current ~= entry or status ~= 'queued' then
    redis.call('XACK', stream, group, entry)
    return nil, (status and ('job is ' .. status .. ' / entry ' .. tostring(current))) or 'job record is gone'
  end
  -- '%d', not a Lua number: Redis formats numeric arguments with a costly '%.17g'.
  local attempt = string.format('%d', (tonumber(cur[3]) or 0) + 1)
  redis.call('HSET', jobkey, 'status', 'running', 'agent', consumer, 'started_at', now,
    'cancel_requested', '0', 'reason', '', 'attempt', attempt)
  redis.call('ZREM', queued, id)
  redis.call('ZADD', running, '0', id)
  redis.call('XADD', events, '*', 'job', id, 'status', 'running')
  -- A new attempt starts without the previous one's verdict, steps or images, so the record as
  -- the agent needs it is what was just read and written; only records from before the `spec`
  -- field existed are read back whole.
  if not cur[4] then return redis.call('HGETALL', jobkey) end
  return {'id', id, 'spec', cur[4], 'created_at', cur[5] or '', 'attempt', attempt}
end
"#;

/// Starts an entry read by a blocking `XREADGROUP` (which cannot run inside a script).
///
/// KEYS: job, stream, by-status(queued), by-status(running), events, paused pools
/// ARGV: group, entry, consumer, now ms, id, pool
/// Returns the job's fields (flat), {"skip", reason} or {"paused"}: the pool was paused while
/// the read waited, and the entry, left untouched, is the caller's to hand back.
pub(crate) static START: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{START_JOB_FN}
if redis.call('HEXISTS', KEYS[6], ARGV[6]) == 1 then return {{'paused'}} end
local fields, why = start_job(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5],
  KEYS[3], KEYS[4], KEYS[5])
if fields then return fields end
return {{'skip', why}}
"#
    ))
});

/// Reads and starts one job in a single round trip, trying the pools' streams in order and
/// passing over paused pools (one `EXISTS` when none is paused).
/// Without BLOCK (scripts cannot block); the caller falls back to a blocking read when idle.
///
/// KEYS: by-status(queued), by-status(running), events, paused pools, stream 1, stream 2, ...
/// ARGV: group, consumer, now ms, job key prefix, pool 1, pool 2, ...
/// Returns {stream, entry, fields...} | {"nogroup", stream} | {}
pub(crate) static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r#"{START_JOB_FN}
local any_paused = redis.call('EXISTS', KEYS[4]) == 1
for i = 5, #KEYS do
  local runs = 32
  if any_paused and redis.call('HEXISTS', KEYS[4], ARGV[i]) == 1 then runs = 0 end
  for _ = 1, runs do
    local r = redis.pcall('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', '1',
      'STREAMS', KEYS[i], '>')
    if type(r) == 'table' and r['err'] then return {{'nogroup', KEYS[i]}} end
    if not r then break end
    local entry = r[1][2][1]
    local id = ''
    for f = 1, #entry[2], 2 do
      if entry[2][f] == 'job' then id = entry[2][f + 1] end
    end
    local fields = start_job(ARGV[4] .. id, KEYS[i], ARGV[1], entry[1], ARGV[2], ARGV[3], id,
      KEYS[1], KEYS[2], KEYS[3])
    if fields then
      local out = {{KEYS[i], entry[1]}}
      for _, v in ipairs(fields) do out[#out + 1] = v end
      return out
    end
  end
end
return {{}}
"#
    ))
});

/// Resets the entry's idle time if this consumer still owns it.
///
/// KEYS: stream, job
/// ARGV: group, consumer, entry
/// Returns "ok" | "cancel" | "lost"
pub(crate) static HEARTBEAT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[2], 'entry') ~= ARGV[3] then return 'lost' end
local pending = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #pending == 0 then return 'lost' end
-- XCLAIM of an entry no longer in the stream (trimmed by hand: the queue's own trimming keeps
-- pending entries) deletes it from the pending list, and the job could then never be handed
-- back. Left idle instead, the reaper finds it and reruns the job: twice rather than never.
if #redis.call('XRANGE', KEYS[1], ARGV[3], ARGV[3]) > 0 then
  redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
end
if redis.call('HGET', KEYS[2], 'cancel_requested') == '1' then return 'cancel' end
return 'ok'
"#,
    )
});

/// Adds a job to the index of builds if its record lists jobs it queued: for builds recorded
/// by an agent older than the index (a rolling upgrade), whose `set_children` did not add
/// them. Nothing for a job that is gone, so that the index keeps no id pruning cannot remove.
///
/// KEYS: job, index of builds
/// ARGV: job id
/// Returns 1 indexed (or was) | 0 not a build, or gone
pub(crate) static INDEX_BUILD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local children = redis.call('HGET', KEYS[1], 'children')
if not children or children == '' or children == '[]' then return 0 end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return 1
"#,
    )
});

/// Puts a retried matrix variant in the place of the job it retries, among its matrix job's
/// children, so that the combined commit status follows the new run.
///
/// KEYS: parent job
/// ARGV: old id, new id
/// Returns 1 replaced | 0 not a child (or no children recorded)
pub(crate) static REPLACE_CHILD: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local raw = redis.call('HGET', KEYS[1], 'children')
if not raw then return 0 end
local ok, ids = pcall(cjson.decode, raw)
if not ok or type(ids) ~= 'table' then return 0 end
local replaced = 0
for i, id in ipairs(ids) do
  if id == ARGV[1] then
    ids[i] = ARGV[2]
    replaced = 1
  end
end
if replaced == 1 then redis.call('HSET', KEYS[1], 'children', cjson.encode(ids)) end
return replaced
"#,
    )
});

/// Sets a field of a running job's record (its step results, the title read from its commit)
/// if the caller's claim is still the job's: an agent presumed dead must not write over the
/// attempt that replaced it, nor bring back a pruned record.
///
/// KEYS: job
/// ARGV: entry, field, value
/// Returns 1 recorded | 0 the claim is not current
pub(crate) static RECORD_CLAIMED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], 'entry') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], ARGV[2], ARGV[3])
return 1
"#,
    )
});

/// Removes a consumer from its group only if it holds nothing: `XGROUP DELCONSUMER` drops the
/// consumer's pending entries with it, so an entry delivered between a separate check and the
/// delete (a blocking read of the exiting agent still parked in Redis) would be in neither the
/// lag nor any pending list: lost. In one script nothing comes between; a read served later
/// recreates the consumer and its entry stays pending, for the reaper.
///
/// KEYS: stream
/// ARGV: group, consumer
/// Returns 1 removed | 0 kept (it has pending entries) | -1 no such group
pub(crate) static RETIRE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ok, pending = pcall(redis.call, 'XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2])
if not ok then return -1 end
if #pending > 0 then return 0 end
redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
return 1
"#,
    )
});

/// Shared by ACK, RELEASE and CANCEL once a job's status is final: the log's end marker (only
/// for a log that exists, see the module's notes) and the status change on the events stream.
const END_JOB_FN: &str = r#"
local function end_job(log, events, id, status)
  if redis.call('EXISTS', log) == 1 then redis.call('XADD', log, '*', 'eof', status) end
  redis.call('XADD', events, '*', 'job', id, 'status', status)
end
"#;

/// XACK and the final status together; the end-of-log marker if the job wrote a log.
///
/// KEYS: stream, job, by-status(running), by-status(final), log, events
/// ARGV: group, entry, status, now ms, reason, steps json, images json, id, artifacts json
/// (or ""), tests json (or "")
/// Returns "ok" | "again" (this delivery already ended with this status: an earlier try of
/// the same ack landed, though its answer was lost to a timeout) | "stale"
pub(crate) static ACK: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            END_JOB_FN,
            r#"
local cur = redis.call('HMGET', KEYS[2], 'entry', 'status')
if cur[1] ~= ARGV[2] or cur[2] ~= 'running' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  -- A requeue gives the job a new entry, so the same entry can only have been ended by the
  -- agent that holds it.
  if cur[1] == ARGV[2] and cur[2] == ARGV[3] then return 'again' end
  return 'stale'
end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
local reason = ARGV[5]
if ARGV[3] == 'cancelled' then
  -- Whoever asked for the cancel said why (a newer build, a user); the agent only knows that
  -- it was asked.
  local asked = redis.call('HMGET', KEYS[2], 'cancel_requested', 'cancel_reason')
  if asked[1] == '1' and asked[2] then reason = asked[2] end
end
redis.call('HSET', KEYS[2], 'status', ARGV[3], 'finished_at', ARGV[4], 'reason', reason,
  'steps', ARGV[6], 'images', ARGV[7], 'artifacts', ARGV[9], 'tests', ARGV[10])
redis.call('ZREM', KEYS[3], ARGV[8])
redis.call('ZADD', KEYS[4], '0', ARGV[8])
end_job(KEYS[5], KEYS[6], ARGV[8], ARGV[3])
return 'ok'
"#,
        ]
        .concat(),
    )
});

/// Hands a delivered job back: a new stream entry (so the lag counts it and an autoscaler
/// starts an agent), or the dead-letter stream once `max_attempts` deliveries are used up.
///
/// The reaper passes the idle time it selected the entry by: between its `XPENDING` and this
/// script an agent that was only cut off from Redis for a while may have heart-beaten again,
/// and releasing its job then would run it twice at once.
///
/// KEYS: stream, job, dlq, by-status(queued), by-status(running), by-status(dead),
///       by-status(cancelled), log, events
/// ARGV: group, entry, max attempts, maxlen, reason, now ms, id, count this delivery ("1"/"0"),
///       minimum idle ms (reaper) or ""
/// Returns "requeued" | "dead" | "cancelled" | "stale" | "gone" | "alive"
pub(crate) static RELEASE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&[END_JOB_FN, r#"
if ARGV[9] ~= '' and
   #redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', ARGV[9], ARGV[2], ARGV[2], 1) == 0 then
  return 'alive'
end
local status = redis.call('HGET', KEYS[2], 'status')
if not status then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 'gone'
end
if redis.call('HGET', KEYS[2], 'entry') ~= ARGV[2] or (status ~= 'queued' and status ~= 'running') then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  return 'stale'
end
local attempt = tonumber(redis.call('HGET', KEYS[2], 'attempt') or '0')
if status == 'queued' and ARGV[8] == '1' then
  -- Delivered but never started: the delivery still counts, or a poison entry loops forever.
  attempt = attempt + 1
  redis.call('HSET', KEYS[2], 'attempt', attempt)
end
redis.call('ZREM', KEYS[4], ARGV[7])
redis.call('ZREM', KEYS[5], ARGV[7])
local asked = redis.call('HMGET', KEYS[2], 'cancel_requested', 'cancel_reason')
if asked[1] == '1' then
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[2], 'status', 'cancelled', 'finished_at', ARGV[6], 'reason',
    asked[2] or 'cancelled')
  redis.call('ZADD', KEYS[7], '0', ARGV[7])
  end_job(KEYS[8], KEYS[9], ARGV[7], 'cancelled')
  return 'cancelled'
end
if attempt >= tonumber(ARGV[3]) then
  local reason = ARGV[5] .. ' (gave up after ' .. attempt .. ' attempts)'
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'job', ARGV[7], 'reason', reason,
    'attempts', attempt, 'entry', ARGV[2])
  redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
  redis.call('HSET', KEYS[2], 'status', 'dead', 'finished_at', ARGV[6], 'reason', reason)
  redis.call('ZADD', KEYS[6], '0', ARGV[7])
  end_job(KEYS[8], KEYS[9], ARGV[7], 'dead')
  return 'dead'
end
-- Not trimmed here (see TRIM_FN): the next enqueue trims.
local entry = redis.call('XADD', KEYS[1], '*', 'job', ARGV[7])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('HSET', KEYS[2], 'status', 'queued', 'entry', entry, 'agent', '', 'reason', ARGV[5])
-- The next attempt reads the pipeline afresh, and says again whether it may be interrupted.
redis.call('HDEL', KEYS[2], 'interruptible')
redis.call('ZADD', KEYS[4], '0', ARGV[7])
redis.call('XADD', KEYS[9], '*', 'job', ARGV[7], 'status', 'queued')
return 'requeued'
"#]
    .concat())
});

/// The statuses that are not final (`JobStatus::is_final`'s complement, so a final status
/// added later needs no change here), for scripts that look at another job's status.
const OPEN_FN: &str = r#"
local OPEN = {blocked = true, queued = true, running = true}
"#;

/// A running job whose pipeline names a concurrency group takes it, or waits for it: its stream
/// entry is acknowledged and it becomes `blocked`, in the group's waiting set, holding no agent
/// (its start is not counted as an attempt). It takes the group when no job holds it (or the
/// holder has ended) and nobody waits before it; a job handed the group holds it already.
///
/// KEYS: job, group, waiting, groups, stream, by-status(running), by-status(blocked), events
/// ARGV: id, entry, group name, job key prefix, consumer group, groups member
/// Returns {"held"} | {"parked", holder or ""} | {"cancel"} | {"lost"}
pub(crate) static ACQUIRE_GROUP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            OPEN_FN,
            r#"
local cur = redis.call('HMGET', KEYS[1], 'status', 'entry', 'cancel_requested', 'attempt')
if cur[1] ~= 'running' or cur[2] ~= ARGV[2] then return {'lost'} end
if cur[3] == '1' then return {'cancel'} end
redis.call('HSET', KEYS[1], 'concurrency', ARGV[3])
local holder = redis.call('GET', KEYS[2])
if holder == ARGV[1] then return {'held'} end
-- The job that holds the group and has not ended, if any.
local busy = holder and OPEN[redis.call('HGET', ARGV[4] .. holder, 'status')] and holder
if not busy and redis.call('ZCARD', KEYS[3]) == 0 then
  redis.call('SET', KEYS[2], ARGV[1])
  return {'held'}
end
redis.call('XACK', KEYS[5], ARGV[5], ARGV[2])
local attempt = math.max((tonumber(cur[4]) or 1) - 1, 0)
local why = 'waiting for concurrency group ' .. ARGV[3]
if busy then why = why .. ', held by job ' .. busy end
redis.call('HSET', KEYS[1], 'status', 'blocked', 'attempt', string.format('%d', attempt),
  'reason', why)
redis.call('ZREM', KEYS[6], ARGV[1])
redis.call('ZADD', KEYS[7], '0', ARGV[1])
redis.call('ZADD', KEYS[3], '0', ARGV[1])
redis.call('SADD', KEYS[4], ARGV[6])
redis.call('XADD', KEYS[8], '*', 'job', ARGV[1], 'status', 'blocked')
return {'parked', busy or ''}
"#,
        ]
        .concat(),
    )
});

/// Hands a concurrency group whose holder has ended to the oldest job waiting for it, which
/// the caller then queues (`APPROVE`); forgets the group when nobody waits. A holder that was
/// handed the group but is still blocked (its queueing failed) is handed it again.
///
/// KEYS: group, waiting, groups
/// ARGV: job key prefix, groups member
/// Returns {"held", holder} | {"next", id} | {"free"}
pub(crate) static RELEASE_GROUP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            OPEN_FN,
            r#"
local holder = redis.call('GET', KEYS[1])
if holder then
  local st = redis.call('HGET', ARGV[1] .. holder, 'status')
  if st == 'blocked' then return {'next', holder} end
  if OPEN[st] then return {'held', holder} end
end
while true do
  local head = redis.call('ZRANGE', KEYS[2], 0, 0)
  if #head == 0 then
    redis.call('DEL', KEYS[1])
    redis.call('SREM', KEYS[3], ARGV[2])
    return {'free'}
  end
  redis.call('ZREM', KEYS[2], head[1])
  if redis.call('HGET', ARGV[1] .. head[1], 'status') == 'blocked' then
    redis.call('SET', KEYS[1], head[1])
    return {'next', head[1]}
  end
end
"#,
        ]
        .concat(),
    )
});

/// Ends a blocked job as skipped: a workflow whose `depends_on` did not end as its `runs_on`
/// wants. Only a job still blocked; one queued or ended meanwhile is left as it is.
///
/// KEYS: job, by-status(blocked), by-status(skipped), log, events
/// ARGV: now ms, id, reason
/// Returns "skipped" | "missing" | "<status>" (not blocked)
pub(crate) static SKIP: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            END_JOB_FN,
            r#"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status ~= 'blocked' then return status end
redis.call('HSET', KEYS[1], 'status', 'skipped', 'finished_at', ARGV[1], 'reason', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('ZADD', KEYS[3], '0', ARGV[2])
end_job(KEYS[4], KEYS[5], ARGV[2], 'skipped')
return 'skipped'
"#,
        ]
        .concat(),
    )
});

/// KEYS: job, by-status(queued), by-status(cancelled), log, events, by-status(blocked)
/// ARGV: now ms, id, reason, scope: "any"; "interruptible" leaves a running job that said it
/// may not be interrupted (superseding); "blocked" cancels only a job waiting for a person's
/// approval (its expiry), leaving one approved meanwhile, and one blocked waiting for other
/// workflows (a `needs` in its spec) or for its concurrency group (`concurrency` set)
/// Returns "cancelled" | "requested" | "kept" | "missing" | "final:<status>"
pub(crate) static CANCEL: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            END_JOB_FN,
            r#"
local cur = redis.call('HMGET', KEYS[1], 'status', 'interruptible', 'cancel_requested')
local status = cur[1]
if not status then return 'missing' end
if ARGV[4] == 'blocked' then
  if status == 'queued' or status == 'running' then return 'kept' end
  if status == 'blocked' then
    local waits = redis.call('HMGET', KEYS[1], 'concurrency', 'spec')
    if waits[1] and waits[1] ~= '' then return 'kept' end
    if waits[2] then
      local ok, spec = pcall(cjson.decode, waits[2])
      if ok and type(spec) == 'table' and spec.needs ~= nil and spec.needs ~= cjson.null then
        return 'kept'
      end
    end
  end
end
if status == 'queued' or status == 'blocked' then
  -- A queued job's stream entry stays (deleting it would make XINFO's lag unknown for
  -- KEDA); the agent that receives it sees the status and acks it without running anything.
  -- A blocked job has none.
  redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1], 'reason', ARGV[3])
  redis.call('ZREM', status == 'queued' and KEYS[2] or KEYS[6], ARGV[2])
  redis.call('ZADD', KEYS[3], '0', ARGV[2])
  end_job(KEYS[4], KEYS[5], ARGV[2], 'cancelled')
  return 'cancelled'
end
if status == 'running' then
  if ARGV[4] == 'interruptible' and cur[2] == '0' then return 'kept' end
  -- A second request keeps the first one's reason.
  if cur[3] ~= '1' then
    redis.call('HSET', KEYS[1], 'cancel_requested', '1', 'cancel_reason', ARGV[3])
  end
  return 'requested'
end
return 'final:' .. status
"#,
        ]
        .concat(),
    )
});

/// Queues a blocked job now that a person approved it: its stream entry, as ENQUEUE would
/// have written it, so the lag counts it and an autoscaler starts an agent.
///
/// KEYS: job, stream, by-status(blocked), by-status(queued), events
/// ARGV: id, maxlen, group, approver ('' when the queue itself lets it run)
/// Returns {"ok", entry} | {"full", depth} | {"missing"} | {"status", <status>}
pub(crate) static APPROVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            TRIM_FN,
            r#"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status ~= 'blocked' then return {'status', status} end
local maxlen = tonumber(ARGV[2])
if redis.call('XLEN', KEYS[2]) >= maxlen then
  local depth = trim_done(KEYS[2], ARGV[3], nil, '=')
  if depth >= maxlen then return {'full', tostring(depth)} end
end
local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[1], 'status', 'queued', 'entry', entry)
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'approved_by', ARGV[4]) end
redis.call('ZREM', KEYS[3], ARGV[1])
redis.call('ZADD', KEYS[4], '0', ARGV[1])
redis.call('XADD', KEYS[5], '*', 'job', ARGV[1], 'status', 'queued')
return {'ok', entry}
"#,
        ]
        .concat(),
    )
});

/// Shared by FIND_SUPERSEDED and JOIN_LANE: adds a member to a lane, keeps its `max` newest
/// and its time to live.
const JOIN_LANE_FN: &str = r#"
local function join_lane(lane, member, max, ttl)
  redis.call('ZADD', lane, '0', member)
  local excess = redis.call('ZCARD', lane) - max
  if excess > 0 then redis.call('ZREMRANGEBYRANK', lane, 0, excess - 1) end
  redis.call('EXPIRE', lane, ttl)
end
"#;

/// Registers a build of a ref (the lane: a sorted set of `<id>:<commit>`, ordered by id) and
/// returns the older builds of it that a new one may supersede: those of another commit that
/// are queued or running and not being cancelled already, and finished matrix jobs whose
/// variants may still be (`Queue::supersede` cancels, this only reads and tidies).
///
/// The look back stops at the newest older build of the same commit that superseded too: that
/// one has handled everything older of other commits. So a burst of pushes of one commit costs
/// each webhook one member, and a lane of builds that ran their course is read once more and
/// tidied: a finished build leaves its lane when a newer one sees it, and a lane keeps its `max`
/// newest builds. Retries (`<id>:<commit>:retry`, JOIN_LANE) superseded nothing, so the look
/// goes on past them. Builds newer than the new one are not looked at: they supersede it, not
/// the other way round.
///
/// KEYS: lane
/// ARGV: key prefix, new id, new commit, most builds kept in the lane, lane ttl seconds
/// Returns id, "1" if it has variants else "0", ...
pub(crate) static FIND_SUPERSEDED: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            JOIN_LANE_FN,
            r#"
local out = {}
local max = tonumber(ARGV[4])
local below = '(' .. ARGV[2]
local seen = 0
local done = false
while not done and seen < max do
  local page = redis.call('ZRANGE', KEYS[1], below, '-', 'BYLEX', 'REV', 'LIMIT', 0, 16)
  if #page < 16 then done = true end
  for _, member in ipairs(page) do
    seen = seen + 1
    below = '(' .. member
    local sep = string.find(member, ':', 1, true)
    if sep then
      local id = string.sub(member, 1, sep - 1)
      local commit = string.sub(member, sep + 1)
      local retry = string.sub(commit, -6) == ':retry'
      if retry then commit = string.sub(commit, 1, -7) end
      if commit == ARGV[3] then
        if not retry then
          done = true
          break
        end
      else
        local f = redis.call('HMGET', ARGV[1] .. ':job:' .. id, 'status', 'cancel_requested',
          'children')
        local variants = f[3] and f[3] ~= '' and f[3] ~= '[]'
        local unfinished = f[1] == 'queued' or f[1] == 'running' or f[1] == 'blocked'
        if (unfinished and f[2] ~= '1') or variants then
          out[#out + 1] = id
          out[#out + 1] = variants and '1' or '0'
        end
        if not unfinished then redis.call('ZREM', KEYS[1], member) end
      end
    end
  end
end
join_lane(KEYS[1], ARGV[2] .. ':' .. ARGV[3], max, ARGV[5])
return out
"#,
        ]
        .concat(),
    )
});

/// Adds a build to its lane without superseding anything (a retry: a later push must still
/// find it).
///
/// KEYS: lane
/// ARGV: member (`<id>:<commit>`), most builds kept in the lane, lane ttl seconds
pub(crate) static JOIN_LANE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            JOIN_LANE_FN,
            r#"
join_lane(KEYS[1], ARGV[1], tonumber(ARGV[2]), ARGV[3])
return 1
"#,
        ]
        .concat(),
    )
});

/// A running job's pipeline says it must not be interrupted by a newer build (`interruptible:
/// false`): recorded unless a cancel was asked for first, so that a cancel and the mark cannot
/// cross (CANCEL reads the mark in the same way).
///
/// KEYS: job
/// ARGV: entry
/// Returns "ok" | "cancel" | "lost"
pub(crate) static MARK_UNINTERRUPTIBLE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local cur = redis.call('HMGET', KEYS[1], 'status', 'entry', 'cancel_requested')
if cur[1] ~= 'running' or cur[2] ~= ARGV[1] then return 'lost' end
if cur[3] == '1' then return 'cancel' end
redis.call('HSET', KEYS[1], 'interruptible', '0')
return 'ok'
"#,
    )
});

/// Appends to a job's log stream within its byte budget, if the job still exists.
///
/// KEYS: job, log
/// ARGV: chunk, max bytes, the chunk's line breaks (counted by the caller: counting in Lua
/// costs a pattern match per byte of every chunk, where only a truncated one needs it); for a
/// writer's numbered chunk ([`crate::LogWriter`]), the writer's field and the chunk's number
/// Returns 1 stored (or stored before) | 2 stored up to the cap and marked truncated | 0 dropped
pub(crate) static APPEND_LOG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
-- A pruned job (its agent presumed dead and still printing) must not come back as a log and
-- a record holding nothing but byte counts.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
if redis.call('HGET', KEYS[1], 'log_truncated') == '1' then return 0 end
-- A writer's numbered chunk (ARGV[5], its number kept in the record's field ARGV[4]) that was
-- its last is a retry of an append that timed out and landed after all.
local writer = ARGV[4]
if writer and redis.call('HGET', KEYS[1], writer) == ARGV[5] then return 1 end
local function appended()
  if writer then redis.call('HSET', KEYS[1], writer, ARGV[5]) end
end
local used = tonumber(redis.call('HGET', KEYS[1], 'log_bytes') or '0')
local max = tonumber(ARGV[2])
local len = string.len(ARGV[1])
-- The log's line breaks so far, kept as '<log_bytes>:<lines>' so that a page of the log's end
-- numbers its lines without reading the rest. It is counted from the log's first byte, and
-- only while its byte count matches: a log begun, or appended to, by an older agent that
-- does not count has none or a stale one, and is counted by reading it.
local lines = nil
if used == 0 then
  lines = 0
else
  local b, l = string.match(redis.call('HGET', KEYS[1], 'log_lines') or '', '^(%d+):(%d+)$')
  if b and tonumber(b) == used then lines = tonumber(l) end
end
local function add(data, breaks)
  redis.call('XADD', KEYS[2], '*', 'd', data)
  if lines then lines = lines + breaks end
end
if used + len > max then
  local room = max - used
  if room > 0 then
    local kept = string.sub(ARGV[1], 1, room)
    local _, breaks = string.gsub(kept, '\n', '')
    add(kept, breaks)
  end
  add('\n[raibid] log truncated: the job printed more than ' .. max .. ' bytes\n', 2)
  redis.call('HSET', KEYS[1], 'log_truncated', '1', 'log_bytes', max)
  if lines then redis.call('HSET', KEYS[1], 'log_lines', max .. ':' .. lines) end
  appended()
  return 2
end
add(ARGV[1], tonumber(ARGV[3]))
redis.call('HINCRBY', KEYS[1], 'log_bytes', len)
if lines then redis.call('HSET', KEYS[1], 'log_lines', (used + len) .. ':' .. lines) end
appended()
return 1
"#,
    )
});

/// Lua shared by the pruning scripts: up to `n` ids from the indexes KEYS[first..last] (the
/// final statuses), after `from` (`-` for the start, `(<id>` after an id), oldest first.
const OLDEST_FINISHED: &str = r#"
local function oldest(first, last, from, n)
  local ids = {}
  for i = first, last do
    for _, id in ipairs(redis.call('ZRANGE', KEYS[i], from, '+', 'BYLEX', 'LIMIT', 0, n)) do
      ids[#ids + 1] = id
    end
  end
  -- Ids are ULIDs: in byte order, oldest first.
  table.sort(ids)
  return ids
end
"#;

/// Deletes up to ARGV[2] of the oldest finished jobs (record, log, index entries) while more
/// than ARGV[3] records exist, in one round trip. Candidates come from the indexes of the final
/// statuses, so jobs still queued or running are never looked at: a pool without agents can
/// hold thousands of old queued jobs, and a walk from the oldest job would stop at them.
/// Repository and pool, needed for their index keys, come from the `spec` field, or from the
/// flat fields of records written before it existed.
///
/// KEYS: all, then the index of each final status
/// ARGV: key prefix (`raibid:<stream>`), batch size, keep
/// Returns the number removed
pub(crate) static PRUNE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            OLDEST_FINISHED,
            r#"
local excess = redis.call('ZCARD', KEYS[1]) - tonumber(ARGV[3])
if excess <= 0 then return 0 end
local n = math.min(excess, tonumber(ARGV[2]))
local candidates = oldest(2, #KEYS, '-', n)
local p = ARGV[1]
local removed = 0
for i = 1, math.min(n, #candidates) do
  local id = candidates[i]
  local jobkey = p .. ':job:' .. id
  local f = redis.call('HMGET', jobkey, 'status', 'spec', 'repo', 'pool')
  local status = f[1]
  if not status then
    for k = 1, #KEYS do redis.call('ZREM', KEYS[k], id) end
    redis.call('ZREM', p .. ':jobs:builds', id)
  elseif status ~= 'queued' and status ~= 'running' then
    local repo, pool = f[3], f[4]
    if f[2] then
      local ok, spec = pcall(cjson.decode, f[2])
      if ok and type(spec) == 'table' then repo, pool = spec['repo'], spec['pool'] end
    end
    redis.call('DEL', jobkey, p .. ':log:' .. id)
    redis.call('ZREM', KEYS[1], id)
    redis.call('ZREM', p .. ':jobs:status:' .. status, id)
    redis.call('ZREM', p .. ':jobs:builds', id)
    if type(repo) == 'string' then
      local by_repo = p .. ':jobs:repo:' .. repo
      redis.call('ZREM', by_repo, id)
      if redis.call('EXISTS', by_repo) == 0 then redis.call('ZREM', p .. ':repos', repo) end
    end
    if type(pool) == 'string' then redis.call('ZREM', p .. ':jobs:pool:' .. pool, id) end
    removed = removed + 1
  end
end
return removed
"#,
        ]
        .concat(),
    )
});

/// Erases a finished job's log at a person's request, marking its record with who and when.
/// A job that has not ended is left alone: its agent is still writing the log.
///
/// KEYS: job, log
/// ARGV: by, at (ms)
/// Returns {"ok"} | {"missing"} | {"unfinished", status}
pub(crate) static ERASE_LOG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing'} end
if status == 'queued' or status == 'running' or status == 'blocked' then
  return {'unfinished', status}
end
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'log_erased_by', ARGV[1], 'log_erased_at', ARGV[2])
return {'ok'}
"#,
    )
});

/// Deletes the logs (not the records) of finished jobs, oldest first, going on from where the
/// last call stopped, until about ARGV[3] bytes are freed or ARGV[2] jobs were looked at, and
/// marks their records `log_pruned`. Records are what the commit-status reporter and matrix
/// jobs need, and they are small; logs are the bulk of the memory. It stops at the bytes
/// asked for because one log can be megabytes: a fixed number of logs per call deleted every
/// log of a small Redis to free the few hundred kilobytes it was over.
///
/// The scan goes by job id (oldest first), so a job that finishes after the scan passed its id
/// (a long build, often with the longest log) is behind it. At the end the scan starts over
/// from the oldest job, if the round since the last start deleted anything: jobs whose logs
/// are gone cost two reads each, and a round that deleted nothing means nothing is left.
///
/// KEYS: the index of each final status, then the cursor key, then the cycle counter key
/// ARGV: key prefix (`raibid:<stream>`), most jobs to look at, bytes to free, the id to go on
/// after ('' for the stored cursor)
/// Returns {logs deleted, jobs looked at, logs the round deleted, the last id looked at}; no
/// job looked at means the scan was at the end and starts over, from the oldest, at the next
/// call; the third value is then what the round that ended deleted (0: nothing is left).
pub(crate) static PRUNE_LOGS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        &[
            OLDEST_FINISHED,
            r#"
local cursor_key, cycle_key = KEYS[#KEYS - 1], KEYS[#KEYS]
local from = '-'
if ARGV[4] ~= '' then
  from = '(' .. ARGV[4]
else
  local cursor = redis.call('GET', cursor_key)
  if cursor then from = '(' .. cursor end
end
local n = tonumber(ARGV[2])
local candidates = oldest(1, #KEYS - 2, from, n)
if #candidates == 0 then
  local round = redis.call('GET', cycle_key) or '0'
  redis.call('DEL', cursor_key, cycle_key)
  return {0, 0, tonumber(round), ''}
end
local p = ARGV[1]
local needed = tonumber(ARGV[3])
local deleted, freed, looked = 0, 0, 0
-- Deletions first: DEL is allowed even when Redis is over its maxmemory; SET, HSET and INCRBY
-- are not, so they are tried (pcall) rather than abort the script after its deletions. The
-- caller carries the position on within its pass when the cursor could not be written.
local pruned = {}
for i = 1, math.min(n, #candidates) do
  looked = i
  local id = candidates[i]
  local status = redis.call('HGET', p .. ':job:' .. id, 'status')
  if status and status ~= 'queued' and status ~= 'running' then
    local log = p .. ':log:' .. id
    -- Sampled (MEMORY USAGE's default): exact would walk the whole stream.
    local size = redis.call('MEMORY', 'USAGE', log)
    if size then
      redis.call('DEL', log)
      deleted = deleted + 1
      freed = freed + size
      pruned[#pruned + 1] = id
    end
  end
  if freed >= needed then break end
end
pcall(redis.call, 'SET', cursor_key, candidates[looked])
for _, id in ipairs(pruned) do
  pcall(redis.call, 'HSET', p .. ':job:' .. id, 'log_pruned', '1')
end
if deleted > 0 then pcall(redis.call, 'INCRBY', cycle_key, deleted) end
return {deleted, looked, 0, candidates[looked]}
"#,
        ]
        .concat(),
    )
});

/// A pool's statistics in one round trip: the autoscaling signal is read every few hundred
/// milliseconds by the local pool and on every dashboard or API poll, and four sequential round
/// trips made `/api/v1/queues` the slowest answer on a loaded machine.
///
/// KEYS: stream, dlq, paused pools
/// ARGV: group, pool
/// Returns {length, dead letters, pause or nil} when the stream is empty or unreadable, else
/// {length, dead letters, pause or nil, group found (0/1), pending, lag (-1: Redis could not
///  compute it), last delivered id, {consumer, pending, idle ms, ...}, oldest undelivered id
///  or ""}
pub(crate) static STATS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local len = redis.call('XLEN', KEYS[1])
local dead = redis.call('XLEN', KEYS[2])
local pause = redis.call('HGET', KEYS[3], ARGV[2])
if len == 0 then return {len, dead, pause} end
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if not ok then return {len, dead, pause} end
local function oldest_after(from)
  local r = redis.call('XRANGE', KEYS[1], from, '+', 'COUNT', 1)
  if r[1] then return r[1][1] end
  return ''
end
for _, g in ipairs(groups) do
  local info = {}
  for i = 1, #g, 2 do info[g[i]] = g[i + 1] end
  if info['name'] == ARGV[1] then
    local lag = info['lag']
    if type(lag) ~= 'number' then lag = -1 end
    local last = info['last-delivered-id'] or '0-0'
    local flat = {}
    for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
      local ci = {}
      for i = 1, #c, 2 do ci[c[i]] = c[i + 1] end
      flat[#flat + 1] = ci['name']
      flat[#flat + 1] = ci['pending']
      flat[#flat + 1] = ci['idle']
    end
    local oldest = ''
    if lag ~= 0 then
      local from = '-'
      if last ~= '0-0' then from = '(' .. last end
      oldest = oldest_after(from)
    end
    return {len, dead, pause, 1, info['pending'], lag, last, flat, oldest}
  end
end
return {len, dead, pause, 0, 0, len, '0-0', {}, oldest_after('-')}
"#,
    )
});

/// Records what the scheduler did for a schedule's occurrence, never moving it back.
///
/// Several server replicas run schedulers; one may be slow and come to mark an older
/// occurrence after another marked a newer one. The mark only moves forward, so the newer one
/// is never handled twice. The job, when given, is the one the occurrence queued (every
/// replica gets the same one, through the delivery id); an occurrence that queued nothing
/// (the first one a scheduler sees, one past its deadline) keeps the previous job as the last.
///
/// KEYS: schedule hash. ARGV: occurrence (unix seconds), job id (or "").
/// Returns 1 if the mark moved, 0 if it already stood at or past the occurrence.
pub(crate) static MARK_SCHEDULE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local current = redis.call('HGET', KEYS[1], 'occurrence')
local moved = 0
if not current or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'occurrence', ARGV[1])
  moved = 1
elseif tonumber(current) > tonumber(ARGV[1]) then
  return 0
end
if ARGV[2] ~= '' then redis.call('HSET', KEYS[1], 'job', ARGV[2]) end
return moved
"#,
    )
});

/// Sets a repository secret: 1 if new, 0 if replaced, -1 if the repository already has
/// ARGV[3] others. KEYS: the repository's secrets; ARGV: name, sealed record, the bound.
pub(crate) static SET_SECRET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 0
end
if redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[3]) then return -1 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"#,
    )
});

/// Replaces a secret's sealed record if it is still the one read: 1 if replaced, 0 if it was
/// set again or deleted meanwhile. KEYS: the secrets hash; ARGV: name, record read, new record.
pub(crate) static RESEAL_SECRET: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
return 1
"#,
    )
});

/// Takes the members of a sorted set due by a time: removed as they are returned, so each goes
/// to one caller. KEYS: the set; ARGV: now (ms), the most to take.
pub(crate) static TAKE_DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local due = redis.call('ZRANGE', KEYS[1], '-inf', ARGV[1], 'BYSCORE', 'LIMIT', 0, tonumber(ARGV[2]))
if #due > 0 then redis.call('ZREM', KEYS[1], unpack(due)) end
return due
"#,
    )
});

/// Sets a field of a hash that exists: a pruned job's record is not brought back as a
/// fragment. KEYS: the hash; ARGV: field, value. 1 if set.
pub(crate) static SET_IF_PRESENT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"#,
    )
});

/// Starts a session, with what its list shows of it, and indexes it under its token, dropping
/// the index's expired entries; the index lives as long as its longest session.
///
/// KEYS: session, sessions of the token, session's details
/// ARGV: token hash, ttl s, now ms, session key (the index's member), user agent, address
pub(crate) static START_SESSION: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('HSET', KEYS[3], 'started', ARGV[3], 'user_agent', ARGV[5], 'address', ARGV[6])
redis.call('EXPIRE', KEYS[3], ARGV[2])
local expires = tonumber(ARGV[3]) + tonumber(ARGV[2]) * 1000
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', ARGV[3])
redis.call('ZADD', KEYS[2], string.format('%d', expires), ARGV[4])
local last = redis.call('ZRANGE', KEYS[2], -1, -1, 'WITHSCORES')
redis.call('PEXPIREAT', KEYS[2], last[2])
return 1
"#,
    )
});

/// Ends every session of a token: each indexed session key still alive (and its details),
/// then the index.
///
/// KEYS: sessions of the token
/// ARGV: session key prefix (`<prefix>:session:`), details prefix (`<prefix>:session-info:`)
/// Returns how many live sessions it ended.
pub(crate) static END_SESSIONS_OF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local ended = 0
for _, key in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  ended = ended + redis.call('DEL', ARGV[1] .. key)
  redis.call('DEL', ARGV[2] .. key)
end
redis.call('DEL', KEYS[1])
return ended
"#,
    )
});

/// The live sessions of a token, oldest expiry first: those of its index whose session still
/// names the token.
///
/// KEYS: sessions of the token
/// ARGV: session key prefix, details prefix, token hash
/// Returns {{session key, expires ms, started ms or '', user agent, address}, ...}
pub(crate) static LIST_SESSIONS: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local out = {}
local members = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
for i = 1, #members, 2 do
  local key = members[i]
  if redis.call('GET', ARGV[1] .. key) == ARGV[3] then
    local info = redis.call('HMGET', ARGV[2] .. key, 'started', 'user_agent', 'address')
    table.insert(out, {key, members[i + 1], info[1] or '', info[2] or '', info[3] or ''})
  end
end
return out
"#,
    )
});

/// Ends one session of a token, if it is one: another token's session, or one that has ended,
/// is left alone.
///
/// KEYS: session, session's details, sessions of the token
/// ARGV: token hash, session key
/// Returns 1 if it ended the session, else 0.
pub(crate) static END_SESSION_OF: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[2])
return 1
"#,
    )
});

/// Counts one wrong token of a client; its window starts with its first.
///
/// KEYS: the client's failures
/// ARGV: window ms
/// Returns {failures in the window, ms left of it}
pub(crate) static COUNT_AUTH_FAILURE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
return {n, redis.call('PTTL', KEYS[1])}
"#,
    )
});
