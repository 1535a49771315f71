-- reconcile_credits: heal the done counts (and pending credits) of one chunk of tasks from
-- their upstreams, atomically (idempotent). A task's done count is its starting count plus one
-- per occurrence in the downstream list of each upstream whose completion was propagated
-- (flag "p"). The caller names the upstreams it found (a scan of the records, which may be
-- stale): when they are at least the task's number of upstreams the list is complete and the
-- count is set to what they say, else it is only raised (an upstream registered since the scan
-- could only add credits). A task with an upstream whose fan-out is in progress (K.fanout) is
-- skipped: finish the fan-out first. A task without a record gets its pending credit
-- (K.pcredit) raised to what its propagated upstreams say. A leftover pending credit of a task
-- that has a record is dropped (the record counts). A REGISTERING task whose count now equals
-- its number of upstreams, neither queued nor claimed, is queued at the back.
-- An upstream whose downstream ids live in K.kids (record marker "*<m>") is named once per
-- slice that holds the task, as "<upstream id>#<slice>": its occurrences are counted there.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 n, then n groups: task id, k, then k upstream ids (or
--       "<upstream id>#<slice>")
-- Returns: {version, {id, old done, new done, ...} fixed counts, {id, ...} skipped (fan-out in
--           progress), {id, ...} queued, {id, old, new, ...} pending credits fixed}
-- Errors: STATELOST, INVALID (malformed groups).
--!include prelude
--!include queue
local n = tonumber(ARGV[4])
if not n then
  return fail('INVALID', 'group count ' .. tostring(ARGV[4]))
end
local groups, i = {}, 5
for _ = 1, n do
  local id, k = ARGV[i], tonumber(ARGV[i + 1])
  if not id or not k or i + 1 + k > #ARGV then
    return fail('INVALID', 'malformed group at ARGV ' .. i)
  end
  local ups = {}
  for j = 1, k do
    ups[j] = ARGV[i + 1 + j]
  end
  groups[#groups + 1] = {id = id, ups = ups}
  i = i + 2 + k
end

-- Occurrences of `id` as a whole entry of the comma-separated list starting at `from` in `src`.
local function occurrences(src, from, id)
  local count, pos, len = 0, from, #id
  while true do
    local a, b = string.find(src, id, pos, true)
    if not a then
      return count
    end
    local before = a == from or string.sub(src, a - 1, a - 1) == ','
    local after = b == #src or string.sub(src, b + 1, b + 1) == ','
    if before and after then
      count = count + 1
    end
    pos = b + 1
    if len == 0 then
      return count
    end
  end
end

local fixed, skipped, pfixed, cands = {}, {}, {}, {}
for _, g in ipairs(groups) do
  local raw = redis.call('HGET', K.task, g.id)
  local skip, got, distinct, tokens = false, 0, {}, {}
  if #g.ups > 0 then
    local upids, slices = {}, {}
    for j, token in ipairs(g.ups) do
      local up, k = string.match(token, '^(.-)#(%d+)$')
      upids[j], slices[j] = up or token, k
    end
    local praws = multi_reply('HMGET', K.task, upids)
    local progress = multi_reply('HMGET', K.fanout, upids)
    for j, up in ipairs(upids) do
      local pr = praws[j]
      if pr and not tokens[g.ups[j]] then
        tokens[g.ups[j]] = true
        distinct[up] = true
        local s, _, _, fl, at = string.match(pr, '^(%a)|(%d+)|([^|]*)|([^|]*)|()')
        if progress[j] then
          skip = true
        elseif s and string.find(fl, 'p', 1, true) then
          local from = string.match(pr, '^[^|]*|%d+|%d+|()', at)
          local marked = from and string.byte(pr, from) == 42
          if marked and slices[j] then
            local list = redis.call('HGET', K.kids, g.ups[j]) or ''
            got = got + occurrences(list, 1, g.id)
          elseif from and not marked and not slices[j] then
            got = got + occurrences(pr, from, g.id)
          end
        end
      end
    end
  end
  if skip then
    skipped[#skipped + 1] = g.id
  elseif raw then
    local s, nd, st, fl, rest = rec_parse(raw)
    local arr, nup, start, children = rec_def(rest)
    local want = tonumber(start) + got
    local ndistinct = 0
    for _ in pairs(distinct) do
      ndistinct = ndistinct + 1
    end
    local have = tonumber(nd)
    if want ~= have and (ndistinct >= tonumber(nup) or want > have) then
      redis.call('HSET', K.task, g.id, rec_join(s, want, st, fl, rest))
      fixed[#fixed + 1] = g.id
      fixed[#fixed + 1] = have
      fixed[#fixed + 1] = want
      if s == 'G' and want == tonumber(nup) then
        cands[#cands + 1] = {g.id, false, false}
      end
    end
    if redis.call('HDEL', K.pcredit, g.id) == 1 then
      pfixed[#pfixed + 1] = g.id
      pfixed[#pfixed + 1] = '-'
      pfixed[#pfixed + 1] = '-'
      touch()
    end
  else
    local cur = redis.call('HGET', K.pcredit, g.id)
    local have, q = 0, ''
    if cur then
      local cn, cq = string.match(cur, '^(%d+)(q?)$')
      have, q = tonumber(cn or '0'), cq or ''
    end
    if got > have then
      redis.call('HSET', K.pcredit, g.id, got .. q)
      pfixed[#pfixed + 1] = g.id
      pfixed[#pfixed + 1] = have
      pfixed[#pfixed + 1] = got
      touch()
    end
  end
end
local queued = queue_many(cands)
local nfixed = #fixed / 3 + #pfixed / 3
if nfixed > 0 then
  redis.call('HINCRBY', K.counters, 'reconciled', nfixed)
  emit('type', 'reconcile', 'credits_fixed', #fixed / 3, 'pending_fixed', #pfixed / 3,
    'enqueued', #queued)
  touch()
end
return {finish(), fixed, skipped, queued, pfixed}
