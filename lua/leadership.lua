-- leadership: acquire, renew or resign the run's leadership lease (Redis time).
-- acquire: the caller (a live member) leads if nobody does, the lease expired, or it leads
--   already (then the lease is renewed); a takeover increments the epoch.
-- renew: extends the lease if the caller holds it under `epoch` (even if it just expired and
--   nobody took over: the epoch is still current).
-- resign: clears the lease if the caller holds it under `epoch`; otherwise nothing.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 op (acquire|renew|resign), 5 replica id, 6 incarnation,
--       7 ttl ms, 8 epoch of the caller ("" for acquire)
-- Returns: {version, epoch ("" when another replica leads), deadline ms}
-- Errors: STATELOST, LEASELOST (acquire/renew by a replica that is not a live member),
--         FENCED (renew of an epoch that no longer leads), INVALID (a malformed argument, or a
--         stored epoch that is not an integer). Nothing is written on an error. A stored
--         deadline that does not parse counts as expired.
--!include prelude
--!include coord
--!include check
local bad
if ARGV[4] ~= 'acquire' and ARGV[4] ~= 'renew' and ARGV[4] ~= 'resign' then
  bad = fail('INVALID', 'leadership op must be acquire, renew or resign, got ' .. tostring(ARGV[4]))
end
bad = bad or chk_name(ARGV[5], 'replica id') or chk_name(ARGV[6], 'incarnation')
  or chk_ttl(ARGV[7], 'leadership ttl ms') or chk_opt_int(ARGV[8], 'epoch', 1)
  or chk_int_hash(K.counters, 'counter')
if bad then
  return bad
end
local op, rid, inc, ttl, mine = ARGV[4], ARGV[5], ARGV[6], tonumber(ARGV[7]), ARGV[8]
local now = now_ms()
local l = redis.call('HMGET', K.leader, 'id', 'incarnation', 'epoch', 'deadline_ms')
local lid, linc, lepoch = l[1] or '', l[2] or '', l[3] or '0'
local ldeadline = tonumber(string.match(l[4] or '0', '^%d+$') or '0')
if #lepoch > 16 or not string.match(lepoch, '^%d+$') then
  return fail('INVALID', 'stored leadership epoch ' .. string.sub(lepoch, 1, 100) .. ' is not an integer')
end
local holds = lid == rid and linc == inc

if op == 'resign' then
  if holds and lepoch == mine then
    redis.call('HSET', K.leader, 'id', '', 'incarnation', '', 'deadline_ms', 0)
    EPOCH = tostring(lepoch)  -- the event's epoch field is the lease's (emit adds it once)
    emit('type', 'leader_resign', 'replica', rid)
    touch()
  end
  return {finish(), lepoch, 0}
end

local err = lease_error(rid, inc, now)
if err then
  return err
end
local deadline = now + ttl
if op == 'renew' then
  if not holds or lepoch ~= mine then
    return fail('FENCED', mine .. ' ' .. lepoch .. ' (epoch ' .. mine .. ' no longer leads; current epoch ' .. lepoch .. ')')
  end
  redis.call('HSET', K.leader, 'deadline_ms', deadline)
  return {finish(), lepoch, deadline} -- a lease extension does not bump the version
end

-- acquire
if holds then
  redis.call('HSET', K.leader, 'deadline_ms', deadline)
  return {finish(), lepoch, deadline}
end
if lid ~= '' and ldeadline > now then
  return {VERSION, '', ldeadline}
end
local epoch = redis.call('HINCRBY', K.leader, 'epoch', 1)
redis.call('HSET', K.leader, 'id', rid, 'incarnation', inc, 'deadline_ms', deadline)
redis.call('HINCRBY', K.counters, 'leader_changes', 1)
EPOCH = tostring(epoch)  -- the event's epoch field is the new epoch (emit adds it once)
emit('type', 'leader', 'replica', rid, 'previous', lid)
touch()
return {finish(), tostring(epoch), deadline}
