-- read_status: one page of the tasks in one status, with their records. Read-only: it writes
-- nothing and does not bump the version.
-- A set of at most `count` members is read whole (SMEMBERS: a snapshot of the set) and the
-- answer's cursor is "0". A larger one is read with SSCAN from `cursor` (start with "0"), at
-- most a few times `count` members per call, so a call stays bounded at any set size; the
-- caller repeats with the returned cursor until it is "0". Only members whose record says the
-- status (as read in the same call) are answered, so every answered task was in the status
-- when its page was read. SSCAN may answer a member twice (the caller de-duplicates).
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 status letter, 5 cursor, 6 count (>= 1)
-- Returns: {version, next cursor ("0": done), {id, record, ...}}
-- Errors: STATELOST, INVALID.
--!include prelude
local st, cursor, count = ARGV[4], ARGV[5], tonumber(ARGV[6])
if not VALID[st] then
  return fail('INVALID', 'unknown task status ' .. st)
end
if not count or count < 1 or not string.match(cursor or '', '^%d+$') then
  return fail('INVALID', 'read_status needs a cursor and a count >= 1')
end
local ids, nxt
if cursor == '0' and redis.call('SCARD', SK[st]) <= count then
  ids, nxt = redis.call('SMEMBERS', SK[st]), '0'
else
  local page = redis.call('SSCAN', SK[st], cursor, 'COUNT', count)
  nxt, ids = page[1], page[2]
end
local out = {}
local recs = multi_reply('HMGET', K.task, ids)
for j = 1, #ids do
  if recs[j] and string.sub(recs[j], 1, 1) == st then
    out[#out + 1] = ids[j]
    out[#out + 1] = recs[j]
  end
end
return {VERSION, nxt, out}
