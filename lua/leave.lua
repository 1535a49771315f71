-- leave: a replica's clean shutdown. With a live lease its claimed batches go back to the
-- front of the queue in claim order (they are assumed NOT sent to the server: ack or release
-- what was sent first); with an expired lease they are orphaned as reap would do. Either way
-- the member is removed and its leadership resigned. A member that is already gone (reaped,
-- or re-joined under another incarnation) changes nothing.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 replica id, 5 incarnation
-- Returns: {version, batches released, tasks requeued, batches orphaned}
-- Errors: STATELOST, INVALID (a malformed argument; nothing written). A member record that
--         does not parse counts as expired; a batch record that does not parse is left alone.
--!include prelude
--!include coord
--!include batch
--!include check
local bad = chk_name(ARGV[4], 'replica id') or chk_name(ARGV[5], 'incarnation')
  or chk_int_hash(K.reserved, 'reserved') or chk_int_hash(K.counters, 'counter')
if bad then
  return bad
end
local rid, inc = ARGV[4], ARGV[5]
local now = now_ms()
local v = redis.call('HGET', K.replicas, rid)
if not v then
  return {VERSION, 0, 0, 0}
end
local rinc, deadline = replica_parse(v)
if rinc ~= inc then
  return {VERSION, 0, 0, 0}
end
local released, requeued, orphaned = 0, 0, 0
if tonumber(deadline) > now then
  local all = redis.call('HGETALL', K.batches)
  local mine = {}
  for i = 1, #all, 2 do
    local b = batch_parse(all[i + 1])
    if b.holder == rid and b.inc == inc then
      mine[#mine + 1] = {all[i], b}
    end
  end
  -- newest first, so that the oldest batch ends up at the very front
  table.sort(mine, function(x, y) return bid_less(y[1], x[1]) end)
  for _, e in ipairs(mine) do
    requeued = requeued + #close_batch(e[1], e[2])
    released = released + 1
  end
  if released > 0 then
    redis.call('HINCRBY', K.counters, 'releases', released)
  end
else
  orphaned = orphan_batches({[rid] = true}, members_table(), now)
end
local l = redis.call('HMGET', K.leader, 'id', 'incarnation')
if l[1] == rid and l[2] == inc then
  redis.call('HSET', K.leader, 'id', '', 'incarnation', '', 'deadline_ms', 0)
  emit('type', 'leader_resign', 'replica', rid)
end
redis.call('HDEL', K.replicas, rid)
emit('type', 'leave', 'replica', rid, 'released', released, 'requeued', requeued, 'orphaned', orphaned)
touch()
return {finish(), released, requeued, orphaned}
