-- claim_batch: hand the calling replica the next batch to queue on the server.
-- 1. An orphaned batch (taken over from a dead replica) first: same tasks, same reservation.
-- 2. Else the batch jobmon's scheduler would form next: the head is the first queued task whose
--    array has free capacity; tasks before it keep their place. From the `window` entries after
--    the head, tasks of the same array and resource key join while the batch is smaller than
--    min(max_size, free workflow capacity, free array capacity). Tasks that do not join keep
--    their order (they stay put).
--    free workflow = limit - active(Q,I,O,R) - reserved.run;
--    free array = arrays[aid] - active[aid] - reserved[aid] (unregistered array: 0).
-- Cost O((batch + arrays) log N) whatever the queue holds: the head is the earliest of the
-- first entries of each array with room (qidx, the queue per array), joiners are read from the
-- head's array only, and a claimed task leaves the queue with ZREMs. No array with room is ever
-- passed over, however many tasks of full arrays lie before its tasks. A DONE/ERROR_FATAL
-- entry met at an array's front is a stale leftover: it is dropped from the queue on the way.
-- Claimed tasks leave ready/queued/qidx (qres keeps their resource key), claims[id] = batch id,
-- the batch goes to `batches`, its size to reserved.run and reserved[aid].
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 replica id, 5 incarnation, 6 max_size, 7 window,
--       8 scan_limit (ignored since the per-array index; kept for compatibility)
-- Returns: {version, batch id ("" when nothing can be claimed), array id, resource key,
--           redriven 1/0, "id|status|done ..." in batch order}
-- Errors: STATELOST, LEASELOST (the caller is not a live member; nothing is written).
--!include prelude
--!include queue
--!include coord
--!include batch
--!include check
--!include records
-- validation (check.lua): nothing below may fail after a write
local bad = chk_name(ARGV[4], 'replica id') or chk_name(ARGV[5], 'incarnation')
  or chk_int(ARGV[6], 'max_size', 1) or chk_int(ARGV[7], 'window') or chk_int(ARGV[8], 'scan_limit', 1)
  or chk_meta_int('limit') or chk_int_hash(K.arrays, 'array limit') or chk_int_hash(K.active, 'active')
  or chk_int_hash(K.reserved, 'reserved') or chk_int_hash(K.counters, 'counter')
if bad then
  return bad
end
--!phase validate
local rid, inc = ARGV[4], ARGV[5]
local max_size, window = tonumber(ARGV[6]), tonumber(ARGV[7])
-- stale (final) entries dropped per array and call at most; joiner candidates read per step
local STALE_MAX, PAGE = 64, 256
-- a field no task id can be, and a value above any sane hash-max-listpack-value (default 64)
local CLAIMS_HT, CLAIMS_HT_VALUE = '#ht', string.rep('-', 1024)
local now = now_ms()
local err = lease_error(rid, inc, now)
if err then
  return err
end

