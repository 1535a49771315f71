-- set_fields: set plain fields of the run's meta hash that have no rule of their own
-- (num_previously_complete, events_maxlen, detail_max).
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4.. pairs: field, value
-- Returns: {version}
-- Errors: STATELOST, INVALID (a field that has a rule of its own, or a value out of its range:
--         npc 0..2^53-1, events_maxlen 0..10^7, detail_max 0..10^5), NORUN. Nothing is
--         written on an error.
--!include prelude
--!include check
local allowed = {npc = 9007199254740991, events_maxlen = 10000000, detail_max = 100000}
local norun = require_run()
if norun then
  return norun
end
if #ARGV % 2 ~= 1 then
  return fail('INVALID', 'set_fields needs field, value pairs')
end
for i = 4, #ARGV, 2 do
  if not allowed[ARGV[i]] then
    return fail('INVALID', 'field ' .. ARGV[i] .. ' cannot be set directly')
  end
  local bad = chk_int(ARGV[i + 1], ARGV[i], 0, allowed[ARGV[i]])
  if bad then
    return bad
  end
end
for i = 4, #ARGV, 2 do
  if redis.call('HGET', K.meta, ARGV[i]) ~= ARGV[i + 1] then
    redis.call('HSET', K.meta, ARGV[i], ARGV[i + 1])
    touch()
  end
end
return {finish()}
