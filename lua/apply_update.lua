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
--           "id:done:status ..." credited downstreams, {run status, limit, run status applied 1/0},
--           {id, ...} completions whose fan-out is not fully credited yet: the caller goes on
--           with propagate (progress in K.fanout; reconcile finishes what a dead caller left)}
-- Errors: STATELOST, INVALID.
--!include prelude
--!include check
--!include records
--!include apply
-- validation (check.lua): nothing below may fail after a write
local bad = chk_flag(ARGV[4], 'propagate') or chk_opt_int(ARGV[5], 'sync stamp')
  or chk_int(ARGV[6], 'number of changes') or chk_pairs(7, tonumber(ARGV[6]))
  or chk_apply_tail(7 + 2 * tonumber(ARGV[6])) or chk_int_hash(K.active, 'active')
  or chk_int_hash(K.counters, 'counter')
-- the reply carries the stored limit: one that does not parse is refused, unless this call
-- replaces it
if not bad then
  local t0 = 7 + 2 * tonumber(ARGV[6])
  if not (ARGV[t0] == '1' and ARGV[t0 + 1] ~= '') then
    bad = chk_meta_int('limit')
  end
end
if bad then
  return bad
end
--!phase validate
local propagate = ARGV[4] == '1'
local stamp = ARGV[5]
local n = tonumber(ARGV[6])
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

local function not_final(status)
  return not FINAL[status]
end
local r, invalid = apply_changes(7, n, stamp, propagate, not_final, nil)
if invalid then
  return invalid
end
report_changes(r, n)
--!phase report

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
return changes_reply(r, {m[1] or '', m[2] or '', applied_status})
