-- claim_batch: hand the calling replica the next batch to queue on the server.
-- 1. An orphaned batch (taken over from a dead replica) first: same tasks, same reservation.
-- 2. Else the batch jobmon's scheduler would form next: the head is the first queued task whose
--    array has free capacity (searched over at most scan_limit entries from the left); tasks
--    before it keep their place. From the `window` entries after the head, tasks of the same
--    array and resource key join while the batch is smaller than min(max_size, free workflow
--    capacity, free array capacity). Tasks that do not join keep their order (they stay put).
--    free workflow = limit - active(Q,I,O,R) - reserved.run;
--    free array = arrays[aid] - active[aid] - reserved[aid] (unregistered array: 0).
-- A search that finds nothing is remembered in meta.claim_gate (see below), so that repeated
-- failing claims do not scan the queue again while nothing relevant changed.
-- Claimed tasks leave ready/queued (qres keeps their resource key), claims[id] = batch id, the
-- batch goes to `batches`, its size to reserved.run and reserved[aid].
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 replica id, 5 incarnation, 6 max_size, 7 window,
--       8 scan_limit
-- Returns: {version, batch id ("" when nothing can be claimed), array id, resource key,
--           redriven 1/0, {id, status, done, ...} in batch order}
-- Errors: STATELOST, LEASELOST (the caller is not a live member; nothing is written).
--!include prelude
--!include coord
--!include check
-- validation (check.lua): nothing below may fail after a write
local bad = chk_name(ARGV[4], 'replica id') or chk_name(ARGV[5], 'incarnation')
  or chk_int(ARGV[6], 'max_size', 1) or chk_int(ARGV[7], 'window') or chk_int(ARGV[8], 'scan_limit', 1)
  or chk_meta_int('limit') or chk_int_hash(K.arrays, 'array limit') or chk_int_hash(K.active, 'active')
  or chk_int_hash(K.reserved, 'reserved') or chk_int_hash(K.counters, 'counter')
if bad then
  return bad
end
local rid, inc = ARGV[4], ARGV[5]
local max_size, window, scan_limit = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
-- queue entries read per step: small first (the head is usually near the left), then growing
local FIRST_PAGE, MAX_PAGE = 64, 1024
local now = now_ms()
local err = lease_error(rid, inc, now)
if err then
  return err
end

