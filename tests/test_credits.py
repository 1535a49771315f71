"""No completion credit is ever lost, and a huge fan-out is credited in bounded, resumable calls.

* a downstream registered after its upstream's completion was propagated counts it (pending
  credits absorbed by registration), and is queued when the propagation would have queued it;
* completions, registrations in any order and chunking, and compute_initial_upstream_done_counts
  from several clients agree with the in-memory oracle (hypothesis, both backends);
* a real process registering a resumed 20k-task DAG while another computes the initial counts
  loses no credit;
* reconcile() heals every credit drift verify reports;
* one completion with 50k children runs as many bounded calls; a caller that dies in the middle
  leaves work that the next call or reconcile() finishes with exact counts.
"""

from __future__ import annotations

import multiprocessing as mp
import random
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replies import as_bytes

from swarm_redis.engine import commands as cmd
from swarm_redis.engine.core import run_sync
from swarm_redis.engine.keys import RunKeys
from swarm_redis.ops import verify
from swarm_redis.records import ArrayRecord, TaskRecord
from swarm_redis.state import RedisSwarmState
from swarm_redis.testing.dags import from_edges
from swarm_redis.testing.oracle import SwarmState
from swarm_redis.update import StateUpdate

MakeClient = Callable[..., redis.Redis]


def _tasks(defs: dict[int, tuple[str, list[int]]]) -> dict[int, TaskRecord]:
    """Fresh TaskRecords for {id: (status, children)} (ids 1..n), counts from the edges."""
    edges = [(i, k) for i, (_, kids) in defs.items() for k in kids]
    statuses = [defs[i][0] for i in range(1, len(defs) + 1)]
    return {t.task_id: t for t in from_edges(len(defs), edges, statuses=statuses)}


def _state(client: redis.Redis, run_id: int, prefix: str, **kw: Any) -> RedisSwarmState:
    s = RedisSwarmState(1, run_id, 1, redis=client, prefix=prefix, **kw)
    s.add_array(ArrayRecord(0, 1_000_000))
    return s


def _records(client: redis.Redis, keys: RunKeys) -> dict[int, cmd.TaskState]:
    return {int(k): cmd.decode_record(int(k), v) for k, v in client.hgetall(keys.task).items()}


def _queued(client: redis.Redis, keys: RunKeys) -> set[int]:
    return {int(as_bytes(x)) for x in client.zrange(keys.ready, 0, -1)}


# --- late registration -------------------------------------------------------------------------


