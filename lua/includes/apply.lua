-- apply.lua: apply status changes and count completions, in bulk (include after prelude).
-- Shared by apply_update (server syncs), ack_batch (the answer to a queue call) and propagate,
-- so all follow the same rules: validation first, the stale-stamp guard, DONE/ERROR_FATAL final,
-- each completion counted once.
--
-- Why bulk: a chunk's records are read with one HMGET, changed in Lua tables, and written back
-- with one multi-field HSET; status sets move with one SREM/SADD per (old, new) pair; per-array
-- active counters and downstream credits are summed before they are written. That keeps the
-- number of redis.call per task small, which is most of a script's cost.

-- The working set of task records of one call: id -> {s, nd, st, fl, rest, s0} (s0: the
-- status in Redis), loaded on demand, written back by recs_flush.
local function recs_new()
  return {map = {}, dirty = {}, dirty_list = {}}
end

local function recs_load(R, ids)
  local missing = {}
  for _, id in ipairs(ids) do
    if R.map[id] == nil then
      missing[#missing + 1] = id
      R.map[id] = false
    end
  end
  for i = 1, #missing, 4000 do
    local last = math.min(i + 3999, #missing)
    local raws = redis.call('HMGET', K.task, unpack(missing, i, last))
    for j = i, last do
      local raw = raws[j - i + 1]
      if raw then
        local s, nd, st, fl, rest = rec_parse(raw)
        R.map[missing[j]] = {s = s, nd = tonumber(nd), st = st, fl = fl, rest = rest, s0 = s}
      end
    end
  end
end

local function recs_dirty(R, id)
  if not R.dirty[id] then
    R.dirty[id] = true
    R.dirty_list[#R.dirty_list + 1] = id
  end
end

-- Write every dirty record, move it between status sets and keep the active counters.
local function recs_flush(R)
  if #R.dirty_list == 0 then
    return
  end
  local fields, moves, move_keys, deltas = {}, {}, {}, {}
  for _, id in ipairs(R.dirty_list) do
    local t = R.map[id]
    fields[#fields + 1] = id
    fields[#fields + 1] = rec_join(t.s, t.nd, t.st, t.fl, t.rest)
    if t.s ~= t.s0 then
      local key = t.s0 .. t.s
      if not moves[key] then
        moves[key] = {}
        move_keys[#move_keys + 1] = key
      end
      table.insert(moves[key], id)
      local step = (ACTIVE[t.s] and 1 or 0) - (ACTIVE[t.s0] and 1 or 0)
      if step ~= 0 then
        local arr = rec_array(t.rest)
        deltas[arr] = (deltas[arr] or 0) + step
      end
      t.s0 = t.s
    end
  end
  multi('HSET', K.task, fields)
  for _, key in ipairs(move_keys) do
    multi('SREM', SK[string.sub(key, 1, 1)], moves[key])
    multi('SADD', SK[string.sub(key, 2, 2)], moves[key])
  end
  for arr, d in pairs(deltas) do
    if d ~= 0 then
      redis.call('HINCRBY', K.active, arr, d)
    end
  end
  R.dirty, R.dirty_list = {}, {}
  touch()
end

-- Load the downstream records of the given tasks, so crediting them needs no more reads.
local function recs_load_children(R, ids)
  local children = {}
  for _, id in ipairs(ids) do
    local t = R.map[id]
    if t then
      local _, _, _, list = rec_def(t.rest)
      for child in string.gmatch(list, '[^,]+') do
        children[#children + 1] = child
      end
    end
  end
  recs_load(R, children)
end

-- A queue candidate {id, front, cancelled}: queued when the call ends (see queue_many).
local function add_cand(r, id, front)
  local c = {id, front, false}
  r.cands[#r.cands + 1] = c
  r.cand_of[id] = c
end

-- Count the completion of the loaded task `id` once, if it is DONE: flag it and credit each
-- downstream (their records must be loaded: recs_load_children). A REGISTERING downstream whose
-- count reaches its number of upstreams became ready: it is added to r.cands (queued by
-- finish_queue when `enqueue`, else reported as ready). Credited ids go to r.credited.
local function count_completion(R, id, r)
  local t = R.map[id]
  if t.s ~= 'D' or string.find(t.fl, 'p', 1, true) then
    return false
  end
  t.fl = t.fl .. 'p'
  recs_dirty(R, id)
  local _, _, _, children = rec_def(t.rest)
  for child in string.gmatch(children, '[^,]+') do
    local c = R.map[child]
    if c then
      c.nd = c.nd + 1
      recs_dirty(R, child)
      if not r.credited[child] then
        r.credited[child] = true
        r.credited_list[#r.credited_list + 1] = child
      end
      if c.s == 'G' then
        local _, nup = rec_def(c.rest)
        if c.nd == tonumber(nup) then
          add_cand(r, child, false)
        end
      end
    end
  end
  r.propagated = r.propagated + 1
  return true
end

local function new_result()
  return {changed = {}, ready = {}, touched = {}, into = {}, propagated = 0, credited = {},
    credited_list = {}, cands = {}, cand_of = {}, finals = {}}
end

-- Queue the ready candidates (or only report them without `enqueue`), drop final tasks from
-- the queue, and fill r.touched.
local function finish_queue(R, r, enqueue)
  unqueue_final(r.finals)
  if enqueue then
    r.ready = queue_many(r.cands)
  else
    for _, c in ipairs(r.cands) do
      r.ready[#r.ready + 1] = c[1]
    end
  end
  for _, id in ipairs(r.credited_list) do
    local t = R.map[id]
    r.touched[#r.touched + 1] = id .. ':' .. t.nd .. ':' .. t.s
  end
end

-- INVALID error reply for the first unknown status among the n (id, status) pairs of ARGV
-- starting at `first`, or nil.
local function invalid_status(first, n)
  for i = 0, n - 1 do
    local st = ARGV[first + i * 2 + 1]
    if not VALID[st] then
      return fail('INVALID', 'unknown task status ' .. st .. ' for task ' .. ARGV[first + i * 2])
    end
  end
  return nil
end

-- Apply the n (id, status) pairs of ARGV starting at `first`. `stamp` is the update's sync
-- stamp ("" for none). `may_change(status)` says whether a task in that status takes the new
-- one; `consider(id)` (or nil) filters ids. With `propagate`, new completions credit their
-- downstreams and queue what became ready, a retry (G with every upstream done) is queued at
-- the back and a resource error (A) at the front, so a replica that dies right after the call
-- leaves nothing stranded (claimed tasks are never queued).
-- Returns a table: changed ("id:new:done:old"), ready (ids), touched ("id:done:status"),
-- into (status -> count), propagated (count).
local function apply_changes(first, n, stamp, propagate, may_change, consider)
  local stamp_n = tonumber(stamp)
  local r = new_result()
  local R = recs_new()
  local ids, news = {}, {}
  for i = 0, n - 1 do
    local id = ARGV[first + i * 2]
    if consider == nil or consider(id) then
      ids[#ids + 1] = id
      news[#ids] = ARGV[first + i * 2 + 1]
    end
  end
  recs_load(R, ids)
  if propagate then
    -- only tasks that are or become DONE credit downstreams
    local completing = {}
    for k, id in ipairs(ids) do
      local t = R.map[id]
      if t and (news[k] == 'D' or t.s == 'D') and not string.find(t.fl, 'p', 1, true) then
        completing[#completing + 1] = id
      end
    end
    recs_load_children(R, completing)
  end
  -- one task after the other, in update order, as if each were its own call: the result does
  -- not depend on how an update is cut into chunks
  for k, id in ipairs(ids) do
    local t, new = R.map[id], news[k]
    if t then
      local s0, st0 = t.s, t.st
      if (stamp == '' or t.st == '' or stamp_n >= tonumber(t.st)) and may_change(t.s) then
        if stamp ~= '' then
          t.st = stamp
        end
        if t.s ~= new then
          r.changed[#r.changed + 1] = id .. ':' .. new .. ':' .. t.nd .. ':' .. t.s
          r.into[new] = (r.into[new] or 0) + 1
          if n <= DETAIL_MAX then
            emit('type', 'task', 'task', id, 'from', t.s, 'to', new)
          end
          t.s = new
          if FINAL[new] then
            r.finals[#r.finals + 1] = id
            -- queued earlier in this call, then final: as if pushed and removed again
            local c = r.cand_of[id]
            if c then
              c[3] = true
            end
          elseif propagate and new == 'G' then
            local _, nup = rec_def(t.rest)
            if t.nd == tonumber(nup) then
              add_cand(r, id, false)
            end
          elseif propagate and new == 'A' then
            add_cand(r, id, true)
          end
        end
      end
      if t.s ~= s0 or t.st ~= st0 then
        recs_dirty(R, id)
      end
      if propagate then
        count_completion(R, id, r)
      end
    end
  end
  finish_queue(R, r, true)
  recs_flush(R)
  return r
end

-- Count the completions of the given task ids once (tasks not DONE are ignored); queue what
-- became ready when `enqueue`. Returns r as apply_changes does (no changed entries).
local function propagate_ids(ids, enqueue)
  local r = new_result()
  local R = recs_new()
  recs_load(R, ids)
  recs_load_children(R, ids)
  for _, id in ipairs(ids) do
    if R.map[id] then
      count_completion(R, id, r)
    end
  end
  finish_queue(R, r, enqueue)
  recs_flush(R)
  return r
end

-- Counters and the compact events of one apply_changes result (n: pairs in the call).
local function report_changes(r, n)
  if #r.changed > 0 then
    local parts = {}
    for st, c in pairs(r.into) do
      parts[#parts + 1] = st .. '=' .. c
      redis.call('HINCRBY', K.counters, 'to:' .. st, c)
    end
    if n > DETAIL_MAX then
      table.sort(parts)
      emit('type', 'update', 'n', #r.changed, 'into', table.concat(parts, ','))
    end
  end
  if r.propagated > 0 then
    redis.call('HINCRBY', K.counters, 'propagations', r.propagated)
    emit('type', 'propagate', 'n', r.propagated, 'ready', #r.ready)
  end
end
