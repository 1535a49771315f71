-- reconcile_tasks: heal one chunk of tasks (idempotent). DONE tasks whose completion was not
-- counted are propagated (what becomes ready is queued); REGISTERING tasks whose upstreams are
-- all done and that are neither queued nor claimed go to the back of the queue;
-- ADJUSTING_RESOURCES tasks neither queued nor claimed go to the front (in the given order).
-- Queued tasks get their last known resource key (taskres).
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4.. task ids
-- Returns: {version, {id, ...} propagated, {id, ...} queued at the back, {id, ...} queued at
--           the front, "id ..." made ready (and queued) by the propagation,
--           "id:done:status ..." credited downstreams}
-- Errors: STATELOST.
--!include prelude
local propagated, back, front, ready, touched = {}, {}, {}, {}, {}
for i = 4, #ARGV do
  local id = ARGV[i]
  local v = redis.call('HGET', K.task, id)
  if v then
    local s, nd, st, fl, rest = rec_parse(v)
    if s == 'D' and not string.find(fl, 'p', 1, true) then
      propagate_one(id, s, nd, st, fl, rest, true, ready, touched)
      propagated[#propagated + 1] = id
    elseif s == 'G' then
      local _, nup = rec_def(rest)
      if tonumber(nd) == tonumber(nup) and try_enqueue(id, false) then
        back[#back + 1] = id
      end
    elseif s == 'A' and redis.call('HEXISTS', K.claims, id) == 0
        and redis.call('SISMEMBER', K.queued, id) == 0 then
      front[#front + 1] = id
    end
  end
end
for i = #front, 1, -1 do
  redis.call('SADD', K.queued, front[i])
  redis.call('LPUSH', K.ready, front[i])
  local rk = redis.call('HGET', K.taskres, front[i])
  if rk then
    redis.call('HSET', K.qres, front[i], rk)
  end
end
if #propagated > 0 then
  redis.call('HINCRBY', K.counters, 'propagations', #propagated)
end
local fixed = #propagated + #back + #front
if fixed > 0 then
  redis.call('HINCRBY', K.counters, 'reconciled', fixed)
  emit('type', 'reconcile', 'propagated', #propagated, 'enqueued', #back, 'front', #front)
  touch()
end
return {finish(), propagated, back, front, table.concat(ready, ' '), table.concat(touched, ' ')}