def test_downstream_registered_after_completion_counts_it(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    a, b = _state(client, run_id, prefix), _state(make_client(), run_id, prefix)
    defs = {1: ("G", [3, 4]), 2: ("G", [4]), 3: ("G", []), 4: ("G", [])}
    objs_a, objs_b = _tasks(defs), _tasks(defs)
    a.add_tasks([objs_a[1], objs_a[2], objs_a[3]])
    result = a.apply(StateUpdate(task_statuses={1: "D"}))
    assert [t.task_id for t in result.ready] == [3]  # registered: reported and queued now
    assert client.hget(a.keys.pcredit, "4") == b"1q"  # 4 has no record yet: a pending credit
    assert b.has_pending_work() is True  # 3 is queued
    b.add_tasks([objs_b[4]])  # registration absorbs the credit
    rec = _records(client, a.keys)[4]
    assert (rec.num_upstreams_done, rec.start) == (1, 0)
    assert client.hexists(a.keys.pcredit, "4") == 0
    assert _queued(client, a.keys) == {3}  # 4 still waits for 2
    b.apply(StateUpdate(task_statuses={2: "D"}))
    assert _queued(client, a.keys) == {3, 4}
    assert verify.find_drift(client, a.keys).clean


def test_late_ready_task_is_queued_when_the_credit_would_have_queued_it(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s = _state(client, run_id, prefix)
    objs = _tasks({1: ("G", [2]), 2: ("G", [])})
    s.add_task(objs[1])
    s.apply(StateUpdate(task_statuses={1: "D"}))
    assert s.has_pending_work() is False and s.all_tasks_final() is True  # only 1 is known
    s.add_task(objs[2])
    assert _queued(client, s.keys) == {2}  # the run does not hang: 2 is ready and queued
    assert s.has_pending_work() is True
    assert s.get_task(2).num_upstreams_done == 1
    assert s.dequeue_task() is objs[2]


def test_initial_counts_credit_a_later_registration_once(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s = _state(client, run_id, prefix)
    objs = _tasks({1: ("D", [3]), 2: ("D", [3]), 3: ("G", [])})
    s.add_tasks([objs[1]])
    s.compute_initial_upstream_done_counts()
    s.add_tasks([objs[2]])
    s.compute_initial_upstream_done_counts()
    s.compute_initial_upstream_done_counts()  # idempotent
    assert client.hget(s.keys.pcredit, "3") == b"2"  # from a call that does not queue
    s.add_tasks([objs[3]])
    assert s.get_task(3).num_upstreams_done == 2
    assert _queued(client, s.keys) == set()  # the initial fringe queues it (jobmon's order)
    assert s.enqueue_initial_fringe() == 1
    assert _queued(client, s.keys) == {3}
    assert verify.find_drift(client, s.keys).clean


# --- differential: random orders, chunkings and interleavings --------------------------------


@st.composite
def _scenarios(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(2, 14))
    defs: dict[int, tuple[str, list[int]]] = {}
    for i in range(1, n + 1):
        later = list(range(i + 1, n + 1))
        kids = draw(st.lists(st.sampled_from(later), unique=True, max_size=3)) if later else []
        defs[i] = (draw(st.sampled_from("GGGD")), kids)
    order = draw(st.permutations(list(defs)))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=n - 1))) if n > 1 else []
    chunks = [list(order[a:b]) for a, b in zip([0, *cuts], [*cuts, n])]
    ops: list[tuple[str, Any, int]] = []
    for chunk in chunks:
        ops.append(("register", chunk, draw(st.integers(0, 2))))
        for _ in range(draw(st.integers(0, 2))):
            kind = draw(st.sampled_from(["complete", "initial", "propagate"]))
            ops.append((kind, draw(st.sampled_from(list(defs))), draw(st.integers(0, 2))))
    return {"defs": defs, "ops": ops, "budget": draw(st.sampled_from([1, 3, 1000]))}


def _check_against_oracle(make_client: MakeClient, prefix: str, scenario: dict[str, Any]) -> None:
    defs = scenario["defs"]
    run_id = 10**9 + secrets.randbelow(10**9)
    client = make_client()
    states = [
        _state(make_client(), run_id, prefix, chunk_budget=scenario["budget"]) for _ in range(3)
    ]
    objs = [_tasks(defs) for _ in states]
    registered: set[int] = set()
    completed: set[int] = set()
    for kind, arg, who in scenario["ops"]:
        s = states[who]
        if kind == "register":
            s.add_tasks([objs[who][i] for i in arg])
            registered.update(arg)
        elif kind == "complete" and arg in registered:
            s.apply(StateUpdate(task_statuses={arg: "D"}))
            completed.add(arg)
        elif kind == "initial":
            s.compute_initial_upstream_done_counts()
        elif kind == "propagate" and arg in registered:
            s.propagate_completions([arg])
    states[0].compute_initial_upstream_done_counts()  # jobmon: once everything is registered
    states[1].enqueue_initial_fringe()

    oracle = SwarmState(1, run_id, 1)
    mine = _tasks(defs)
    for t in mine.values():
        oracle.add_task(t)
    for i in completed:
        oracle.update_task_status(i, "D")
    oracle.compute_initial_upstream_done_counts()
    recs = _records(client, states[0].keys)
    assert set(recs) == set(defs)
    for i, t in mine.items():
        assert (recs[i].status, recs[i].num_upstreams_done) == (t.status, t.num_upstreams_done), i
    ready = {i for i, t in mine.items() if t.status == "G" and t.all_upstreams_done}
    assert _queued(client, states[0].keys) == ready
    report = verify.find_drift(client, states[0].keys)
    assert report.clean, report.counts
    assert report.info["pending_credits"] == 0 and report.info["fanout_in_progress"] == 0


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=_scenarios())
def test_random_registration_orders_agree_with_the_oracle(
    make_client: MakeClient, prefix: str, scenario: dict[str, Any]
) -> None:
    _check_against_oracle(make_client, prefix, scenario)


# --- race: chunked registration against repeated initial counts (real processes) -------------


