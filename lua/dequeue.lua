-- dequeue: take up to n task ids from the head of the ready queue. The caller bounds n
-- (core.py sends large requests as several calls): O(n log N).
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 n
-- Returns: {version, "id|status|done id|status|done ..." of the tasks taken, in queue order,
--           length of the queue after}
-- Errors: STATELOST.
--!include prelude
--!include queue
--!include check
--!include records
-- validation (check.lua): nothing below may fail after a write; the fields read from the records
-- of the taken ids (record_head) are checked in the loop that reads them, before the first write
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
    -- a member that is not an id (written by hand) would break the reply after the writes
    if chk_id(id, 'ready queue member') then
      return fail('INVALID', 'ready queue member ' .. string.sub(id, 1, 100)
        .. ' is not a task id; nothing was written (see swarm-redis verify)')
    end
    local v = recs[i]
    local s, nd, arr = 'G', '0', ''
    if v then
      local why
      why, s, nd, arr = record_head(v)
      if why then
        return corrupt(id, v, why)
      end
    end
    -- one string per task and one reply string: the reply (and its cached copy) stays small
    out[i] = id .. '|' .. s .. '|' .. nd
    arrs[i] = arr
  end
  qtake_head(ids, arrs)
  multi('HDEL', K.qres, ids)
  if #ids <= DETAIL_MAX then
    emit('type', 'dequeue', 'n', #ids, 'tasks', table.concat(ids, ','))
  else
    emit('type', 'dequeue', 'n', #ids)
  end
  touch()
end
return {finish(), table.concat(out, ' '), redis.call('ZCARD', K.ready)}
