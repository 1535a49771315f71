-- enqueue_fringe: one chunk of the run's initial fringe (jobmon's _set_initial_fringe), once
-- per run. The first chunk takes the meta.fringe_done flag; if another replica took it
-- already, nothing is written. Front chunks queue ADJUSTING_RESOURCES tasks at the front in the
-- given order; back chunks queue REGISTERING tasks whose upstreams are all done at the back.
-- Tasks in another status, claimed or already queued are skipped. A task queued without a
-- resource key gets its last known one (taskres); a given key is remembered there.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 take the flag (1/0), 5 front (1/0),
--       6.. pairs: task id, resource key (or "")
-- Returns: {version, 1 (0 when the flag was taken by someone else), {id, status, done, ...} queued}
-- Errors: STATELOST, NORUN.
--!include prelude
--!include queue
--!include check
--!include records
-- validation (check.lua): nothing below may fail after a write
local bad = chk_flag(ARGV[4], 'take flag') or chk_flag(ARGV[5], 'front') or chk_queue_pairs(6)
if bad then
  return bad
end
local norun = require_run()
if norun then
  return norun
end
if ARGV[4] == '1' then
  if redis.call('HSETNX', K.meta, 'fringe_done', 1) == 0 then
    return {VERSION, 0, {}}
  end
  emit('type', 'fringe')
  touch()
end
local front = ARGV[5] == '1'
-- front chunks: ADJUSTING_RESOURCES tasks; back chunks: REGISTERING tasks with all upstreams done
local function in_fringe(s, nd, rest)
  if front then
    return s == 'A'
  end
  local _, nup = rec_def(rest)
  return s == 'G' and tonumber(nd) == tonumber(nup)
end
local _, accepted = queue_pairs(6, front, in_fringe)
return {finish(), 1, accepted}
