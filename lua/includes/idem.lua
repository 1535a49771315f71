-- idem.lua: the reply cache that makes a mutating script safe to send twice. scripts.py puts it
-- after the generated header (which defines IDEM_RETENTION_MS, IDEM_MAX, IDEM_MAX_BYTES and
-- IDEM_TRIM) and wraps the script's own text as `local function idem_body() ... end`:
--
--   local hit = idem_replay(); if hit then return hit end
--   return idem_store(idem_body())
--
-- ARGV[1] is "<version>:<token>:<rid>", rid being the call's request id ([0-9A-Za-z], at most
-- 64 characters; "" turns the cache off for the call). A redis-py retry re-sends the same ARGV,
-- a caller's retry reuses the rid (see core.StateCore), so a second delivery finds the first
-- reply here.
--
-- K.replies  hash  rid -> encoded reply; fields "#bytes" and "#count": total size and number of
--                  the replies, "#ttl": when the TTL of both keys was last renewed (ms)
-- K.reply_at zset  rid -> ms (Redis time) when its reply was stored
--
-- Replay: the stored reply is answered again and nothing is written; its first element (the
-- write version) is replaced by the current version, so a client that has seen later writes
-- since does not take the replay for lost writes; the prelude's STATELOST refusals still apply.
-- Store: successful replies only (an error reply wrote nothing: scripts check before writing).
-- Each store first drops, oldest first, at most IDEM_TRIM entries that are older than
-- IDEM_RETENTION_MS or beyond IDEM_MAX entries / IDEM_MAX_BYTES: bounded work per call, and the
-- cache shrinks faster than it grows. Both keys expire 1 to 1.1 IDEM_RETENTION_MS after the last
-- store, so a run that gets no more calls does not keep its cache.
--
-- Encoding of a reply (what Redis converts a Lua value to): "$<len>:<bytes>" string,
-- "i<digits>;" integer (Lua numbers truncated toward zero, true is 1), "_" nil (false),
-- "+<len>:<text>" status, "-<len>:<text>" error, "*<n>:" then n elements for an array, and
-- "[<n>:" for a flat array of short strings and integers (see idem_flat: the common case of
-- long replies, encoded with a few C calls instead of one Lua step per element).

local IDEM_SEEN, IDEM_TOKEN, REQ_ID = string.match(ARGV[1] or '', '^(%d+):?([^:]*):?(.*)$')
REQ_ID = REQ_ID or ''

