-- prelude.lua: shared by every script. scripts.py puts the generated tables K (run keys by
-- name, from keys.RUN_KEY_NAMES), SK (status -> status set key) and RUN_FSM (allowed run-status
-- transitions, from constants.run_transition_allowed) in front of this file.
--
-- Common ARGV of every script:
--   ARGV[1] seen     "<version>:<token>:<rid>": the highest write version this client saw and
--                    the run's creation token it knows ("" if none): lost-write detection;
--                    then the call's request id (see includes/idem.lua, "" for none)
--   ARGV[2] actor    replica id or "-" (recorded in events)
--   ARGV[3] epoch    leadership epoch of the caller or "" (recorded in events)
-- Scripts answer errors with a code word first: STATELOST <seen> <found>, INVALID <what>,
-- NORUN <run>, LEASELOST <what>, FENCED <epoch> <current>, TRANSITION <from> <to>.

-- globals the per-task loops read, as locals: an upvalue read instead of a globals-table lookup
local ARGV, tonumber, unpack = ARGV, tonumber, unpack

local ACTIVE = {Q = true, I = true, O = true, R = true}
local FINAL = {D = true, F = true}
local VALID = {G = true, Q = true, I = true, O = true, R = true, D = true, E = true, A = true, F = true}

local ACTOR = ARGV[2]
local EPOCH = ARGV[3]
local META = redis.call('HMGET', K.meta, 'version', 'events_maxlen', 'detail_max', 'token')
local VERSION = tonumber(META[1] or '0')
-- a stored value that is not a plain integer (written by hand or by an old client) falls back to
-- the default instead of failing the script after its first write (XADD MAXLEN 1.5 would)
local function meta_int(v, default, hi)
  if v and #v <= 16 and string.match(v, '^%d+$') and tonumber(v) <= hi then
    return tonumber(v)
  end
  return default
end
local EVENTS_MAXLEN = meta_int(META[2], 10000, 10000000)
local DETAIL_MAX = meta_int(META[3], 16, 100000)
local SEEN_TEXT, TOKEN = string.match(ARGV[1], '^(%d+):?([^:]*)')
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

-- NORUN unless the run exists (its meta key): the guard of scripts that must not create a run.
-- `known` (optional): true/false when the caller already read whether the run's status is there.
local function require_run(known)
  if known == false or (known == nil and redis.call('EXISTS', K.meta) == 0) then
    return fail('NORUN', 'run has no meta key')
  end
  return nil
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

-- Run `cmd key list...` in slices that stay under Lua's unpack limit.
local function multi(cmd, key, list)
  for i = 1, #list, 4000 do
    redis.call(cmd, key, unpack(list, i, math.min(i + 3999, #list)))
  end
end

-- The replies of `cmd key list...` (HMGET, SMISMEMBER), one per element, in slices.
local function multi_reply(cmd, key, list)
  if #list == 0 then
    return {}
  elseif #list <= 4000 then
    return redis.call(cmd, key, unpack(list))
  end
  local out = {}
  for i = 1, #list, 4000 do
    local part = redis.call(cmd, key, unpack(list, i, math.min(i + 3999, #list)))
    for j = 1, #part do
      out[#out + 1] = part[j]
    end
  end
  return out
end

if not SEEN or #SEEN_TEXT > 16 then
  return redis.error_reply('INVALID seen version ' .. tostring(ARGV[1]) .. ' is not <version>:<token>')
end
-- (at most 16 digits: HINCRBY in finish() must not fail after the script's writes)
if not VERSION or VERSION > 9007199254740991 or (META[1] and (#META[1] > 16 or not string.match(META[1], '^%d+$'))) then
  return redis.error_reply('INVALID stored write version ' .. tostring(META[1]) .. ' is not an integer')
end
if SEEN > VERSION then
  return fail('STATELOST', SEEN .. ' ' .. VERSION)
end
if TOKEN ~= '' and META[4] and META[4] ~= TOKEN then
  return fail('STATELOST', SEEN .. ' ' .. VERSION .. ' recreated')
end
--!phase prelude
