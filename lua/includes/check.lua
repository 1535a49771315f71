-- check.lua: input and stored-state checks run at the top of a script, before its first write
-- (include after prelude). Lua has no rollback: a script that wrote and then failed would leave
-- half a change (an event per retry, a flag without its work). So every script checks its ARGV
-- numbers (a client that bypasses the Python layer must not store what Lua cannot parse back)
-- and the stored records it will parse, and refuses with INVALID before anything is written.
-- Each helper returns nil when all is well, else the error reply to return as is.
-- Ranges (docs/validation.md): counts, ids, limits, stamps 0..2^53-1 (a Lua number holds them
-- exactly; 2^60 would come back as 1.15e+18); leases 1 ms..1 day; events_maxlen 0..10^7;
-- detail_max 0..10^5.
--!include prelude

local MAX_SAFE = 9007199254740991
local MAX_TTL_MS = 86400000

local function num_text(v)
  return string.format('%.0f', v)
end

-- A decimal integer in lo..hi (default 0..2^53-1): no sign, no fraction, no exponent.
local function chk_int(s, what, lo, hi)
  lo, hi = lo or 0, hi or MAX_SAFE
  if type(s) ~= 'string' or #s > 16 or not string.match(s, '^%d+$') or tonumber(s) < lo or tonumber(s) > hi then
    return fail('INVALID', what .. ' must be an integer in ' .. num_text(lo) .. '..' .. num_text(hi) .. ', got ' .. tostring(s))
  end
  return nil
end

-- "" or a decimal integer in lo..hi.
local function chk_opt_int(s, what, lo, hi)
  if s == '' then
    return nil
  end
  return chk_int(s, what, lo, hi)
end

-- "0" or "1".
local function chk_flag(s, what)
  if s ~= '0' and s ~= '1' then
    return fail('INVALID', what .. ' must be 0 or 1, got ' .. tostring(s))
  end
  return nil
end

-- A name stored inside '|'-separated records (replica id, incarnation, batch id, token):
-- non-empty, at most 200 bytes, no '|'.
local function chk_name(s, what)
  if type(s) ~= 'string' or s == '' or #s > 200 or string.find(s, '|', 1, true) then
    return fail('INVALID', what .. ' must be a non-empty string of at most 200 bytes without |, got ' .. tostring(s))
  end
  return nil
end

-- A lease length in ms: 1..MAX_TTL_MS.
local function chk_ttl(s, what)
  return chk_int(s, what, 1, MAX_TTL_MS)
end

-- A task status letter.
local function chk_status(s, what)
  if not VALID[s] then
    return fail('INVALID', 'unknown task status ' .. tostring(s) .. ' for ' .. what)
  end
  return nil
end

-- A run status letter (the keys of RUN_FSM are the run-status alphabet).
local function chk_run_status(s, what)
  if type(s) ~= 'string' or RUN_FSM[s] == nil then
    return fail('INVALID', 'unknown workflow run status ' .. tostring(s) .. ' for ' .. what)
  end
  return nil
end

-- A task or array id as the Python layer sends it: an optionally negative decimal integer.
local function chk_id(s, what)
  if type(s) ~= 'string' or #s > 20 or not string.match(s, '^%-?%d+$') then
    return fail('INVALID', what .. ' must be an integer id, got ' .. tostring(s))
  end
  return nil
end

-- A hash of integer counters or limits (arrays, active, reserved): each value an integer
-- (counters may be negative after drift: |v| <= 2^53-1).
local function chk_int_hash(key, what)
  local flat = redis.call('HGETALL', key)
  for i = 2, #flat, 2 do
    local v = flat[i]
    if #v > 17 or not string.match(v, '^%-?%d+$') then
      return fail('INVALID', what .. ' ' .. flat[i - 1] .. ' holds ' .. string.sub(v, 1, 100)
        .. ', not an integer; nothing was written (see swarm-redis verify)')
    end
  end
  return nil
end

-- The run's limit in meta (read by claims and capacity): an integer if present.
local function chk_meta_int(field)
  local v = redis.call('HGET', K.meta, field)
  if v and (#v > 16 or not string.match(v, '^%d+$')) then
    return fail('INVALID', 'meta ' .. field .. ' holds ' .. string.sub(v, 1, 100) .. ', not an integer')
  end
  return nil
end

-- A resource key as stored in taskres/qres and inside batch records: at most 1024 bytes, no '|'.
local function chk_rkey(s, what)
  if type(s) ~= 'string' or #s > 1024 or string.find(s, '|', 1, true) then
    return fail('INVALID', 'resource key of ' .. what .. ' must be at most 1024 bytes without |')
  end
  return nil
end

-- `n` (array id, limit) pairs of ARGV from index `at`: both integers.
local function chk_array_pairs(at, n)
  for i = 0, n - 1 do
    local id = ARGV[at + i * 2]
    local e = chk_int(id, 'array id') or chk_int(ARGV[at + 1 + i * 2], 'limit of array ' .. tostring(id))
    if e then
      return e
    end
  end
  return nil
end

-- apply_update's tail at ARGV[t]: "0", or "1" then limit (or ""), n array limits, n pairs
-- (array id, limit), run status (or ""), last sync encoded (or ""), last sync µs (or "");
-- the stored last_sync_us it is compared with must be an integer.
local function chk_apply_tail(t)
  local e = chk_flag(ARGV[t], 'last-chunk flag')
  if e or ARGV[t] == '0' then
    if not e and #ARGV ~= t then
      return fail('INVALID', 'apply_update: arguments after the last pair')
    end
    return e
  end
  e = chk_opt_int(ARGV[t + 1], 'max_concurrently_running') or chk_int(ARGV[t + 2], 'number of array limits')
  if e then
    return e
  end
  local na = tonumber(ARGV[t + 2])
  if t + 5 + na * 2 ~= #ARGV then
    return fail('INVALID', 'apply_update: malformed tail')
  end
  e = chk_array_pairs(t + 3, na)
  if e then
    return e
  end
  local rs, enc, us = ARGV[t + 3 + na * 2], ARGV[t + 4 + na * 2], ARGV[t + 5 + na * 2]
  e = (rs ~= '' and chk_run_status(rs, 'the run')) or nil
  e = e or chk_opt_int(us, 'last sync µs')
  if e then
    return e
  end
  if (enc == '') ~= (us == '') then
    return fail('INVALID', 'apply_update: last sync text and µs go together')
  end
  return chk_meta_int('last_sync_us')
end

-- The n (task id, status) pairs of ARGV from `first` on: their number and statuses. Their ids
-- are checked where they are looked up (chk_ids): an id with a stored record was checked
-- when it was registered, so only the others need the pattern match that costs the most here.
local function chk_pairs(first, n)
  if first + 2 * n - 1 > #ARGV then
    return fail('INVALID', 'expected ' .. n .. ' (id, status) pairs, got ' .. math.floor((#ARGV - first + 1) / 2))
  end
  for i = first + 1, first + 2 * n - 1, 2 do
    if not VALID[ARGV[i]] then
      return chk_status(ARGV[i], 'task ' .. tostring(ARGV[i - 1]))
    end
  end
  return nil
end

-- The entries of `list` from `first` (default 1) to its end: well-formed task ids (else the
-- INVALID reply of the first that is not).
local function chk_ids(list, first)
  for i = first or 1, #list do
    local e = chk_id(list[i], 'task id')
    if e then
      return e
    end
  end
  return nil
end

-- The ids of ARGV from `first` to the end: well formed.
local function chk_id_list(first)
  return chk_ids(ARGV, first)
end
