-- finalize: end the run exactly once. The first call sets meta.finalized and moves the run
-- status to the final status through the run state machine; later calls change nothing.
-- "D" (DONE) is refused unless every task is DONE, nothing is claimed and no fan-out is still
-- being credited (K.fanout: its downstreams' counts are not final yet; reconcile() or the
-- next call for that task finishes it). The first call drops the pending credits of ids that
-- were never registered (K.pcredit: no task can absorb them any more; verify counts what is
-- left and expects none after finalize). With an epoch
-- (ARGV[3]) the write is leader-only: refused unless that epoch currently leads.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch ("" = not fenced), 4 final run status
-- Returns: {version, 1 if this call finalized else 0, finalized status, run status}
-- Errors: STATELOST, NORUN, FENCED, TRANSITION <from> <to>, INVALID (unknown status letter,
--         malformed epoch); nothing is written on an error.
--!include prelude
--!include coord
--!include check
local bad = chk_run_status(ARGV[4], 'the final status')
  or (EPOCH ~= '' and chk_int(EPOCH, 'epoch', 1)) or nil
if bad then
  return bad
end
local final = ARGV[4]
local err = fence_error()
if err then
  return err
end
local m = redis.call('HMGET', K.meta, 'status', 'finalized')
local cur, done = m[1], m[2]
local norun = require_run(cur ~= nil)
if norun then
  return norun
end
if done then
  return {VERSION, 0, done, cur}
end
if cur ~= final and not (RUN_FSM[cur] and RUN_FSM[cur][final]) then
  return fail('TRANSITION', cur .. ' ' .. final .. ' (not allowed by the run state machine)')
end
if final == 'D' then
  local total, ndone = redis.call('HLEN', K.task), redis.call('SCARD', SK.D)
  if total ~= ndone or redis.call('HLEN', K.claims) > 0 then
    return fail('TRANSITION', cur .. ' D (' .. (total - ndone) .. ' tasks are not DONE)')
  end
  local going = redis.call('HLEN', K.fanout)
  if going > 0 then
    return fail('TRANSITION', cur .. ' D (fan-outs still being credited: run reconcile() first; '
      .. going .. ' fields in fanout)')
  end
end
redis.call('HSET', K.meta, 'status', final, 'finalized', final)
local dropped = redis.call('HLEN', K.pcredit)
if dropped > 0 then
  redis.call('UNLINK', K.pcredit)  -- freed in the background: bounded whatever its size
  emit('type', 'credits', 'dropped', dropped)
end
if cur ~= final then
  emit('type', 'run_status', 'from', cur, 'to', final)
end
emit('type', 'finalize', 'status', final)
touch()
return {finish(), 1, final, final}
