"""Every mutation is safe to send twice (issue 10, finding 5).

A call delivered twice -- redis-py's automatic retry (same EVALSHA, same ARGV), the caller
calling again after a timeout, a failover -- answers the first call's reply and changes nothing
more: each mutating script looks its request id up in the run's reply cache first
(``lua/includes/idem.lua``, wrapped around every script by ``scripts.py``).

* every script call of a whole lifecycle delivered twice: same reply, no key changed;
* the Lua reply encoding round-trips every reply shape exactly; every script loads;
* the caller's retry after a timeout reuses the request id (sync and async fronts);
* a replay does not look like lost writes; STATELOST still guards it;
* the cache stays bounded (count, bytes, age) with bounded work per call;
* a stall past ``socket_timeout`` (DEBUG SLEEP) with a default redis-py client during claim,
  ack, apply and dequeue: redis-py re-sends, nothing leaks, counters exact.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import redis
import redis.asyncio
from fronts import Front
from replies import as_bytes
from servers import MakeClient

from swarm_redis import RedisSwarmState, StateUpdate
from swarm_redis.demo.redis_server import RedisProcess, start_redis_server
from swarm_redis.engine import commands as cmd
from swarm_redis.engine import scripts
from swarm_redis.engine.commands import Call, ScriptCall
from swarm_redis.engine.keys import RunKeys
from swarm_redis.engine.transport import SyncTransport
from swarm_redis.errors import InvalidInputError, LeaseLostError, StateLostError, SwarmRedisError
from swarm_redis.records import ArrayRecord, TaskRecord
from swarm_redis.testing.dags import from_edges

#: Every script that writes (all but the read-only ones) must be exercised by the lifecycle.
MUTATING = {s.name for s in scripts.all_scripts()} - set(scripts.READ_ONLY_SCRIPTS)


def dump_all(client: Any, keys: RunKeys) -> dict[str, Any]:
    """Every key of the run: its type, content and whether it has a TTL; not the reap mutex,
    which expires by itself. Hashes, sets and sorted sets by content: DUMP of a hash table
    depends on its iteration order, which a read can move (incremental rehash)."""
    out: dict[str, Any] = {}
    for key in keys.all:
        if key == keys.reap_lock:
            continue
        kind = client.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "hash":
            value: Any = client.hgetall(key)
        elif kind == "set":
            value = client.smembers(key)
        elif kind == "zset":
            value = client.zrange(key, 0, -1, withscores=True)
        else:
            value = client.dump(key)
        out[key] = (kind, value, int(client.pttl(key)) >= 0)
    return out


def hint(client: Any, key: str, field: str) -> int:
    value = client.hget(key, field)
    return int(value) if value is not None else 0


def chain(n: int, array_id: int = 1) -> list[TaskRecord]:
    """n independent tasks plus a two-task chain (so completions credit downstreams)."""
    return from_edges(n + 2, [(n + 1, n + 2)], arrays=array_id)


# --- every call delivered twice -----------------------------------------------------------------


class Twice:
    """A transport that delivers every batch of calls holding a script twice, the way redis-py
    re-sends after a timeout, and checks that the second delivery answers the same and changes
    no key of the run."""

    def __init__(self, inner: SyncTransport, client: Any, keys: RunKeys) -> None:
        self.inner = inner
        self.client = client
        self.keys = keys
        self.scripts: set[str] = set()
        self.replays = 0

    def _deliver(self, calls: Sequence[Call]) -> tuple[list[Any] | None, Exception | None]:
        try:
            return self.inner.execute(calls), None
        except (redis.ResponseError, SwarmRedisError) as exc:
            return None, exc

    def execute(self, calls: Sequence[Call]) -> list[Any]:
        first, error = self._deliver(calls)
        names = [c.script for c in calls if isinstance(c, ScriptCall)]
        if names:
            self.scripts.update(names)
            before = dump_all(self.client, self.keys)
            second, error2 = self._deliver(calls)
            assert dump_all(self.client, self.keys) == before, f"re-sent {names} changed keys"
            assert second == first, f"re-sent {names} answered {second!r}, first {first!r}"
            assert type(error2) is type(error) and str(error2) == str(error)
            self.replays += 1
        if error is not None:
            raise error
        assert first is not None
        return first


def test_every_script_call_of_a_lifecycle_answers_the_same_twice(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    r = make_client()
    st = RedisSwarmState._for_existing_run(r, run_id, prefix=prefix)
    twice = Twice(st._transport, r, st.keys)
    st._transport = twice
    st._run(st._core.create(1, run_id, 1, 100, "B"))
    st.add_arrays([ArrayRecord(1, 10)])
    tasks = chain(6)
    st.add_tasks(tasks)
    # the first slice of a long downstream list (register_kids), its task registered later
    slices = [(99, 1, ",".join(map(str, range(100, 100 + cmd.KIDS_SLICE))))]
    st._run(st._core.scripts([cmd.register_kids(st.keys, st._core.caller(), "new", slices)]))
    st.num_previously_complete = 2
    assert st.enqueue_initial_fringe() > 0
    st.cache_resources(7, {"mem": "1G"})
    assert st.cache_resources(7, {"mem": "2G"}) == {"mem": "1G"}
    rep = st.join_replica(60, replica_id="a")
    st.heartbeat(rep)
    epoch = st.acquire_leadership(rep)
    assert epoch is not None
    st.renew_leadership(rep, epoch)
    assert st.set_run_status("R", epoch=epoch) == "R"
    batch = st.claim_batch(rep, max_size=2)
    assert batch is not None
    changed = st.ack_batch(rep, batch, {t: "Q" for t in batch.task_ids})
    assert {t.task_id for t in changed} == set(batch.task_ids)
    other = st.claim_batch(rep, max_size=2)
    assert other is not None
    st.release_batch(rep, other)
    taken = st.dequeue_tasks(2)
    assert len(taken) == 2
    st.enqueue_tasks(taken)
    st.apply_update(StateUpdate(task_statuses={t: "R" for t in batch.task_ids}))
    st.apply_update(StateUpdate(task_statuses={t: "D" for t in batch.task_ids}))
    st.apply(StateUpdate(task_statuses={7: "D"}), propagate=False)
    assert st.propagate_completions([tasks[6]]) == [tasks[7]]
    st.compute_initial_upstream_done_counts()
    r.hset(st.keys.pcredit, "3", "1")  # a leftover pending credit: reconcile_credits heals it
    assert st.reconcile().enqueued == 1  # task 8, made ready but not queued
    assert not st.reap(force=True).dead_replicas
    (reply,) = twice.execute([cmd.repair(st.keys, cmd.Caller(st.version), [])])
    assert cmd.decode_repair(reply) == []
    head = tasks[0]  # its DAG part written again as it is (what seal() sends)
    kids = tuple(int(c.task_id) for c in head.downstream_swarm_tasks)
    defs = [(int(head.task_id), int(head.num_upstreams), kids)]
    (reply,) = twice.execute([cmd.redefine(st.keys, cmd.Caller(st.version), defs)])
    assert cmd.decode_redefine(reply)[1] == []
    st.resign_leadership(rep, epoch)
    st.leave(rep)
    done = [t.task_id for t in tasks if t.task_id not in batch.task_ids]
    st.apply_update(StateUpdate(task_statuses=dict.fromkeys(done, "D")))
    assert st.finalize("D")
    assert st.all_tasks_final()
    assert twice.scripts >= MUTATING, f"not exercised: {MUTATING - twice.scripts}"
    assert hint(r, st.keys.counters, "claims") == 2
    assert hint(r, st.keys.counters, "acks") == 1
    assert hint(r, st.keys.counters, "releases") == 1


def test_a_resent_ack_or_release_answers_its_first_result(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    """Sent again with the same ARGV (redis-py's retry), an ack or release that landed answers
    its first reply instead of LeaseLostError; a new call (new request id) is still refused."""
    r = make_client()
    st = RedisSwarmState(1, run_id, 1, 100, redis=r, prefix=prefix)
    st.add_arrays([ArrayRecord(1, 10)])
    st.add_tasks(chain(4))
    st.enqueue_initial_fringe()
    rep = st.join_replica(60, replica_id="a")
    t = SyncTransport(r, run_id)
    for op in ("ack", "release"):
        batch = st.claim_batch(rep, max_size=2)
        assert batch is not None
        caller = cmd.Caller(st.version, "a", rid=cmd.new_request_id())
        if op == "ack":
            changes = [(i, "Q") for i in batch.task_ids]
            call = cmd.ack_batch(
                st.keys, caller, rep.id, rep.incarnation, batch.batch_id,
                propagate=True, stamp=None, changes=changes,
            )  # fmt: skip
        else:
            call = cmd.release_batch(st.keys, caller, rep.id, rep.incarnation, batch.batch_id)
        (first,) = t.execute([call])
        before = dump_all(r, st.keys)
        (again,) = t.execute([call])
        assert again == first
        assert dump_all(r, st.keys) == before
        fresh = cmd.with_request_id(call, cmd.new_request_id())
        with pytest.raises(LeaseLostError):
            t.execute([fresh])


# --- Lua: encoding and loading ----------------------------------------------------------------

_ROUNDTRIP = """
local K = {}
%s
local v = %s
local parts = {}
idem_encode(v, parts)
local enc = table.concat(parts)
if ARGV[1] == 'direct' then
  return v
end
return (idem_decode(enc, 1))
"""

REPLY_SHAPES = [
    "{7, 'a', ''}",
    "{{}, {{}}, {1, {2, {3, {'x:y$z*;_'}}}}}",
    "{9007199254740993, -9007199254740993, 4503599627370496.5, 1e15, -0, 0}",
    "{3.7, -3.7, 0.5, -0.5, 2^62}",
    "{true, false, 'after a false', true}",
    "{'a', nil, 'cut here'}",
    "{redis.status_reply('OK'), redis.error_reply('INVALID nested'), {ok = 'x'}}",
    "{string.rep('\\0\\1\\255:', 300), '-1:', '+2:', '$3:', '*4:'}",
    # flat arrays (more than 8 scalars) take the compact path; others fall back
    "{0, 1, 9, 10, 99, 12345, -1, -0, 0, 'a', '', 'b:c'}",
    "{99999999999999, -99999999999999, 100000000000000, 1, 2, 3, 4, 5, 6, 7}",
    "{1, 2, 3, 4, 5, 6, 7, 8, 9, 2.5, -2.5}",
    "{1, 2, 3, 4, 5, 6, 7, 8, 9, string.rep('x', 127), string.rep('y', 128)}",
    "{1, 2, 3, 4, 5, 6, 7, 8, 9, true, false, 'z'}",
    "(function() local t = {} for i = 1, 9001 do t[i] = i % 3 == 0 and i or ('t' .. i) end "
    "return {5, t, {t}} end)()",
    "{'\\0', '\\255', '[', '[3:', '$', 'i', ';', '*', '-', '+', '_', 7}",
    "{-0.0001, 0.0001, 1/0 > 0 and 1 or 0, 42, 42, 42, 42, 42, 42, 42}",
    "redis.status_reply('PONG')",
    "'just a string'",
    "42",
]


def plain(value: Any) -> Any:
    """A reply with error elements (exception objects) as comparable tuples."""
    if isinstance(value, Exception):
        return ("error", type(value).__name__, str(value))
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


@pytest.mark.parametrize("shape", REPLY_SHAPES)
def test_reply_encoding_roundtrips_what_redis_would_answer(r: redis.Redis, shape: str) -> None:
    idem = (scripts.lua_dir() / "includes" / "idem.lua").read_text()
    script = _ROUNDTRIP % (idem, shape)
    try:
        direct = r.eval(script, 0, "direct")
    except redis.ResponseError as exc:
        direct = ("error", str(exc))
    try:
        decoded = r.eval(script, 0, "decoded")
    except redis.ResponseError as exc:
        decoded = ("error", str(exc))
    assert plain(decoded) == plain(direct)


def test_every_script_loads_and_writers_are_wrapped(r: redis.Redis) -> None:
    """SCRIPT LOAD compiles each script (Lua 5.1 limits: 200 locals, 60 upvalues ...)."""
    every = scripts.all_scripts()
    assert MUTATING and set(scripts.READ_ONLY_SCRIPTS) <= {s.name for s in every}
    for s in every:
        sha = r.script_load(s.source)
        assert (sha.decode() if isinstance(sha, bytes) else sha) == s.sha
        wrapped = "local function idem_body()" in s.source
        assert wrapped == (s.name in MUTATING), s.name


def test_bad_request_ids_are_refused_and_write_nothing(
    r: redis.Redis, run_id: int, prefix: str
) -> None:
    st = RedisSwarmState(1, run_id, 1, 100, redis=r, prefix=prefix)
    t = SyncTransport(r, run_id)
    before = dump_all(r, st.keys)
    for bad in ("#bytes", "a-b", "x" * 65, "é"):
        call = cmd.set_fields(st.keys, cmd.Caller(st.version, rid=bad), {"npc": 3})
        with pytest.raises(InvalidInputError, match="request id"):
            t.execute([call])
    assert dump_all(r, st.keys) == before


# --- caller retries after a timeout -------------------------------------------------------------


class FailOnce:
    """Runs the calls, then raises TimeoutError as if the reply had been lost, once, for the
    first batch holding script ``script`` (the n-th one with ``nth``)."""

    def __init__(self, inner: Any, script: str, nth: int = 1) -> None:
        self.inner = inner
        self.script = script
        self.left = nth
        self.sent: list[str] = []

    def _trip(self, calls: Sequence[Call]) -> bool:
        self.sent += [
            c.script + ":" + cmd.request_id(c) for c in calls if isinstance(c, ScriptCall)
        ]
        if any(isinstance(c, ScriptCall) and c.script == self.script for c in calls):
            self.left -= 1
            return self.left == 0
        return False

    def execute(self, calls: Sequence[Call]) -> Any:
        if asyncio.iscoroutinefunction(self.inner.execute):
            return self._execute_async(calls)
        replies = self.inner.execute(calls)
        if self._trip(calls):
            raise redis.TimeoutError("Timeout reading from socket (simulated)")
        return replies

    async def _execute_async(self, calls: Sequence[Call]) -> list[Any]:
        replies: list[Any] = await self.inner.execute(calls)
        if self._trip(calls):
            raise redis.TimeoutError("Timeout reading from socket (simulated)")
        return replies


def _fail_once(st: Any, script: str, nth: int = 1) -> FailOnce:
    raw = st.raw
    wrapper = FailOnce(raw._transport, script, nth)
    raw._transport = wrapper
    return wrapper


def _restore(st: Any, wrapper: FailOnce) -> None:
    st.raw._transport = wrapper.inner


def test_calling_again_after_a_timeout_answers_the_first_call(
    front: Front, r: redis.Redis, run_id: int, prefix: str
) -> None:
    st = front.state(run_id, prefix=prefix, chunk_budget=4)
    keys = st.keys
    st.add_arrays([ArrayRecord(1, 100)])
    tasks = chain(10)

    # add_tasks in several chunks: the second chunk's reply is lost, the call made again
    w = _fail_once(st, "register", nth=3)
    with pytest.raises(redis.TimeoutError):
        st.add_tasks(tasks)
    st.add_tasks(tasks)
    _restore(st, w)
    assert st.task_count() == 12
    st.enqueue_initial_fringe()

    rep = st.join_replica(60, replica_id="r1")

    # claim: the batch claimed by the lost call is the one the retry gets
    w = _fail_once(st, "claim_batch")
    with pytest.raises(redis.TimeoutError):
        st.claim_batch(rep, max_size=3)
    batch = st.claim_batch(rep, max_size=3)
    _restore(st, w)
    assert batch is not None
    assert r.hlen(keys.batches) == 1
    assert hint(r, keys.counters, "claims") == 1
    assert hint(r, keys.reserved, "run") == 3

    # ack: the retry answers the first ack's result, not LeaseLostError
    w = _fail_once(st, "ack_batch")
    answer = {t: "Q" for t in batch.task_ids}
    with pytest.raises(redis.TimeoutError):
        st.ack_batch(rep, batch, answer)
    changed = st.ack_batch(rep, batch, answer)
    _restore(st, w)
    assert {t.task_id for t in changed} == set(batch.task_ids)
    assert hint(r, keys.counters, "acks") == 1
    assert hint(r, keys.reserved, "run") == 0

    # dequeue: the tasks taken by the lost call are the ones the retry returns
    queued = st.ready_to_run_len()
    w = _fail_once(st, "dequeue")
    with pytest.raises(redis.TimeoutError):
        st.dequeue_tasks(2)
    taken = st.dequeue_tasks(2)
    _restore(st, w)
    assert len(taken) == 2
    assert st.ready_to_run_len() == queued - 2

    # enqueue them back: same
    w = _fail_once(st, "enqueue")
    with pytest.raises(redis.TimeoutError):
        st.enqueue_tasks(taken)
    assert st.enqueue_tasks(taken) == taken
    _restore(st, w)
    assert st.ready_to_run_len() == queued

    # apply in chunks: the second chunk's reply is lost; the retry replays chunks 1-2, runs 3+
    done = {t: "D" for t in batch.task_ids}
    w = _fail_once(st, "apply_update", nth=2)
    with pytest.raises(redis.TimeoutError):
        st.apply_update(StateUpdate(task_statuses={t: "R" for t in batch.task_ids}))
    st.apply_update(StateUpdate(task_statuses={t: "R" for t in batch.task_ids}))
    _restore(st, w)
    assert hint(r, keys.counters, "to:R") == 3
    st.apply_update(StateUpdate(task_statuses=done))
    assert st.counts()["D"] == 3

    # run status and leave
    w = _fail_once(st, "set_run_status")
    with pytest.raises(redis.TimeoutError):
        st.set_run_status("R")
    assert st.set_run_status("R") == "R"
    _restore(st, w)
    w = _fail_once(st, "leave")
    with pytest.raises(redis.TimeoutError):
        st.leave(rep)
    st.leave(rep)
    _restore(st, w)
    assert r.hlen(keys.replicas) == 0


def test_a_chunked_dequeue_that_fails_midway_loses_no_task(
    front: Front, r: redis.Redis, run_id: int, prefix: str
) -> None:
    """dequeue_tasks(600) goes in calls of 250: the second one's reply is lost. The tasks the
    first call took go back to the head, so the caller's retry gets all 600, each once."""
    st = front.state(run_id, prefix=prefix)
    st.add_arrays([ArrayRecord(1, 10**6)])
    st.add_tasks([TaskRecord(i, 1) for i in range(1, 601)])
    st.enqueue_initial_fringe()
    w = _fail_once(st, "dequeue", nth=2)
    with pytest.raises(redis.TimeoutError):
        st.dequeue_tasks(600)
    _restore(st, w)
    # the lost call's 250 are out of the queue (its reply waits in the cache); the first
    # call's 250 are back at the head
    assert st.ready_to_run_len() == 350
    assert [t.task_id for t in st.ready_to_run_list(0, 2)] == [1, 2, 3]
    taken = [t.task_id for t in st.dequeue_tasks(600)]
    assert sorted(taken) == list(range(1, 601)) and len(taken) == 600
    assert st.ready_to_run_len() == 0


def test_a_lease_extension_in_doubt_is_checked_again_not_replayed(
    front: Front, r: redis.Redis, run_id: int, prefix: str
) -> None:
    """heartbeat and renew_leadership lost in doubt, then the lease is lost: the next call
    tells so (a replay answered the old success: renew is the fence before a final status
    goes to the server)."""
    st = front.state(run_id, prefix=prefix)
    other = front.state(run_id, prefix=prefix)
    rep = st.join_replica(0.3, replica_id="slow")
    epoch = st.acquire_leadership(rep)
    assert epoch is not None
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("leadership", lambda: st.renew_leadership(rep, epoch)),
        ("heartbeat", lambda: st.heartbeat(rep)),
    ]
    for script, call in calls:
        w = _fail_once(st, script)
        with pytest.raises(redis.TimeoutError):
            call()
        _restore(st, w)
    time.sleep(0.5)  # both leases expire; another replica takes the lead and reaps "slow"
    taker = other.join_replica(30, replica_id="taker")
    assert other.acquire_leadership(taker) == epoch + 1
    with pytest.raises(LeaseLostError):  # its member lease expired (FencedError is one too)
        st.renew_leadership(rep, epoch)
    other.reap(force=True)
    with pytest.raises(LeaseLostError):
        st.heartbeat(rep)


