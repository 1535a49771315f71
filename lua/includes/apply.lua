-- apply.lua: apply status changes to task records (include after prelude). Shared by
-- apply_update (server syncs) and ack_batch (the answer to a queue call), so both follow the
-- same rules: validation first, the stale-stamp guard, DONE/ERROR_FATAL final, one record
-- write per task, each completion counted once.

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
-- leaves nothing stranded (try_enqueue refuses claimed tasks).
-- Returns a table: changed ("id:new:done:old"), ready (ids), touched ("id:done:status"),
-- into (status -> count), propagated (count).
local function apply_changes(first, n, stamp, propagate, may_change, consider)
  local stamp_n = tonumber(stamp)
  local r = {changed = {}, ready = {}, touched = {}, into = {}, propagated = 0}
  for i = 0, n - 1 do
    local id, new = ARGV[first + i * 2], ARGV[first + i * 2 + 1]
    local v = (consider == nil or consider(id)) and redis.call('HGET', K.task, id)
    if v then
      local s, nd, st, fl, rest = rec_parse(v)
      local old_s, old_st, old_fl = s, st, fl
      if (stamp == '' or st == '' or stamp_n >= tonumber(st)) and may_change(s) then
        if stamp ~= '' then
          st = stamp
        end
        if s ~= new then
          move_status(id, s, new, rec_array(rest))
          r.changed[#r.changed + 1] = id .. ':' .. new .. ':' .. nd .. ':' .. s
          r.into[new] = (r.into[new] or 0) + 1
          if n <= DETAIL_MAX then
            emit('type', 'task', 'task', id, 'from', s, 'to', new)
          end
          s = new
          -- a final task has no business in the ready queue (rare: only stale entries)
          if FINAL[s] and redis.call('SREM', K.queued, id) == 1 then
            redis.call('LREM', K.ready, 0, id)
            redis.call('HDEL', K.qres, id)
          end
          if propagate and s == 'G' then
            local _, nup = rec_def(rest)
            if tonumber(nd) == tonumber(nup) and try_enqueue(id, false) then
              r.ready[#r.ready + 1] = id
            end
          elseif propagate and s == 'A' and try_enqueue(id, true) then
            r.ready[#r.ready + 1] = id
          end
        end
      end
      local credit = propagate and s == 'D' and not string.find(fl, 'p', 1, true)
      if credit then
        fl = fl .. 'p'
      end
      if s ~= old_s or st ~= old_st or fl ~= old_fl then
        redis.call('HSET', K.task, id, rec_join(s, nd, st, fl, rest))
        touch()
      end
      if credit then
        credit_children(rest, true, r.ready, r.touched)
        r.propagated = r.propagated + 1
      end
    end
  end
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
