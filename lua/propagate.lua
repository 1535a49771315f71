-- propagate: count completions once. Each listed task that is DONE in Redis and not yet
-- propagated credits its downstream counters; tasks that are not DONE are ignored.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 enqueue (1: push what became ready; 0: only report it),
--       5.. task ids
-- A fan-out bigger than the call's edge allowance is credited in slices (progress in
-- K.fanout): such tasks are listed as unfinished; call again with them until none is left.
-- Downstreams without a record get pending credits (K.pcredit), absorbed by registration.
-- Returns: {version, "id ..." ready, "id:done:status ..." credited downstreams,
--           {id, ...} unfinished fan-outs}
-- Errors: STATELOST.
--!include prelude
--!include check
--!include records
--!include apply
-- validation (check.lua): nothing below may fail after a write
local bad = chk_flag(ARGV[4], 'enqueue') or chk_id_list(5) or chk_int_hash(K.active, 'active')
  or chk_int_hash(K.counters, 'counter')
if bad then
  return bad
end
local ids = {}
for i = 5, #ARGV do
  ids[#ids + 1] = ARGV[i]
end
local r, invalid = propagate_ids(ids, ARGV[4] == '1')
if invalid then
  return invalid
end
report_changes(r, #ids)
return {finish(), table.concat(r.ready, ' '), table.concat(r.touched, ' '), r.unfinished}
