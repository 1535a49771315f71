"""Several replicas on one run (issue 3, items 1-8): membership, claims, reaping, leadership,
run-status CAS, finalize-once, pending work and reconcile. Every test runs on fakeredis and on a
real Redis, through the sync and the async front (``front`` fixture). Leases:
a test ends a lease by moving its deadline behind Redis time (what waiting would do, without
timing); tests/test_replica_races.py lets leases run out in real processes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import pytest
import redis
from fronts import Front
from replies import as_bytes, stream_entries

from swarm_redis import (
    ArrayRecord,
    Batch,
    FencedError,
    InvalidInputError,
    InvalidTypeError,
    LeaderInfo,
    LeaseLostError,
    Replica,
    StateUpdate,
    SwarmRedisError,
    TaskRecord,
    TransitionError,
)

MakeClient = Callable[..., redis.Redis]

RES_A = {"queue": "all.q", "mem": 1}
RES_B = {"queue": "all.q", "mem": 2}


# --- helpers ----------------------------------------------------------------------------------


class Run:
    """A run on the test's backend and front, a factory of further replicas' states on it, and
    a plain sync client (``r``) for looking at the keys."""

    def __init__(self, front: Front, make_client: MakeClient, run_id: int, prefix: str) -> None:
        self.front = front
        self.run_id = run_id
        self.prefix = prefix
        self.r = make_client()

    def state(self, limit: int = 100, **kw: Any) -> Any:
        return self.front.state(
            self.run_id, max_concurrently_running=limit, prefix=self.prefix, **kw
        )

    def attach(self) -> Any:
        return self.front.attach(self.run_id, prefix=self.prefix)


@pytest.fixture
def run(front: Front, make_client: MakeClient, run_id: int, prefix: str) -> Run:
    return Run(front, make_client, run_id, prefix)


def task(
    tid: int,
    array: int = 1,
    res: dict[str, Any] | None = None,
    status: str = "G",
    nup: int = 0,
    done: int = 0,
) -> TaskRecord:
    return TaskRecord(tid, array, status, nup, done, current_task_resources=dict(res or RES_A))


def setup(
    state: Any,
    tasks: Iterable[TaskRecord],
    arrays: dict[int, int],
    queue: Iterable[int] | None = None,
) -> dict[int, TaskRecord]:
    """Register arrays and tasks, then queue ``queue`` (default: every task) in that order."""
    objs = {t.task_id: t for t in tasks}
    state.add_arrays([ArrayRecord(a, limit) for a, limit in arrays.items()])
    state.add_tasks(objs.values())
    order = list(objs) if queue is None else list(queue)
    state.enqueue_tasks([objs[i] for i in order])
    return objs


def ready(state: Any) -> list[int]:
    return [t.task_id for t in state.ready_to_run_list()]


def hget_int(r: redis.Redis, key: str, field: str) -> int:
    value = r.hget(key, field)
    return int(value) if value is not None else 0


def snapshot(r: redis.Redis, state: Any) -> dict[str, Any]:
    """Every key of the run, by content (the reap mutex is excluded: it only expires; so is the
    reply cache of retries, which every successful call adds to)."""
    out: dict[str, Any] = {}
    for key in state.keys.all:
        if key in (state.keys.reap_lock, state.keys.replies, state.keys.reply_at):
            continue
        kind = r.type(key)
        kind = kind.decode() if isinstance(kind, bytes) else kind
        if kind == "hash":
            out[key] = r.hgetall(key)
        elif kind == "list":
            out[key] = r.lrange(key, 0, -1)
        elif kind == "zset":
            out[key] = r.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            out[key] = r.smembers(key)
        elif kind == "string":
            out[key] = r.get(key)
        elif kind == "stream":
            out[key] = [eid for eid, _ in stream_entries(r, key)]
        else:
            out[key] = kind
    return out


def redis_ms(r: redis.Redis) -> int:
    sec, usec = r.time()
    return int(sec) * 1000 + int(usec) // 1000


def expire_lease(r: redis.Redis, state: Any, replica: Replica) -> None:
    """End the replica's lease now: its deadline moves just behind Redis time.

    Scripts compare deadlines with Redis TIME, so this is exactly what waiting would do, without
    depending on how fast the test runs (tests/test_replica_races.py lets leases run out).
    """
    raw = r.hget(state.keys.replicas, replica.id)
    assert raw is not None
    inc, _, joined = (raw.decode() if isinstance(raw, bytes) else raw).split("|")
    r.hset(state.keys.replicas, replica.id, f"{inc}|{redis_ms(r) - 1}|{joined}")


def expire_leadership(r: redis.Redis, state: Any) -> None:
    """End the leadership lease now (see expire_lease)."""
    assert r.hget(state.keys.leader, "id")
    r.hset(state.keys.leader, "deadline_ms", redis_ms(r) - 1)


def ids(batch: Batch | None) -> list[int]:
    assert batch is not None
    return list(batch.task_ids)


# --- membership ---------------------------------------------------------------------------------


def test_join_heartbeat_leave(run: Run) -> None:
    st = run.state()
    rep = st.join_replica(5.0)
    assert rep.ttl_ms == 5000 and rep.id and rep.incarnation
    raw = run.r.hget(st.keys.replicas, rep.id)
    assert raw is not None
    inc, _, joined = as_bytes(raw).decode().split("|")
    assert inc == rep.incarnation
    short = redis_ms(run.r) + 1000  # pretend the lease has only 1 s left
    run.r.hset(st.keys.replicas, rep.id, f"{inc}|{short}|{joined}")
    st.heartbeat(rep)
    raw = run.r.hget(st.keys.replicas, rep.id)
    assert raw is not None and int(as_bytes(raw).decode().split("|")[1]) > short
    st.leave(rep)
    assert run.r.hget(st.keys.replicas, rep.id) is None
    with pytest.raises(LeaseLostError, match="not a member"):
        st.heartbeat(rep)


def test_join_sets_actor_in_events(run: Run) -> None:
    st = run.state()
    setup(st, [task(1)], {1: 5})
    rep = st.join_replica(5.0, replica_id="alpha")
    assert rep.id == "alpha"
    st.claim_batch(rep)
    events = stream_entries(run.r, st.keys.events)
    claim = [f for _, f in events if f[b"type"] == b"claim"]
    assert claim and claim[-1][b"actor"] == b"alpha"


def test_join_refuses_a_live_id_and_reaps_an_expired_one(run: Run) -> None:
    st = run.state()
    setup(st, [task(1), task(2)], {1: 5})
    old = st.join_replica(30.0, replica_id="same")
    with pytest.raises(SwarmRedisError, match="in use"):
        run.state().join_replica(5.0, replica_id="same")
    batch = st.claim_batch(old)
    assert batch is not None
    expire_lease(run.r, st, old)
    other = run.state()
    new = other.join_replica(5.0, replica_id="same")
    assert new.incarnation != old.incarnation
    # the old incarnation's batch was orphaned by the join and is re-driven to the new one
    again = other.claim_batch(new)
    assert again is not None and again.redriven and again.task_ids == batch.task_ids
    with pytest.raises(LeaseLostError):
        st.ack_batch(old, batch, {1: "Q"})


def test_join_validates(run: Run) -> None:
    st = run.state()
    with pytest.raises(InvalidInputError):
        st.join_replica(0)
    with pytest.raises(InvalidTypeError):
        st.join_replica("10")
    with pytest.raises(InvalidInputError):
        st.join_replica(1.0, replica_id="a|b")
    with pytest.raises(InvalidTypeError):
        st.claim_batch("not a replica")
    assert run.r.hlen(st.keys.replicas) == 0


def test_leave_releases_held_batches_in_order_and_resigns(run: Run) -> None:
    st = run.state()
    setup(st, [task(1), task(2, array=2), task(3), task(4, array=2)], {1: 5, 2: 5})
    rep = st.join_replica(5.0)
    epoch = st.acquire_leadership(rep)
    assert epoch == 1
    assert ids(st.claim_batch(rep)) == [1, 3]
    assert ids(st.claim_batch(rep)) == [2, 4]
    st.leave(rep)
    assert ready(st) == [1, 3, 2, 4]
    assert st.leader() is None
    assert run.r.hlen(st.keys.claims) == 0 and run.r.hlen(st.keys.reserved) == 0


# --- claims -------------------------------------------------------------------------------------


def test_claim_order_matches_jobmon_scheduler(run: Run) -> None:
    # jobmon's verified example: queue 1a,2b,3a,4a',5b,6a -> batches [1,3,6], [2,5], [4]
    st = run.state()
    setup(
        st,
        [task(1, 1), task(2, 2), task(3, 1), task(4, 1, RES_B), task(5, 2), task(6, 1)],
        {1: 100, 2: 100},
    )
    rep = st.join_replica(5.0)
    b1 = st.claim_batch(rep)
    assert b1 is not None and list(b1.task_ids) == [1, 3, 6]
    assert b1.array_id == 1 and b1.resource_key and not b1.redriven
    assert [t.task_id for t in b1.tasks] == [1, 3, 6]
    assert ids(st.claim_batch(rep)) == [2, 5]
    b3 = st.claim_batch(rep)
    assert ids(b3) == [4] and b3 is not None and b3.resource_key != b1.resource_key
    assert st.claim_batch(rep) is None
    assert ready(st) == []


def test_full_array_at_head_keeps_its_place(run: Run) -> None:
    st = run.state()
    objs = setup(
        st,
        [task(9, 1), task(1, 1), task(2, 2), task(3, 1), task(4, 2), task(5, 2)],
        {1: 1, 2: 100},
        queue=[1, 2, 3, 4, 5],
    )
    st.apply_update(StateUpdate(task_statuses={9: "R"}))  # array 1 is now full
    assert objs[9].status == "R"
    rep = st.join_replica(5.0)
    assert ids(st.claim_batch(rep)) == [2, 4, 5]
    assert ready(st) == [1, 3]
    assert st.claim_batch(rep) is None
    st.apply_update(StateUpdate(task_statuses={9: "D"}))  # array 1 has room again
    assert ids(st.claim_batch(rep)) == [1]
    assert ready(st) == [3]


def test_head_search_finds_tasks_behind_blocked_ones(run: Run) -> None:
    st = run.state(limit=1000)
    blocked = [task(i, 1) for i in range(1, 301)]
    free = [task(i, 2) for i in range(301, 306)]
    setup(st, [*blocked, *free], {1: 0, 2: 100})
    rep = st.join_replica(5.0)
    # scan_limit is ignored since the per-array index: nothing is starved behind full arrays
    assert ids(st.claim_batch(rep, scan_limit=300)) == [301, 302, 303, 304, 305]
    assert ready(st) == list(range(1, 301))


def test_failing_claims_then_pushes_and_capacity(run: Run) -> None:
    st = run.state()
    objs = setup(st, [task(1, 1), task(2, 1), task(3, 2), task(4, 2)], {1: 0, 2: 5}, [1, 2])
    rep = st.join_replica(5.0)
    assert st.claim_batch(rep) is None
    assert st.claim_batch(rep) is None
    st.enqueue_task(objs[3])  # a push at the back
    assert ids(st.claim_batch(rep)) == [3]
    assert st.claim_batch(rep) is None
    st.enqueue_task(objs[4], front=True)  # a push at the front
    assert ids(st.claim_batch(rep)) == [4]
    assert st.claim_batch(rep) is None
    st.apply_update(StateUpdate(array_limits={1: 1}))  # capacity for array 1
    assert ids(st.claim_batch(rep)) == [1]
    assert ready(st) == [2]


def test_unregistered_array_is_never_claimed(run: Run) -> None:
    st = run.state()
    setup(st, [task(1, 7), task(2, 1)], {1: 5})
    rep = st.join_replica(5.0)
    assert ids(st.claim_batch(rep)) == [2]
    assert st.claim_batch(rep) is None
    assert ready(st) == [1]


def test_claims_respect_workflow_and_array_limits(run: Run) -> None:
    st = run.state(limit=4)
    setup(st, [task(i, 1 if i <= 6 else 2) for i in range(1, 11)], {1: 3, 2: 10})
    rep = st.join_replica(5.0)
    b1 = st.claim_batch(rep)
    assert ids(b1) == [1, 2, 3]  # array 1 allows 3
    assert st.get_array_capacity(1) == 0
    assert st.get_available_capacity() == 1
    assert hget_int(run.r, st.keys.reserved, "run") == 3
    assert hget_int(run.r, st.keys.reserved, "1") == 3
    assert ids(st.claim_batch(rep)) == [7]  # the workflow allows 1 more
    assert st.claim_batch(rep) is None
    assert st.get_available_capacity() == 0
    assert ready(st) == [4, 5, 6, 8, 9, 10]


def test_max_size_and_window(run: Run) -> None:
    st = run.state()
    setup(st, [task(i, 1 if i != 2 else 2) for i in range(1, 9)], {1: 100, 2: 100})
    rep = st.join_replica(5.0)
    assert ids(st.claim_batch(rep, 2)) == [1, 3]
    # window=1: only the entry right after the head may join
    assert ids(st.claim_batch(rep, 10, window=1)) == [2]
    assert ids(st.claim_batch(rep, 10, window=1)) == [4, 5]
    assert ids(st.claim_batch(rep, 10)) == [6, 7, 8]


def test_ack_applies_answer_and_releases(run: Run) -> None:
    st = run.state(limit=10)
    objs = setup(st, [task(1), task(2), task(3), task(4, 2)], {1: 10, 2: 10})
    rep = st.join_replica(5.0)
    batch = st.claim_batch(rep)
    assert ids(batch) == [1, 2, 3]
    assert batch is not None
    changed = st.ack_batch(rep, batch, {1: "Q", "2": "Q", 3: "G"})
    assert changed == {objs[1], objs[2]}
    assert objs[1].status == "Q" and objs[3].status == "G"
    assert ready(st) == [3, 4]  # the unqueued task went back to the front
    assert run.r.hlen(st.keys.claims) == 0 and run.r.hlen(st.keys.batches) == 0
    assert run.r.hlen(st.keys.reserved) == 0
    assert hget_int(run.r, st.keys.active, "1") == 2
    assert st.get_available_capacity() == 8
    with pytest.raises(LeaseLostError, match="no longer claimed"):
        st.ack_batch(rep, batch, {1: "Q"})


def test_ack_propagates_and_never_regresses(run: Run) -> None:
    st = run.state()
    t1, t2 = task(1), task(2)
    child = TaskRecord(3, 1, "G", 1, 0, current_task_resources=dict(RES_A))
    t1.downstream_swarm_tasks = {child}
    objs = setup(st, [t1, t2, child], {1: 10}, queue=[1, 2])
    rep = st.join_replica(5.0)
    batch = st.claim_batch(rep)
    assert batch is not None
    # a sync moved task 2 on while the queue call was in flight: the answer is older
    st.apply_update(StateUpdate(task_statuses={2: "R"}))
    changed = st.ack_batch(rep, batch, {1: "D", 2: "Q"})
    assert changed == {objs[1]}
    assert objs[2].status == "R" and objs[3].num_upstreams_done == 1
    assert ready(st) == [3]
    assert [t.task_id for t in st.last_ready] == [3]


def test_ack_rejects_bad_input_before_writing(run: Run) -> None:
    st = run.state()
    setup(st, [task(1)], {1: 10})
    rep = st.join_replica(5.0)
    batch = st.claim_batch(rep)
    assert batch is not None
    before = snapshot(run.r, st)
    with pytest.raises(InvalidInputError):
        st.ack_batch(rep, batch, {1: "X"})
    with pytest.raises(InvalidTypeError):
        st.ack_batch(rep, batch, [1])
    assert snapshot(run.r, st) == before


def test_release_puts_batch_back_in_order(run: Run) -> None:
    st = run.state()
    setup(st, [task(1), task(2, 2), task(3), task(4)], {1: 10, 2: 10})
    rep = st.join_replica(5.0)
    batch = st.claim_batch(rep)
    assert ids(batch) == [1, 3, 4] and batch is not None
    assert ready(st) == [2]
    intruder = run.state()
    other = intruder.join_replica(5.0)
    before = snapshot(run.r, st)
    with pytest.raises(LeaseLostError, match="not held"):
        intruder.release_batch(other, batch)
    with pytest.raises(LeaseLostError, match="not held"):
        intruder.ack_batch(other, batch, {1: "Q"})
    assert snapshot(run.r, st) == before
    st.release_batch(rep, batch)
    assert ready(st) == [1, 3, 4, 2]
    assert run.r.hlen(st.keys.claims) == 0 and run.r.hlen(st.keys.reserved) == 0
    assert ids(st.claim_batch(rep)) == [1, 3, 4]


def test_pending_work_and_final_count_a_held_batch(run: Run) -> None:
    st = run.state()
    setup(st, [task(1)], {1: 10})
    rep = st.join_replica(5.0)
    batch = st.claim_batch(rep)
    assert batch is not None
    other = run.attach()
    assert other.get_ready_to_run_count() == 0 and other.get_active_task_count() == 0
    assert other.has_pending_work()
    # a sync finishes the task while the batch is still held: not final until acknowledged
    other.apply_update(StateUpdate(task_statuses={1: "D"}))
    assert not other.all_tasks_final()
    st.ack_batch(rep, batch, {1: "Q"})
    assert other.all_tasks_final() and not other.has_pending_work()


# --- lease loss and reaping ---------------------------------------------------------------------


def test_reaped_holder_is_refused_and_changes_nothing(run: Run) -> None:
    st = run.state()
    setup(st, [task(1), task(2)], {1: 10})
    zombie = st.join_replica(30.0)
    batch = st.claim_batch(zombie)
    assert batch is not None
    expire_lease(run.r, st, zombie)
    # expired but not reaped yet: already refused
    before = snapshot(run.r, st)
    with pytest.raises(LeaseLostError, match="expired"):
        st.ack_batch(zombie, batch, {1: "Q", 2: "Q"})
    assert snapshot(run.r, st) == before
    other = run.state()
    report = other.reap()
    assert report.dead_replicas == (zombie.id,) and report.batches == 1 and report.tasks == 2
    before = snapshot(run.r, st)
    with pytest.raises(LeaseLostError):
        st.ack_batch(zombie, batch, {1: "Q", 2: "Q"})
    with pytest.raises(LeaseLostError):
        st.release_batch(zombie, batch)
    with pytest.raises(LeaseLostError):
        st.heartbeat(zombie)
    with pytest.raises(LeaseLostError):
        st.claim_batch(zombie)
    assert snapshot(run.r, st) == before


def test_reap_redrives_same_tasks_with_same_reservation(run: Run) -> None:
    st = run.state(limit=5)
    setup(st, [task(i) for i in range(1, 8)], {1: 3})
    dead = st.join_replica(30.0)
    batch = st.claim_batch(dead)
    assert ids(batch) == [1, 2, 3] and batch is not None
    reserved = run.r.hgetall(st.keys.reserved)
    expire_lease(run.r, st, dead)
    other = run.state()
    live = other.join_replica(5.0)
    report = other.reap()
    assert report.dead_replicas == (dead.id,) and not report.skipped
    assert run.r.hgetall(st.keys.reserved) == reserved  # capacity stays taken
    assert run.r.hlen(st.keys.claims) == 3
    assert other.has_pending_work() and other.get_array_capacity(1) == 0
    assert other.reap().skipped  # the mutex: a second sweep right away is skipped
    again = other.claim_batch(live)
    assert again is not None and again.redriven
    assert again.batch_id == batch.batch_id and again.task_ids == batch.task_ids
    assert run.r.hgetall(st.keys.reserved) == reserved
    other.ack_batch(live, again, {1: "Q", 2: "Q", 3: "Q"})
    assert run.r.hlen(st.keys.reserved) == 0 and other.get_active_task_count() == 3


def test_reap_ignores_live_replicas(run: Run) -> None:
    st = run.state()
    setup(st, [task(1)], {1: 10})
    rep = st.join_replica(30.0)
    assert st.claim_batch(rep) is not None
    report = st.reap(force=True)
    assert report.dead_replicas == () and report.batches == 0 and not report.skipped
    assert run.r.llen(st.keys.orphans) == 0


# --- leadership ---------------------------------------------------------------------------------


def test_leadership_epochs_and_fencing(run: Run) -> None:
    a_state, b_state = run.state(), run.state()
    a = a_state.join_replica(30.0, replica_id="a")
    b = b_state.join_replica(30.0, replica_id="b")
    assert b_state.leader() is None
    e1 = a_state.acquire_leadership(a, ttl_s=20.0)
    assert e1 == 1
    info = b_state.leader()
    assert info is not None and info.replica_id == "a" and info.epoch == 1
    assert info.incarnation == a.incarnation and 0 < info.remaining_ms <= 20000
    assert info.alive and info.lease_left_ms == info.remaining_ms
    assert b_state.acquire_leadership(b) is None
    expire_leadership(run.r, a_state)
    e2 = b_state.acquire_leadership(b)
    assert e2 == 2
    with pytest.raises(FencedError):
        a_state.renew_leadership(a, 1)
    a_state.set_run_status("R")
    before = snapshot(run.r, a_state)
    with pytest.raises(FencedError):
        a_state.set_run_status("C", epoch=1)
    with pytest.raises(FencedError):
        a_state.finalize("E", epoch=1)
    assert snapshot(run.r, a_state) == before
    assert b_state.set_run_status("C", epoch=2) == "C"
    b_state.renew_leadership(b, 2)
    a_state.resign_leadership(a, 1)  # not held: nothing happens
    assert b_state.leader() is not None
    b_state.resign_leadership(b, 2)
    assert b_state.leader() is None
    with pytest.raises(FencedError):
        b_state.set_run_status("T", epoch=2)
    assert a_state.acquire_leadership(a) == 3
    assert hget_int(run.r, a_state.keys.counters, "leader_changes") == 3


def test_dead_leader_is_cleared_by_reap(run: Run) -> None:
    a_state, b_state = run.state(), run.state()
    a = a_state.join_replica(30.0)
    b = b_state.join_replica(30.0)
    assert a_state.acquire_leadership(a, ttl_s=60.0) == 1
    assert b_state.acquire_leadership(b) is None
    expire_lease(run.r, a_state, a)
    report = b_state.reap()
    assert report.leader_cleared and report.dead_replicas == (a.id,)
    assert b_state.acquire_leadership(b) == 2


# --- run status ---------------------------------------------------------------------------------


def test_run_status_cas(run: Run) -> None:
    st = run.state()
    other = run.attach()
    assert st.set_run_status("R", expected="B") == "R"
    assert other.set_run_status("C") == "C"  # the resume signal
    with pytest.raises(TransitionError):
        st.set_run_status("R")  # a replica that has not heard C cannot write R over it
    assert other.get_status() == "C"
    with pytest.raises(TransitionError, match="expected"):
        st.set_run_status("T", expected="R")
    assert st.set_run_status("C") == "C"  # a repeat is a no-op
    assert st.set_run_status("T", expected="C") == "T"
    with pytest.raises(TransitionError):
        st.set_run_status("R")
    with pytest.raises(InvalidInputError):
        st.set_run_status("Z")


def test_finalize_exactly_once(run: Run) -> None:
    st = run.state()
    setup(st, [task(1), task(2)], {1: 10})
    st.set_run_status("R")
    other = run.attach()
    with pytest.raises(TransitionError, match="not DONE"):
        st.finalize("D")
    st.apply_update(StateUpdate(task_statuses={1: "D", 2: "D"}))
    assert other.finalize("D") is True
    assert st.finalize("D") is False
    assert st.finalize("E") is False  # already final: nothing changes
    assert st.get_status() == "D"
    assert run.r.hget(st.keys.meta, "finalized") == b"D"


def test_finalize_refuses_a_forbidden_transition(run: Run) -> None:
    st = run.state(status="R")
    st.set_run_status("S")
    with pytest.raises(TransitionError):
        st.finalize("E")
    assert st.finalize("S") is True


# --- fringe and reconcile -----------------------------------------------------------------------


def test_initial_fringe_once(run: Run) -> None:
    st = run.state()
    t1, t2, t3 = task(1), task(2), task(3, nup=1)
    a5, a6 = task(5, status="A"), task(6, status="A")
    done = task(4, status="D")
    st.add_arrays([ArrayRecord(1, 10)])
    st.add_tasks([t1, t2, t3, a5, a6, done])
    assert st.enqueue_initial_fringe() == 4
    assert ready(st) == [5, 6, 1, 2]
    assert run.r.hget(st.keys.qres, "1")  # resources keyed from the local objects
    assert run.attach().enqueue_initial_fringe() == 0
    assert ready(st) == [5, 6, 1, 2]


def test_reconcile_heals_each_crash_window(run: Run) -> None:
    st = run.state(propagate_on_apply=False)
    parent, child = task(1), task(2, nup=1)
    parent.downstream_swarm_tasks = {child}
    objs = setup(
        st,
        [parent, child, task(3), task(4, status="A"), task(5), task(6), task(7, 2)],
        {1: 10, 2: 10},
        queue=[3, 5, 6],
    )
    # 1. completion applied, replica died before propagating it
    st.apply_update(StateUpdate(task_statuses={1: "D"}))
    # 2. a jobmon-style dequeue, then the replica died before queueing the task on the server
    assert st.dequeue_task() is objs[3]
    # 3. an A task nobody queued
    assert objs[4].status == "A"
    # 4. a dead replica holding a batch
    dead = st.join_replica(30.0)
    assert ids(st.claim_batch(dead)) == [5, 6]
    # 5. counters that disagree with the sets, and a claim of a vanished batch
    st.apply_update(StateUpdate(task_statuses={7: "R"}))
    run.r.hset(st.keys.active, "2", 5)
    run.r.hset(st.keys.reserved, "1", 7)
    run.r.hset(st.keys.claims, "3", "999")
    expire_lease(run.r, st, dead)
    report = run.attach().reconcile()
    assert report.propagated == 1
    assert report.enqueued == 1  # task 3 (task 2 became ready through the propagation)
    assert report.requeued_front == 1
    assert report.reaped == 1
    assert report.active_fixed == 1 and report.reserved_fixed == 1 and report.stale_claims == 1
    assert not report.clean
    assert hget_int(run.r, st.keys.active, "2") == 1
    assert hget_int(run.r, st.keys.reserved, "1") == 2  # the orphaned batch keeps its share
    queue = ready(st)
    assert queue[0] == 4 and sorted(queue[1:]) == [2, 3]
    # re-queued tasks keep their resource key, so they batch as before
    assert all(run.r.hget(st.keys.qres, str(t)) for t in (2, 3, 4))
    assert run.r.lrange(st.keys.orphans, 0, -1) != []
    again = st.reconcile()
    assert again.clean, again


def test_reconcile_on_a_healthy_run_is_clean(run: Run) -> None:
    st = run.state()
    setup(st, [task(i) for i in range(1, 6)], {1: 2})
    rep = st.join_replica(30.0)
    batch = st.claim_batch(rep)
    assert batch is not None
    st.ack_batch(rep, batch, {1: "Q"})
    before = snapshot(run.r, st)
    assert st.reconcile().clean
    after = snapshot(run.r, st)
    assert after == before


def test_reconcile_counts_over_the_inline_limit_in_pages(run: Run) -> None:
    """More active tasks than reconcile_counters counts itself (ACTIVE_INLINE): the client counts
    them in pages and the script uses the count (both fronts and backends)."""
    from swarm_redis.engine.commands import ACTIVE_INLINE

    st = run.state(limit=10**6)
    st.add_arrays([ArrayRecord(1, 10**6), ArrayRecord(2, 10**6)])
    n = ACTIVE_INLINE + 50
    keys = st.keys
    pipe = run.r.pipeline(transaction=False)  # written straight into the keys: a fast fixture
    pipe.hset(keys.task, mapping={i: f"R|0|||{1 + i % 2}|0|0|" for i in range(1, n + 1)})
    pipe.sadd(keys.status_set("R"), *range(1, n + 1))
    pipe.hset(keys.active, mapping={"1": 3, "2": 9})  # drifted
    pipe.execute()
    report = st.reconcile()
    assert (report.active_fixed, report.active_unchecked) == (2, 0)
    assert run.r.hgetall(keys.active) == {
        b"1": str(n // 2).encode(),
        b"2": str(n - n // 2).encode(),
    }
    assert st.reconcile().clean


def test_leader_info_from_stored_fields() -> None:
    """One LeaderInfo for the library and the operator reads; stored fields are not trusted."""
    from swarm_redis.engine import transport
    from swarm_redis.ops import reads

    assert reads.LeaderInfo is LeaderInfo and reads.is_cluster is transport.is_cluster
    held = LeaderInfo.from_hash(
        {"id": "a", "incarnation": "i", "epoch": "3", "deadline_ms": "900"}, 400
    )
    assert (held.epoch, held.remaining_ms, held.alive, held.lease_left_ms) == (3, 500, True, 500)
    expired = LeaderInfo.from_hash({"id": "a", "epoch": "3", "deadline_ms": "300"}, 400)
    assert not expired.alive and expired.lease_left_ms == -100 and expired.incarnation == ""
    cleared = LeaderInfo.from_hash({"epoch": "4", "deadline_ms": "900"}, 400)
    assert cleared.replica_id == "" and not cleared.alive and cleared.lease_left_ms is None
    garbage = LeaderInfo.from_hash({"id": "a", "epoch": "x", "deadline_ms": "1e9"}, 400)
    assert garbage.epoch == 0 and not garbage.alive and garbage.lease_left_ms is None
