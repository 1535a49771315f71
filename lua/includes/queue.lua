-- queue.lua: put tasks in the ready queue at most once (include after prelude). Shared by
-- enqueue and enqueue_fringe.

-- Queue the (task id, resource key) pairs of ARGV from index `first` on, in their order (at the
-- front they keep it too). `wanted(status, done, rest)` says whether a task may be queued;
-- unknown, claimed and already queued tasks are skipped, but an already queued task takes a
-- given resource key. A task queued without a key gets its last known one (taskres); a given
-- key is remembered there. Returns the queued ids and {id, status, done, ...} of them.
local function queue_pairs(first, front, wanted)
  local order, accepted = {}, {}
  for i = first, #ARGV, 2 do
    local id, rk = ARGV[i], ARGV[i + 1]
    local v = redis.call('HGET', K.task, id)
    if v then
      local s, nd, _, _, rest = rec_parse(v)
      if wanted(s, nd, rest) and redis.call('HEXISTS', K.claims, id) == 0 then
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
  if front then
    for i = #order, 1, -1 do
      redis.call('LPUSH', K.ready, order[i])
    end
  else
    for i = 1, #order do
      redis.call('RPUSH', K.ready, order[i])
    end
  end
  if #order > 0 then
    if #order <= DETAIL_MAX then
      emit('type', 'enqueue', 'tasks', table.concat(order, ','), 'front', front and '1' or '0')
    else
      emit('type', 'enqueue', 'n', #order, 'front', front and '1' or '0')
    end
    touch()
  end
  return order, accepted
end
