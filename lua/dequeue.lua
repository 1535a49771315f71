-- dequeue: take up to n task ids from the head of the ready queue.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 n
-- Returns: {version, {id, status, done, ...} of the tasks taken, in queue order,
--           length of the queue after}
-- Errors: STATELOST.
--!include prelude
local ids = redis.call('LPOP', K.ready, tonumber(ARGV[4]))
local out = {}
if ids then
  multi('SREM', K.queued, ids)
  multi('HDEL', K.qres, ids)
  local recs = multi_reply('HMGET', K.task, ids)
  for i, id in ipairs(ids) do
    local s, nd = 'G', 0
    if recs[i] then
      s, nd = rec_parse(recs[i])
    end
    out[#out + 1] = id
    out[#out + 1] = s
    out[#out + 1] = tonumber(nd)
  end
  if #ids <= DETAIL_MAX then
    emit('type', 'dequeue', 'n', #ids, 'tasks', table.concat(ids, ','))
  else
    emit('type', 'dequeue', 'n', #ids)
  end
  touch()
end
return {finish(), out, redis.call('LLEN', K.ready)}
