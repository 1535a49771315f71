-- queue.lua: put tasks in the ready queue at most once (include after prelude). Shared by
-- enqueue and enqueue_fringe; the writing is queue_many's (prelude), the one bulk queue path.

-- Queue the (task id, resource key) pairs of ARGV from index `first` on, in their order (at the
-- front they keep it too). `wanted(status, done, rest)` says whether a task may be queued;
-- unknown, claimed and already queued tasks are skipped, but an already queued task takes a
-- given resource key. A task queued without a key gets its last known one (taskres); a given
-- key is remembered there. An id given twice counts once, at its first place, with the last
-- non-empty key given for it. Bulk reads and writes: O(n log N) for n pairs.
-- Returns the queued ids and {id, status, done, ...} of them.
local function queue_pairs(first, front, wanted)
  local ids, keyof, seen = {}, {}, {}
  for i = first, #ARGV, 2 do
    local id, rk = ARGV[i], ARGV[i + 1]
    if not seen[id] then
      seen[id] = true
      ids[#ids + 1] = id
    end
    if rk ~= '' or keyof[id] == nil then
      keyof[id] = rk
    end
  end
  local recs = multi_reply('HMGET', K.task, ids)
  local cands, info = {}, {}
  for i, id in ipairs(ids) do
    if recs[i] then
      local s, nd, _, _, rest = rec_parse(recs[i])
      if wanted(s, nd, rest) then
        cands[#cands + 1] = {id, front, false, keyof[id]}
        info[id] = {s, tonumber(nd)}
      end
    end
  end
  if front then
    -- queue_many pushes front candidates one after the other: reversed, they keep this order
    local rev = {}
    for i = #cands, 1, -1 do
      rev[#rev + 1] = cands[i]
    end
    cands = rev
  end
  local got, rekeyed = queue_many(cands)
  local order = {}
  if front then
    for i = #got, 1, -1 do
      order[#order + 1] = got[i]
    end
  else
    order = got
  end
  local accepted = {}
  for _, id in ipairs(order) do
    accepted[#accepted + 1] = id
    accepted[#accepted + 1] = info[id][1]
    accepted[#accepted + 1] = info[id][2]
  end
  if rekeyed then
    touch()
  end
  if #order > 0 then
    if #order <= DETAIL_MAX then
      emit('type', 'enqueue', 'tasks', table.concat(order, ','), 'front', front and '1' or '0')
    else
      emit('type', 'enqueue', 'n', #order, 'front', front and '1' or '0')
    end
    touch()
  end
  return order, accepted
end
