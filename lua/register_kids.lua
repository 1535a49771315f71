-- register_kids: store slices of the downstream ids of tasks whose list is too long for their
-- record (more than KIDS_SLICE ids): K.kids field <id>#<k> -> ids joined by ",". The client sends
-- every slice (one or more calls) before the record that points at them with the marker "*<m>"
-- (register or redefine check that all m slices are there). Absolute values: a slice sent twice,
-- or by several replicas reading the same DAG, ends the same. Mode "new" (registration) writes
-- only slices of tasks without a record: a registered task keeps its definition (first writer
-- wins, as register). Mode "redef" (redefine) writes only slices of registered tasks whose
-- completion was not propagated and has no fan-out in progress (their credits read the slices).
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 mode ("new" or "redef"), 5 n, then per slice 3 values:
--       task id, slice number k (1..KIDS_SLICES_MAX), ids (1..KIDS_SLICE integers joined by ",")
-- Returns: {version, number of slices written, {id, ...} tasks whose slices were kept}
-- Errors: STATELOST, INVALID (a malformed value or a stored record that does not parse), NORUN.
--!include prelude
--!include check
--!include records
-- 1..KIDS_SLICE integer ids joined by ",".
local function slice_ok(list)
  local count = 0
  for part in string.gmatch(list .. ',', '([^,]*),') do
    count = count + 1
    if count > KIDS_SLICE or #part > 20 or not string.match(part, '^%-?%d+$') then
      return false
    end
  end
  return count >= 1
end

local mode = ARGV[4]
if mode ~= 'new' and mode ~= 'redef' then
  return fail('INVALID', 'register_kids mode must be new or redef, got ' .. tostring(mode))
end
local bad = chk_int(ARGV[5], 'number of slices', 0, 100000)
if bad then
  return bad
end
local n = tonumber(ARGV[5])
if 5 + n * 3 ~= #ARGV then
  return fail('INVALID', 'register_kids: ' .. n .. ' slices announced, ' .. ((#ARGV - 5) / 3) .. ' sent')
end
local ids = {}
for i = 0, n - 1 do
  local j = 6 + i * 3
  local id, list = ARGV[j], ARGV[j + 2]
  bad = chk_id(id, 'task id') or chk_int(ARGV[j + 1], 'slice number of task ' .. tostring(id), 1, KIDS_SLICES_MAX)
  if bad then
    return bad
  end
  if not slice_ok(list) then
    return fail('INVALID', 'slice ' .. ARGV[j + 1] .. ' of task ' .. id .. ' must be 1..' .. KIDS_SLICE
      .. ' integer ids joined by ","')
  end
  ids[#ids + 1] = id
end
bad = chk_records(ids) or require_run()
if bad then
  return bad
end
local recs = multi_reply('HMGET', K.task, ids)
local progress = multi_reply('HMGET', K.fanout, ids)
local fields, kept, seen_kept = {}, {}, {}
for i = 0, n - 1 do
  local j = 6 + i * 3
  local rec = recs[i + 1]
  local ok
  if mode == 'new' then
    ok = not rec
  else
    local _, _, _, _, fl = record_fields(rec or '')
    ok = rec and not string.find(fl or 'p', 'p', 1, true) and not progress[i + 1]
  end
  if ok then
    fields[#fields + 1] = ARGV[j] .. '#' .. ARGV[j + 1]
    fields[#fields + 1] = ARGV[j + 2]
  elseif not seen_kept[ARGV[j]] then
    seen_kept[ARGV[j]] = true
    kept[#kept + 1] = ARGV[j]
  end
end
if #fields > 0 then
  local old = {}
  for k = 1, #fields, 2 do
    old[#old + 1] = fields[k]
  end
  old = multi_reply('HMGET', K.kids, old)
  local changed = {}
  for k = 1, #fields, 2 do
    if old[(k + 1) / 2] ~= fields[k + 1] then
      changed[#changed + 1] = fields[k]
      changed[#changed + 1] = fields[k + 1]
    end
  end
  if #changed > 0 then
    multi('HSET', K.kids, changed)
    touch()
  end
end
return {finish(), #fields / 2, kept}
