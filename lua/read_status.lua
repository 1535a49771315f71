-- read_status: a consistent snapshot of the tasks in one status, with their records.
-- Read-only: it writes nothing and does not bump the version.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 status letter
-- Returns: {version, {id, record, ...}}
-- Errors: STATELOST, INVALID.
--!include prelude
local st = ARGV[4]
if not VALID[st] then
  return fail('INVALID', 'unknown task status ' .. st)
end
local out = {}
local ids = redis.call('SMEMBERS', SK[st])
local recs = multi_reply('HMGET', K.task, ids)
for j = 1, #ids do
  out[#out + 1] = ids[j]
  out[#out + 1] = recs[j] or ''
end
return {VERSION, out}
