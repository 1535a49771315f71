-- release_batch: give back a claimed batch that was not queued on the server (the call
-- failed). Refused (nothing written) unless the caller holds the batch under its incarnation
-- and its lease is alive. Tasks still G or A go back to the front of the queue in batch order;
-- the reservation and the claims are released.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 replica id, 5 incarnation, 6 batch id
-- Returns: {version, {id, ...} requeued}
-- Errors: STATELOST, LEASELOST, INVALID (a malformed argument or a corrupt reserved counter).
--         Nothing is written on an error.
--!include prelude
--!include batch
--!include check
local bad = chk_name(ARGV[4], 'replica id') or chk_name(ARGV[5], 'incarnation')
  or chk_name(ARGV[6], 'batch id') or chk_int_hash(K.reserved, 'reserved')
  or chk_int_hash(K.counters, 'counter')
if bad then
  return bad
end
local rid, inc, bid = ARGV[4], ARGV[5], ARGV[6]
local b, err = live_holder_batch(rid, inc, bid)
if err then
  return err
end
local back = close_batch(bid, b)
redis.call('HINCRBY', K.counters, 'releases', 1)
emit('type', 'release', 'batch', bid, 'replica', rid, 'requeued', #back)
touch()
return {finish(), back}
