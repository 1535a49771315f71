-- enqueue: put tasks in the ready queue at most once. Tasks that are unknown, DONE/ERROR_FATAL,
-- already queued or claimed are skipped (an already queued task takes the given resource key).
-- At the front, several tasks keep their given order.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 front (1/0), 5.. pairs: task id, resource key (or "")
-- Returns: {version, {id, status, done, ...} of the tasks queued}
-- Errors: STATELOST.
--!include prelude
--!include queue
--!include check
--!include records
-- validation (check.lua): nothing below may fail after a write
local bad = chk_flag(ARGV[4], 'front') or chk_queue_pairs(5)
if bad then
  return bad
end
local function not_final(status)
  return not FINAL[status]
end
local _, accepted = queue_pairs(5, ARGV[4] == '1', not_final)
return {finish(), accepted}
