-- propagate: count completions once. Each listed task that is DONE in Redis and not yet
-- propagated credits its downstream counters; tasks that are not DONE are ignored.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 enqueue (1: push what became ready; 0: only report it),
--       5.. task ids
-- Returns: {version, "id ..." ready, "id:done:status ..." credited downstreams}
-- Errors: STATELOST.
--!include prelude
local enqueue = ARGV[4] == '1'
local ready, touched = {}, {}
local propagated = 0
for i = 5, #ARGV do
  local id = ARGV[i]
  local v = redis.call('HGET', K.task, id)
  if v then
    local s, nd, st, fl, rest = rec_parse(v)
    if s == 'D' and not string.find(fl, 'p', 1, true) then
      propagate_one(id, s, nd, st, fl, rest, enqueue, ready, touched)
      propagated = propagated + 1
    end
  end
end
if propagated > 0 then
  redis.call('HINCRBY', K.counters, 'propagations', propagated)
  emit('type', 'propagate', 'n', propagated, 'ready', #ready)
  touch()
end
return {finish(), table.concat(ready, ' '), table.concat(touched, ' ')}
