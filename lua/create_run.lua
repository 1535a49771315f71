-- create_run: create the run's meta hash unless it exists (the first creator wins), and its
-- counters hash with every counter at 0.
-- KEYS: the run's keys (keys.RUN_KEY_NAMES order).
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 workflow_id, 5 workflow_run_id, 6 dag_id,
--       7 max_concurrently_running, 8 run status, 9 events_maxlen, 10 detail_max,
--       11 a random creation token (tells a recreated run from the original)
-- Returns: {version, created (1/0), workflow_id, dag_id, limit, status, token}
-- Errors: STATELOST, INVALID (a malformed argument; nothing written).
--!include prelude
--!include check
local bad = chk_int(ARGV[4], 'workflow_id') or chk_int(ARGV[5], 'workflow_run_id')
  or chk_int(ARGV[6], 'dag_id') or chk_int(ARGV[7], 'max_concurrently_running')
  or chk_run_status(ARGV[8], 'the new run') or chk_int(ARGV[9], 'events_maxlen', 0, 10000000)
  or chk_int(ARGV[10], 'detail_max', 0, 100000) or chk_name(ARGV[11], 'creation token')
if bad then
  return bad
end
local created = 0
if redis.call('EXISTS', K.meta) == 0 then
  redis.call('HSET', K.meta, 'workflow_id', ARGV[4], 'workflow_run_id', ARGV[5], 'dag_id', ARGV[6],
    'limit', ARGV[7], 'status', ARGV[8], 'npc', 0, 'version', 0, 'events_maxlen', ARGV[9],
    'detail_max', ARGV[10], 'created_ms', now_ms(), 'token', ARGV[11])
  -- monotonic counters start at 0 (see keys.py: counters)
  for st in pairs(SK) do
    redis.call('HSETNX', K.counters, 'to:' .. st, 0)
  end
  for _, name in ipairs({'propagations', 'claims', 'acks', 'releases', 'reaps', 'leader_changes',
      'joins', 'redrives', 'orphaned', 'reconciled', 'batches', 'repairs'}) do
    redis.call('HSETNX', K.counters, name, 0)
  end
  EVENTS_MAXLEN = tonumber(ARGV[9])
  emit('type', 'run_created', 'status', ARGV[8], 'limit', ARGV[7])
  touch()
  created = 1
end
local m = redis.call('HMGET', K.meta, 'workflow_id', 'dag_id', 'limit', 'status', 'token')
return {finish(), created, m[1], m[2], m[3], m[4], m[5] or ''}