-- 1. re-drive an orphan. The list is read first (LINDEX): entries whose batch is gone or held
-- again are trimmed with the first orphaned batch, once that batch's task records are checked
-- (a record that does not parse answers INVALID with nothing written).
local popped = 0
while true do
  local bid = redis.call('LINDEX', K.orphans, popped)
  if not bid then
    break
  end
  popped = popped + 1
  local v = redis.call('HGET', K.batches, bid)
  local b = v and batch_parse(v)
  if b and b.holder == '' then
    bad = chk_records(split_ids(b.ids))
    if bad then
      return bad
    end
    redis.call('LTRIM', K.orphans, popped, -1)
    redis.call('HSET', K.batches, bid, batch_join(rid, inc, b))
    redis.call('HINCRBY', K.counters, 'claims', 1)
    redis.call('HINCRBY', K.counters, 'redrives', 1)
    local ids = split_ids(b.ids)
    emit('type', 'redrive', 'batch', bid, 'replica', rid, 'n', #ids)
    touch()
    return {finish(), bid, b.array, b.rkey, 1, task_heads(ids)}
  end
end
if popped > 0 then  -- only leftovers: none of them orphaned
  redis.call('LTRIM', K.orphans, popped, -1)
end

--!phase claim:orphans
-- 2. form a new batch
local nothing = {VERSION, '', '', '', 0, ''}
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

if redis.call('ZCARD', K.ready) == 0 then
  return nothing
end

-- One page of the per-array queue index: up to `count` entries of array `arr` from offset `off`
-- between the lexical bounds `lo` and `hi`, as members, task ids and task records (one
-- ZRANGEBYLEX, one HMGET): the one read path of both the head search and the joiners. A member
-- is 'arr|<16 digits>|id' (queue.lua): its id is cut at a fixed offset once the second '|' is
-- where it should be, else matched (a hand-edited member).
local str_byte, str_sub, str_match = string.byte, string.sub, string.match
local function qidx_page(arr, lo, hi, off, count)
  local ms = redis.call('ZRANGEBYLEX', K.qidx, lo, hi, 'LIMIT', off, count)
  local ids, bar = {}, #arr + 18
  for j = 1, #ms do
    local m = ms[j]
    if str_byte(m, bar) == 124 and #m > bar then
      ids[j] = str_sub(m, bar + 1)
    else
      ids[j] = str_match(m, '^[^|]*|%d+|(.*)$')
    end
  end
  local recs = #ids > 0 and redis.call('HMGET', K.task, unpack(ids)) or {}
  return ms, ids, recs
end

-- Status letters (as bytes) a queued task may have to be claimed: not final (DONE/ERROR_FATAL).
local CLAIMABLE = {}
for st in pairs(VALID) do
  if not FINAL[st] then
    CLAIMABLE[string.byte(st)] = true
  end
end

-- The head 'status|done' of a queue entry's record (what the reply reports for it) when the
-- entry may be claimed: a record that is not final and whose head parses; else nil. A record
-- that does not parse is neither claimed nor dropped: it stays where it is (verify reports it).
local function claimable(rec)
  local head = rec and str_match(rec, '^(%u|%d+)|')
  return head and CLAIMABLE[str_byte(head)] and head or nil
end

-- A stale entry: no record, or a final one (dropped from the queue on the way).
local function stale_entry(rec)
  return not rec or FINAL[string.sub(rec, 1, 1)]
end

--!phase claim:capacity
-- find the head: each array's first entry (qidx), the earliest of them wins
local stale, stale_arrs = {}, {}
local head_id, head_arr, head_pos, head_member, head_head
for _, aid in ipairs(free) do
  local dropped, off = 0, 0
  while off < STALE_MAX do
    local ms, ids, recs = qidx_page(aid, '[' .. aid .. '|', '(' .. aid .. '}', off, 1)
    if not ms[1] then
      break
    end
    off = off + 1
    local hd = claimable(recs[1])
    if hd then
      local pos = string.match(ms[1], '^[^|]*|(%d+)|')
      if not head_pos or pos < head_pos then
        head_id, head_arr, head_pos, head_member, head_head = ids[1], aid, pos, ms[1], hd
      end
      break
    end
    if stale_entry(recs[1]) then
      stale[#stale + 1] = ids[1]
      stale_arrs[#stale_arrs + 1] = aid
      dropped = dropped + 1
    end
  end
end
if #stale > 0 then
  -- leftovers of a final task (or without a record): not queueable, never a head
  qdrop(stale, stale_arrs)
  multi('HDEL', K.qres, stale)
  emit('type', 'unqueue', 'n', #stale)
  touch()
end
if not head_id then
  return {finish(), '', '', '', 0, ''}
end

--!phase claim:head
-- gather the joiners: entries of the head's array within `window` entries after the head
local cap = math.min(max_size, wcap, acap[head_arr])
local rkey = redis.call('HGET', K.qres, head_id) or ''
local members, mkeys, heads = {head_id}, {head_member}, {head_id .. '|' .. head_head}
if cap > 1 and window > 0 then
  local rank = redis.call('ZRANK', K.ready, head_id)
  local upper = '(' .. head_arr .. '}'
  local bound = redis.call('ZRANGE', K.ready, rank + window, rank + window, 'WITHSCORES')
  if bound[2] then
    upper = '(' .. head_arr .. '|' .. qpos_text(tonumber(bound[2])) .. '}'
  end
  local lower = '[' .. head_arr .. '|' .. head_pos .. '}'
  local off = 0
  while #members < cap do
    local ms, ids, recs = qidx_page(head_arr, lower, upper, off, PAGE)
    if #ms == 0 then
      break
    end
    off = off + #ms
    local rks = redis.call('HMGET', K.qres, unpack(ids))
    for j = 1, #ids do
      local hd = (rks[j] or '') == rkey and claimable(recs[j])
      if hd then
        local k = #members + 1
        members[k] = ids[j]
        mkeys[k] = ms[j]
        heads[k] = ids[j] .. '|' .. hd
        if #members >= cap then
          break
        end
      end
    end
    if #ms < PAGE then
      break
    end
  end
end

--!phase claim:joiners
-- take them out of the queue
multi('ZREM', K.ready, members)
multi('ZREM', K.qidx, mkeys)
--!phase claim:unqueue
local bid = tostring(redis.call('HINCRBY', K.counters, 'batches', 1))
for i = 1, #members, 2000 do
  -- CLAIMS_HT: a value longer than hash-max-listpack-value in the same HSET makes Redis store
  -- `claims` as a hash table before the fields go in (deleted at once): a listpack (what a hash
  -- below 512 fields would be) costs a scan of the whole hash per field set, read or deleted
  local srem, hset = {}, {CLAIMS_HT, CLAIMS_HT_VALUE}
  for j = i, math.min(i + 1999, #members) do
    srem[#srem + 1] = members[j]
    hset[#hset + 1] = members[j]
    hset[#hset + 1] = bid
  end
  redis.call('SREM', K.queued, unpack(srem))
  redis.call('HSET', K.claims, unpack(hset))
  redis.call('HDEL', K.claims, CLAIMS_HT)
end
--!phase claim:claims
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
--!phase claim:batch
return {finish(), bid, head_arr, rkey, 0, table.concat(heads, ' ')}
