-- prelude.lua: shared by every script. scripts.py puts the generated tables K (run keys by
-- name, from keys.RUN_KEY_NAMES), SK (status -> status set key) and RUN_FSM (allowed run-status
-- transitions, from constants.run_transition_allowed) in front of this file.
--
-- Common ARGV of every script:
--   ARGV[1] seen     "<version>:<token>:<rid>": the highest write version this client saw and
--                    the run's creation token it knows ("" if none): lost-write detection;
--                    then the call's request id (see includes/idem.lua, "" for none)
--   ARGV[2] actor    replica id or "-" (recorded in events)
--   ARGV[3] epoch    leadership epoch of the caller or "" (recorded in events)
-- Scripts answer errors with a code word first: STATELOST <seen> <found>, INVALID <what>,
-- NORUN <run>, LEASELOST <what>, FENCED <epoch> <current>, TRANSITION <from> <to>.

local ACTIVE = {Q = true, I = true, O = true, R = true}
local FINAL = {D = true, F = true}
local VALID = {G = true, Q = true, I = true, O = true, R = true, D = true, E = true, A = true, F = true}

local ACTOR = ARGV[2]
local EPOCH = ARGV[3]
local META = redis.call('HMGET', K.meta, 'version', 'events_maxlen', 'detail_max', 'token')
local VERSION = tonumber(META[1] or '0')
-- a stored value that is not a plain integer (written by hand or by an old client) falls back to
-- the default instead of failing the script after its first write (XADD MAXLEN 1.5 would)
local function meta_int(v, default, hi)
  if v and #v <= 16 and string.match(v, '^%d+$') and tonumber(v) <= hi then
    return tonumber(v)
  end
  return default
end
local EVENTS_MAXLEN = meta_int(META[2], 10000, 10000000)
local DETAIL_MAX = meta_int(META[3], 16, 100000)
local SEEN_TEXT, TOKEN = string.match(ARGV[1], '^(%d+):?([^:]*)')
local SEEN = tonumber(SEEN_TEXT)
local CHANGED = false

local function fail(code, text)
  return redis.error_reply(code .. ' ' .. text)
end

-- Append one event to the run's stream (a no-op when events are switched off).
local function emit(...)
  if EVENTS_MAXLEN > 0 then
    redis.call('XADD', K.events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'actor', ACTOR, 'epoch', EPOCH, ...)
  end
end

-- Mark the run as changed; the write version is bumped once, by finish().
local function touch()
  CHANGED = true
end

local function finish()
  if CHANGED then
    VERSION = redis.call('HINCRBY', K.meta, 'version', 1)
  end
  return VERSION
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Task records: S|done|stamp|flags|array|nup|start|children (see keys.py).
local function rec_parse(v)
  return string.match(v, '^(%a)|(%d+)|([^|]*)|([^|]*)|(.*)$')
end

local function rec_join(s, nd, st, fl, rest)
  return s .. '|' .. nd .. '|' .. st .. '|' .. fl .. '|' .. rest
end

-- The immutable part: array, nup, start, children.
local function rec_def(rest)
  return string.match(rest, '^([^|]*)|(%d+)|(%d+)|(.*)$')
end

local function rec_array(rest)
  return string.match(rest, '^([^|]*)|')
end

-- Run `cmd key list...` in slices that stay under Lua's unpack limit.
local function multi(cmd, key, list)
  for i = 1, #list, 4000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 3999, #list)))
  end
end

