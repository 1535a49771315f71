-- apply_update: apply one chunk of a StateUpdate atomically, and (with propagate) count each new
-- completion once, crediting downstream counters and queueing what became ready.
-- With propagate, a task that moves back to G with every upstream done is queued at the back
-- and a task that moves to A at the front (both at most once), and reported in `ready`.
-- Rules: unknown ids are skipped; DONE and ERROR_FATAL are final; with a stamp, a task whose
-- last applied stamp is newer is skipped (ties apply) and its stamp moves forward; the run
-- status follows RUN_FSM (other transitions are skipped); last_sync only moves forward.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 propagate (1/0), 5 stamp (µs, or ""), 6 n changes,
--       then n pairs: task id, new status;
--       then the tail: 1 if this is the last chunk else 0; when 1, follows:
--       limit (or ""), n array limits, n pairs (array id, limit), run status (or ""),
--       last sync encoded (or ""), last sync µs (or "")
-- Returns: {version, "id:status:done:old ..." changed, "id ..." ready and queued,
--           "id:done:status ..." credited downstreams, {run status, limit, run status applied 1/0}}
-- Errors: STATELOST, INVALID.
--!include prelude
local propagate = ARGV[4] == '1'
local stamp = ARGV[5]
local stamp_n = tonumber(stamp)
local n = tonumber(ARGV[6])
for i = 0, n - 1 do
  local st = ARGV[8 + i * 2]
  if not VALID[st] then
    return fail('INVALID', 'unknown task status ' .. st .. ' for task ' .. ARGV[7 + i * 2])
  end
end
local t = 7 + n * 2
local last = ARGV[t] == '1'
local new_limit, n_al, run_status, sync_enc, sync_us
if last then
  new_limit = ARGV[t + 1]
  n_al = tonumber(ARGV[t + 2])
  run_status = ARGV[t + 3 + n_al * 2]
  sync_enc = ARGV[t + 4 + n_al * 2]
  sync_us = ARGV[t + 5 + n_al * 2]
  if new_limit ~= '' and not string.match(new_limit, '^%d+$') then
    return fail('INVALID', 'limit ' .. new_limit)
  end
end

local changed, ready, touched = {}, {}, {}
local into = {}
local propagated = 0
for i = 0, n - 1 do
  local id, new = ARGV[7 + i * 2], ARGV[8 + i * 2]
  local v = redis.call('HGET', K.task, id)
  if v then
    local s, nd, st, fl, rest = rec_parse(v)
    local old_s, old_st, old_fl = s, st, fl
    if (stamp == '' or st == '' or stamp_n >= tonumber(st)) and not FINAL[s] then
      if stamp ~= '' then
        st = stamp
      end
      if s ~= new then
        move_status(id, s, new, rec_array(rest))
        changed[#changed + 1] = id .. ':' .. new .. ':' .. nd .. ':' .. s
        into[new] = (into[new] or 0) + 1
        if n <= DETAIL_MAX then
          emit('type', 'task', 'task', id, 'from', s, 'to', new)
        end
        s = new
        -- a final task has no business in the ready queue (rare: only stale entries)
        if FINAL[s] and redis.call('SREM', K.queued, id) == 1 then
          redis.call('LREM', K.ready, 0, id)
          redis.call('HDEL', K.qres, id)
        end
        -- with propagate, work that must run again is queued in the same step, so a replica
        -- that dies right after the apply leaves nothing stranded: a retry (back to G with
        -- every upstream done) at the back, a resource error (A) at the front, as jobmon does
        if propagate and s == 'G' then
          local _, nup = rec_def(rest)
          if tonumber(nd) == tonumber(nup) and try_enqueue(id, false) then
            ready[#ready + 1] = id
          end
        elseif propagate and s == 'A' and try_enqueue(id, true) then
          ready[#ready + 1] = id
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
      credit_children(rest, true, ready, touched)
      propagated = propagated + 1
    end
  end
end
if #changed > 0 then
  local parts = {}
  for st, c in pairs(into) do
    parts[#parts + 1] = st .. '=' .. c
    redis.call('HINCRBY', K.counters, 'to:' .. st, c)
  end
  if n > DETAIL_MAX then
    table.sort(parts)
    emit('type', 'update', 'n', #changed, 'into', table.concat(parts, ','))
  end
end
if propagated > 0 then
  redis.call('HINCRBY', K.counters, 'propagations', propagated)
  emit('type', 'propagate', 'n', propagated, 'ready', #ready)
end

local applied_status = 0
if last then
  if new_limit ~= '' and redis.call('HGET', K.meta, 'limit') ~= new_limit then
    redis.call('HSET', K.meta, 'limit', new_limit)
    emit('type', 'limit', 'limit', new_limit)
    touch()
  end
  for i = 0, n_al - 1 do
    local aid, limit = ARGV[t + 3 + i * 2], ARGV[t + 4 + i * 2]
    local old = redis.call('HGET', K.arrays, aid)
    if old and old ~= limit then
      redis.call('HSET', K.arrays, aid, limit)
      emit('type', 'array_limit', 'array', aid, 'limit', limit)
      touch()
    end
  end
  if run_status ~= '' then
    local cur = redis.call('HGET', K.meta, 'status')
    if cur == run_status then
      applied_status = 1
    elseif RUN_FSM[cur] and RUN_FSM[cur][run_status] then
      redis.call('HSET', K.meta, 'status', run_status)
      emit('type', 'run_status', 'from', cur, 'to', run_status)
      touch()
      applied_status = 1
    end
  end
  if sync_enc ~= '' then
    local cur = redis.call('HGET', K.meta, 'last_sync_us')
    if not cur or tonumber(sync_us) >= tonumber(cur) then
      redis.call('HSET', K.meta, 'last_sync', sync_enc, 'last_sync_us', sync_us)
      touch()
    end
  end
end
local m = redis.call('HMGET', K.meta, 'status', 'limit')
return {finish(), table.concat(changed, ' '), table.concat(ready, ' '), table.concat(touched, ' '),
  {m[1] or '', m[2] or '', applied_status}}
