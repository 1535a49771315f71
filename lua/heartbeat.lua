-- heartbeat: extend a live replica's lease to ttl ms from now (Redis time).
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 replica id, 5 incarnation, 6 ttl ms
-- Returns: {version, lease deadline ms}
-- Errors: STATELOST, LEASELOST (lease expired, reaped, or re-joined under another incarnation;
--         nothing is written),
--         INVALID (a malformed argument; nothing is written).
--!include prelude
--!include coord
--!include check
local bad = chk_name(ARGV[4], 'replica id') or chk_name(ARGV[5], 'incarnation')
  or chk_ttl(ARGV[6], 'lease ttl ms')
if bad then
  return bad
end
local rid, inc, ttl = ARGV[4], ARGV[5], tonumber(ARGV[6])
local now = now_ms()
local err = lease_error(rid, inc, now)
if err then
  return err
end
local _, _, joined = replica_parse(redis.call('HGET', K.replicas, rid))
local deadline = now + ttl
redis.call('HSET', K.replicas, rid, inc .. '|' .. deadline .. '|' .. joined)
-- no version bump: a lease extension is not run state (losing one only shortens the lease)
return {finish(), deadline}
