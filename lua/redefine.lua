-- redefine: set the DAG part of registered tasks' records (number of upstreams, downstream ids)
-- to what their registering replica reads once its DAG is complete. jobmon's resume path
-- (SwarmBuilder.build_from_workflow_id) registers every task before it wires the edges; the
-- replica sends the final values before it first uses them. Absolute values: sent twice, or by
-- several replicas reading the same DAG, the records end the same. Status, done count, starting
-- count, flags and array are kept. A task whose completion was already propagated (flag 'p')
-- keeps its downstream ids (its credits went to that list): it is answered back as refused. A
-- task without a record is skipped. Downstream ids given as the marker "*<m>" were stored in
-- K.kids first (register_kids, mode "redef"): every slice must be there; the slices of an old
-- marker that the new definition no longer uses are deleted.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 n tasks, then per task 3 values:
--       id, number of upstreams, downstream ids (a,b,c)
-- Returns: {version, number of records changed, {id, ...} refused (already propagated)}
-- Errors: STATELOST, INVALID (a malformed id, count or id list, a slice missing), NORUN.
--!include prelude
--!include check
--!include records
local norun = require_run()
if norun then
  return norun
end
local n = tonumber(ARGV[4])
local ids = {}
for i = 0, n - 1 do
  local j = 5 + i * 3
  if not string.match(ARGV[j], '^%d+$') or not string.match(ARGV[j + 1], '^%d+$')
    or chk_children(ARGV[j + 2], 'task ' .. tostring(ARGV[j])) then
    return fail('INVALID', 'malformed definition of task ' .. tostring(ARGV[j]))
  end
  ids[#ids + 1] = ARGV[j]
end
local bad = chk_records(ids)
if bad then
  return bad
end
if n == 0 then
  return {VERSION, 0, {}}
end
local recs = multi_reply('HMGET', K.task, ids)
-- every slice a new marker points at is there (checked before the first write)
for i = 0, n - 1 do
  local v, new_children = recs[i + 1], ARGV[5 + i * 3 + 2]
  if v and string.byte(new_children, 1) == 42 then
    local _, _, _, fl, rest = rec_parse(v)
    local _, _, _, children = rec_def(rest)
    if children ~= new_children and not string.find(fl, 'p', 1, true) then
      bad = chk_slices(ARGV[5 + i * 3], new_children)
      if bad then
        return bad
      end
    end
  end
end
local writes, refused, unused = {}, {}, {}
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
    if children ~= new_children then
      -- slices of the old marker beyond the new one's (all of them for an inline list)
      local old_m = tonumber(string.match(children, '^%*(%d+)$') or '0')
      local new_m = tonumber(string.match(new_children, '^%*(%d+)$') or '0')
      for k = new_m + 1, old_m do
        unused[#unused + 1] = ARGV[j] .. '#' .. k
      end
    end
    if nup ~= new_nup or children ~= new_children then
      writes[#writes + 1] = ARGV[j]
      writes[#writes + 1] = rec_join(s, d, st, fl, arr .. '|' .. new_nup .. '|' .. start .. '|' .. new_children)
    end
  end
end
if #writes > 0 then
  multi('HSET', K.task, writes)
  multi('HDEL', K.kids, unused)
  emit('type', 'redefine', 'n', #writes / 2, 'refused', #refused)
  touch()
end
return {finish(), #writes / 2, refused}