-- A flat array (strings shorter than 128 bytes, integers below 1e14 in magnitude) in one go:
-- "[<n>:" then n signature bytes (a string's length, or 128 + the length of a number's text)
-- then the elements back to back, as table.concat writes them. Nil when v is not flat.
local function idem_flat(v, len)
  local sig = {}
  for i = 1, len do
    local e = v[i]
    local t = type(e)
    if t == 'string' then
      local l = #e
      if l > 127 then
        return nil
      end
      sig[i] = l
    elseif t ~= 'number' then
      return nil
    elseif e >= 1 and e < 10 and e % 1 == 0 or e == 0 and 1 / e > 0 then
      sig[i] = 129 -- one digit (the usual done count or flag); -0 is written "-0"
    elseif e % 1 == 0 and e < 1e14 and e > -1e14 then
      sig[i] = 128 + #tostring(e)
    else
      return nil
    end
  end
  local parts = {'[', len, ':'}
  for i = 1, len, 4000 do
    parts[#parts + 1] = string.char(unpack(sig, i, math.min(i + 3999, len)))
  end
  parts[#parts + 1] = table.concat(v, '', 1, len)
  return table.concat(parts)
end

local function idem_encode(v, out)
  local t = type(v)
  if t == 'string' then
    out[#out + 1] = '$' .. #v .. ':' .. v
  elseif t == 'number' then
    local n = v >= 0 and math.floor(v) or math.ceil(v)
    out[#out + 1] = 'i' .. string.format('%.0f', n) .. ';'
  elseif t == 'boolean' then
    out[#out + 1] = v and 'i1;' or '_'
  elseif t == 'table' then
    if v.err ~= nil then
      out[#out + 1] = '-' .. #v.err .. ':' .. v.err
    elseif v.ok ~= nil then
      out[#out + 1] = '+' .. #v.ok .. ':' .. v.ok
    else
      local n = 0
      while v[n + 1] ~= nil do
        n = n + 1
      end
      local flat = n > 8 and idem_flat(v, n)
      if flat then
        out[#out + 1] = flat
      else
        out[#out + 1] = '*' .. n .. ':'
        for i = 1, n do
          idem_encode(v[i], out)
        end
      end
    end
  else
    out[#out + 1] = '_'
  end
end

-- The value encoded at position pos of s, and the position after it.
local function idem_decode(s, pos)
  local kind = string.sub(s, pos, pos)
  if kind == '_' then
    return false, pos + 1
  end
  if kind == 'i' then
    local stop = string.find(s, ';', pos, true)
    return tonumber(string.sub(s, pos + 1, stop - 1)), stop + 1
  end
  local colon = string.find(s, ':', pos, true)
  local n = tonumber(string.sub(s, pos + 1, colon - 1))
  if kind == '*' then
    local out, p = {}, colon + 1
    for i = 1, n do
      out[i], p = idem_decode(s, p)
    end
    return out, p
  end
  if kind == '[' then
    local out, p = {}, colon + 1 + n
    for i = 1, n, 4000 do
      local sig = {string.byte(s, colon + i, colon + math.min(i + 3999, n))}
      for j = 1, #sig do
        local b = sig[j]
        if b < 128 then
          out[i + j - 1] = string.sub(s, p, p + b - 1)
          p = p + b
        else
          out[i + j - 1] = tonumber(string.sub(s, p, p + b - 129))
          p = p + b - 128
        end
      end
    end
    return out, p
  end
  local text = string.sub(s, colon + 1, colon + n)
  if kind == '$' then
    return text, colon + n + 1
  elseif kind == '+' then
    return {ok = text}, colon + n + 1
  end
  return {err = text}, colon + n + 1
end

-- What the lookup read for the store: total size, count, last TTL renewal (ms) of the cache.
local IDEM_BYTES, IDEM_COUNT, IDEM_TTL_AT = 0, 0, nil

-- The stored reply of this request id (nil when none), answered again with nothing written.
local function idem_replay()
  if REQ_ID == '' then
    return nil
  end
  if #REQ_ID > 64 or not string.match(REQ_ID, '^%w+$') then
    return redis.error_reply('INVALID request id ' .. string.sub(REQ_ID, 1, 80))
  end
  local got = redis.call('HMGET', K.replies, REQ_ID, '#bytes', '#count', '#ttl')
  if not got[1] then
    -- a total that does not parse (written by hand) restarts from 0: the store must not fail
    -- after the script's body has written
    IDEM_BYTES, IDEM_COUNT = tonumber(got[2] or '') or 0, tonumber(got[3] or '') or 0
    IDEM_TTL_AT = tonumber(got[4] or '')
    return nil
  end
  local m = redis.call('HMGET', K.meta, 'version', 'token')
  local version = tonumber(m[1] or '0')
  local seen = tonumber(IDEM_SEEN)
  if not version or not seen then
    return redis.error_reply('INVALID stored write version ' .. tostring(m[1]) .. ' or seen version is not an integer')
  end
  if seen > version then
    return redis.error_reply('STATELOST ' .. seen .. ' ' .. version)
  end
  if IDEM_TOKEN ~= '' and m[2] and m[2] ~= IDEM_TOKEN then
    return redis.error_reply('STATELOST ' .. seen .. ' ' .. version .. ' recreated')
  end
  local reply = idem_decode(got[1], 1)
  if type(reply) == 'table' and type(reply[1]) == 'number' then
    reply[1] = version
  end
  return reply
end

-- Remember a successful reply under the request id, after dropping a bounded number of old
-- entries; returns the reply unchanged. Usually four commands: TIME, a ZRANGEBYSCORE that finds
-- no expired entry, ZADD, HSET (and two PEXPIREs ten times per retention period).
local function idem_store(reply)
  if REQ_ID == '' or type(reply) ~= 'table' or reply.err ~= nil then
    return reply
  end
  local parts = {}
  idem_encode(reply, parts)
  local enc = table.concat(parts)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local count, bytes = IDEM_COUNT + 1, IDEM_BYTES + #enc
  local oldest
  if count > IDEM_MAX or bytes > IDEM_MAX_BYTES then
    oldest = redis.call('ZRANGE', K.reply_at, 0, IDEM_TRIM - 1, 'WITHSCORES')
  else
    oldest = redis.call('ZRANGEBYSCORE', K.reply_at, '-inf', now - IDEM_RETENTION_MS,
      'WITHSCORES', 'LIMIT', 0, IDEM_TRIM)
  end
  local drop = {}
  for i = 1, #oldest, 2 do
    local expired = tonumber(oldest[i + 1]) <= now - IDEM_RETENTION_MS
    if not (expired or count > IDEM_MAX or bytes > IDEM_MAX_BYTES) then
      break
    end
    drop[#drop + 1] = oldest[i]
    count, bytes = count - 1, bytes - redis.call('HSTRLEN', K.replies, oldest[i])
  end
  if #drop > 0 then
    redis.call('HDEL', K.replies, unpack(drop))
    redis.call('ZREM', K.reply_at, unpack(drop))
  end
  redis.call('ZADD', K.reply_at, now, REQ_ID)
  -- a run that gets no more calls (ended, purged under a live replica) drops its cache whole:
  -- the TTL, renewed every tenth of the retention, outlives the newest reply's retention
  if not IDEM_TTL_AT or now - IDEM_TTL_AT >= IDEM_RETENTION_MS / 10 or now < IDEM_TTL_AT then
    redis.call('HSET', K.replies, REQ_ID, enc, '#bytes', bytes, '#count', count, '#ttl', now)
    local ttl = IDEM_RETENTION_MS + math.floor(IDEM_RETENTION_MS / 10)
    redis.call('PEXPIRE', K.replies, ttl)
    redis.call('PEXPIRE', K.reply_at, ttl)
  else
    redis.call('HSET', K.replies, REQ_ID, enc, '#bytes', bytes, '#count', count)
  end
  return reply
end