-- The replies of `cmd key list...` (HMGET, SMISMEMBER), one per element, in slices.
local function multi_reply(cmd, key, list)
  local out = {}
  for i = 1, #list, 4000 do
    local part = redis.call(cmd, key, unpack(list, i, math.min(i + 3999, #list)))
    for j = 1, #part do
      out[#out + 1] = part[j]
    end
  end
  return out
end

-- The ready queue (see keys.py) is three structures kept exact together by qpush/qdrop, the
-- only functions that write them: `ready` (zset id -> position: a front push scores below the
-- lowest, a back push above the highest, so ZRANGE is the queue order), `queued` (set of the same
-- ids: the at-most-once gate) and `qidx` (zset of 'array|position|id' members, all scored 0: the
-- queue per array in order, so claim_batch finds each array's next task in O(log n)).
-- Positions go to qidx offset by 2^52 and zero-padded to 16 digits, so that lexical order is
-- numerical order.
local QOFF = 4503599627370496

local function qpos_text(pos)
  return string.format('%016d', pos + QOFF)
end

local function qidx_member(arr, pos, id)
  return arr .. '|' .. qpos_text(pos) .. '|' .. id
end

-- The array of each id as its record says ('' without a record): qidx is keyed by it.
local function arrays_of(ids)
  local recs = multi_reply('HMGET', K.task, ids)
  local out = {}
  for i = 1, #ids do
    local rest = recs[i] and select(5, rec_parse(recs[i]))
    out[i] = rest and rec_array(rest) or ''
  end
  return out
end

-- Add `ids` (not queued, not claimed, no duplicates: the caller checked) to the queue, in this
-- order, at the back or at the front (the first id becomes the head). `arrs` their arrays
-- (arrays_of if nil). O(n log N): one ZADD, one index ZADD, one SADD per 1,000 ids.
local function qpush(ids, front, arrs)
  if #ids == 0 then
    return
  end
  arrs = arrs or arrays_of(ids)
  local first
  if front then
    local lo = redis.call('ZRANGE', K.ready, 0, 0, 'WITHSCORES')
    first = (lo[2] and tonumber(lo[2]) or 0) - #ids
  else
    local hi = redis.call('ZRANGE', K.ready, -1, -1, 'WITHSCORES')
    first = (hi[2] and tonumber(hi[2]) or 0) + 1
  end
  for i = 1, #ids, 1000 do
    local zr, zi = {}, {}
    for j = i, math.min(i + 999, #ids) do
      local pos = first + j - 1
      zr[#zr + 1] = pos
      zr[#zr + 1] = ids[j]
      zi[#zi + 1] = 0
      zi[#zi + 1] = qidx_member(arrs[j], pos, ids[j])
    end
    redis.call('ZADD', K.ready, unpack(zr))
    redis.call('ZADD', K.qidx, unpack(zi))
  end
  multi('SADD', K.queued, ids)
end

-- Take `ids` out of the queue (those not in it are ignored). Their resource keys (qres) are the
-- caller's business. `arrs` their arrays (arrays_of if nil). Returns the ids that were queued.
local function qdrop(ids, arrs)
  if #ids == 0 then
    return {}
  end
  local pos = multi_reply('ZMSCORE', K.ready, ids)
  local gone, members = {}, {}
  local have = false
  for i = 1, #ids do
    if pos[i] then
      have = true
      break
    end
  end
  if have then
    arrs = arrs or arrays_of(ids)
    for i, id in ipairs(ids) do
      if pos[i] then
        gone[#gone + 1] = id
        members[#members + 1] = qidx_member(arrs[i], tonumber(pos[i]), id)
      end
    end
    multi('ZREM', K.ready, gone)
    multi('ZREM', K.qidx, members)
  end
  multi('SREM', K.queued, ids)
  return gone
end

-- Queue candidates {id, front, cancelled, resource key} at most once each, in their order:
-- claimed and already queued ids are skipped (an already queued one takes a given resource
-- key); a queued task gets the given key (remembered in taskres) or else its last known one.
-- Back candidates are appended; front ones pushed to the head one after the other (so the last
-- front candidate ends first, as separate LPUSHes would). A cancelled candidate (final by the
-- end of the call) counts as queued and removed again: it is reported but not pushed.
-- Returns the ids queued, in order, and whether a queued task's resource key changed.
local function queue_many(cands)
  if #cands == 0 then
    return {}, false
  end
  local ids, seen = {}, {}
  for _, c in ipairs(cands) do
    ids[#ids + 1] = c[1]
  end
  local claimed = multi_reply('HMGET', K.claims, ids)
  local inq = multi_reply('SMISMEMBER', K.queued, ids)
  local ok, back, front, given, rekeyed = {}, {}, {}, {}, {}
  for i, c in ipairs(cands) do
    local id = c[1]
    if not claimed[i] and inq[i] == 0 and not seen[id] then
      seen[id] = true
      ok[#ok + 1] = id
      if c[4] and c[4] ~= '' then
        given[id] = c[4]
      end
      if c[2] and not c[3] then
        front[#front + 1] = id
      elseif not c[3] then
        back[#back + 1] = id
      end
    elseif not claimed[i] and inq[i] == 1 and c[4] and c[4] ~= '' then
      rekeyed[#rekeyed + 1] = id
      rekeyed[#rekeyed + 1] = c[4]
    end
  end
  local changed = false
  if #rekeyed > 0 then
    -- already queued (e.g. by apply_update): keep the resources the caller just settled
    local rids = {}
    for i = 1, #rekeyed, 2 do
      rids[#rids + 1] = rekeyed[i]
    end
    local cur = multi_reply('HMGET', K.qres, rids)
    local set = {}
    for i = 1, #rekeyed, 2 do
      if cur[(i + 1) / 2] ~= rekeyed[i + 1] then
        set[#set + 1] = rekeyed[i]
        set[#set + 1] = rekeyed[i + 1]
      end
    end
    if #set > 0 then
      multi('HSET', K.taskres, set)
      multi('HSET', K.qres, set)
      changed = true
    end
  end
  local pushed = {}
  for _, id in ipairs(back) do
    pushed[#pushed + 1] = id
  end
  for _, id in ipairs(front) do
    pushed[#pushed + 1] = id
  end
  if #pushed == 0 then
    return ok, changed
  end
  local rks = multi_reply('HMGET', K.taskres, pushed)
  local qres, tres = {}, {}
  for i, id in ipairs(pushed) do
    local rk = given[id]
    if rk then
      tres[#tres + 1] = id
      tres[#tres + 1] = rk
    else
      rk = rks[i]
    end
    if rk then
      qres[#qres + 1] = id
      qres[#qres + 1] = rk
    end
  end
  multi('HSET', K.taskres, tres)
  multi('HSET', K.qres, qres)
  qpush(back, false)
  local rev = {}
  for i = #front, 1, -1 do
    rev[#rev + 1] = front[i]
  end
  qpush(rev, true)
  return ok, changed
end

-- Drop final tasks from the ready queue (only stale entries can be there): O(k log N).
local function unqueue_final(ids)
  if #ids == 0 then
    return
  end
  local inq = multi_reply('SMISMEMBER', K.queued, ids)
  local list = {}
  for i, id in ipairs(ids) do
    if inq[i] == 1 then
      list[#list + 1] = id
    end
  end
  if #list == 0 then
    return
  end
  qdrop(list)
  multi('HDEL', K.qres, list)
end

if not SEEN or #SEEN_TEXT > 16 then
  return redis.error_reply('INVALID seen version ' .. tostring(ARGV[1]) .. ' is not <version>:<token>')
end
if not VERSION or (META[1] and not string.match(META[1], '^%d+$')) then
  return redis.error_reply('INVALID stored write version ' .. tostring(META[1]) .. ' is not an integer')
end
if SEEN > VERSION then
  return fail('STATELOST', SEEN .. ' ' .. VERSION)
end
if TOKEN ~= '' and META[4] and META[4] ~= TOKEN then
  return fail('STATELOST', SEEN .. ' ' .. VERSION .. ' recreated')
end
