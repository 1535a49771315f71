-- redefine: set the DAG part of registered tasks' records (number of upstreams, downstream ids)
-- to what their registering replica reads once its DAG is complete. jobmon's resume path
-- (SwarmBuilder.build_from_workflow_id) registers every task before it wires the edges; the
-- replica sends the final values before it first uses them. Absolute values: sent twice, or by
-- several replicas reading the same DAG, the records end the same. Status, done count, starting
-- count, flags and array are kept. A task whose completion was already propagated (flag 'p')
-- keeps its downstream ids (its credits went to that list): it is answered back as refused. A
-- task without a record is skipped.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 n tasks, then per task 3 values:
--       id, number of upstreams, downstream ids (a,b,c)
-- Returns: {version, number of records changed, {id, ...} refused (already propagated)}
-- Errors: STATELOST, INVALID (a malformed id, count or id list), NORUN.
--!include prelude
local norun = require_run()
if norun then
  return norun
end
local n = tonumber(ARGV[4])
local ids = {}
for i = 0, n - 1 do
  local j = 5 + i * 3
  if not string.match(ARGV[j], '^%d+$') or not string.match(ARGV[j + 1], '^%d+$')
    or not string.match(ARGV[j + 2], '^[%d,]*$') then
    return fail('INVALID', 'malformed definition of task ' .. tostring(ARGV[j]))
  end
  ids[#ids + 1] = ARGV[j]
end
if n == 0 then
  return {VERSION, 0, {}}
end
local recs = multi_reply('HMGET', K.task, ids)
local writes, refused = {}, {}
for i = 0, n - 1 do
  local j = 5 + i * 3
  local v = recs[i + 1]
  if v then
    local s, d, st, fl, rest = rec_parse(v)
    local arr, nup, start, children = rec_def(rest)
    local new_nup, new_children = ARGV[j + 1], ARGV[j + 2]
    if string.find(fl, 'p', 1, true) and children ~= new_children then
      refused[#refused + 1] = ARGV[j]
      new_children = children
    end
    if nup ~= new_nup or children ~= new_children then
      writes[#writes + 1] = ARGV[j]
      writes[#writes + 1] = rec_join(s, d, st, fl, arr .. '|' .. new_nup .. '|' .. start .. '|' .. new_children)
    end
  end
end
if #writes > 0 then
  multi('HSET', K.task, writes)
  emit('type', 'redefine', 'n', #writes / 2, 'refused', #refused)
  touch()
end
return {finish(), #writes / 2, refused}
