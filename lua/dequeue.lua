-- dequeue: take up to n task ids from the head of the ready queue.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 n
-- Returns: {version, {id, status, done, ...} of the tasks taken, in queue order}
-- Errors: STATELOST.
--!include prelude
--!include check
-- validation (check.lua): nothing below may fail after a write
local bad = chk_int(ARGV[4], 'dequeue count', 1) or chk_queue_head(tonumber(ARGV[4]))
if bad then
  return bad
end
local ids = redis.call('LPOP', K.ready, tonumber(ARGV[4]))
local out = {}
if ids then
  for _, id in ipairs(ids) do
    redis.call('SREM', K.queued, id)
    redis.call('HDEL', K.qres, id)
    local v = redis.call('HGET', K.task, id)
    local s, nd = 'G', 0
    if v then
      s, nd = rec_parse(v)
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
return {finish(), out}
