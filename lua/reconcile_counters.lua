-- reconcile_counters: recompute the per-array active counters from the Q/I/O/R sets and the
-- reservations from the claimed batches, fix those that disagree, and drop claims whose batch
-- no longer exists. The active tasks are counted here when there are at most ACTIVE_INLINE of
-- them; a larger count (limits as high as 2^31 let a run have 100k tasks running) is read by
-- the client in bounded pages and sent with the write version it was read at: it is used only
-- if nothing was written since, else the active counters are left for the next sweep (-1).
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch[, 4 version the counts were read at, then (array, count)...]
-- Returns: {version, active counters fixed (-1: not checked), reserved counters fixed,
--           stale claims dropped}
-- Errors: STATELOST, INVALID.
--!include prelude
--!include batch
--!include check
-- ACTIVE_INLINE: generated header (commands.ACTIVE_INLINE, the client's threshold too)
-- validation (check.lua): nothing below may fail after a write
-- (a corrupt active or reserved value is what this script rewrites: not checked)
local bad = chk_int_hash(K.counters, 'counter')
if not bad and #ARGV > 3 then
  bad = chk_int(ARGV[4], 'counted at version')
  if not bad and (#ARGV - 4) % 2 ~= 0 then
    bad = fail('INVALID', 'reconcile_counters: (array, count) pairs expected after the version')
  end
  for i = 5, #ARGV - 1, 2 do
    bad = bad or chk_int(ARGV[i], 'array id') or chk_int(ARGV[i + 1], 'active count of array ' .. ARGV[i])
  end
end
if bad then
  return bad
end

-- Make hash `key` hold exactly `want` (field -> number; absent or 0 means no field).
local function fix_counts(key, want)
  local fixed = 0
  local have = redis.call('HGETALL', key)
  local seen = {}
  for i = 1, #have, 2 do
    local f, n = have[i], tonumber(have[i + 1])
    seen[f] = true
    local w = want[f] or 0
    if n ~= w then
      if w == 0 then
        redis.call('HDEL', key, f)
      else
        redis.call('HSET', key, f, w)
      end
      fixed = fixed + 1
    end
  end
  for f, w in pairs(want) do
    if not seen[f] and w ~= 0 then
      redis.call('HSET', key, f, w)
      fixed = fixed + 1
    end
  end
  return fixed
end

local active = nil -- array -> active tasks, when known
if #ARGV > 3 then
  if tonumber(ARGV[4]) == VERSION then
    active = {}
    for i = 5, #ARGV - 1, 2 do
      active[ARGV[i]] = tonumber(ARGV[i + 1])
    end
  end
else
  local n = 0
  for st in pairs(ACTIVE) do
    n = n + redis.call('SCARD', SK[st])
  end
  if n <= ACTIVE_INLINE then
    active = {}
    for st in pairs(ACTIVE) do
      local recs = multi_reply('HMGET', K.task, redis.call('SMEMBERS', SK[st]))
      for j = 1, #recs do
        if recs[j] then
          local _, _, _, _, rest = rec_parse(recs[j])
          local arr = rest and rec_array(rest)
          if not arr then -- a record that does not parse: its array is unknown (verify says)
            active = nil
            break
          end
          active[arr] = (active[arr] or 0) + 1
        end
      end
      if not active then
        break
      end
    end
  end
end

local reserved = {}
local batches = {}
local all = redis.call('HGETALL', K.batches)
for i = 1, #all, 2 do
  local b = batch_parse(all[i + 1])
  batches[all[i]] = true
  if b.holder then -- a record that does not parse is left alone (verify reports it)
    local n = #split_ids(b.ids)
    reserved.run = (reserved.run or 0) + n
    reserved[b.array] = (reserved[b.array] or 0) + n
  end
end

local stale = 0
local claims = redis.call('HGETALL', K.claims)
for i = 1, #claims, 2 do
  if not batches[claims[i + 1]] then
    redis.call('HDEL', K.claims, claims[i])
    stale = stale + 1
  end
end

local af = active and fix_counts(K.active, active) or -1
local rf = fix_counts(K.reserved, reserved)
if math.max(af, 0) + rf + stale > 0 then
  emit('type', 'reconcile', 'active_fixed', af, 'reserved_fixed', rf, 'stale_claims', stale)
  touch()
end
return {finish(), af, rf, stale}
