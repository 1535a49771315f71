-- cache_resources: store an encoded TaskResources under its key unless one is there already
-- (the first writer wins) and answer the stored value.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 resource key, 5 encoded value
-- Returns: {version, won (1/0), stored value}
-- Errors: STATELOST, INVALID (an empty or oversized key, an empty value; nothing written).
--!include prelude
if type(ARGV[4]) ~= 'string' or ARGV[4] == '' or #ARGV[4] > 1024 then
  return fail('INVALID', 'resource key must be 1..1024 bytes')
end
if type(ARGV[5]) ~= 'string' or ARGV[5] == '' then
  return fail('INVALID', 'encoded resources must not be empty')
end
local won = redis.call('HSETNX', K.resources, ARGV[4], ARGV[5])
if won == 1 then
  touch()
end
return {finish(), won, redis.call('HGET', K.resources, ARGV[4])}
