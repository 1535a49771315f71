-- set_fields: set plain fields of the run's meta hash that have no rule of their own
-- (num_previously_complete, events_maxlen, detail_max).
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4.. pairs: field, value
-- Returns: {version}
-- Errors: STATELOST, INVALID (a field that has a rule of its own), NORUN.
--!include prelude
local allowed = {npc = true, events_maxlen = true, detail_max = true}
if redis.call('EXISTS', K.meta) == 0 then
  return fail('NORUN', 'run has no meta key')
end
for i = 4, #ARGV, 2 do
  if not allowed[ARGV[i]] then
    return fail('INVALID', 'field ' .. ARGV[i] .. ' cannot be set directly')
  end
end
for i = 4, #ARGV, 2 do
  if redis.call('HGET', K.meta, ARGV[i]) ~= ARGV[i + 1] then
    redis.call('HSET', K.meta, ARGV[i], ARGV[i + 1])
    touch()
  end
end
return {finish()}
