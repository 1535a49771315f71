"""The floor of a storage layout: the lifecycle in Lua with nothing but the writes it needs.

The real scripts check their input and every stored value they touch, make every call safe to
send twice (the reply cache), keep the queue's indexes for bounded removal, record events and
answer what the client needs to keep its view. A *floor* does none of that: it claims, answers
and completes tasks of a layered DAG on the happy path, with the fewest commands and Lua steps a
layout allows. Its instruction count (``python -m swarm_redis.bench.instructions floor``) is a
lower bound for any set of scripts on that layout, which says whether a cost target is in reach
of the layout before anyone rewrites the scripts for it.

Two layouts, the same steps, the same keys around the task state:

* ``record``: today's bytes, one ``S|done|stamp|flags|array|nup|start|children`` string per
  task in a hash; a status change rewrites the record (letter in front, the rest unchanged); a
  credit matches the child's record and rewrites its done count;
* ``native``: a hash ``st`` (id -> status letter), a hash ``left`` (id -> upstreams not yet
  done, deleted at 0) and a hash ``kids`` (id -> "c1,c2,..."): no string is parsed or rebuilt.

Both keep the status sets ``s:<S>``, the ready list, the claimed set, the batch records and the
reserved counter. Not for production: the keys hang off one prefix (``ARGV[1]``), nothing is
checked, nothing is retried.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from swarm_redis.bench.loop import Ops
from swarm_redis.engine.keys import glob_escape
from swarm_redis.testing.dags import DagShape

#: The layouts a floor exists for.
LAYOUTS: tuple[str, ...] = ("record", "native")

_CLAIM = """
local p = ARGV[1]
local ids = redis.call('LPOP', p .. 'ready', ARGV[2])
if not ids then
  return false