def test_join_again_after_a_timeout_is_the_same_member(
    front: Front, r: redis.Redis, run_id: int, prefix: str
) -> None:
    st = front.state(run_id, prefix=prefix)
    for n, replica_id in enumerate(("named", None), start=1):
        w = _fail_once(st, "join")
        with pytest.raises(redis.TimeoutError):
            st.join_replica(30, replica_id=replica_id)
        rep = st.join_replica(30, replica_id=replica_id)
        _restore(st, w)
        assert replica_id is None or rep.id == replica_id
        assert r.hlen(st.keys.replicas) == 1
        assert hint(r, st.keys.counters, "joins") == n
        st.leave(rep)


# --- replay vs lost-write detection ------------------------------------------------------------


def test_a_replay_after_later_writes_is_not_taken_for_lost_writes(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    """A times out but landed (version v), B lands (v+1), A re-sent: A's first answer, no
    StateLostError, and the core keeps the highest version."""
    r = make_client()
    st = RedisSwarmState(1, run_id, 1, 100, redis=r, prefix=prefix)
    st.add_arrays([ArrayRecord(1, 10)])
    st.add_tasks(chain(6))
    st.enqueue_initial_fringe()
    rep = st.join_replica(60, replica_id="a")
    w = FailOnce(st._transport, "claim_batch")
    st._transport = w
    with pytest.raises(redis.TimeoutError):
        st.claim_batch(rep, max_size=2)  # A: landed, reply lost
    st._transport = w.inner
    landed = st.version
    st.cache_resources(1, {"x": 1})  # B
    st.apply_update(StateUpdate(task_statuses={5: "Q"}))  # B
    assert st.version > landed
    batch = st.claim_batch(rep, max_size=2)  # A again: replayed
    assert batch is not None
    assert hint(r, st.keys.counters, "claims") == 1
    assert r.hlen(st.keys.batches) == 1
    assert st.version == int(r.hget(st.keys.meta, "version") or 0)

    # at the script level: the replay answers the current version, the rest as first answered
    t = SyncTransport(r, run_id)
    call = cmd.set_fields(st.keys, cmd.Caller(st.version, rid="abc123"), {"npc": 4})
    (first,) = t.execute([call])
    (bump,) = t.execute([cmd.set_fields(st.keys, cmd.Caller(first[0]), {"npc": 5})])
    (again,) = t.execute([call])
    assert int(again[0]) == int(bump[0]) > int(first[0])
    assert again[1:] == first[1:]
    assert r.hget(st.keys.meta, "npc") == b"5"

    # a replay still refuses a caller that saw more than Redis holds (lost writes)
    lost = cmd.with_request_id(
        cmd.set_fields(st.keys, cmd.Caller(int(bump[0]) + 10), {"npc": 4}), "abc123"
    )
    with pytest.raises(StateLostError):
        t.execute([lost])


# --- bounded cache ----------------------------------------------------------------------------


@contextlib.contextmanager
def cache_limits(**limits: int) -> Iterator[None]:
    """Scripts generated with other reply-cache constants, for the duration of a test."""
    old = {name: getattr(scripts, name) for name in limits}
    for name, value in limits.items():
        setattr(scripts, name, value)
    scripts.clear_cache()
    try:
        yield
    finally:
        for name, value in old.items():
            setattr(scripts, name, value)
        scripts.clear_cache()


def _cache_state(r: redis.Redis, keys: RunKeys) -> tuple[int, int, int, int]:
    """(entries in reply_at, replies in replies, #bytes, sum of reply sizes); checks #count."""
    fields = [f for f in map(as_bytes, r.hkeys(keys.replies)) if not f.startswith(b"#")]
    sizes = sum(int(r.hstrlen(keys.replies, f)) for f in fields)
    count = int(r.zcard(keys.reply_at))
    assert hint(r, keys.replies, "#count") == count
    return count, len(fields), hint(r, keys.replies, "#bytes"), sizes


def test_reply_cache_is_capped_by_count_and_bytes(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    r = make_client()
    with cache_limits(REPLY_MAX=20, REPLY_MAX_BYTES=10**9):
        st = RedisSwarmState(1, run_id, 1, 100, redis=r, prefix=prefix)
        for i in range(60):
            st.num_previously_complete = i
        count, fields, total, sizes = _cache_state(r, st.keys)
        assert count == fields == 20
        assert total == sizes
        # the whole cache expires when the run gets no more calls
        for key in (st.keys.replies, st.keys.reply_at):
            assert scripts.REPLY_RETENTION_MS < int(r.pttl(key)) <= scripts.REPLY_RETENTION_MS * 1.1
    with cache_limits(REPLY_MAX=10**6, REPLY_MAX_BYTES=400):
        tasks = [TaskRecord(i, 1) for i in range(1, 41)]
        for t in tasks:  # replies of ~40 bytes each
            st.add_tasks([t])
        count, fields, total, sizes = _cache_state(r, st.keys)
        assert count == fields
        assert total == sizes <= 400
        assert count >= 5


def test_expired_replies_go_a_few_per_call(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    r = make_client()
    with cache_limits(REPLY_RETENTION_MS=3000, REPLY_TRIM=4):
        st = RedisSwarmState(1, run_id, 1, 100, redis=r, prefix=prefix)
        counts = [_cache_state(r, st.keys)[0]]
        for i in range(40):
            st.num_previously_complete = i
            counts.append(_cache_state(r, st.keys)[0])
        # a call adds one reply and drops at most REPLY_TRIM (4) old ones
        assert all(b - a >= -3 for a, b in itertools.pairwise(counts))
        assert counts[-1] >= 20
        time.sleep(1.6)
        st.num_previously_complete = 99  # the run is still used: its cache stays (TTL renewed)
        time.sleep(1.6)  # now every reply but the last is past the retention
        n = _cache_state(r, st.keys)[0]
        assert n >= 21
        after = []
        for i in range(5):
            st.num_previously_complete = 100 + i
            after.append(_cache_state(r, st.keys)[0])
        assert after == [n - 3, n - 6, n - 9, n - 12, n - 15]
        count, fields, total, sizes = _cache_state(r, st.keys)
        assert count == fields and total == sizes


# --- a stall past socket_timeout with a default redis-py client -------------------------------


@pytest.fixture(scope="module")
def debug_server() -> Iterator[RedisProcess]:
    """A private redis-server that allows DEBUG SLEEP."""
    if shutil.which("redis-server") is None:
        from servers import skip_or_fail

        skip_or_fail("no redis-server on PATH")
    workdir = tempfile.mkdtemp(prefix="swarm-retry-")
    server = start_redis_server(["--enable-debug-command", "yes"], workdir=workdir)
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def _load_scripts(client: redis.Redis) -> None:
    """Load every script first: a NOSCRIPT round would count as one more EVALSHA."""
    for s in scripts.all_scripts():
        client.script_load(s.source)


def _evalsha_calls(admin: redis.Redis) -> int:
    stats = admin.info("commandstats")
    return int(stats.get("cmdstat_evalsha", {}).get("calls", 0))


def stalled(
    admin: redis.Redis, port: int, seconds: float, fn: Callable[[], Any]
) -> tuple[Any, int]:
    """Run ``fn`` while Redis sleeps ``seconds`` (DEBUG SLEEP from another connection, started
    first); its result and how many EVALSHA Redis ran for it."""
    before = _evalsha_calls(admin)
    sleeper = redis.Redis(host="127.0.0.1", port=port, protocol=3, socket_timeout=None)
    thread = threading.Thread(target=sleeper.execute_command, args=("DEBUG", "SLEEP", seconds))
    thread.start()
    time.sleep(0.3)  # the sleep has begun: fn's call waits behind it
    try:
        result = fn()
    finally:
        thread.join()
        sleeper.close()
    return result, _evalsha_calls(admin) - before


@pytest.mark.slow
def test_stall_past_socket_timeout_during_claim_ack_apply_dequeue(
    debug_server: RedisProcess, run_id: int, prefix: str
) -> None:
    """redis-py's defaults (socket_timeout=5 s, 10 retries on TimeoutError): a stall of 5.6 s
    makes it re-send each call; every second delivery is answered from the reply cache."""
    client = redis.Redis(host="127.0.0.1", port=debug_server.port, protocol=3)  # defaults
    admin = redis.Redis(host="127.0.0.1", port=debug_server.port, protocol=3, socket_timeout=None)
    conn = client.connection_pool.make_connection()
    assert isinstance(conn, redis.Connection)
    assert conn.socket_timeout == 5 and conn.retry.get_retries() == 10
    stall = 5.6
    _load_scripts(admin)
    try:
        st = RedisSwarmState(1, run_id, 1, 100, redis=client, prefix=prefix)
        keys = st.keys
        st.add_arrays([ArrayRecord(1, 100)])
        st.add_tasks([TaskRecord(i, 1) for i in range(1, 31)])
        st.enqueue_initial_fringe()
        rep = st.join_replica(120, replica_id="stalled")
        claimed = acked = 0

        batch, sent = stalled(
            admin, debug_server.port, stall, lambda: st.claim_batch(rep, max_size=5)
        )
        assert batch is not None and len(batch.task_ids) == 5
        claimed += 1
        assert sent == 2  # redis-py sent the EVALSHA twice ...
        assert hint(admin, keys.counters, "claims") == claimed  # ... and claimed nothing more
        assert admin.hlen(keys.batches) == 1
        assert hint(admin, keys.reserved, "run") == 5

        answer = {t: "Q" for t in batch.task_ids}
        changed, sent = stalled(
            admin, debug_server.port, stall, lambda: st.ack_batch(rep, batch, answer)
        )
        acked += 1
        assert sent == 2
        assert {t.task_id for t in changed} == set(batch.task_ids)
        assert hint(admin, keys.counters, "acks") == acked
        assert hint(admin, keys.reserved, "run") == 0

        update = StateUpdate(task_statuses={t: "R" for t in batch.task_ids})
        _, sent = stalled(admin, debug_server.port, stall, lambda: st.apply_update(update))
        assert sent == 2
        assert hint(admin, keys.counters, "to:R") == 5

        queued = int(admin.zcard(keys.ready))
        taken, sent = stalled(admin, debug_server.port, stall, lambda: st.dequeue_tasks(3))
        assert sent == 2
        assert len(taken) == 3
        assert int(admin.zcard(keys.ready)) == queued - 3
        st.enqueue_tasks(taken, front=True)  # hand them back: nothing lost

        # finish the run without stalls: every claim and ack counted once
        st.apply_update(StateUpdate(task_statuses={t: "D" for t in batch.task_ids}))
        while (b := st.claim_batch(rep, max_size=10)) is not None:
            claimed += 1
            st.ack_batch(rep, b, {t: "Q" for t in b.task_ids})
            acked += 1
            st.apply_update(StateUpdate(task_statuses={t: "D" for t in b.task_ids}))
        assert st.all_tasks_final() and not st.has_pending_work()
        assert hint(admin, keys.counters, "claims") == claimed
        assert hint(admin, keys.counters, "acks") == acked
        assert hint(admin, keys.counters, "to:D") == 30
        assert admin.hlen(keys.batches) == 0 and admin.hlen(keys.claims) == 0
        assert all(int(v) == 0 for v in admin.hvals(keys.reserved))
        st.leave(rep)
        assert st.finalize("D")
    finally:
        client.close()
        admin.close()


@pytest.mark.slow
def test_stall_with_a_from_url_client_then_the_caller_retries(
    debug_server: RedisProcess, run_id: int, prefix: str
) -> None:
    """``Redis.from_url`` clients do not retry (redis-py 8 gives their connections no Retry):
    the caller gets TimeoutError although the claim ran; calling again returns that batch."""
    client = redis.Redis.from_url(debug_server.url, protocol=3)
    admin = redis.Redis(host="127.0.0.1", port=debug_server.port, protocol=3, socket_timeout=None)
    conn = client.connection_pool.make_connection()
    assert isinstance(conn, redis.Connection)
    assert conn.retry.get_retries() == 0
    _load_scripts(admin)
    try:
        st = RedisSwarmState(1, run_id, 1, 100, redis=client, prefix=prefix)
        st.add_arrays([ArrayRecord(1, 100)])
        st.add_tasks([TaskRecord(i, 1) for i in range(1, 11)])
        st.enqueue_initial_fringe()
        rep = st.join_replica(120, replica_id="caller")

        def claim() -> Any:
            with pytest.raises(redis.TimeoutError):
                st.claim_batch(rep, max_size=4)

        _, sent = stalled(admin, debug_server.port, 5.6, claim)
        assert sent == 1
        assert hint(admin, st.keys.counters, "claims") == 1  # it ran: the batch is held
        batch = st.claim_batch(rep, max_size=4)  # the caller's retry
        assert batch is not None and len(batch.task_ids) == 4
        assert hint(admin, st.keys.counters, "claims") == 1
        assert admin.hlen(st.keys.batches) == 1
        st.ack_batch(rep, batch, {t: "Q" for t in batch.task_ids})
        assert hint(admin, st.keys.reserved, "run") == 0
    finally:
        client.close()
        admin.close()
