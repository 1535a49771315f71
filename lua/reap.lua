-- reap: remove replicas whose lease expired (Redis time) and take over their claimed batches.
-- The batches keep their reservations and claims (the dead replica may have reached the
-- server) and move to the orphans list, which claim_batch re-drives first. Batches whose
-- holder is not a live member at all are orphaned too. A dead leader's lease is cleared (the
-- epoch stays), so another replica can take over at once.
-- A short mutex (reap_lock, SET NX PX) skips sweeps closer together than lock ms.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 lock ms, 5 force (1: ignore the mutex), 6 lock token
-- Returns: {version, skipped 1/0, {dead replica id, ...}, batches orphaned, tasks orphaned,
--           leader cleared 1/0}
-- Errors: STATELOST, INVALID (a malformed argument; nothing written). Member records that do
--         not parse count as expired (reaped); batch records that do not parse are left alone.
--!include prelude
--!include coord
--!include batch
--!include check
local bad = chk_int(ARGV[4], 'reap lock ms', 1, 3600000) or chk_flag(ARGV[5], 'force')
  or chk_name(ARGV[6], 'lock token')
  or chk_int_hash(K.counters, 'counter')
if bad then
  return bad
end
local lock_ms, force, token = tonumber(ARGV[4]), ARGV[5] == '1', ARGV[6]
local got = redis.call('SET', K.reap_lock, token, 'NX', 'PX', lock_ms)
if not got and not force then
  return {VERSION, 1, {}, 0, 0, 0}
end
if not got then
  redis.call('SET', K.reap_lock, token, 'PX', lock_ms)
end
local now = now_ms()
local members = members_table()
local dead, dead_ids = {}, {}
for id, m in pairs(members) do
  if m.deadline <= now then
    dead[id] = true
    dead_ids[#dead_ids + 1] = id
  end
end
table.sort(dead_ids)
local nb, nt = orphan_batches(dead, members, now)
local cleared = clear_dead_leader(dead)
for _, id in ipairs(dead_ids) do
  redis.call('HDEL', K.replicas, id)
  emit('type', 'reap', 'replica', id)
end
if #dead_ids > 0 then
  redis.call('HINCRBY', K.counters, 'reaps', #dead_ids)
end
if nb > 0 then
  redis.call('HINCRBY', K.counters, 'orphaned', nb)
  emit('type', 'orphan', 'batches', nb, 'tasks', nt)
end
if #dead_ids > 0 or nb > 0 or cleared then
  touch()
end
return {finish(), 0, dead_ids, nb, nt, cleared and 1 or 0}
