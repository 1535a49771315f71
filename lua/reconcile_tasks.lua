-- reconcile_tasks: heal one chunk of tasks (idempotent). DONE tasks whose completion was not
-- counted are propagated, a big fan-out one slice per call (what becomes ready is queued); REGISTERING tasks whose upstreams are
-- all done and that are neither queued nor claimed go to the back of the queue;
-- ADJUSTING_RESOURCES tasks neither queued nor claimed go to the front (in the given order).
-- Queued tasks get their last known resource key (taskres).
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4.. task ids
-- Returns: {version, {id, ...} propagated, {id, ...} queued at the back, {id, ...} queued at
--           the front, "id ..." made ready (and queued) by the propagation,
--           "id:done:status ..." credited downstreams, {id, ...} DONE tasks whose fan-out is
--           not fully credited yet (go on with propagate)}
-- Errors: STATELOST.
--!include prelude
--!include check
--!include records
--!include apply
-- validation (check.lua): nothing below may fail after a write
local bad = chk_id_list(4) or chk_int_hash(K.active, 'active')
  or chk_int_hash(K.counters, 'counter')
if bad then
  return bad
end
local ids = {}
for i = 4, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
local R, r = recs_new(), new_result()
recs_load(R, ids)
local done = {}
for _, id in ipairs(ids) do
  if R.map[id] and R.map[id][T_S] == 'D' then
    done[#done + 1] = id
  end
end
plan_completions(R, done)
if R.err then
  return R.err
end
local kind = {}  -- id -> 'back' | 'front' for the tasks this sweep queues itself
local propagated, fronts = {}, {}
for _, id in ipairs(ids) do
  local t = R.map[id]
  if t then
    if count_completion(R, id, r) then
      propagated[#propagated + 1] = id
    elseif t[T_S] == 'G' then
      if t_done(t) == t_nup(t) then
        kind[id] = 'back'
        add_cand(r, id, false)
      end
    elseif t[T_S] == 'A' then
      kind[id] = 'front'
      fronts[#fronts + 1] = id
    end
  end
end
-- queue_many pushes front candidates one after the other: reversed, they keep the given order
for i = #fronts, 1, -1 do
  add_cand(r, fronts[i], true)
end
finish_queue(R, r, true)
recs_flush(R)
local back, front, ready = {}, {}, {}
for _, id in ipairs(r.ready) do
  if kind[id] == 'back' then
    back[#back + 1] = id
  elseif kind[id] == 'front' then
    table.insert(front, 1, id)
  else
    ready[#ready + 1] = id
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
return {finish(), propagated, back, front, table.concat(ready, ' '), table.concat(r.touched, ' '),
  r.unfinished}
