-- join: register a replica with a lease that ends ttl ms from now (Redis time). An expired
-- member with the same id is reaped first (its batches are orphaned, its leadership cleared).
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 replica id, 5 incarnation, 6 ttl ms
-- Returns: {version, lease deadline ms}
-- Errors: STATELOST, NORUN, SWARM (the id is alive under another incarnation), INVALID (a
--         malformed argument). Nothing is written on an error. A stored member record that
--         does not parse counts as an expired member.
--!include prelude
--!include coord
--!include batch
--!include check
local bad = chk_name(ARGV[4], 'replica id') or chk_name(ARGV[5], 'incarnation')
  or chk_ttl(ARGV[6], 'lease ttl ms')
  or chk_int_hash(K.counters, 'counter')
if bad then
  return bad
end
local rid, inc, ttl = ARGV[4], ARGV[5], tonumber(ARGV[6])
local norun = require_run()
if norun then
  return norun
end
local now = now_ms()
local old = redis.call('HGET', K.replicas, rid)
if old then
  local oinc, odeadline = replica_parse(old)
  if oinc ~= inc and odeadline and tonumber(odeadline) > now then
    return fail('SWARM', 'replica id ' .. rid .. ' is in use by a live member')
  end
  if oinc ~= inc then
    local dead = {[rid] = true}
    local nb, nt = orphan_batches(dead, members_table(), now)
    clear_dead_leader(dead)
    emit('type', 'reap', 'replica', rid, 'batches', nb, 'tasks', nt)
    redis.call('HINCRBY', K.counters, 'reaps', 1)
  end
end
local deadline = now + ttl
redis.call('HSET', K.replicas, rid, inc .. '|' .. deadline .. '|' .. now)
redis.call('HINCRBY', K.counters, 'joins', 1)
emit('type', 'join', 'replica', rid, 'incarnation', inc, 'ttl_ms', ttl)
touch()
return {finish(), deadline}
