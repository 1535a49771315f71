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
-- validation (check.lua): nothing below may fail after a write
local bad = chk_int(ARGV[4], 'dequeue count', 1) or chk_queue_head(tonumber(ARGV[4]))
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
    local s, nd, rest = 'G', 0, nil
    if recs[i] then
      local s1, nd1, _, _, rest1 = rec_parse(recs[i])
      if s1 then
        s, nd, rest = s1, nd1, rest1
      end
    end
    arrs[i] = rest and rec_array(rest) or ''
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
