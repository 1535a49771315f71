-- ack_batch: apply the server's answer to the queue call of a claimed batch and close it.
-- Refused (nothing written) unless the caller holds the batch under its incarnation and its
-- lease is alive. Only tasks of the batch that are still G or A in Redis take the answer (a
-- sync that already moved a task on is newer than the answer); DONE/ERROR_FATAL stay final;
-- with a stamp, the stale guard of apply_update applies and the task's stamp moves forward.
-- With propagate, new completions are counted once and what became ready is queued.
-- Then the reservation and the claims are released; tasks of the batch still G or A go back to
-- the front of the queue in batch order.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 replica id, 5 incarnation, 6 batch id, 7 propagate (1/0),
--       8 stamp (µs, or ""), 9 n, then n pairs: task id, status
-- Returns: {version, "id:status:done:old ..." changed, "id ..." ready and queued,
--           "id:done:status ..." credited downstreams, {"", "", 0}, {id, ...} requeued}
--          (the shape of apply_update's reply, plus the requeued ids)
-- Errors: STATELOST, INVALID, LEASELOST.
--!include prelude
--!include coord
local rid, inc, bid = ARGV[4], ARGV[5], ARGV[6]
local propagate = ARGV[7] == '1'
local stamp = ARGV[8]
local stamp_n = tonumber(stamp)
local n = tonumber(ARGV[9])
for i = 0, n - 1 do
  local st = ARGV[11 + i * 2]
  if not VALID[st] then
    return fail('INVALID', 'unknown task status ' .. st .. ' for task ' .. ARGV[10 + i * 2])
  end
end
local now = now_ms()
local err = lease_error(rid, inc, now)
if err then
  return err
end
local b
b, err = held_batch(rid, inc, bid)
if err then
  return err
end
local in_batch = {}
for _, id in ipairs(split_ids(b.ids)) do
  in_batch[id] = true
end

local changed, ready, touched = {}, {}, {}
local into = {}
local propagated = 0
for i = 0, n - 1 do
  local id, new = ARGV[10 + i * 2], ARGV[11 + i * 2]
  local v = in_batch[id] and redis.call('HGET', K.task, id)
  if v then
    local s, nd, st, fl, rest = rec_parse(v)
    local old_s, old_st, old_fl = s, st, fl
    if (stamp == '' or st == '' or stamp_n >= tonumber(st)) and (s == 'G' or s == 'A') then
      if stamp ~= '' then
        st = stamp
      end
      if s ~= new then
        move_status(id, s, new, rec_array(rest))
        changed[#changed + 1] = id .. ':' .. new .. ':' .. nd .. ':' .. s
        into[new] = (into[new] or 0) + 1
        if n <= DETAIL_MAX then
          emit('type', 'task', 'task', id, 'from', s, 'to', new)
        end
        s = new
      end
    end
    local credit = propagate and s == 'D' and not string.find(fl, 'p', 1, true)
    if credit then
      fl = fl .. 'p'
    end
    if s ~= old_s or st ~= old_st or fl ~= old_fl then
      redis.call('HSET', K.task, id, rec_join(s, nd, st, fl, rest))
    end
    if credit then
      credit_children(rest, true, ready, touched)
      propagated = propagated + 1
    end
  end
end
if #changed > 0 then
  local parts = {}
  for st, c in pairs(into) do
    parts[#parts + 1] = st .. '=' .. c
    redis.call('HINCRBY', K.counters, 'to:' .. st, c)
  end
  if n > DETAIL_MAX then
    table.sort(parts)
    emit('type', 'update', 'n', #changed, 'into', table.concat(parts, ','))
  end
end
if propagated > 0 then
  redis.call('HINCRBY', K.counters, 'propagations', propagated)
  emit('type', 'propagate', 'n', propagated, 'ready', #ready)
end
local back = close_batch(bid, b)
redis.call('HINCRBY', K.counters, 'acks', 1)
emit('type', 'ack', 'batch', bid, 'replica', rid, 'changed', #changed, 'requeued', #back)
touch()
return {finish(), table.concat(changed, ' '), table.concat(ready, ' '), table.concat(touched, ' '),
  {'', '', 0}, back}
