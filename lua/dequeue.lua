-- dequeue: take up to n task ids from the head of the ready queue. The caller bounds n
-- (core.py sends large requests as several calls): O(n log N).
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 n
-- Returns: {version, {id, status, done, ...} of the tasks taken, in queue order,
--           length of the queue after}
-- Errors: STATELOST.
--!include prelude
--!include queue
--!include check
--!include records
-- validation (check.lua): nothing below may fail after a write; the records of the taken ids
-- are checked in the loop that reads them, before the first write
local bad = chk_int(ARGV[4], 'dequeue count', 1)
if bad then
  return bad
end
local n = tonumber(ARGV[4])
local ids = redis.call('ZRANGE', K.ready, 0, n - 1)
local out = {}
if #ids > 0 then
  local recs = multi_reply('HMGET', K.task, ids)
  local arrs = {}
  for i, id in ipairs(ids) do
    local v = recs[i]
    local s, nd, arr = 'G', 0, ''
    if v then
      local why, s1, nd1, _, _, at = record_fields(v)
      if why then
        return corrupt(id, v, why)
      end
      s, nd, arr = s1, nd1, string.match(v, '^%d+', at)
    end
    arrs[i] = arr
    out[#out + 1] = id
    out[#out + 1] = s
    out[#out + 1] = tonumber(nd)
  end
  qdrop(ids, arrs)
  multi('HDEL', K.qres, ids)
  if #ids <= DETAIL_MAX then
    emit('type', 'dequeue', 'n', #ids, 'tasks', table.concat(ids, ','))
  else
    emit('type', 'dequeue', 'n', #ids)
  end
  touch()
end
return {finish(), out, redis.call('ZCARD', K.ready)}
