-- repair: fix drift found by the consistency checker (swarm_redis.verify), one bounded chunk
-- of ops per call. Ops that can re-derive the truth from the task record do so here ("sets",
-- "queue", "qres", "claim", "bclaim", "orphan"); counter ops are compare-and-set on the value
-- the checker read ("done", "active", "reserved"), so a value changed meanwhile is left alone.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 n ops, then per op 4 values: code, subject, a, b:
--       sets     task id, "", ""          put the task in exactly its record's status set
--                                          (in none when it has no record)
--       queue    task id, "", ""          queued + in ready (+ its qidx entry) when it has a
--                                          record, is not final and not claimed (appended when
--                                          missing); otherwise out of ready, queued, qidx (and
--                                          qres if unclaimed)
--       qidx     task id, member, ""      drop the qidx member unless it is the one the task's
--                                          ready entry needs ("array|position|id"); add that one
--       qres     task id, "", ""          drop its resource key unless queued or claimed
--       done     task id, observed, value set the record's done count if it still reads observed
--       active   array id, observed, value set the array's active counter if it still reads observed
--       reserved field, observed, value   set a reserved field ("run" or array id) likewise
--                                          (value 0 deletes the field)
--       claim    task id, batch id, ""    drop the claim if it still names that batch and the
--                                          batch is missing or does not list the task
--       bclaim   task id, batch id, ""    claim the task for the batch that lists it, if unclaimed
--       orphan   batch id, "", ""         drop a missing or held batch from the orphans list
--       unlisted batch id, "", ""         append an orphaned batch (no holder) missing from it
-- Returns: {version, {1 or 0 per op: 1 when it changed something}}
-- Errors: STATELOST, INVALID (unknown op code), NORUN.
--!include prelude
--!include queue
--!include batch
--!include check
--!include records
-- validation (check.lua): nothing below may fail after a write
local bad = chk_repair(4) or chk_int_hash(K.counters, 'counter')
if bad then
  return bad
end
local norun = require_run()
if norun then
  return norun
end
local n = tonumber(ARGV[4])
local CODES = {sets = true, queue = true, qres = true, done = true, active = true,
  reserved = true, claim = true, bclaim = true, orphan = true, unlisted = true, qidx = true}
for i = 0, n - 1 do
  if not CODES[ARGV[5 + i * 4]] then
    return fail('INVALID', 'unknown repair op ' .. tostring(ARGV[5 + i * 4]))
  end
end

local function status_of(id)
  local v = redis.call('HGET', K.task, id)
  if not v then
    return nil
  end
  return (rec_parse(v))
end

local function batch_lists(bid, id)
  local bv = redis.call('HGET', K.batches, bid)
  if not bv then
    return false
  end
  local ids = batch_parse(bv).ids or ''
  return string.find(',' .. ids .. ',', ',' .. id .. ',', 1, true) ~= nil
end

-- The batch's holder ("" when orphaned), or nil when the batch does not exist.
local function batch_holder(bid)
  local bv = redis.call('HGET', K.batches, bid)
  if not bv then
    return nil
  end
  return batch_parse(bv).holder
end

local function fix_sets(id)
  local s = status_of(id)
  local changed = false
  for st, key in pairs(SK) do
    if st == s then
      if redis.call('SADD', key, id) == 1 then
        changed = true
      end
    elseif redis.call('SREM', key, id) == 1 then
      changed = true
    end
  end
  return changed
end

local function fix_queue(id)
  local s = status_of(id)
  local claimed = redis.call('HEXISTS', K.claims, id) == 1
  local pos = redis.call('ZSCORE', K.ready, id)
  local changed = false
  if s and not FINAL[s] and not claimed then
    if not pos then
      redis.call('SREM', K.queued, id)
      qpush({id}, false)  -- appended, with its index entry and the queued gate
      return true
    end
    if redis.call('SADD', K.queued, id) == 1 then
      changed = true
    end
    if redis.call('ZADD', K.qidx, 0, qidx_member(arrays_of({id})[1], tonumber(pos), id)) == 1 then
      changed = true
    end
  else
    if #qdrop({id}) > 0 then
      changed = true
    end
    if redis.call('SREM', K.queued, id) == 1 then
      changed = true
    end
    if not claimed and redis.call('HDEL', K.qres, id) == 1 then
      changed = true
    end
  end
  return changed
end

-- Drop index member `member` unless it is the one the queue entry of `id` needs; add that one.
local function fix_qidx(id, member)
  local pos = redis.call('ZSCORE', K.ready, id)
  local want = pos and qidx_member(arrays_of({id})[1], tonumber(pos), id)
  local changed = false
  if member ~= '' and member ~= want and redis.call('ZREM', K.qidx, member) == 1 then
    changed = true
  end
  if want and redis.call('ZADD', K.qidx, 0, want) == 1 then
    changed = true
  end
  return changed
end

local function cas_field(key, name, observed, value)
  local cur = redis.call('HGET', key, name) or '0'
  if cur ~= observed then
    return false
  end
  if value == '0' and key == K.reserved then
    redis.call('HDEL', key, name)
  else
    redis.call('HSET', key, name, value)
  end
  return true
end

local function fix_done(id, observed, value)
  local v = redis.call('HGET', K.task, id)
  if not v then
    return false
  end
  local s, nd, st, fl, rest = rec_parse(v)
  if nd ~= observed then
    return false
  end
  redis.call('HSET', K.task, id, rec_join(s, value, st, fl, rest))
  return true
end

local results = {}
local per_code = {}
local fixed = 0
for i = 0, n - 1 do
  local j = 5 + i * 4
  local code, subject, a, b = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3]
  local ok = false
  if code == 'sets' then
    ok = fix_sets(subject)
  elseif code == 'queue' then
    ok = fix_queue(subject)
  elseif code == 'qidx' then
    ok = fix_qidx(subject, a)
  elseif code == 'qres' then
    if redis.call('SISMEMBER', K.queued, subject) == 0 and redis.call('HEXISTS', K.claims, subject) == 0 then
      ok = redis.call('HDEL', K.qres, subject) == 1
    end
  elseif code == 'done' then
    ok = fix_done(subject, a, b)
  elseif code == 'active' then
    ok = cas_field(K.active, subject, a, b)
  elseif code == 'reserved' then
    ok = cas_field(K.reserved, subject, a, b)
  elseif code == 'claim' then
    if redis.call('HGET', K.claims, subject) == a and not batch_lists(a, subject) then
      ok = redis.call('HDEL', K.claims, subject) == 1
    end
  elseif code == 'bclaim' then
    if batch_lists(a, subject) then
      ok = redis.call('HSETNX', K.claims, subject, a) == 1
    end
  elseif code == 'orphan' then
    local holder = batch_holder(subject)
    if holder == nil or holder ~= '' then
      ok = redis.call('LREM', K.orphans, 0, subject) > 0
    end
  elseif code == 'unlisted' then
    if batch_holder(subject) == '' and not redis.call('LPOS', K.orphans, subject) then
      redis.call('RPUSH', K.orphans, subject)
      ok = true
    end
  end
  if ok then
    results[#results + 1] = 1
    fixed = fixed + 1
    per_code[code] = (per_code[code] or 0) + 1
  else
    results[#results + 1] = 0
  end
end
if fixed > 0 then
  local parts = {}
  for code, c in pairs(per_code) do
    parts[#parts + 1] = code .. '=' .. c
  end
  table.sort(parts)
  redis.call('HINCRBY', K.counters, 'repairs', fixed)
  emit('type', 'repair', 'n', fixed, 'ops', table.concat(parts, ','))
  touch()
end
return {finish(), results}
