"""Bounded Redis time per call at any size, and the per-array queue index kept exact.

The size tests run on a PRIVATE redis-server (nobody else's commands in its counters) and time
every script round trip by the Redis main thread's CPU time (``INFO cpu``), which, unlike wall
time or SLOWLOG, does not grow when the test machine is loaded. Each call must stay under
:data:`BOUND_MS`.
"""

from __future__ import annotations

import os
import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replies import as_bytes, scored_members
from servers import private_redis

from swarm_redis import (
    ArrayRecord,
    Batch,
    LeaseLostError,
    RedisSwarmState,
    Replica,
    StateUpdate,
    TaskRecord,
)
from swarm_redis.engine.commands import ScriptCall
from swarm_redis.engine.coordination import MAX_CLAIM_SIZE
from swarm_redis.errors import InvalidInputError
from swarm_redis.ops.verify import find_drift, qidx_member

#: The most Redis CPU one script call may take (ms).
BOUND_MS = 20.0
RES_A = {"queue": "all.q", "mem": 1}
RES_B = {"queue": "all.q", "mem": 2}


@pytest.fixture(scope="module")
def private() -> Iterator[redis.Redis]:
    """A redis-server of this module alone."""
    with private_redis("bounded-time tests") as client:
        yield client


def _cpu_ms(client: redis.Redis) -> float:
    info = client.info("cpu")
    return 1000.0 * (
        float(info["used_cpu_user_main_thread"]) + float(info["used_cpu_sys_main_thread"])
    )


class Timed:
    """Wraps a state's transport: the Redis CPU time of every round trip that runs a script."""

    def __init__(self, state: RedisSwarmState) -> None:
        self.state = state
        self.calls: list[tuple[str, float]] = []
        self._orig: Callable[[list[Any]], list[Any]] = state._transport.execute
        state._transport.execute = self._execute

    def _execute(self, calls: list[Any]) -> list[Any]:
        scripts = [c.script for c in calls if isinstance(c, ScriptCall)]
        if not scripts:
            return self._orig(calls)
        before = _cpu_ms(self.state.redis)
        out = self._orig(calls)
        self.calls.append((",".join(scripts), _cpu_ms(self.state.redis) - before))
        return out

    def take(self) -> list[tuple[str, float]]:
        out, self.calls = self.calls, []
        return out

    def check(self, script: str, min_calls: int = 1) -> float:
        """Every call since the last check ran ``script`` under the bound; the largest (ms)."""
        calls = self.take()
        assert len(calls) >= min_calls, calls[:5]
        assert {name for name, _ in calls} == {script}
        worst = max(ms for _, ms in calls)
        assert worst < BOUND_MS, f"{script}: {worst:.1f} ms of Redis CPU in one call"
        return worst


def _fill(client: redis.Redis, st: RedisSwarmState, ids: range, array: int, status: str) -> None:
    """Register tasks straight into the keys (records and status set): fast big fixtures."""
    keys = st.keys
    step = 10_000
    for lo in range(ids.start, ids.stop, step):
        part = range(lo, min(lo + step, ids.stop))
        pipe = client.pipeline(transaction=False)
        pipe.hset(keys.task, mapping={i: f"{status}|0|||{array}|0|0|" for i in part})
        pipe.sadd(keys.status_set(status), *part)
        pipe.execute()


def _prequeue(client: redis.Redis, st: RedisSwarmState, ids: range, array: int) -> None:
    """Queue tasks straight into the keys (ready, qidx, queued), at positions 1..n in order."""
    keys = st.keys
    step = 10_000
    for lo in range(ids.start, ids.stop, step):
        part = range(lo, min(lo + step, ids.stop))
        pipe = client.pipeline(transaction=False)
        pipe.zadd(keys.ready, {str(i): i - ids.start + 1 for i in part})
        pipe.zadd(keys.qidx, {qidx_member(array, i - ids.start + 1, i): 0 for i in part})
        pipe.sadd(keys.queued, *part)
        pipe.execute()


def _big_state(client: redis.Redis, run_id: int, limit: int = 100) -> RedisSwarmState:
    return RedisSwarmState(1, run_id, 1, limit, redis=client, prefix="bounded")


