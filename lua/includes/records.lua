-- records.lua: the record grammar (record_fields, also how apply.lua loads records) and the
-- checks of stored task records, run before a script's first write (see check.lua for why): a
-- record that does not parse is refused with INVALID, nothing written.
--!include prelude
--!include check

-- A decimal integer text (digits only) beyond 2^53-1 (a Lua number would not hold it exactly):
-- compared as text, no conversion (a 16-digit µs stamp is the common case).
local MAX_SAFE_TEXT = '9007199254740991'
local function big(x)
  return #x > 15 and (#x > 16 or x > MAX_SAFE_TEXT)
end

-- KIDS_SLICE (generated header, from commands.KIDS_SLICE): downstream ids in one slice of K.kids
-- at most: crediting one (every child may become ready and be queued, ~25 µs each) stays near
-- 10 ms.
-- Slices one task's downstream ids may fill in K.kids (4M ids).
local KIDS_SLICES_MAX = 10000

-- The number of slices when the children list starting at `kat` in `v` is the marker "*<m>"
-- (the ids live in K.kids as <id>#1..<id>#<m>), else nil (the ids are inline).
local function kids_marker(v, kat)
  if string.byte(v, kat) == 42 then  -- '*'
    return tonumber(string.match(v, '^%*(%d+)$', kat))
  end
  return nil
end

-- The one reader of the record grammar S|done|stamp|flags|array|nup|start|children: nil and
-- the reason when `v` does not parse (unknown status, a number beyond 2^53-1, a children list
-- that is neither ids joined by "," nor the marker "*<m>" of m slices in K.kids); else nil, then
-- status, done, stamp, flags (strings), the position where the definition starts and the
-- position where the children list starts. One match, no copy of the definition or of the
-- children list: the definition's numbers are found by position and copied only when one is
-- long enough to exceed 2^53-1. A marker record (rare: a big fan-out) takes a second match.
local str_match = string.match  -- an upvalue: no two table lookups per record
local function record_fields(v)
  local s, nd, st, fl, at, pn, ps, kat =
    str_match(v, '^(%u)|(%d+)|(%d*)|([^|]*)|()%d+|()%d+|()%d+|()[%d,%-]*$')
  if not s then
    s, nd, st, fl, at, pn, ps, kat =
      str_match(v, '^(%u)|(%d+)|(%d*)|([^|]*)|()%d+|()%d+|()%d+|()%*[1-9]%d?%d?%d?%d?$')
  end
  if not s then
    return 'does not match S|done|stamp|flags|array|nup|start|children'
  end
  if not VALID[s] then
    return 'unknown status ' .. s
  end
  if (#nd > 15 or #st > 15 or pn - at > 16 or ps - pn > 16 or kat - ps > 16)
    and (big(nd) or big(st) or big(string.sub(v, at, pn - 2)) or big(string.sub(v, pn, ps - 2))
      or big(string.sub(v, ps, kat - 2))) then
    return 'a number exceeds 2^53-1'
  end
  return nil, s, nd, st, fl, at, kat
end

-- The fields a dequeue reads (status, done count, array), checked as record_fields checks them;
-- the rest of the record is not read, so it is left to the scripts that read it. Nil and the
-- reason when they do not parse; else nil, then status, done, array (texts).
local function record_head(v)
  local s, nd, arr = str_match(v, '^(%u)|(%d+)|%d*|[^|]*|(%d+)|')
  if not s then
    return 'does not match S|done|stamp|flags|array|...'
  end
  if not VALID[s] then
    return 'unknown status ' .. s
  end
  if (#nd > 15 or #arr > 15) and (big(nd) or big(arr)) then
    return 'a number exceeds 2^53-1'
  end
  return nil, s, nd, arr
end

local function corrupt(id, v, why)
  return fail('INVALID', 'task ' .. id .. ' has a corrupt record (' .. why .. '): ' .. string.sub(v, 1, 200)
    .. '; nothing was written (see swarm-redis verify)')
end

-- Check the stored records of `ids` (missing ones are fine): one HMGET per 4,000 ids.
-- Returns an error reply or nil.
local function chk_records(ids)
  for i = 1, #ids, 4000 do
    local last = math.min(i + 3999, #ids)
    local raws = redis.call('HMGET', K.task, unpack(ids, i, last))
    for j = i, last do
      local v = raws[j - i + 1]
      local why = v and record_fields(v)
      if why then
        return corrupt(ids[j], v, why)
      end
    end
  end
  return nil
end

-- A children list as register and redefine take it: ids joined by ",", or the marker "*<m>"
-- (1 <= m <= KIDS_SLICES_MAX) of ids registered in K.kids first (register_kids).
local function chk_children(v, what)
  if string.match(v, '^[%d,%-]*$') then
    return nil
  end
  local m = string.match(v, '^%*(%d+)$')
  if m and #m <= 5 and tonumber(m) >= 1 and tonumber(m) <= KIDS_SLICES_MAX then
    return nil
  end
  return fail('INVALID', 'downstream ids of ' .. what .. ' must be integers joined by "," or *<slices>')
end

-- The slices 1..m of task `id` in K.kids (a marker "*<m>" about to be stored): an error reply
-- naming the first one missing, or nil. One HEXISTS per slice (m <= KIDS_SLICES_MAX).
local function chk_slices(id, children)
  local m = tonumber(string.match(children, '^%*(%d+)$') or '0')
  for k = 1, m do
    if redis.call('HEXISTS', K.kids, id .. '#' .. k) == 0 then
      return fail('INVALID', 'task ' .. id .. ': slice ' .. k .. ' of ' .. m
        .. ' of its downstream ids is not registered (register_kids first); nothing was written')
    end
  end
  return nil
end

-- register's ARGV from `first` on: n, then per task id, status, array id, nup, done, children,
-- resource key; then n arrays, then per array id, limit. Definition numbers in 0..2^53-1 with
-- done <= nup; a new task whose children are the marker "*<m>" has its m slices in K.kids; the
-- records of tasks that exist already parse (they are reported back).
local function chk_register(first)
  local e = chk_int(ARGV[first], 'number of tasks')
  if e then
    return e
  end
  local n = tonumber(ARGV[first])
  if first + n * 7 > #ARGV then
    return fail('INVALID', 'register: ' .. n .. ' tasks announced, fewer sent')
  end
  local ids, marked = {}, {}
  for i = 0, n - 1 do
    local j = first + 1 + i * 7
    local id = ARGV[j]
    local what = 'task ' .. tostring(id)
    e = chk_id(id, 'task id') or chk_status(ARGV[j + 1], what)
      or chk_int(ARGV[j + 2], 'array id of ' .. what) or chk_int(ARGV[j + 3], 'num_upstreams of ' .. what)
      or chk_int(ARGV[j + 4], 'num_upstreams_done of ' .. what) or chk_rkey(ARGV[j + 6], what)
    if e then
      return e
    end
    if tonumber(ARGV[j + 4]) > tonumber(ARGV[j + 3]) then
      return fail('INVALID', 'num_upstreams_done of ' .. what .. ' (' .. ARGV[j + 4]
        .. ') exceeds its num_upstreams (' .. ARGV[j + 3] .. ')')
    end
    e = chk_children(ARGV[j + 5], what)
    if e then
      return e
    end
    ids[#ids + 1] = id
    if string.byte(ARGV[j + 5], 1) == 42 then
      marked[#marked + 1] = j
    end
  end
  local a = first + 1 + n * 7
  e = chk_int(ARGV[a], 'number of arrays')
  if e then
    return e
  end
  local na = tonumber(ARGV[a])
  if a + na * 2 ~= #ARGV then
    return fail('INVALID', 'register: ' .. na .. ' arrays announced, ' .. ((#ARGV - a) / 2) .. ' sent')
  end
  e = chk_array_pairs(a + 1, na)
  if e then
    return e
  end
  -- a new record with a marker needs every slice of its downstream ids (an existing one is kept)
  for _, j in ipairs(marked) do
    if redis.call('HEXISTS', K.task, ARGV[j]) == 0 then
      e = chk_slices(ARGV[j], ARGV[j + 5])
      if e then
        return e
      end
    end
  end
  return chk_records(ids)
end

-- enqueue/enqueue_fringe pairs from ARGV[first]: task id, resource key; the records parse.
local function chk_queue_pairs(first)
  if (#ARGV - first + 1) % 2 ~= 0 then
    return fail('INVALID', 'expected (task id, resource key) pairs')
  end
  local ids = {}
  for i = first, #ARGV, 2 do
    local e = chk_id(ARGV[i], 'task id') or chk_rkey(ARGV[i + 1], 'task ' .. tostring(ARGV[i]))
    if e then
      return e
    end
    ids[#ids + 1] = ARGV[i]
  end
  return chk_records(ids)
end

-- repair ops from ARGV[first]: n, then per op code, subject, a, b; counter ops carry integers.
local function chk_repair(first)
  local e = chk_int(ARGV[first], 'number of repair ops')
  if e then
    return e
  end
  local n = tonumber(ARGV[first])
  if first + n * 4 ~= #ARGV then
    return fail('INVALID', 'repair: ' .. n .. ' ops announced, ' .. ((#ARGV - first) / 4) .. ' sent')
  end
  for i = 0, n - 1 do
    local j = first + 1 + i * 4
    local code = ARGV[j]
    if code == 'done' or code == 'active' or code == 'reserved' then
      local lo = code == 'done' and 0 or -MAX_SAFE
      local v = ARGV[j + 3]
      if #v > 17 or not string.match(v, '^%-?%d+$') or tonumber(v) < lo or tonumber(v) > MAX_SAFE then
        return fail('INVALID', 'repair ' .. code .. ' ' .. ARGV[j + 1] .. ': value ' .. v .. ' is not an integer in range')
      end
    end
    if code == 'done' or code == 'sets' or code == 'queue' or code == 'qres' then
      e = chk_records({ARGV[j + 1]})
      if e then
        return e
      end
    end
  end
  return nil
end
