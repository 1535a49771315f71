-- coord.lua: replica leases, membership and fencing (include after prelude).
-- Records (see keys.py): replicas[id] = incarnation|deadline ms|joined ms
--!include prelude

local function replica_parse(v)
  return string.match(v, '^([^|]*)|(%d+)|(%d*)$')
end

-- Refuse unless replica `rid` is a member under incarnation `inc` with a live lease.
-- Returns nil when alive, else an error reply.
local function lease_error(rid, inc, now)
  local v = redis.call('HGET', K.replicas, rid)
  if not v then
    return fail('LEASELOST', 'replica ' .. rid .. ' is not a member (reaped or left)')
  end
  local rinc, deadline = replica_parse(v)
  if not rinc then
    return fail('LEASELOST', 'member record of replica ' .. rid .. ' does not parse (reap removes it)')
  end
  if rinc ~= inc then
    return fail('LEASELOST', 'replica ' .. rid .. ' re-joined under another incarnation')
  end
  if tonumber(deadline) <= now then
    return fail('LEASELOST', 'lease of replica ' .. rid .. ' expired ' .. (now - tonumber(deadline)) .. ' ms ago')
  end
  return nil
end

-- Every member as {inc, deadline}; a record that does not parse counts as expired.
local function members_table()
  local all = redis.call('HGETALL', K.replicas)
  local m = {}
  for i = 1, #all, 2 do
    local inc, deadline = replica_parse(all[i + 1])
    m[all[i]] = {inc = inc or '', deadline = tonumber(deadline or '0') or 0}
  end
  return m
end

-- Clear the leadership lease if its holder is in `dead` (the epoch stays). True if cleared.
local function clear_dead_leader(dead)
  local lid = redis.call('HGET', K.leader, 'id')
  if lid and lid ~= '' and dead[lid] then
    redis.call('HSET', K.leader, 'id', '', 'incarnation', '', 'deadline_ms', 0)
    emit('type', 'leader_lost', 'replica', lid)
    return true
  end
  return false
end

-- Refuse a leader-only write whose epoch (ARGV[3]) is not the current, held leadership epoch.
local function fence_error()
  if EPOCH == '' then
    return nil
  end
  local l = redis.call('HMGET', K.leader, 'id', 'epoch')
  if not l[1] or l[1] == '' or l[2] ~= EPOCH then
    local cur = l[2] or '0'
    return fail('FENCED', EPOCH .. ' ' .. cur .. ' (epoch ' .. EPOCH .. ' no longer leads; current epoch ' .. cur .. ')')
  end
  return nil
end
