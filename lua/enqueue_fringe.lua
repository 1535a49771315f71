-- enqueue_fringe: one chunk of the run's initial fringe (jobmon's _set_initial_fringe), once
-- per run. The first chunk takes the meta.fringe_done flag; if another replica took it
-- already, nothing is written. Front chunks queue ADJUSTING_RESOURCES tasks at the front in the
-- given order; back chunks queue REGISTERING tasks whose upstreams are all done at the back.
-- Tasks in another status, claimed or already queued are skipped. A task queued without a
-- resource key gets its last known one (taskres); a given key is remembered there.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 take the flag (1/0), 5 front (1/0),
--       6.. pairs: task id, resource key (or "")
-- Returns: {version, 1 (0 when the flag was taken by someone else), {id, status, done, ...} queued}
-- Errors: STATELOST, NORUN.
--!include prelude
if redis.call('EXISTS', K.meta) == 0 then
  return fail('NORUN', 'run has no meta key')
end
if ARGV[4] == '1' then
  if redis.call('HSETNX', K.meta, 'fringe_done', 1) == 0 then
    return {VERSION, 0, {}}
  end
  emit('type', 'fringe')
  touch()
end
local front = ARGV[5] == '1'
local order, accepted = {}, {}
for i = 6, #ARGV, 2 do
  local id, rk = ARGV[i], ARGV[i + 1]
  local v = redis.call('HGET', K.task, id)
  if v then
    local s, nd, _, _, rest = rec_parse(v)
    local _, nup = rec_def(rest)
    local wanted = (front and s == 'A') or (not front and s == 'G' and tonumber(nd) == tonumber(nup))
    if wanted and redis.call('HEXISTS', K.claims, id) == 0
        and redis.call('SADD', K.queued, id) == 1 then
      order[#order + 1] = id
      accepted[#accepted + 1] = id
      accepted[#accepted + 1] = s
      accepted[#accepted + 1] = tonumber(nd)
      if rk == '' then
        rk = redis.call('HGET', K.taskres, id)
      else
        redis.call('HSET', K.taskres, id, rk)
      end
      if rk then
        redis.call('HSET', K.qres, id, rk)
      end
    end
  end
end
if front then
  for i = #order, 1, -1 do
    redis.call('LPUSH', K.ready, order[i])
  end
else
  for i = 1, #order do
    redis.call('RPUSH', K.ready, order[i])
  end
end
if #order > 0 then
  emit('type', 'enqueue', 'n', #order, 'front', ARGV[5])
  touch()
end
return {finish(), 1, accepted}
