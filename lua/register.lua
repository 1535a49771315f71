-- register: add tasks and arrays, idempotently. A task that exists keeps its record (the first
-- registration wins: a replica with an older snapshot cannot regress it); an array's limit is
-- overwritten (limits are absolute values from the server, as in jobmon's add_array).
-- Registration stores each task's current done count as its starting count and propagates
-- nothing, but a new task absorbs the pending credits (K.pcredit) of completions propagated
-- before it had a record: its done count is start + those credits, as if it had been there.
-- A REGISTERING task that this makes ready is queued at the back when one of the credits came
-- from a propagation that queues, or the initial fringe was already queued (nothing strands).
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 n tasks, then per task 7 values:
--       id, status, array id, number of upstreams, upstreams done, downstream ids (a,b,c),
--       resource key (or "");
--       then n arrays, then per array 2 values: array id, limit
-- Returns: {version, {id, status, done, ...} for tasks that already existed,
--           {id, ...} queued because absorbed credits made them ready}
-- Errors: STATELOST, INVALID (unknown status), NORUN.
--!include prelude
--!include queue
--!include check
--!include records
-- validation (check.lua): nothing below may fail after a write
local bad = chk_register(4) or chk_int_hash(K.active, 'active')
if bad then
  return bad
end
local norun = require_run()
if norun then
  return norun
end
local n = tonumber(ARGV[4])
local base = 5
for i = 0, n - 1 do
  local st = ARGV[base + i * 7 + 1]
  if not VALID[st] then
    return fail('INVALID', 'unknown task status ' .. st .. ' for task ' .. ARGV[base + i * 7])
  end
end
local existing = {}
local added = 0
local per_status = {}
local all_ids = {}
for i = 0, n - 1 do
  all_ids[#all_ids + 1] = ARGV[base + i * 7]
end
local pend = multi_reply('HMGET', K.pcredit, all_ids)
local absorbed, cands = {}, {}
local fringe_done = nil
for i = 0, n - 1 do
  local j = base + i * 7
  local id, st, arr, nup, nd, children, rk = ARGV[j], ARGV[j + 1], ARGV[j + 2], ARGV[j + 3], ARGV[j + 4], ARGV[j + 5], ARGV[j + 6]
  local v = redis.call('HGET', K.task, id)
  local start = nd
  if not v and pend[i + 1] then
    local k, q = string.match(pend[i + 1], '^(%d+)(q?)$')
    if k then
      nd = tostring(tonumber(nd) + tonumber(k))
      if st == 'G' and tonumber(nd) == tonumber(nup) then
        if fringe_done == nil then
          fringe_done = redis.call('HEXISTS', K.meta, 'fringe_done') == 1
        end
        if q == 'q' or fringe_done then
          cands[#cands + 1] = {id, false, false}
        end
      end
    end
    absorbed[#absorbed + 1] = id
    pend[i + 1] = false
  end
  if v then
    local s, d = rec_parse(v)
    existing[#existing + 1] = id
    existing[#existing + 1] = s
    existing[#existing + 1] = tonumber(d)
  else
    redis.call('HSET', K.task, id, rec_join(st, nd, '', '', arr .. '|' .. nup .. '|' .. start .. '|' .. children))
    redis.call('SADD', SK[st], id)
    if rk ~= '' then
      redis.call('HSET', K.taskres, id, rk)
    end
    if ACTIVE[st] then
      redis.call('HINCRBY', K.active, arr, 1)
    end
    per_status[st] = (per_status[st] or 0) + 1
    added = added + 1
  end
end
local j = base + n * 7
local na = tonumber(ARGV[j])
for i = 0, na - 1 do
  local aid, limit = ARGV[j + 1 + i * 2], ARGV[j + 2 + i * 2]
  if redis.call('HGET', K.arrays, aid) ~= limit then
    redis.call('HSET', K.arrays, aid, limit)
    emit('type', 'array_limit', 'array', aid, 'limit', limit)
    touch()
  end
end
multi('HDEL', K.pcredit, absorbed)
local queued = queue_many(cands)
if #absorbed > 0 then
  emit('type', 'credits', 'absorbed', #absorbed, 'queued', #queued)
  touch()
end
if added > 0 then
  local parts = {}
  for st, c in pairs(per_status) do
    parts[#parts + 1] = st .. '=' .. c
  end
  table.sort(parts)
  emit('type', 'register', 'n', added, 'statuses', table.concat(parts, ','))
  touch()
end
return {finish(), existing, queued}
