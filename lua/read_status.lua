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
for i = 1, #ids, 4000 do
  local chunk = {}
  for j = i, math.min(i + 3999, #ids) do
    chunk[#chunk + 1] = ids[j]
  end
  local recs = redis.call('HMGET', K.task, unpack(chunk))
  for j = 1, #chunk do
    out[#out + 1] = chunk[j]
    out[#out + 1] = recs[j] or ''
  end
end
return {VERSION, out}
