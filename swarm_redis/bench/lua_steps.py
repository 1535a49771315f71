"""What one step of a script costs inside Redis: Lua snippets for the callgrind harness.

Each step runs ``n`` times in a script of its own, after the same setup (``n`` task records and
ids in Lua tables, a hash ``big`` and a set ``bigs`` of ``n`` tasks) and between two full
garbage collections, so the garbage a step makes is paid inside its own count. The count of the
setup alone is taken away: a figure is the instructions of one step, as Redis runs it.
``python -m swarm_redis.bench.instructions steps`` prints them (docs/benchmarks.md quotes them).
"""

from __future__ import annotations

#: Keys of the steps (on the harness's private server only).
BIG_HASH, BIG_SET, SCRATCH = "cg:steps:big", "cg:steps:bigs", "cg:steps:h"

_SETUP = f"""
local recs, ids = {{}}, {{}}
for i = 1, N do
  recs[i] = 'G|' .. (i % 3) .. '|1700000000000000||12|3|0|' .. (i + 1000) .. ',' .. (i + 2000)
  ids[i] = tostring(100000 + i)
end
local LIST = table.concat(ids, ',', 1, math.min(N, 500))
redis.call('DEL', '{SCRATCH}')
if redis.call('EXISTS', '{BIG_HASH}') == 0 then
  for i = 1, N do
    redis.call('HSET', '{BIG_HASH}', ids[i], recs[i])
    redis.call('SADD', '{BIG_SET}', ids[i])
  end
end
collectgarbage('collect')
"""

#: name -> (what it is, the Lua of n steps; ``N`` is n, ``recs``/``ids``/``LIST`` the setup's).
STEPS: dict[str, tuple[str, str]] = {
    "record match": (
        "a task record matched against the whole grammar (8 captures)",
        "local m = string.match for i = 1, N do local a, b, c, d, e, f, g, h = m(recs[i], "
        "'^(%u)|(%d+)|(%d*)|([^|]*)|()%d+|()%d+|()%d+|()[%d,%-]*$') end",
    ),
    "head match": (
        "the status and done count of a record (2 captures and a position)",
        "local m = string.match for i = 1, N do local a, b, c = m(recs[i], '^(%u)|(%d+)|()') end",
    ),
    "record rebuilt": (
        "a record written back: five pieces and its tail joined",
        "local sub = string.sub for i = 1, N do "
        "local s = 'D' .. '|' .. '3' .. '|' .. '' .. '|' .. 'p' .. '|' .. sub(recs[i], 20) end",
    ),
    "reply entry": (
        "one 'id:status:done:old' reply entry (a string of four pieces)",
        "for i = 1, N do local s = ids[i] .. ':R:' .. '0' .. ':I' end",
    ),
    "number to text": (
        "tostring of an integer (a sprintf)",
        "for i = 1, N do local x = tostring(i) end",
    ),
    "text to number": (
        "tonumber of an id (a strtod)",
        "for i = 1, N do local x = tonumber(ids[i]) end",
    ),
    "empty table": ("a table created (and collected)", "for i = 1, N do local t = {} end"),
    "record table": (
        "a 10-slot table kept in a map by id (a loaded record)",
        "local m = {} for i = 1, N do m[ids[i]] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10} end",
    ),
    "id split": (
        "one id of a 500-id list split with string.gmatch",
        "for i = 1, N, 500 do local out, n = {}, 0 "
        "for id in string.gmatch(LIST, '[^,]+') do n = n + 1 out[n] = id end end",
    ),
    "HMGET element": (
        "one field of a bulk HMGET of an existing hash (read into Lua)",
        f"for i = 1, N, 1000 do local r = redis.call('HMGET', '{BIG_HASH}', "
        "unpack(ids, i, math.min(N, i + 999))) end",
    ),
    "HSET field": (
        "one field overwritten by a bulk HSET (argument list built in Lua)",
        "local a = {} for i = 1, N do a[2 * i - 1] = ids[i] a[2 * i] = recs[i] end "
        f"for i = 1, N, 1000 do redis.call('HSET', '{BIG_HASH}', "
        "unpack(a, 2 * i - 1, math.min(2 * N, 2 * i + 1998))) end",
    ),
    "SMISMEMBER member": (
        "one member of a bulk SMISMEMBER",
        f"for i = 1, N, 1000 do local r = redis.call('SMISMEMBER', '{BIG_SET}', "
        "unpack(ids, i, math.min(N, i + 999))) end",
    ),
    "redis.call": (
        "one redis.call of a one-field command (HINCRBY)",
        f"for i = 1, N do redis.call('HINCRBY', '{SCRATCH}', 'x', 1) end",
    ),
}


def scripts(name: str, n: int) -> tuple[str, str]:
    """The setup-only script and the script with ``n`` steps ``name``."""
    body = STEPS[name][1]
    head = f"local N = {n}\n{_SETUP}"
    tail = "\ncollectgarbage('collect')\nreturn 0\n"
    return head + tail, head + body + tail