-- 1. re-drive an orphan
while true do
  local bid = redis.call('LPOP', K.orphans)
  if not bid then
    break
  end
  local v = redis.call('HGET', K.batches, bid)
  if v then
    local b = batch_parse(v)
    if b.holder == '' then
      redis.call('HSET', K.batches, bid, batch_join(rid, inc, b))
      redis.call('HINCRBY', K.counters, 'claims', 1)
      redis.call('HINCRBY', K.counters, 'redrives', 1)
      local ids = split_ids(b.ids)
      emit('type', 'redrive', 'batch', bid, 'replica', rid, 'n', #ids)
      touch()
      return {finish(), bid, b.array, b.rkey, 1, task_triples(ids)}
    end
  end
end

-- 2. form a new batch
local nothing = {VERSION, '', '', '', 0, {}}
local limit = tonumber(redis.call('HGET', K.meta, 'limit') or '0')
local active = 0
for st in pairs(ACTIVE) do
  active = active + redis.call('SCARD', SK[st])
end
local wcap = limit - active - tonumber(redis.call('HGET', K.reserved, 'run') or '0')
if wcap <= 0 then
  return nothing
end
local used = {}
for _, key in ipairs({K.active, K.reserved}) do
  local flat = redis.call('HGETALL', key)
  for i = 1, #flat, 2 do
    used[flat[i]] = (used[flat[i]] or 0) + tonumber(flat[i + 1])
  end
end
local alimits = redis.call('HGETALL', K.arrays)
local acap = {}
local free = {}
for i = 1, #alimits, 2 do
  local aid = alimits[i]
  acap[aid] = tonumber(alimits[i + 1]) - (used[aid] or 0)
  if acap[aid] > 0 then
    free[#free + 1] = aid
  end
end
if #free == 0 then
  return nothing
end

-- The gate: a search that found no head is remembered with the queue's length, head and tail
-- and the arrays that had room. While all of them are unchanged, no queued task can belong to
-- an array with room (a push changes the head or the tail, a removal the length, freed capacity
-- the set of arrays with room), so the search is skipped: failing claims stay O(arrays).
local len = redis.call('LLEN', K.ready)
if len == 0 then
  return nothing
end
table.sort(free)
local gate = len .. '|' .. redis.call('LINDEX', K.ready, 0) .. '|' .. redis.call('LINDEX', K.ready, -1)
  .. '|' .. scan_limit .. '|' .. table.concat(free, ',')
if redis.call('HGET', K.meta, 'claim_gate') == gate then
  return nothing
end

-- find the head
local stop = math.min(len, scan_limit)
local head, head_id, head_arr
local pos = 0
local page = FIRST_PAGE
while pos < stop and not head do
  local ids = redis.call('LRANGE', K.ready, pos, math.min(pos + page, stop) - 1)
  page = math.min(page * 2, MAX_PAGE)
  if #ids == 0 then
    break
  end
  local recs = redis.call('HMGET', K.task, unpack(ids))
  for j = 1, #ids do
    if recs[j] then
      local s, _, _, _, rest = rec_parse(recs[j])
      local arr = rec_array(rest)
      if not FINAL[s] and (acap[arr] or 0) > 0 then
        head, head_id, head_arr = pos + j - 1, ids[j], arr
        break
      end
    end
  end
  pos = pos + #ids
end
if not head then
  redis.call('HSET', K.meta, 'claim_gate', gate) -- not run state: no version bump
  return nothing
end

-- gather the joiners
local cap = math.min(max_size, wcap, acap[head_arr])
local rkey = redis.call('HGET', K.qres, head_id) or ''
local members, idx = {head_id}, {head}
pos = head + 1
local wend = math.min(len, head + 1 + window)
page = math.min(math.max(FIRST_PAGE, 4 * cap), 4000)
while pos < wend and #members < cap do
  local ids = redis.call('LRANGE', K.ready, pos, math.min(pos + page, wend) - 1)
  page = math.min(page * 2, MAX_PAGE)
  if #ids == 0 then
    break
  end
  local recs = redis.call('HMGET', K.task, unpack(ids))
  local rks = redis.call('HMGET', K.qres, unpack(ids))
  for j = 1, #ids do
    if recs[j] then
      local s, _, _, _, rest = rec_parse(recs[j])
      if not FINAL[s] and rec_array(rest) == head_arr and (rks[j] or '') == rkey then
        members[#members + 1] = ids[j]
        idx[#idx + 1] = pos + j - 1
        if #members >= cap then
          break
        end
      end
    end
  end
  pos = pos + #ids
end

-- take them out of the queue: the first n entries with one LPOP, else in one pass (tombstones,
-- then one LREM)
if idx[#idx] == #idx - 1 then
  redis.call('LPOP', K.ready, #idx)
else
  for _, i in ipairs(idx) do
    redis.call('LSET', K.ready, i, '~')
  end
  redis.call('LREM', K.ready, #idx, '~')
end
local bid = tostring(redis.call('HINCRBY', K.counters, 'batches', 1))
for i = 1, #members, 2000 do
  local srem, hset = {}, {}
  for j = i, math.min(i + 1999, #members) do
    srem[#srem + 1] = members[j]
    hset[#hset + 1] = members[j]
    hset[#hset + 1] = bid
  end
  redis.call('SREM', K.queued, unpack(srem))
  redis.call('HSET', K.claims, unpack(hset))
end
local b = {array = head_arr, rkey = rkey, ids = table.concat(members, ',')}
redis.call('HSET', K.batches, bid, batch_join(rid, inc, b))
redis.call('HINCRBY', K.reserved, 'run', #members)
redis.call('HINCRBY', K.reserved, head_arr, #members)
redis.call('HINCRBY', K.counters, 'claims', 1)
if #members <= DETAIL_MAX then
  emit('type', 'claim', 'batch', bid, 'replica', rid, 'array', head_arr, 'tasks', b.ids)
else
  emit('type', 'claim', 'batch', bid, 'replica', rid, 'array', head_arr, 'n', #members)
end
touch()
return {finish(), bid, head_arr, rkey, 0, task_triples(members)}