end
redis.call('SADD', p .. 'claimed', unpack(ids))
local list = table.concat(ids, ',')
redis.call('HSET', p .. 'batches', ARGV[3], list)
redis.call('HINCRBY', p .. 'reserved', 'run', #ids)
return list
"""

# ARGV: prefix, batch id ("" for an update outside a batch), n, then n pairs id, status.
# Reply: {"id:new:old ..." changed, "id:left ..." credited, "id ..." queued}.
_UPDATE_HEAD = """
local p, bid, n = ARGV[1], ARGV[2], tonumber(ARGV[3])
local find, sub, match, tonumber, unpack = string.find, string.sub, string.match, tonumber, unpack
local in_batch, batch_ids, nb
if bid ~= '' then
  local b = redis.call('HGET', p .. 'batches', bid)
  if not b then
    return redis.error_reply('LEASELOST batch ' .. bid)
  end
  in_batch, batch_ids, nb = {}, {}, 0
  local at = 1
  while true do
    local comma = find(b, ',', at, true)
    local id = sub(b, at, (comma or 0) - 1)
    nb = nb + 1
    batch_ids[nb] = id
    in_batch[id] = true
    if not comma then
      break
    end
    at = comma + 1
  end
end
local ids, to = {}, {}
for i = 1, n do
  ids[i] = ARGV[2 + 2 * i]
  to[i] = ARGV[3 + 2 * i]
end
local groups, changed, nc, done, nd = {}, {}, 0, {}, 0
local credited, queued = '', ''
-- the n first entries of `list` as one command on the run key `key`, when there are any
local function bulk(cmd, key, list, n)
  if n > 0 then
    redis.call(cmd, p .. key, unpack(list, 1, n))
  end
end
local function moved(id, s, t)
  nc = nc + 1
  changed[nc] = id .. ':' .. t .. ':' .. s
  local key = s .. t
  local g = groups[key]
  if not g then
    g = {n = 0}
    groups[key] = g
  end
  g.n = g.n + 1
  g[g.n] = id
  if t == 'D' then
    nd = nd + 1
    done[nd] = id
  end
  if in_batch then
    in_batch[id] = false
  end
end
local function takes(id, s, t)
  if not s or s == t or s == 'D' or s == 'F' then
    return false
  end
  return not in_batch or (in_batch[id] and (s == 'G' or s == 'A'))
end
"""

_UPDATE_TAIL = """
for key, g in pairs(groups) do
  redis.call('SREM', p .. 's:' .. sub(key, 1, 1), unpack(g, 1, g.n))
  redis.call('SADD', p .. 's:' .. sub(key, 2, 2), unpack(g, 1, g.n))
end
if in_batch then
  local back, nback = {}, 0
  for i = 1, nb do
    if in_batch[batch_ids[i]] then
      nback = nback + 1
      back[nback] = batch_ids[i]
    end
  end
  if nback > 0 then
    local cur = status_of(back)
    local again, na = {}, 0
    for i = 1, nback do
      if cur[i] == 'G' or cur[i] == 'A' then
        na = na + 1
        again[na] = back[i]
      end
    end
    bulk('LPUSH', 'ready', again, na)
  end
  redis.call('SREM', p .. 'claimed', unpack(batch_ids, 1, nb))
  redis.call('HDEL', p .. 'batches', bid)
  redis.call('HINCRBY', p .. 'reserved', 'run', -nb)
end
return {table.concat(changed, ' '), credited, queued}
"""

# The children of `list` ("c1,c2,...") credited once each into credit/uniq/nu.
_SPLIT_CREDITS = """
local credit, uniq, nu = {}, {}, 0
local function credit_all(list)
  local at = 1
  while true do
    local comma = find(list, ',', at, true)
    local c = sub(list, at, (comma or 0) - 1)
    local k = credit[c]
    if k then
      credit[c] = k + 1
    else
      credit[c] = 1
      nu = nu + 1
      uniq[nu] = c
    end
    if not comma then
      break
    end
    at = comma + 1
  end
end
"""

_RECORD_UPDATE = (
    _UPDATE_HEAD
    + _SPLIT_CREDITS
    + """
local function status_of(list)
  local recs = redis.call('HMGET', p .. 'task', unpack(list))
  for i = 1, #list do
    recs[i] = recs[i] and sub(recs[i], 1, 1)
  end
  return recs
end
local recs = redis.call('HMGET', p .. 'task', unpack(ids))
local hs, nh = {}, 0
for i = 1, n do
  local id, v, t = ids[i], recs[i], to[i]
  local s = v and sub(v, 1, 1)
  if takes(id, s, t) then
    nh = nh + 2
    hs[nh - 1] = id
    hs[nh] = t .. sub(v, 2)
    moved(id, s, t)
    if t == 'D' then
      local kat = match(v, '^%u|%d+|%d*|[^|]*|%d+|%d+|%d+|()')
      if kat <= #v then
        credit_all(sub(v, kat))
      end
    end
  end
end
bulk('HSET', 'task', hs, nh)
if nu > 0 then
  local kids = redis.call('HMGET', p .. 'task', unpack(uniq, 1, nu))
  local ks, nk, cred, ready, nr = {}, 0, {}, {}, 0
  for i = 1, nu do
    local c, v = uniq[i], kids[i]
    local s, dn, after, nup = match(v, '^(%u)|(%d+)()|%d*|[^|]*|%d+|(%d+)|')
    local now = tonumber(dn) + credit[c]
    nk = nk + 2
    ks[nk - 1] = c
    ks[nk] = s .. '|' .. now .. sub(v, after)
    cred[i] = c .. ':' .. now
    if s == 'G' and now == tonumber(nup) then
      nr = nr + 1
      ready[nr] = c
    end
  end
  redis.call('HSET', p .. 'task', unpack(ks, 1, nk))
  bulk('RPUSH', 'ready', ready, nr)
  credited, queued = table.concat(cred, ' '), table.concat(ready, ' ')
end
"""
    + _UPDATE_TAIL
)

_NATIVE_UPDATE = (
    _UPDATE_HEAD
    + _SPLIT_CREDITS
    + """
local function status_of(list)
  return redis.call('HMGET', p .. 'st', unpack(list))
end
local cur = status_of(ids)
local hs, nh = {}, 0
for i = 1, n do
  local id, s, t = ids[i], cur[i], to[i]
  if takes(id, s, t) then
    nh = nh + 2
    hs[nh - 1] = id
    hs[nh] = t
    moved(id, s, t)
  end
end
bulk('HSET', 'st', hs, nh)
if nd > 0 then
  local kids = redis.call('HMGET', p .. 'kids', unpack(done, 1, nd))
  for i = 1, nd do
    if kids[i] then
      credit_all(kids[i])
    end
  end
end
if nu > 0 then
  local left = redis.call('HMGET', p .. 'left', unpack(uniq, 1, nu))
  local ls, nl, zero, nz, cred = {}, 0, {}, 0, {}
  for i = 1, nu do
    local c = uniq[i]
    local now = tonumber(left[i]) - credit[c]
    cred[i] = c .. ':' .. now
    if now > 0 then
      nl = nl + 2
      ls[nl - 1] = c
      ls[nl] = now
    else
      nz = nz + 1
      zero[nz] = c
    end
  end
  bulk('HSET', 'left', ls, nl)
  local ready, nr = {}, 0
  if nz > 0 then
    redis.call('HDEL', p .. 'left', unpack(zero, 1, nz))
    local sts = status_of(zero)
    for i = 1, nz do
      if sts[i] == 'G' then
        nr = nr + 1
        ready[nr] = zero[i]
      end
    end
  end
  bulk('RPUSH', 'ready', ready, nr)
  credited, queued = table.concat(cred, ' '), table.concat(ready, ' ')
end
"""
    + _UPDATE_TAIL
)

_SCRIPTS = {"record": _RECORD_UPDATE, "native": _NATIVE_UPDATE}


def _registration(layout: str, shape: DagShape, p: str) -> Iterator[tuple[str, dict[str, str]]]:
    """(hash key, fields) of the DAG's task state in ``layout``, in slices of 1,000 tasks."""
    for lo in range(0, shape.n_tasks, 1000):
        task: dict[str, str] = {}
        st: dict[str, str] = {}
        left: dict[str, str] = {}
        kids: dict[str, str] = {}
        for i in range(lo, min(lo + 1000, shape.n_tasks)):
            tid = str(shape.first_id + i)
            children = ",".join(str(shape.first_id + c) for c in shape.children_of(i))
            nup = len(shape.parents_of(i))
            if layout == "record":
                task[tid] = f"G|0|||{shape.array_of(i)}|{nup}|0|{children}"
            else:
                st[tid] = "G"
                if nup:
                    left[tid] = str(nup)
                if children:
                    kids[tid] = children
        for key, fields in (("task", task), ("st", st), ("left", left), ("kids", kids)):
            if fields:
                yield p + key, fields


def floor_run(client: Any, layout: str, shape: DagShape, batch: int, prefix: str) -> Ops:
    """Register ``shape`` in ``layout`` under ``prefix`` (roots queued) and return its
    lifecycle operations (claim -> ack Q -> R -> D) for :func:`~swarm_redis.bench.loop.lifecycle_loop`."""
    if layout not in _SCRIPTS:
        raise ValueError(f"unknown layout {layout!r}; choose from {', '.join(LAYOUTS)}")
    leftover = list(client.scan_iter(match=glob_escape(prefix) + "*", count=1000))
    if leftover:
        raise ValueError(f"prefix {prefix!r} already holds {len(leftover)} keys")
    claim = client.register_script(_CLAIM)
    update = client.register_script(_SCRIPTS[layout])
    pipe = client.pipeline(transaction=False)
    for key, fields in _registration(layout, shape, prefix):
        pipe.hset(key, mapping=fields)
    ids = [str(shape.first_id + i) for i in range(shape.n_tasks)]
    for lo in range(0, len(ids), 1000):
        pipe.sadd(prefix + "s:G", *ids[lo : lo + 1000])
    pipe.rpush(prefix + "ready", *(str(t) for t in shape.layer_ids(0)))
    pipe.execute()
    batches = iter(range(1, 1 << 62))

    def take() -> tuple[str, list[int]] | None:
        bid = str(next(batches))
        got = claim(args=[prefix, batch, bid])
        if got is None:
            return None
        text = got.decode() if isinstance(got, bytes) else str(got)
        return bid, [int(t) for t in text.split(",")]

    def send(bid: str, statuses: dict[int, str]) -> Any:
        flat: list[Any] = [prefix, bid, len(statuses)]
        for tid, status in statuses.items():
            flat += [tid, status]
        return update(args=flat)

    return Ops(take, send, lambda s: send("", s), lambda s: send("", s))
