-- prelude.lua: shared by every script. scripts.py puts the generated tables K (run keys by
-- name, from keys.RUN_KEY_NAMES), SK (status -> status set key) and RUN_FSM (allowed run-status
-- transitions, from constants.run_transition_allowed) in front of this file.
--
-- Common ARGV of every script:
--   ARGV[1] seen     "<version>:<token>": the highest write version this client saw and the
--                    run's creation token it knows ("" if none): lost-write detection
--   ARGV[2] actor    replica id or "-" (recorded in events)
--   ARGV[3] epoch    leadership epoch of the caller or "" (recorded in events)
-- Scripts answer errors with a code word first: STATELOST <seen> <found>, INVALID <what>,
-- NORUN <run>, LEASELOST <what>, FENCED <epoch> <current>, TRANSITION <from> <to>.

local ACTIVE = {Q = true, I = true, O = true, R = true}
local FINAL = {D = true, F = true}
local VALID = {G = true, Q = true, I = true, O = true, R = true, D = true, E = true, A = true, F = true}

local ACTOR = ARGV[2]
local EPOCH = ARGV[3]
local META = redis.call('HMGET', K.meta, 'version', 'events_maxlen', 'detail_max', 'token')
local VERSION = tonumber(META[1] or '0')
local EVENTS_MAXLEN = tonumber(META[2] or '10000')
local DETAIL_MAX = tonumber(META[3] or '16')
local SEEN_TEXT, TOKEN = string.match(ARGV[1], '^(%d+):?(.*)$')
local SEEN = tonumber(SEEN_TEXT)
local CHANGED = false

local function fail(code, text)
  return redis.error_reply(code .. ' ' .. text)
end

-- Append one event to the run's stream (a no-op when events are switched off).
local function emit(...)
  if EVENTS_MAXLEN > 0 then
    redis.call('XADD', K.events, 'MAXLEN', '~', EVENTS_MAXLEN, '*', 'actor', ACTOR, 'epoch', EPOCH, ...)
  end
end

-- Mark the run as changed; the write version is bumped once, by finish().
local function touch()
  CHANGED = true
end

local function finish()
  if CHANGED then
    VERSION = redis.call('HINCRBY', K.meta, 'version', 1)
  end
  return VERSION
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Task records: S|done|stamp|flags|array|nup|start|children (see keys.py).
local function rec_parse(v)
  return string.match(v, '^(%a)|(%d+)|([^|]*)|([^|]*)|(.*)$')
end

local function rec_join(s, nd, st, fl, rest)
  return s .. '|' .. nd .. '|' .. st .. '|' .. fl .. '|' .. rest
end

-- The immutable part: array, nup, start, children.
local function rec_def(rest)
  return string.match(rest, '^([^|]*)|(%d+)|(%d+)|(.*)$')
end

local function rec_array(rest)
  return string.match(rest, '^([^|]*)|')
end

-- Move a task between status sets and keep the per-array active counter in step.
local function move_status(id, old, new, arr)
  redis.call('SMOVE', SK[old], SK[new], id)
  if ACTIVE[old] and not ACTIVE[new] then
    redis.call('HINCRBY', K.active, arr, -1)
  elseif ACTIVE[new] and not ACTIVE[old] then
    redis.call('HINCRBY', K.active, arr, 1)
  end
end

-- Push a task to the ready queue unless it is queued or claimed already (at most once).
local function try_enqueue(id, front)
  if redis.call('HEXISTS', K.claims, id) == 1 then
    return false
  end
  if redis.call('SADD', K.queued, id) == 1 then
    local rk = redis.call('HGET', K.taskres, id)
    if rk then
      redis.call('HSET', K.qres, id, rk)
    end
    if front then
      redis.call('LPUSH', K.ready, id)
    else
      redis.call('RPUSH', K.ready, id)
    end
    return true
  end
  return false
end

-- Credit each downstream of a completed task (record part `rest`) once. Downstreams that
-- become ready (status G and every upstream done) are appended to `ready`, and pushed to the
-- queue when `enqueue` is true. `touched` collects "id:done:status" of every credited task.
local function credit_children(rest, enqueue, ready, touched)
  local _, _, _, children = rec_def(rest)
  for child in string.gmatch(children, '[^,]+') do
    local cv = redis.call('HGET', K.task, child)
    if cv then
      local cs, cnd, cst, cfl, crest = rec_parse(cv)
      cnd = tonumber(cnd) + 1
      redis.call('HSET', K.task, child, rec_join(cs, cnd, cst, cfl, crest))
      touched[#touched + 1] = child .. ':' .. cnd .. ':' .. cs
      if cs == 'G' then
        local _, cnup = rec_def(crest)
        if cnd == tonumber(cnup) and (not enqueue or try_enqueue(child, false)) then
          ready[#ready + 1] = child
        end
      end
    end
  end
end

-- Count a completion once: flag the task as propagated and credit its downstreams.
local function propagate_one(id, s, nd, st, fl, rest, enqueue, ready, touched)
  redis.call('HSET', K.task, id, rec_join(s, nd, st, fl .. 'p', rest))
  credit_children(rest, enqueue, ready, touched)
end

if SEEN > VERSION then
  return fail('STATELOST', SEEN .. ' ' .. VERSION)
end
if TOKEN ~= '' and META[4] and META[4] ~= TOKEN then
  return fail('STATELOST', SEEN .. ' ' .. VERSION .. ' recreated')
end