def _resumed_dag(n: int) -> dict[int, tuple[str, list[int]]]:
    """A resumed DAG: 4 layers, the first half of the tasks DONE, 1-2 parents per child."""
    rng = random.Random(7)
    width = n // 4
    defs: dict[int, tuple[str, list[int]]] = {}
    for i in range(1, n + 1):
        layer = (i - 1) // width
        nxt = [j for j in range((layer + 1) * width + 1, min((layer + 2) * width, n) + 1)]
        kids = sorted(set(rng.sample(nxt, 2))) if len(nxt) >= 2 and layer < 3 else []
        defs[i] = ("D" if i <= n // 2 else "G", kids)
    return defs


def _register_worker(url: str, prefix: str, run_id: int, n: int, chunk: int) -> None:
    s = RedisSwarmState(1, run_id, 1, redis=redis.Redis.from_url(url, protocol=3), prefix=prefix)
    objs = _tasks(_resumed_dag(n))
    order = list(objs)
    random.Random(3).shuffle(order)
    for a in range(0, n, chunk):
        s.add_tasks([objs[i] for i in order[a : a + chunk]])


def _initial_worker(url: str, prefix: str, run_id: int, stop_at: float) -> None:
    s = RedisSwarmState(1, run_id, 1, redis=redis.Redis.from_url(url, protocol=3), prefix=prefix)
    while time.monotonic() < stop_at:
        s.compute_initial_upstream_done_counts()


def test_initial_counts_during_chunked_registration_lose_nothing(
    real_redis_url: str, prefix: str
) -> None:
    n = 20_000
    run_id = 10**9 + secrets.randbelow(10**9)
    client = redis.Redis.from_url(real_redis_url, protocol=3)
    RedisSwarmState(1, run_id, 1, redis=client, prefix=prefix)
    ctx = mp.get_context("spawn")
    reg = ctx.Process(target=_register_worker, args=(real_redis_url, prefix, run_id, n, 500))
    ini = ctx.Process(
        target=_initial_worker, args=(real_redis_url, prefix, run_id, time.monotonic() + 600)
    )
    reg.start()
    ini.start()
    reg.join(300)
    ini.terminate()  # mid-call is fine: every call is atomic
    ini.join(30)
    assert reg.exitcode == 0
    s = RedisSwarmState.attach(client, run_id, prefix=prefix)
    s.compute_initial_upstream_done_counts()  # credits the DONE tasks registered last
    defs = _resumed_dag(n)
    want = {i: 0 for i in defs}
    for status, kids in defs.values():
        if status == "D":
            for k in kids:
                want[k] += 1
    recs = _records(client, s.keys)
    lost = sum(want[i] - recs[i].num_upstreams_done for i in defs)
    doubled = sum(1 for i in defs if recs[i].num_upstreams_done > want[i])
    print(f"credits expected {sum(want.values())}, lost {lost}, tasks over-counted {doubled}")
    assert lost == 0 and doubled == 0
    assert client.hlen(s.keys.pcredit) == 0
    assert verify.find_drift(client, s.keys).clean


# --- reconcile heals every credit drift verify sees ---------------------------------------------


def test_reconcile_heals_credit_drift(make_client: MakeClient, run_id: int, prefix: str) -> None:
    client = make_client()
    s = _state(client, run_id, prefix)
    objs = _tasks({1: ("G", [3, 4]), 2: ("G", [4]), 3: ("G", []), 4: ("G", []), 5: ("G", [])})
    s.add_tasks(objs.values())
    s.apply(StateUpdate(task_statuses={1: "D", 2: "D"}))
    keys = s.keys
    # lost credits (as main left them: propagated upstream, count never raised), a doubled one,
    # and a leftover pending credit of a registered task
    for tid, old, new in ((4, b"G|2|", b"G|0|"), (3, b"G|1|", b"G|3|")):
        raw = client.hget(keys.task, str(tid))
        assert isinstance(raw, bytes) and raw.startswith(old)
        client.hset(keys.task, str(tid), new + raw[len(old) :])
    client.hset(keys.pcredit, "5", "1")
    client.delete(keys.ready, keys.queued, keys.qidx)
    before = verify.find_drift(client, keys)
    assert before.counts.get("done_count") == 2
    assert before.counts.get("pending_registered") == 1
    report = s.reconcile()
    assert report.credits_fixed == 3
    after = verify.find_drift(client, keys)
    assert after.clean, after.counts
    assert after.info["stalled_ready"] == 0
    assert _queued(client, keys) == {3, 4, 5}  # 5 has no upstream: ready from the start
    assert s.reconcile().credits_fixed == 0


# --- huge fan-out in bounded, resumable slices --------------------------------------------------


@pytest.fixture
def fanout_run(
    real_redis_url: str, prefix: str
) -> Iterator[tuple[redis.Redis, RedisSwarmState, TaskRecord]]:
    n = 50_000
    client = redis.Redis.from_url(real_redis_url, protocol=3)
    s = _state(client, 10**9 + secrets.randbelow(10**9), prefix, events_maxlen=0)
    parent = TaskRecord(1, 0, "G", 0, 0)
    kids = [TaskRecord(i, 0, "G", 1, 0) for i in range(2, n + 2)]
    parent.downstream_swarm_tasks = set(kids)
    s.add_tasks([parent, *kids])
    yield client, s, parent


def _drive(s: RedisSwarmState, op: Any, calls: int) -> list[list[Any]]:
    """Send the first `calls` round trips of an operation, then abandon it (a dead caller)."""
    sent = []
    batch = next(op)
    for _ in range(calls):
        sent.append(batch)
        batch = op.send(s._transport.execute(batch))
    op.close()
    return sent


def test_huge_fanout_is_credited_in_bounded_calls(
    fanout_run: tuple[redis.Redis, RedisSwarmState, TaskRecord],
) -> None:
    client, s, _ = fanout_run
    replies: list[Any] = []
    calls = 0

    def execute(batch: list[Any]) -> list[Any]:
        nonlocal calls
        out: list[Any] = s._transport.execute(batch)
        for c, reply in zip(batch, out):
            if isinstance(c, cmd.ScriptCall) and c.script in ("apply_update", "propagate"):
                calls += 1
                replies.append(reply)
        return out

    started = time.perf_counter()
    result = run_sync(execute, s._core.apply(StateUpdate(task_statuses={1: "D"})))
    elapsed = time.perf_counter() - started
    credited = [len(r[3 if len(r) > 5 else 2].split()) for r in replies]
    print(f"50k children: {calls} calls in {elapsed:.2f} s, at most {max(credited)} per call")
    assert len(result.ready) == 50_000
    assert calls >= 50 and max(credited) <= 1000  # each call credits a bounded slice
    assert client.hlen(s.keys.fanout) == 0
    assert verify.find_drift(client, s.keys).clean


@pytest.mark.parametrize("finisher", ["propagate", "reconcile"])
def test_abandoned_fanout_is_finished_exactly_once(
    fanout_run: tuple[redis.Redis, RedisSwarmState, TaskRecord], finisher: str
) -> None:
    client, s, _ = fanout_run
    _drive(s, s._core.apply(StateUpdate(task_statuses={1: "D"})), 3)  # dies after 3 slices
    rec = _records(client, s.keys)
    assert rec[1].status == "D" and rec[1].propagated  # counted; its slices are on the way
    progress = client.hget(s.keys.fanout, "1")
    assert progress is not None
    # what the two slices the caller sent credited
    credited = int(as_bytes(progress).split(b":")[0])
    assert credited == 2 * cmd.KIDS_SLICE  # slices of the kids hash
    assert sum(r.num_upstreams_done for r in rec.values()) == credited
    assert s.has_pending_work() is True and s.all_tasks_final() is False
    mid = verify.find_drift(client, s.keys)
    assert mid.clean, mid.counts  # in progress, not drift
    assert mid.info["fanout_in_progress"] == 1
    other = RedisSwarmState.attach(client, s.workflow_run_id, prefix=s.keys.prefix)
    if finisher == "propagate":
        other.propagate_completions([1])  # the next call for that task goes on
    else:
        other.reconcile()
    rec = _records(client, s.keys)
    assert rec[1].propagated
    assert all(rec[i].num_upstreams_done == 1 for i in range(2, 50_002))
    assert client.hlen(s.keys.fanout) == 0
    assert client.zcard(s.keys.ready) == (50_000 if finisher == "reconcile" else credited)
    after = verify.find_drift(client, s.keys)
    assert after.clean, after.counts
    other.propagate_completions([1])  # a replay changes nothing
    assert sum(r.num_upstreams_done for r in _records(client, s.keys).values()) == 50_000
