-- batch.lua: claimed batches: records, holders, closing and orphaning (include after prelude).
-- Records (see keys.py): batches[bid] = holder|incarnation|array|resource key|id,id,...
-- (holder "" = orphaned)
--!include prelude
--!include coord
--!include queue

-- A batch record as a table; holder is nil when the record does not parse (such a batch is
-- left alone by every script and reported by verify).
local function batch_parse(v)
  local holder, inc, arr, rk, ids = string.match(v, '^([^|]*)|([^|]*)|([^|]*)|([^|]*)|(.*)$')
  return {holder = holder, inc = inc, array = arr, rkey = rk, ids = ids}
end

-- Order of batch ids (numbers from the batches counter; anything else after them, by text).
local function bid_less(x, y)
  local a, b = tonumber(x), tonumber(y)
  if a and b then
    return a < b
  end
  if a or b then
    return a ~= nil
  end
  return x < y
end

local function batch_join(holder, inc, b)
  return holder .. '|' .. inc .. '|' .. b.array .. '|' .. b.rkey .. '|' .. b.ids
end

local function split_ids(s)
  local out, n = {}, 0
  for id in string.gmatch(s, '[^,]+') do
    n = n + 1
    out[n] = id
  end
  return out
end

-- The batch `bid` if `rid`/`inc` holds it, else nil and an error reply.
local function held_batch(rid, inc, bid)
  local v = redis.call('HGET', K.batches, bid)
  if not v then
    return nil, fail('LEASELOST', 'batch ' .. bid .. ' is no longer claimed (acknowledged, released or reaped)')
  end
  local b = batch_parse(v)
  if b.holder ~= rid or b.inc ~= inc then
    return nil, fail('LEASELOST', 'batch ' .. bid .. ' is not held by replica ' .. rid .. ' (reaped and re-driven)')
  end
  return b, nil
end

-- "id|status|done ..." of the given ids, from their records: one string, built without parsing
-- a record or converting a number (ids without a readable record are reported as G with 0 done).
local function task_heads(ids)
  local recs = multi_reply('HMGET', K.task, ids)
  local out, match = {}, string.match
  for j = 1, #ids do
    out[j] = ids[j] .. '|' .. (recs[j] and match(recs[j], '^%u|%d+') or 'G|0')
  end
  return table.concat(out, ' ')
end

local function add_reserved(field, delta)
  local left = redis.call('HINCRBY', K.reserved, field, delta)
  if left <= 0 then
    redis.call('HDEL', K.reserved, field)
  end
end

-- The batch `bid` if replica `rid` (incarnation `inc`) is alive and holds it; else nil and the
-- LEASELOST error reply (checked before anything is written).
local function live_holder_batch(rid, inc, bid)
  local err = lease_error(rid, inc, now_ms())
  if err then
    return nil, err
  end
  return held_batch(rid, inc, bid)
end

-- Drop a batch: claims, reservation and record. Tasks still G or A go back to the FRONT of the
-- queue in batch order; the others lose their resource key. `loaded(id)` (optional): the
-- current status of a task whose record the caller holds, nil for the others (their records
-- are read); `ids` (optional): the batch's ids when the caller split them already.
-- Returns the requeued ids.
local function close_batch(bid, b, loaded, ids)
  ids = ids or split_ids(b.ids)
  multi('HDEL', K.claims, ids)
  local cur, unknown, nu = {}, {}, 0
  for i = 1, #ids do
    local id = ids[i]
    local s = loaded and loaded(id)
    if s then
      cur[id] = s
    else
      nu = nu + 1
      unknown[nu] = id
    end
  end
  local recs = multi_reply('HMGET', K.task, unknown)
  for i = 1, nu do
    cur[unknown[i]] = recs[i] and string.sub(recs[i], 1, 1)
  end
  local again, done, ndone = {}, {}, 0
  for i = 1, #ids do
    local id = ids[i]
    local s = cur[id]
    if s == 'G' or s == 'A' then
      again[#again + 1] = id
    else
      ndone = ndone + 1
      done[ndone] = id
    end
  end
  local inq = multi_reply('SMISMEMBER', K.queued, again)
  local back = {}
  for i = 1, #again do
    local id = again[i]
    if inq[i] == 0 then
      back[#back + 1] = id
    else
      ndone = ndone + 1
      done[ndone] = id
    end
  end
  multi('HDEL', K.qres, done)
  -- to the front in batch order (they keep their resource key in qres)
  qpush(back, true)
  add_reserved('run', -#ids)
  add_reserved(b.array, -#ids)
  redis.call('HDEL', K.batches, bid)
  return back
end

-- Move every batch whose holder is not a live member (or is in `dead`) to the orphans list.
-- Reservations and claims stay: the dead holder may have reached the server.
-- Returns the number of batches and tasks orphaned.
local function orphan_batches(dead, members, now)
  local all = redis.call('HGETALL', K.batches)
  local nb, nt = 0, 0
  local found = {}
  for i = 1, #all, 2 do
    local bid, b = all[i], batch_parse(all[i + 1])
    if b.holder and b.holder ~= '' then
      local m = members[b.holder]
      local gone = dead[b.holder] or not m or m.inc ~= b.inc or m.deadline <= now
      if gone then
        found[#found + 1] = bid
        redis.call('HSET', K.batches, bid, batch_join('', '', b))
        nt = nt + #split_ids(b.ids)
      end
    end
  end
  table.sort(found, bid_less)
  for _, bid in ipairs(found) do
    redis.call('RPUSH', K.orphans, bid)
    nb = nb + 1
  end
  return nb, nt
end
