-- queue.lua: the ready queue, its one bulk writing path and at-most-once queueing (include after
-- prelude). qpush/qdrop (and qtake_head, the dequeue's fast path) are the only writers of
-- `ready`, `queued` and `qidx`; queue_many (the gate, resource keys, order) and unqueue_final sit
-- on them, and queue_pairs (enqueue, enqueue_fringe) on queue_many.
--!include prelude

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

-- '00'..'99' by value (qpush writes a member's last two position digits from it), built by
-- the first qpush of a call: a script that pushes nothing does not pay for it
local DIG2

local function qidx_member(arr, pos, id)
  return string.format('%s|%016d|%s', arr, pos + QOFF, id)  -- one string, no intermediate one
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
  -- the positions are consecutive: each member's padded position is a 14-digit head, formatted
  -- once per hundred positions, and two digits from DIG2 (one string.format per member cost
  -- 8 k instructions, more than the rest of its push)
  if not DIG2 then
    DIG2 = {}
    for d = 0, 99 do
      DIG2[d] = string.char(48 + math.floor(d / 10), 48 + d % 10)
    end
  end
  local v = first + QOFF
  local hi, lo = math.floor(v / 100), v % 100
  local head = string.format('%014d', hi)
  -- the scores as text too, the same way, while they are small non-negative integers (a back
  -- push's usually are): a Lua number is converted with a '%.17g' sprintf per entry. tostring
  -- writes the head in full below 10^14 (a stored score is not trusted to be that small).
  local shi, slo = math.floor(first / 100), first % 100
  local shead = first >= 0 and first + #ids < 1e15 and tostring(shi) or nil
  for i = 1, #ids, 1000 do
    local zr, zi, nz = {}, {}, 0
    for j = i, math.min(i + 999, #ids) do
      local id = ids[j]
      if shead then
        zr[nz + 1] = shead .. DIG2[slo]
        slo = slo + 1
        if slo == 100 then
          slo, shi = 0, shi + 1
          shead = tostring(shi)
        end
      else
        zr[nz + 1] = first + j - 1
      end
      zr[nz + 2] = id
      -- '0' as text: a Lua number would be converted with a sprintf per entry
      zi[nz + 1], zi[nz + 2] = '0', arrs[j] .. '|' .. head .. DIG2[lo] .. '|' .. id
      nz = nz + 2
      lo = lo + 1
      if lo == 100 then
        lo, hi = 0, hi + 1
        head = string.format('%014d', hi)
      end
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

-- Whether qidx member `m` is 'arr|<position>|id' (plain comparisons: ids read from a stored key
-- are not trusted as patterns).
local function qidx_names(m, arr, id)
  return m ~= nil and #m > #arr + #id + 2 and string.sub(m, 1, #arr + 1) == arr .. '|'
    and string.sub(m, -#id - 1) == '|' .. id
end

-- Take the head of the queue out of it: `ids` are the first #ids entries of `ready` (as read by
-- this script), `arrs` their arrays. Each array's share of them is the first entries of its
-- range in qidx (qidx holds the queue per array, in order), so they leave qidx as one rank
-- range per array, found with ZLEXCOUNT: no member is built or read per task (a member
-- formatted or read into Lua costs more than the rest of a dequeue's share of the task). The
-- first and last member of each range must name the array's first and last id; a qidx that
-- does not (only a hand-edited run) goes through qdrop, member by member, as before.
-- O(n log N + arrays log N).
local function qtake_head(ids, arrs)
  if #ids == 0 then
    return
  end
  local per, order = {}, {}
  for i, id in ipairs(ids) do
    local list = per[arrs[i]]
    if not list then
      list = {}
      per[arrs[i]] = list
      order[#order + 1] = arrs[i]
    end
    list[#list + 1] = id
  end
  local ranges = {}
  for _, arr in ipairs(order) do
    local list = per[arr]
    local first = redis.call('ZLEXCOUNT', K.qidx, '-', '(' .. arr .. '|')
    local last = first + #list - 1
    local a = redis.call('ZRANGE', K.qidx, first, first)[1]
    local b = redis.call('ZRANGE', K.qidx, last, last)[1]
    if not (qidx_names(a, arr, list[1]) and qidx_names(b, arr, list[#list])) then
      qdrop(ids, arrs)
      return
    end
    ranges[#ranges + 1] = {first, last}
  end
  -- the highest range first: removing it does not move the ranks of the lower ones
  table.sort(ranges, function(x, y) return x[1] > y[1] end)
  for _, range in ipairs(ranges) do
    redis.call('ZREMRANGEBYRANK', K.qidx, range[1], range[2])
  end
  redis.call('ZREMRANGEBYRANK', K.ready, 0, #ids - 1)
  multi('SREM', K.queued, ids)
end

-- Queue candidates {id, front, cancelled, resource key} at most once each, in their order:
-- claimed and already queued ids are skipped (an already queued one takes a given resource
-- key); a queued task gets the given key (remembered in taskres) or else its last known one.
-- Back candidates are appended; front ones pushed to the head one after the other (so the last
-- front candidate ends first, as separate LPUSHes would). A cancelled candidate (final by the
-- end of the call) counts as queued and removed again: it is reported but not pushed.
-- `array_of(id)` (optional): the array of a candidate, when the caller has its record loaded
-- (else the records are read again).
-- Returns the ids queued, in order, and whether a queued task's resource key changed.
local function queue_many(cands, array_of)
  if #cands == 0 then
    return {}, false
  end
  local ids, seen = {}, {}
  for i = 1, #cands do
    ids[i] = cands[i][1]
  end
  local claimed = multi_reply('HMGET', K.claims, ids)
  local inq = multi_reply('SMISMEMBER', K.queued, ids)
  local ok, back, front, given, rekeyed = {}, {}, {}, {}, {}
  local nok, nback = 0, 0
  for i = 1, #cands do
    local c = cands[i]
    local id = c[1]
    if not claimed[i] and inq[i] == 0 and not seen[id] then
      seen[id] = true
      nok = nok + 1
      ok[nok] = id
      if c[4] and c[4] ~= '' then
        given[id] = c[4]
      end
      if c[2] and not c[3] then
        front[#front + 1] = id
      elseif not c[3] then
        nback = nback + 1
        back[nback] = id
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
  for i = 1, nback do
    pushed[i] = back[i]
  end
  for i = 1, #front do
    pushed[nback + i] = front[i]
  end
  if #pushed == 0 then
    return ok, changed
  end
  local rks = multi_reply('HMGET', K.taskres, pushed)
  local qres, tres, nq, nt = {}, {}, 0, 0
  for i = 1, #pushed do
    local id = pushed[i]
    local rk = given[id]
    if rk then
      tres[nt + 1], tres[nt + 2] = id, rk
      nt = nt + 2
    else
      rk = rks[i]
    end
    if rk then
      qres[nq + 1], qres[nq + 2] = id, rk
      nq = nq + 2
    end
  end
  multi('HSET', K.taskres, tres)
  multi('HSET', K.qres, qres)
  local rev = {}
  for i = #front, 1, -1 do
    rev[#rev + 1] = front[i]
  end
  local back_arrs, rev_arrs
  if array_of then
    back_arrs, rev_arrs = {}, {}
    for i = 1, nback do
      back_arrs[i] = array_of(back[i])
    end
    for i, id in ipairs(rev) do
      rev_arrs[i] = array_of(id)
    end
  end
  qpush(back, false, back_arrs)
  qpush(rev, true, rev_arrs)
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

-- Queue the (task id, resource key) pairs of ARGV from index `first` on, in their order (at the
-- front they keep it too). `wanted(status, done, rest)` says whether a task may be queued;
-- unknown, claimed and already queued tasks are skipped, but an already queued task takes a
-- given resource key. A task queued without a key gets its last known one (taskres); a given
-- key is remembered there. An id given twice counts once, at its first place, with the last
-- non-empty key given for it. Bulk reads and writes: O(n log N) for n pairs.
-- Returns the queued ids and {id, status, done, ...} of them.
local function queue_pairs(first, front, wanted)
  local ids, keyof, seen = {}, {}, {}
  for i = first, #ARGV, 2 do
    local id, rk = ARGV[i], ARGV[i + 1]
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
    end
    if rk ~= '' or keyof[id] == nil then
      keyof[id] = rk
    end
  end
  local recs = multi_reply('HMGET', K.task, ids)
  local cands, info = {}, {}
  for i, id in ipairs(ids) do
    if recs[i] then
      local s, nd, _, _, rest = rec_parse(recs[i])
      if wanted(s, nd, rest) then
        cands[#cands + 1] = {id, front, false, keyof[id]}
        info[id] = {s, tonumber(nd)}
      end
    end
  end
  if front then
    -- queue_many pushes front candidates one after the other: reversed, they keep this order
    local rev = {}
    for i = #cands, 1, -1 do
      rev[#rev + 1] = cands[i]
    end
    cands = rev
  end
  local got, rekeyed = queue_many(cands)
  local order = {}
  if front then
    for i = #got, 1, -1 do
      order[#order + 1] = got[i]
    end
  else
    order = got
  end
  local accepted = {}
  for _, id in ipairs(order) do
    accepted[#accepted + 1] = id
    accepted[#accepted + 1] = info[id][1]
    accepted[#accepted + 1] = info[id][2]
  end
  if rekeyed then
    touch()
  end
  if #order > 0 then
    if #order <= DETAIL_MAX then
      emit('type', 'enqueue', 'tasks', table.concat(order, ','), 'front', front and '1' or '0')
    else
      emit('type', 'enqueue', 'n', #order, 'front', front and '1' or '0')
    end
    touch()
  end
  return order, accepted
end
