-- set_run_status: compare-and-set of the run status on the run state machine (RUN_FSM, from
-- constants.run_transition_allowed). A repeat of the current status is a no-op. With an
-- epoch (ARGV[3]) the write is leader-only: refused unless that epoch currently leads.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch ("" = not fenced), 4 new status, 5 expected current status
--       ("" = any)
-- Returns: {version, status now}
-- Errors: STATELOST, NORUN, FENCED, TRANSITION <from> <to>, INVALID (unknown status letter,
--         malformed epoch); nothing is written on an error.
--!include prelude
--!include coord
--!include check
local bad = chk_run_status(ARGV[4], 'the new status')
  or (ARGV[5] ~= '' and chk_run_status(ARGV[5], 'the expected status')) or nil
  or (EPOCH ~= '' and chk_int(EPOCH, 'epoch', 1)) or nil
if bad then
  return bad
end
local new, expected = ARGV[4], ARGV[5]
local err = fence_error()
if err then
  return err
end
local cur = redis.call('HGET', K.meta, 'status')
local norun = require_run(cur ~= nil)
if norun then
  return norun
end
if expected ~= '' and cur ~= expected then
  return fail('TRANSITION', cur .. ' ' .. new .. ' (expected ' .. expected .. ', found ' .. cur .. ')')
end
if cur == new then
  return {VERSION, cur}
end
if not (RUN_FSM[cur] and RUN_FSM[cur][new]) then
  return fail('TRANSITION', cur .. ' ' .. new .. ' (not allowed by the run state machine)')
end
redis.call('HSET', K.meta, 'status', new)
emit('type', 'run_status', 'from', cur, 'to', new)
touch()
return {finish(), new}
