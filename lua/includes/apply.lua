-- apply.lua: apply status changes and count completions, in bulk (include after prelude).
-- Shared by apply_update (server syncs), ack_batch (the answer to a queue call) and propagate,
-- so all follow the same rules: validation first, the stale-stamp guard, DONE/ERROR_FATAL final,
-- each completion counted once.
--
-- Why bulk: a chunk's records are read with one HMGET, changed in Lua tables, and written back
-- with one multi-field HSET; status sets move with one SREM/SADD per (old, new) pair; per-array
-- active counters and downstream credits are summed before they are written. That keeps the
-- number of redis.call per task small, which is most of a script's cost.
--!include prelude
--!include queue
--!include check
--!include records

-- Records longer than this (bytes) are kept raw, see recs_load.
local BIG_RECORD = 16384

-- upvalues: no two table lookups per call in the loops that run once per task or edge
local str_find, str_sub = string.find, string.sub

-- A loaded record is an array (no hash part: a call loads hundreds, and every table a script
-- allocates is paid again by Lua's garbage collector): these are its slots.
local T_S, T_ND, T_ST, T_FL, T_RAW, T_AT, T_KAT, T_S0, T_NUP, T_DIRTY = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10

-- Number of upstreams and array id of a loaded record, read from its definition when asked
-- (most records a call touches need neither).
local function t_nup(t)
  if not t[T_NUP] then
    t[T_NUP] = tonumber(string.match(t[T_RAW], '^%d+|(%d+)|', t[T_AT]))
  end
  return t[T_NUP]
end

-- The last array t_array read, and it with its '|': the records of a call mostly share an
-- array, and finding it where the record's array starts (a plain find, no new string) costs
-- less than making the string again.
local PREV_ARR, PREV_HEAD

local function t_array(t)
  local raw, at = t[T_RAW], t[T_AT]
  if PREV_ARR and str_find(raw, PREV_HEAD, at, true) == at then
    return PREV_ARR
  end
  local arr = string.match(raw, '^(%d+)|', at)
  PREV_ARR, PREV_HEAD = arr, arr .. '|'
  return arr
end

-- Upstreams done of a loaded record (t[T_ND] is its text: written back and reported as is).
local function t_done(t)
  return tonumber(t[T_ND])
end

-- Done counts converted once per call each way (text -> number costs a strtod, number -> text
-- a sprintf); filled by credit_children.
local NUM_TEXT, TEXT_NUM = {}, {}

-- The children list of a loaded record as (source string, index where the list starts): no copy.
local function t_children(t)
  return t[T_RAW], t[T_KAT]
end

-- The working set of task records of one call: id -> record (slots T_*: status, done count as
-- text, stamp, flags, the stored record, where its definition and its children list start, the
-- status in Redis, nup once t_nup read it, whether it must be written), loaded on demand,
-- written back by recs_flush; plan: what each completion of this call credits
-- (plan_completions); err: the INVALID reply for the first record that does not parse (the
-- caller answers it before its first write).
local function recs_new()
  return {map = {}, dirty_list = {}, plan = {}}
end

-- Load the records of `ids` not loaded yet: one HMGET per 4,000 ids and one match per record,
-- which also checks the record (every number in range, a known status, a children list of ids),
-- so the records a call touches are read and parsed once. The definition is never split.
local function recs_load(R, ids)
  local missing, nm, map = {}, 0, R.map
  for i = 1, #ids do
    local id = ids[i]
    if map[id] == nil then
      nm = nm + 1
      missing[nm] = id
      map[id] = false
    end
  end
  for i = 1, #missing, 4000 do
    local last = math.min(i + 3999, #missing)
    --!phase load:ids
    local raws = redis.call('HMGET', K.task, unpack(missing, i, last))
    --!phase load:HMGET
    for j = i, last do
      local raw = raws[j - i + 1]
      if raw then
        local why, s, nd, st, fl, at, kat = record_fields(raw)
        if why then
          R.err = R.err or corrupt(missing[j], raw, why)
        else
          R.map[missing[j]] = {s, nd, st, fl, raw, at, kat, s, false, false}
        end
      end
    end
    --!phase load:parse
  end
end

local function recs_dirty(R, id)
  local t = R.map[id]
  if not t[T_DIRTY] then
    t[T_DIRTY] = true
    R.dirty_list[#R.dirty_list + 1] = id
  end
end

-- Write every dirty record, move it between status sets and keep the active counters.
-- The record is rebuilt inline (one concatenation per record, no helper call): this loop runs
-- for every record a call writes.
local function recs_flush(R)
  local dirty = R.dirty_list
  if #dirty == 0 then
    return
  end
  local map = R.map
  local fields, moves, move_list, deltas, nf = {}, {}, {}, {}, 0
  for i = 1, #dirty do
    local id = dirty[i]
    local t = map[id]
    local s, s0 = t[T_S], t[T_S0]
    t[T_DIRTY] = false
    fields[nf + 1] = id
    fields[nf + 2] = s .. '|' .. t[T_ND] .. '|' .. t[T_ST] .. '|' .. t[T_FL] .. '|'
      .. str_sub(t[T_RAW], t[T_AT])
    nf = nf + 2
    if s ~= s0 then
      local from = moves[s0]
      if not from then
        from = {}
        moves[s0] = from
      end
      local list = from[s]
      if not list then
        list = {}
        from[s] = list
        move_list[#move_list + 1] = {s0, s, list}
      end
      list[#list + 1] = id
      local step = (ACTIVE[s] and 1 or 0) - (ACTIVE[s0] and 1 or 0)
      if step ~= 0 then
        local arr = t_array(t)
        deltas[arr] = (deltas[arr] or 0) + step
      end
      t[T_S0] = s
    end
  end
  --!phase flush:rebuild
  multi('HSET', K.task, fields)
  --!phase flush:HSET
  for _, mv in ipairs(move_list) do
    multi('SREM', SK[mv[1]], mv[3])
    multi('SADD', SK[mv[2]], mv[3])
  end
  --!phase flush:status-sets
  for arr, d in pairs(deltas) do
    if d ~= 0 then
      redis.call('HINCRBY', K.active, arr, d)
    end
  end
  R.dirty_list = {}
  touch()
end

-- Downstream edges one script call credits at most: a bigger fan-out is cut into slices kept
-- in K.fanout and credited one slice per call, so no call grows with a fan-out (see keys.py).
local EDGE_MAX = 1000  -- as core.DEFAULT_CHUNK_BUDGET: a slice costs what any other chunk does
local EDGE_LEFT = EDGE_MAX

-- Plan the completions of the given loaded tasks that are or become DONE and are not yet
-- propagated, in order: a fan-out that fits in this call's edge allowance gets its children
-- (whose records are loaded, so crediting needs no more reads); a bigger one is marked 'big'
-- (count_completion cuts it into slices).
local function plan_completions(R, ids)
  local children, nc = {}, 0
  for i = 1, #ids do
    local id = ids[i]
    local t = R.map[id]
    if t and R.plan[id] == nil and not str_find(t[T_FL], 'p', 1, true) then
      if #t[T_RAW] > BIG_RECORD or kids_marker(t[T_RAW], t[T_KAT]) then
        R.plan[id] = 'big'
      else
        -- split at each ',' (string.find, plain): a gmatch iterator per task cost twice as much
        local kids, nk, raw, p = {}, 0, t[T_RAW], t[T_KAT]
        local len = #raw
        while p <= len do
          local e = str_find(raw, ',', p, true) or (len + 1)
          if e > p then
            nk = nk + 1
            kids[nk] = str_sub(raw, p, e - 1)
          end
          p = e + 1
        end
        if nk > EDGE_LEFT then
          R.plan[id] = 'big'
        else
          EDGE_LEFT = EDGE_LEFT - nk
          R.plan[id] = kids
          for k = 1, nk do
            nc = nc + 1
            children[nc] = kids[k]
          end
        end
      end
    end
  end
  --!phase apply:split-children
  recs_load(R, children)
  --!phase apply:load-children
end

-- A queue candidate {id, front, cancelled}: queued when the call ends (see queue_many).
local function add_cand(r, id, front)
  local c = {id, front, false}
  r.cands[#r.cands + 1] = c
  r.cand_of[id] = c
end

-- Credit one completion to each of the given downstreams (records loaded). A downstream without
-- a record gets a pending credit (written by flush_credits, absorbed by its registration). A
-- REGISTERING downstream whose count reaches its number of upstreams became ready: added to
-- r.cands (queued by finish_queue when `enqueue`, else reported as ready).
local function credit_children(R, kids, r)
  local map, dirty, credited, credited_list = R.map, R.dirty_list, r.credited, r.credited_list
  for i = 1, #kids do
    local child = kids[i]
    local c = map[child]
    if c then
      -- recs_dirty, t_done and num_text_of inlined: this runs once per edge
      local have = c[T_ND]
      local nd = TEXT_NUM[have]
      if not nd then
        nd = tonumber(have)
        TEXT_NUM[have] = nd
      end
      nd = nd + 1
      local text = NUM_TEXT[nd]
      if not text then
        text = tostring(nd)
        NUM_TEXT[nd] = text
      end
      c[T_ND] = text
      if not c[T_DIRTY] then
        c[T_DIRTY] = true
        dirty[#dirty + 1] = child
      end
      if not credited[child] then
        credited[child] = true
        credited_list[#credited_list + 1] = child
      end
      if c[T_S] == 'G' and nd == (c[T_NUP] or t_nup(c)) then
        add_cand(r, child, false)
      end
    else
      if not r.pending[child] then
        r.pending[child] = 0
        r.pending_list[#r.pending_list + 1] = child
      end
      r.pending[child] = r.pending[child] + 1
    end
  end
end

-- Start the fan-out of the loaded task `id` with the progress "n:k:m" in K.fanout (n credited,
-- next slice k of m). Children kept in K.kids (marker "*<m>") are credited from their slices
-- there; an inline list is cut into slices of about EDGE_MAX ids, stored in K.fanout as
-- id#1..id#m, at byte offsets (one search per slice, no copy of the whole list); their length
-- comes from the average id length at the head of the list. Inline lists hold at most
-- KIDS_SLICE ids when registered by this version, so the cut stays small.
local function start_fanout(R, id, r)
  local src, base = t_children(R.map[id])
  local slices = kids_marker(src, base)
  if slices then  -- already sliced in K.kids: credited from there, nothing to cut
    redis.call('HSET', K.fanout, id, '0:1:' .. slices)
    r.unfinished[#r.unfinished + 1] = id
    touch()
    return
  end
  local len = #src
  -- bytes per id, from samples at the head, the middle and the tail of the list
  local sampled, commas = 0, 0
  for _, at in ipairs({base, base + math.floor((len - base) / 2), math.max(base, len - 1023)}) do
    local part = string.sub(src, at, math.min(len, at + 1023))
    local _, c = string.gsub(part, ',', ',')
    sampled, commas = sampled + #part, commas + c
  end
  local step = math.max(64, math.floor(sampled / (commas + 1) * EDGE_MAX))
  local fields, m, i = {}, 0, base
  while i <= len do
    local size, e, piece = step, len + 1, nil
    while true do
      e = len + 1
      if i + size - 1 < len then
        e = string.find(src, ',', i + size - 1, true) or (len + 1)
      end
      piece = string.sub(src, i, e - 1)
      local _, c = string.gsub(piece, ',', ',')
      if c < EDGE_MAX or size <= 2 then
        break
      end
      size = math.max(2, math.floor(size * EDGE_MAX / (c + 1) * 0.95))  -- at most EDGE_MAX ids
    end
    m = m + 1
    fields[#fields + 1] = id .. '#' .. m
    fields[#fields + 1] = piece
    i = e + 1
  end
  fields[#fields + 1] = id
  fields[#fields + 1] = '0:1:' .. m
  multi('HSET', K.fanout, fields)
  r.unfinished[#r.unfinished + 1] = id
  touch()
end

-- Count the completion of the loaded task `id` once, if it is DONE: flag it "p" and credit its
-- downstreams as planned by plan_completions; a fan-out too big for this call is cut into
-- slices (start_fanout), credited by the next calls (continue_fanouts) and listed in
-- r.unfinished. Credited ids go to r.credited. Returns true when it counted the completion.
local function count_completion(R, id, r)
  local t = R.map[id]
  if t[T_S] ~= 'D' or string.find(t[T_FL], 'p', 1, true) then
    return false
  end
  local p = R.plan[id]
  t[T_FL] = t[T_FL] .. 'p'
  recs_dirty(R, id)
  r.propagated = r.propagated + 1
  if type(p) == 'table' then
    credit_children(R, p, r)
  else
    start_fanout(R, id, r)
  end
  return true
end

-- The next slice of each fan-out in progress among `ids` (progress as read from K.fanout, in
-- the same order; the slice is a cut one in K.fanout, else one of K.kids, which stays: it is
-- the task's definition), within this call's edge allowance: its children's records are loaded (so
-- they are checked before anything is written); credit_fanouts credits them. Ids left for later
-- calls go to r.unfinished.
local function load_fanouts(R, ids, progress, r)
  local todo, seen = {}, {}
  for i, id in ipairs(ids) do
    if not seen[id] then
      seen[id] = true
      local n, k, m = string.match(progress[i], '^(%d+):(%d+):(%d+)$')
      if n then
        todo[#todo + 1] = {id = id, n = tonumber(n), k = tonumber(k), m = tonumber(m)}
      end
    end
  end
  local work, children = {}, {}
  for _, f in ipairs(todo) do
    if EDGE_LEFT > 0 and f.k <= f.m then
      local slice = f.id .. '#' .. f.k
      local list = redis.call('HGET', K.fanout, slice) or redis.call('HGET', K.kids, slice) or ''
      local kids = {}
      for child in string.gmatch(list, '[^,]+') do
        kids[#kids + 1] = child
        children[#children + 1] = child
      end
      EDGE_LEFT = EDGE_LEFT - #kids
      f.kids = kids
      work[#work + 1] = f
    else
      r.unfinished[#r.unfinished + 1] = f.id
    end
  end
  recs_load(R, children)
  return work
end

-- Credit the slices load_fanouts picked; the progress advances in the same call, and the slices
-- and progress are deleted with the last slice. Ids with work left go to r.unfinished.
local function credit_fanouts(R, work, r)
  for _, f in ipairs(work) do
    credit_children(R, f.kids, r)
    redis.call('HDEL', K.fanout, f.id .. '#' .. f.k)
    if f.k >= f.m then
      redis.call('HDEL', K.fanout, f.id)
    else
      redis.call('HSET', K.fanout, f.id, (f.n + #f.kids) .. ':' .. (f.k + 1) .. ':' .. f.m)
      r.unfinished[#r.unfinished + 1] = f.id
    end
  end
  if #work > 0 then
    touch()
  end
end

local function new_result()
  return {changed = {}, ready = {}, touched = {}, into = {}, propagated = 0, credited = {},
    credited_list = {}, cands = {}, cand_of = {}, finals = {}, pending = {}, pending_list = {},
    unfinished = {}}
end

-- Write the pending credits of downstreams without a record ("q" when this call queues).
local function flush_credits(r, enqueue)
  if #r.pending_list > 0 then
    local old = multi_reply('HMGET', K.pcredit, r.pending_list)
    local fields = {}
    for i, id in ipairs(r.pending_list) do
      local n, q = 0, enqueue and 'q' or ''
      if old[i] then
        local on, oq = string.match(old[i], '^(%d+)(q?)$')
        n = tonumber(on or '0')
        if oq == 'q' then
          q = 'q'
        end
      end
      fields[#fields + 1] = id
      fields[#fields + 1] = (n + r.pending[id]) .. q
    end
    multi('HSET', K.pcredit, fields)
    touch()
  end
end

-- Queue the ready candidates (or only report them without `enqueue`), drop final tasks from
-- the queue, and fill r.touched.
local function finish_queue(R, r, enqueue)
  flush_credits(r, enqueue)
  unqueue_final(r.finals)
  --!phase apply:credits-unqueue
  if enqueue then
    r.ready = queue_many(r.cands, function(id)
      return t_array(R.map[id])
    end)
  else
    for _, c in ipairs(r.cands) do
      r.ready[#r.ready + 1] = c[1]
    end
  end
  --!phase apply:queue
  local map, list, touched = R.map, r.credited_list, r.touched
  for i = 1, #list do
    local id = list[i]
    local t = map[id]
    touched[i] = id .. ':' .. t[T_ND] .. ':' .. t[T_S]
  end
  --!phase apply:touched
end

-- Apply the n (id, status) pairs of ARGV starting at `first`. `stamp` is the update's sync
-- stamp ("" for none). `may_change(status)` says whether a task in that status takes the new
-- one; `consider(id)` (or nil) filters ids. With `propagate`, new completions credit their
-- downstreams and queue what became ready, a retry (G with every upstream done) is queued at
-- the back and a resource error (A) at the front, so a replica that dies right after the call
-- leaves nothing stranded (claimed tasks are never queued).
-- Returns a table: changed ("id:new:done:old"), ready (ids), touched ("id:done:status"),
-- into (status -> count), propagated (count); or nil and the INVALID reply when a record it
-- would touch does not parse (nothing written); third, the records it loaded (see recs_new).
local function apply_changes(first, n, stamp, propagate, may_change, consider)
  local stamp_n = tonumber(stamp)
  local r = new_result()
  local R = recs_new()
  local ids, news, unchecked = {}, {}, {}
  for i = 0, n - 1 do
    local id = ARGV[first + i * 2]
    if consider == nil or consider(id) then
      ids[#ids + 1] = id
      news[#ids] = ARGV[first + i * 2 + 1]
    else
      unchecked[#unchecked + 1] = id
    end
  end
  --!phase apply:args
  recs_load(R, ids)
  --!phase apply:load
  -- ids with a record were checked when they were registered (chk_pairs): the others (no
  -- record, or left out by `consider`) are checked here, before anything is written
  local map = R.map
  for k = 1, #ids do
    if not map[ids[k]] then
      unchecked[#unchecked + 1] = ids[k]
    end
  end
  local bad_id = chk_ids(unchecked)
  if bad_id then
    return nil, bad_id
  end
  --!phase apply:check-ids
  if propagate then
    -- only tasks that are or become DONE credit downstreams
    local completing = {}
    for k = 1, #ids do
      local t = R.map[ids[k]]
      if t and (news[k] == 'D' or t[T_S] == 'D') and not str_find(t[T_FL], 'p', 1, true) then
        completing[#completing + 1] = ids[k]
      end
    end
    plan_completions(R, completing)
  end
  if R.err then
    return nil, R.err
  end
  -- one task after the other, in update order, as if each were its own call: the result does
  -- not depend on how an update is cut into chunks
  local dirty, changed, into, finals = R.dirty_list, r.changed, r.into, r.finals
  for k = 1, #ids do
    local id = ids[k]
    local t, new = map[id], news[k]
    if t then
      local s0, st0 = t[T_S], t[T_ST]
      if (stamp == '' or st0 == '' or stamp_n >= tonumber(st0)) and may_change(s0) then
        if stamp ~= '' then
          t[T_ST] = stamp
        end
        if s0 ~= new then
          changed[#changed + 1] = id .. ':' .. new .. ':' .. t[T_ND] .. ':' .. s0
          into[new] = (into[new] or 0) + 1
          if n <= DETAIL_MAX then
            emit('type', 'task', 'task', id, 'from', s0, 'to', new)
          end
          t[T_S] = new
          if FINAL[new] then
            finals[#finals + 1] = id
            -- queued earlier in this call, then final: as if pushed and removed again
            local c = r.cand_of[id]
            if c then
              c[3] = true
            end
          elseif propagate and new == 'G' then
            if t_done(t) == t_nup(t) then
              add_cand(r, id, false)
            end
          elseif propagate and new == 'A' then
            add_cand(r, id, true)
          end
        end
      end
      -- recs_dirty inlined (once per task of the call)
      if (t[T_S] ~= s0 or t[T_ST] ~= st0) and not t[T_DIRTY] then
        t[T_DIRTY] = true
        dirty[#dirty + 1] = id
      end
      if propagate and t[T_S] == 'D' then
        count_completion(R, id, r)
      end
    end
  end
  --!phase apply:loop
  finish_queue(R, r, true)
  recs_flush(R)
  --!phase apply:flush
  return r, nil, R
end

-- The status of a task whose record R holds (nil for the others).
local function recs_status(R, id)
  local t = R.map[id]
  return t and t[T_S] or nil
end

-- Count the completions of the given task ids once (tasks not DONE are ignored) and credit
-- the next slice of those whose fan-out is in progress (their records are not even read);
-- queue what became ready when `enqueue`. Returns r as apply_changes does (no changed entries),
-- or nil and the INVALID reply of a record that does not parse (nothing written).
local function propagate_ids(ids, enqueue)
  local r = new_result()
  local R = recs_new()
  local progress = multi_reply('HMGET', K.fanout, ids)
  local plain, going, going_p = {}, {}, {}
  for i, id in ipairs(ids) do
    if progress[i] then
      going[#going + 1] = id
      going_p[#going_p + 1] = progress[i]
    else
      plain[#plain + 1] = id
    end
  end
  recs_load(R, plain)
  local done = {}
  for _, id in ipairs(plain) do
    if R.map[id] and R.map[id][T_S] == 'D' then
      done[#done + 1] = id
    end
  end
  local work = load_fanouts(R, going, going_p, r)
  plan_completions(R, done)
  if R.err then
    return nil, R.err
  end
  credit_fanouts(R, work, r)
  for _, id in ipairs(plain) do
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

-- The reply of apply_update and ack_batch (one shape for both): {version, "id:status:done:old
-- ..." changed, "id ..." ready and queued, "id:done:status ..." credited downstreams, `run`
-- ({run status, limit, applied 1/0}), then `...` (ack_batch: the requeued ids), then the
-- unfinished fan-outs.
local function changes_reply(r, run, ...)
  local out = {finish(), table.concat(r.changed, ' '), table.concat(r.ready, ' '),
    table.concat(r.touched, ' '), run}
  for _, extra in ipairs({...}) do
    out[#out + 1] = extra
  end
  out[#out + 1] = r.unfinished
  return out
end