#: Run size of the big tests; SWARM_BOUNDED_N=1000000 runs them at 1M (minutes).
BIG = int(os.environ.get("SWARM_BOUNDED_N", "200000"))


def test_reading_a_200k_status_set_stays_bounded(private: redis.Redis) -> None:
    st = _big_state(private, 1)
    _fill(private, st, range(1, BIG + 1), 1, "G")
    timed = Timed(st)
    tasks = st.get_tasks_by_status("G")
    worst = timed.check("read_status", min_calls=BIG // 2000)
    assert len(tasks) == BIG and all(t.status == "G" for t in tasks)
    assert {t.task_id for t in tasks} == set(range(1, BIG + 1))
    assert st.get_done_tasks() == []
    timed.check("read_status")
    print(f"read_status over {BIG}: worst call {worst:.1f} ms")


def test_enqueue_and_dequeue_on_a_200k_queue_stay_bounded(private: redis.Redis) -> None:
    moved = min(20_000, BIG // 4)  # the calls cost the same at any count: each is one chunk
    st = _big_state(private, 2)
    _fill(private, st, range(1, BIG + 1), 1, "G")
    _prequeue(private, st, range(1, BIG - moved + 1), 1)
    objs = {t.task_id: t for t in st._run(st._core.objects(list(range(BIG - moved + 1, BIG + 1))))}
    order = list(objs.values())
    random.Random(7).shuffle(order)
    timed = Timed(st)
    queued = st.enqueue_tasks(order)
    worst_in = timed.check("enqueue", min_calls=moved // 500)
    assert [t.task_id for t in queued] == [t.task_id for t in order]
    assert st.get_ready_to_run_count() == BIG
    tail = [int(as_bytes(x)) for x in private.zrange(st.keys.ready, -10, -1)]
    assert tail == [t.task_id for t in order[-10:]]

    out = st.dequeue_tasks(moved)
    worst_out = timed.check("dequeue", min_calls=moved // 1000)
    assert [t.task_id for t in out] == list(range(1, moved + 1))
    assert st.get_ready_to_run_count() == BIG - moved
    keys = st.keys
    sizes = private.zcard(keys.ready), private.zcard(keys.qidx), private.scard(keys.queued)
    assert sizes == (BIG - moved,) * 3
    head = scored_members(private, keys.ready, 0, 0)[0]
    first = as_bytes(private.zrange(keys.qidx, "[1|", "(1}", bylex=True, offset=0, num=1)[0])
    assert first.decode() == qidx_member(1, int(head[1]), int(head[0]))
    print(f"enqueue/dequeue of {moved} on {BIG}: worst {worst_in:.1f} / {worst_out:.1f} ms")


def test_front_enqueue_in_chunks_keeps_the_given_order(private: redis.Redis) -> None:
    n = 3000
    st = _big_state(private, 5)
    _fill(private, st, range(1, n + 1), 1, "G")
    tasks = sorted(st.get_tasks_by_status("G"), key=lambda t: t.task_id)
    st.enqueue_tasks(tasks[:10])
    front = tasks[10:][::-1] + tasks[:3]  # the already queued ones are skipped
    st.enqueue_tasks(front, front=True)
    want = [t.task_id for t in tasks[10:][::-1]] + [t.task_id for t in tasks[:10]]
    assert [int(as_bytes(x)) for x in private.zrange(st.keys.ready, 0, -1)] == want
    assert [t.task_id for t in st.ready_to_run] == want  # paged view, same order
    assert find_drift(private, st.keys).clean


def test_claim_behind_60k_tasks_of_a_full_array_is_bounded_and_not_starved(
    private: redis.Redis,
) -> None:
    blocked, free = 60_000, 600
    st = _big_state(private, 3, limit=1000)
    st.add_arrays([ArrayRecord(1, 0), ArrayRecord(2, 400)])
    _fill(private, st, range(1, blocked + 1), 1, "G")
    _fill(private, st, range(blocked + 1, blocked + free + 1), 2, "G")
    _prequeue(private, st, range(1, blocked + 1), 1)  # the full array's 60k tasks first
    tail = st._run(st._core.objects(list(range(blocked + 1, blocked + free + 1))))
    st.enqueue_tasks(tail)  # far past the old scan_limit (50,000 entries)
    timed = Timed(st)
    rep = st.join_replica(60)
    timed.take()
    batch = st.claim_batch(rep, max_size=300)
    worst = timed.check("claim_batch")
    assert batch is not None and batch.array_id == 2
    assert list(batch.task_ids) == list(range(blocked + 1, blocked + 301))
    second = st.claim_batch(rep, max_size=300)
    timed.check("claim_batch")
    assert second is not None and list(second.task_ids) == list(range(blocked + 301, blocked + 401))
    assert st.claim_batch(rep) is None  # array 2 is full now (400 reserved)
    timed.check("claim_batch")
    st.release_batch(rep, second)  # back to the front, in batch order
    timed.check("release_batch")
    assert [int(as_bytes(x)) for x in private.zrange(st.keys.ready, 0, 2)] == [
        blocked + 301,
        blocked + 302,
        blocked + 303,
    ]
    assert find_drift(private, st.keys).clean
    print(f"claim behind {blocked} queued tasks of a full array: {worst:.1f} ms")


def test_the_largest_claim_and_its_ack_are_bounded(private: redis.Redis) -> None:
    """max_size is capped (a claim of 60k tasks took ~180 ms in one script), and ack_batch sends
    only the batch's tasks, whatever the answer mapping holds (200k pairs were one call)."""
    st = _big_state(private, 8, limit=10**6)
    st.add_array(ArrayRecord(1, 10**6))
    n = 60_000
    _fill(private, st, range(1, n + 1), 1, "G")
    _prequeue(private, st, range(1, n + 1), 1)
    replica = st.join_replica(60.0, replica_id="big")
    timed = Timed(st)
    with pytest.raises(InvalidInputError, match="max_size"):
        st.claim_batch(replica, MAX_CLAIM_SIZE + 1)
    batch = st.claim_batch(replica, MAX_CLAIM_SIZE)
    assert batch is not None and len(batch.task_ids) == MAX_CLAIM_SIZE
    timed.check("claim_batch")
    answer = dict.fromkeys(range(1, BIG + 1), "Q")  # the server's answer for every task
    changed = st.ack_batch(replica, batch, answer)
    timed.check("ack_batch")
    assert {t.task_id for t in changed} == set(batch.task_ids)
    assert private.scard(st.keys.status_set("Q")) == MAX_CLAIM_SIZE


def test_claims_is_a_hash_table_from_the_first_claim(private: redis.Redis) -> None:
    """A listpack ``claims`` would cost a scan of the hash per field set, read or deleted."""
    private.config_set("hash-max-listpack-entries", 512)
    st = _big_state(private, 4, limit=1000)
    st.add_arrays([ArrayRecord(1, 1000)])
    st.add_tasks([TaskRecord(i, 1, "G", 0, 0) for i in range(1, 11)])
    st.enqueue_tasks(st._run(st._core.objects(list(range(1, 11)))))
    rep = st.join_replica(60)
    batch = st.claim_batch(rep, max_size=4)
    assert batch is not None and list(batch.task_ids) == [1, 2, 3, 4]
    assert private.object("encoding", st.keys.claims) == b"hashtable"
    assert sorted(int(k) for k in private.hkeys(st.keys.claims)) == [1, 2, 3, 4]
    assert set(private.hvals(st.keys.claims)) == {batch.batch_id.encode()}
    st.ack_batch(rep, batch, dict.fromkeys(batch.task_ids, "Q"))
    assert private.exists(st.keys.claims) == 0
    assert find_drift(private, st.keys).clean


def test_reading_a_big_set_while_it_changes_returns_only_tasks_in_that_status(
    private: redis.Redis,
) -> None:
    n = 20_000
    st = _big_state(private, 4)
    _fill(private, st, range(1, n + 1), 1, "G")
    other = RedisSwarmState.attach(private, 4, prefix="bounded")
    moved: list[int] = []
    orig: Callable[[list[Any]], list[Any]] = st._transport.execute

    def execute(calls: list[Any]) -> list[Any]:
        out = orig(calls)
        if any(isinstance(c, ScriptCall) and c.script == "read_status" for c in calls):
            # between pages another replica moves tasks out of G
            batch = list(range(len(moved) * 50 + 1, len(moved) * 50 + 51))
            other.apply_update(StateUpdate(task_statuses={i: "R" for i in batch}))
            moved.extend(batch)
        return out

    st._transport.execute = execute
    got = st.get_tasks_by_status("G")
    st._transport.execute = orig
    ids = {t.task_id for t in got}
    assert len(moved) >= 500  # the read took many pages, with moves between them
    assert len(ids) == len(got)  # each once
    assert all(t.status == "G" for t in got)  # the mirror says what the page read
    stayed = set(range(1, n + 1)) - set(moved)
    assert stayed <= ids  # every task that stayed in G is there


# --- the queue index stays exact: random sequences against a model, both backends -------------


class Model:
    """The queue as jobmon orders it, with claims, reservations and capacity."""

    def __init__(self, arrays: dict[int, int], limit: int, res: dict[int, int]) -> None:
        self.queue: list[int] = []
        self.alimit = arrays
        self.limit = limit
        self.res = res  # task -> resource variant
        self.array = {t: 1 + t % len(arrays) for t in res}
        self.status = dict.fromkeys(res, "G")
        self.claimed: dict[int, list[int]] = {}  # batch id -> ids
        self.reserved: dict[int, int] = {}

    def active(self, arr: int | None = None) -> int:
        return sum(
            1
            for t, s in self.status.items()
            if s in "QIOR" and (arr is None or self.array[t] == arr)
        )

    def held(self) -> set[int]:
        return {t for ids in self.claimed.values() for t in ids}

    def enqueue(self, ids: list[int], front: bool) -> None:
        fresh: list[int] = []
        for t in ids:
            if t in fresh or t in self.queue or t in self.held() or self.status[t] in "DF":
                continue
            fresh.append(t)
        self.queue = fresh + self.queue if front else self.queue + fresh

    def dequeue(self, n: int) -> list[int]:
        out, self.queue = self.queue[:n], self.queue[n:]
        return out

    def claim(self, max_size: int) -> list[int]:
        wcap = self.limit - self.active() - sum(len(v) for v in self.claimed.values())
        if wcap <= 0:
            return []
        acap = {a: lim - self.active(a) - self.reserved.get(a, 0) for a, lim in self.alimit.items()}
        head = next((t for t in self.queue if acap[self.array[t]] > 0), None)
        if head is None:
            return []
        arr, cap = self.array[head], min(max_size, wcap, acap[self.array[head]])
        members = [head]
        for t in self.queue[self.queue.index(head) + 1 :]:
            if len(members) >= cap:
                break
            if self.array[t] == arr and self.res[t] == self.res[head]:
                members.append(t)
        self.queue = [t for t in self.queue if t not in members]
        self.reserved[arr] = self.reserved.get(arr, 0) + len(members)
        return members

    def close(self, bid: int) -> None:
        ids = self.claimed.pop(bid)
        arr = self.array[ids[0]]
        self.reserved[arr] -= len(ids)
        back = [t for t in ids if self.status[t] in "GA" and t not in self.queue]
        self.queue = back + self.queue

    def finish(self, t: int, status: str) -> None:
        if self.status[t] in "DF":  # final within a run
            return
        self.status[t] = status
        if status in "DF" and t in self.queue:
            self.queue.remove(t)


ops = st.lists(
    st.one_of(
        st.tuples(st.just("enqueue"), st.lists(st.integers(1, 24), max_size=8), st.booleans()),
        st.tuples(st.just("dequeue"), st.integers(1, 4)),
        st.tuples(st.just("claim"), st.integers(1, 5)),
        st.tuples(st.just("release"), st.integers(0, 3)),
        st.tuples(st.just("ack"), st.integers(0, 3), st.sampled_from("QDG")),
        st.tuples(st.just("final"), st.integers(1, 24), st.sampled_from("DFR")),
        st.just(("leave",)),
    ),
    min_size=1,
    max_size=25,
)


@pytest.fixture
def index_run(make_client: Callable[..., redis.Redis], prefix: str) -> Callable[..., Any]:
    counter = iter(range(10_000_000, 20_000_000))

    def new() -> tuple[RedisSwarmState, redis.Redis]:
        client = make_client()
        return RedisSwarmState(1, next(counter), 1, 8, redis=client, prefix=prefix), client

    return new


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(steps=ops)
def test_queue_index_stays_exact(index_run: Callable[..., Any], steps: list[Any]) -> None:
    st_, client = index_run()
    res = {t: t % 3 % 2 for t in range(1, 25)}  # two resource variants
    arrays = {1: 3, 2: 5, 3: 2}
    model = Model(arrays, 8, res)
    st_.add_arrays([ArrayRecord(a, lim) for a, lim in arrays.items()])
    objs = {
        t: TaskRecord(
            t, model.array[t], "G", 0, 0, current_task_resources=dict(RES_A if res[t] else RES_B)
        )
        for t in res
    }
    st_.add_tasks(objs.values())
    rep: Replica = st_.join_replica(60)
    batches: dict[int, Batch] = {}
    for step in steps:
        kind = step[0]
        if kind == "enqueue":
            st_.enqueue_tasks([objs[t] for t in step[1]], front=step[2])
            model.enqueue(step[1], step[2])
        elif kind == "dequeue":
            got = [t.task_id for t in st_.dequeue_tasks(step[1])]
            assert got == model.dequeue(step[1])
        elif kind == "claim":
            b = st_.claim_batch(rep, max_size=step[1])
            want = model.claim(step[1])
            assert (list(b.task_ids) if b else []) == want
            if b:
                batches[int(b.batch_id)] = b
                model.claimed[int(b.batch_id)] = want
        elif kind in ("release", "ack") and batches:
            bid = sorted(batches)[step[1] % len(batches)]
            b = batches.pop(bid)
            if kind == "release":
                st_.release_batch(rep, b)
            else:
                st_.ack_batch(rep, b, {t: step[2] for t in b.task_ids})
                for t in b.task_ids:
                    model.finish(t, step[2])
            model.close(bid)
        elif kind == "final":
            st_.apply_update(StateUpdate(task_statuses={step[1]: step[2]}))
            model.finish(step[1], step[2])
        elif kind == "leave":
            st_.leave(rep)
            for bid in sorted(batches, reverse=True):
                model.close(bid)
            batches.clear()
            with pytest.raises(LeaseLostError):
                st_.claim_batch(rep)
            rep = st_.join_replica(60)
        scored = client.zrange(st_.keys.ready, 0, -1, withscores=True)
        assert [int(m) for m, _ in scored] == model.queue
        records = {int(k): v.decode() for k, v in client.hgetall(st_.keys.task).items()}
        want_idx = sorted(
            qidx_member(records[int(m)].split("|")[4], int(sc), int(m)) for m, sc in scored
        )
        assert sorted(m.decode() for m in client.zrange(st_.keys.qidx, 0, -1)) == want_idx
        assert {int(m) for m in client.smembers(st_.keys.queued)} == set(model.queue)
    report = find_drift(client, st_.keys)
    assert report.clean, report.counts


def test_reconcile_counts_many_active_tasks_in_bounded_calls(private: redis.Redis) -> None:
    """Limits as high as 2^31 let a run have 100k tasks RUNNING: reconcile counts them in
    pages (one script call held them all: ~100 ms) and still fixes a drifted counter."""
    n = 100_000
    st = _big_state(private, 9, limit=10**6)
    st.add_array(ArrayRecord(1, 10**6))
    _fill(private, st, range(1, n + 1), 1, "R")
    private.hset(st.keys.active, "1", 5)  # drifted
    timed = Timed(st)
    report = st.reconcile()
    calls = timed.take()
    worst = max(ms for _, ms in calls)
    assert worst < BOUND_MS, f"{worst:.1f} ms of Redis CPU in one call: {calls[:5]}"
    assert report.active_fixed == 1 and report.active_unchecked == 0
    assert int(private.hget(st.keys.active, "1") or 0) == n
    # writes landing while the pages are read: the counters are left for the next sweep
    private.hset(st.keys.active, "1", 7)
    inner = st._transport.execute

    def busy(calls: list[Any]) -> list[Any]:
        if not any(isinstance(c, ScriptCall) for c in calls):
            private.hincrby(st.keys.meta, "version", 1)  # another replica's write
        replies: list[Any] = inner(calls)
        return replies

    st._transport.execute = busy
    report = st.reconcile()
    assert report.active_unchecked == 1 and report.active_fixed == 0
    assert int(private.hget(st.keys.active, "1") or 0) == 7
    assert report.clean  # left unchecked is not a fix
