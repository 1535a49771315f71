-- enqueue: put tasks in the ready queue at most once. Tasks that are unknown, DONE/ERROR_FATAL,
-- already queued or claimed are skipped (an already queued task takes the given resource key).
-- At the front, several tasks keep their given order.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 front (1/0), 5.. pairs: task id, resource key (or "")
-- Returns: {version, {id, status, done, ...} of the tasks queued}
-- Errors: STATELOST.
--!include prelude
local front = ARGV[4] == '1'
local accepted = {}
local order = {}
for i = 5, #ARGV, 2 do
  local id, rk = ARGV[i], ARGV[i + 1]
  local v = redis.call('HGET', K.task, id)
  if v then
    local s, nd = rec_parse(v)
    if not FINAL[s] and redis.call('HEXISTS', K.claims, id) == 0 then
      if redis.call('SADD', K.queued, id) == 1 then
        order[#order + 1] = id
        accepted[#accepted + 1] = id
        accepted[#accepted + 1] = s
        accepted[#accepted + 1] = tonumber(nd)
        if rk == '' then
          rk = redis.call('HGET', K.taskres, id)
        else
          redis.call('HSET', K.taskres, id, rk)
        end
        if rk then
          redis.call('HSET', K.qres, id, rk)
        end
      elseif rk ~= '' and redis.call('HGET', K.qres, id) ~= rk then
        -- already queued (e.g. by apply_update): keep the resources the caller just settled
        redis.call('HSET', K.taskres, id, rk)
        redis.call('HSET', K.qres, id, rk)
        touch()
      end
    end
  end
end
if #order > 0 then
  if front then
    for i = #order, 1, -1 do
      redis.call('LPUSH', K.ready, order[i])
    end
  else
    for i = 1, #order do
      redis.call('RPUSH', K.ready, order[i])
    end
  end
  if #order <= DETAIL_MAX then
    emit('type', 'enqueue', 'tasks', table.concat(order, ','), 'front', ARGV[4])
  else
    emit('type', 'enqueue', 'n', #order, 'front', ARGV[4])
  end
  touch()
end
return {finish(), accepted}
