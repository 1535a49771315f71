"""Differential tests: memory.SwarmState (the seed's semantics) against RedisSwarmState.

A hypothesis rule-based machine drives both with the same random operations on small DAGs
(<= 12 tasks, separate object graphs) and checks after every step that they agree on statuses,
bucket sizes, queue order, done counts, capacities, percent done and has_pending_work.

Where DESIGN.md section 5 says the Redis state differs on purpose, the machine models the
difference explicitly (it asserts what Redis did, then keeps the oracle in step), and the
``test_documented_difference_*`` tests assert each difference side by side:

* DONE / ERROR_FATAL are final: memory regresses D -> R, Redis keeps D (and drops a task that
  became final from the ready queue);
* a completion is counted once: memory over-counts a double propagation, Redis does not;
* a task is queued at most once: memory queues duplicates, Redis does not (nor final tasks), and
  several tasks enqueued at the front in one call keep their order;
* 'E' is tracked: memory raises KeyError, Redis records it (and has_pending_work counts it);
* the run status follows the run FSM; stale sync times are ignored; last_sync only moves forward.

Generated statuses never include 'E' inside the machine (the oracle would be poisoned by it).
Example counts are fixed; with CI=true the search is derandomized.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Callable
from typing import Any

import fakeredis
import pytest
import redis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
    run_state_machine_as_test,
)

from swarm_redis import ArrayRecord, RedisSwarmState, StateUpdate, TaskRecord
from swarm_redis.constants import (
    SEED_TRACKED_STATUSES,
    TASK_STATUSES,
    WORKFLOW_RUN_STATUSES,
    run_transition_allowed,
)
from swarm_redis.engine.commands import decode_record, text
from swarm_redis.engine.keys import RunKeys
from swarm_redis.engine.validation import decode_sync_time
from swarm_redis.ops.verify import qidx_member
from swarm_redis.testing.dags import chain, from_edges
from swarm_redis.testing.oracle import SwarmState

MakeClient = Callable[..., redis.Redis]

#: Task statuses the machine generates: every letter except 'E' (see the module docstring).
GEN_STATUSES = "GQIORDAF"
ARRAYS = (1, 2)  # registered; tasks also use 0 and 3 (never registered)
UNKNOWN_ID = 99
T0 = datetime.datetime(2024, 5, 1, 12, 0, 0)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() in ("true", "1")


settings.register_profile(
    "swarm-diff",
    max_examples=15,
    stateful_step_count=20,
    deadline=None,
    derandomize=_in_ci(),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
FAKE_SETTINGS = settings.get_profile("swarm-diff")
REAL_SETTINGS = settings(FAKE_SETTINGS, max_examples=8)


# --- DAGs ------------------------------------------------------------------------------------------


@st.composite
def dags(draw: st.DrawFn) -> dict[str, Any]:
    n = draw(st.integers(1, 12))
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    edges = draw(st.sets(st.sampled_from(pairs), max_size=2 * n)) if pairs else set()
    return {
        "n": n,
        "edges": sorted(edges),
        "statuses": draw(st.lists(st.sampled_from(GEN_STATUSES), min_size=n, max_size=n)),
        "arrays": draw(st.lists(st.sampled_from((0, 1, 2, 3)), min_size=n, max_size=n)),
        "limits": draw(st.tuples(st.integers(0, 4), st.integers(0, 4))),
        "run_limit": draw(st.integers(0, 8)),
        "order": draw(st.permutations(range(n))),
    }


def build(dag: dict[str, Any]) -> list[TaskRecord]:
    """A fresh object graph for the DAG (ids 1..n)."""
    edges = [(i + 1, j + 1) for i, j in dag["edges"]]
    return from_edges(dag["n"], edges, arrays=dag["arrays"], statuses=dag["statuses"])


def ids(tasks: Any) -> list[int]:
    return [t.task_id for t in tasks]


# --- the machine -----------------------------------------------------------------------------------


class DiffMachine(RuleBasedStateMachine):
    """memory.SwarmState vs RedisSwarmState(propagate_on_apply=False)."""

    #: Set by the test that runs the machine: () -> (client factory, prefix, cleanup or None).
    connect: Callable[[], tuple[Callable[[], redis.Redis], str, Callable[[RunKeys], None] | None]]
    run_counter = 0

    def __init__(self) -> None:
        super().__init__()
        self.mem: SwarmState
        self.rd: RedisSwarmState
        self.cleanup: Callable[[RunKeys], None] | None = None

    @initialize(dag=dags(), chunk_budget=st.sampled_from([1, 3, 5000]))
    def setup(self, dag: dict[str, Any], chunk_budget: int) -> None:
        make_client, prefix, self.cleanup = type(self).connect()
        type(self).run_counter += 1
        run_id = 10**9 + os.getpid() % 1000 * 10**5 + type(self).run_counter
        self.n = dag["n"]
        self.mem_tasks = build(dag)
        self.rd_tasks = build(dag)
        self.mem = SwarmState(1, run_id, 5, max_concurrently_running=dag["run_limit"])
        self.rd = RedisSwarmState(
            1,
            run_id,
            5,
            max_concurrently_running=dag["run_limit"],
            redis=make_client(),
            prefix=prefix,
            propagate_on_apply=False,
            chunk_budget=chunk_budget,
        )
        self.keys = self.rd.keys
        for array_id, limit in zip(ARRAYS, dag["limits"]):
            self.mem.add_array(ArrayRecord(array_id, limit))
            self.rd.add_array(ArrayRecord(array_id, limit))
        for i in dag["order"]:
            self.mem.add_task(self.mem_tasks[i])
        self.rd.add_tasks([self.rd_tasks[i] for i in dag["order"]])
        self.mem.compute_initial_upstream_done_counts()
        self.rd.compute_initial_upstream_done_counts()
        self.propagated = {t.task_id for t in self.mem_tasks if t.status == "D"}
        self.replica = RedisSwarmState.attach(make_client(), run_id, prefix=prefix)
        self.clock = T0
        self.cached_first: dict[int, Any] = {}
        self.steps = 0

    def teardown(self) -> None:
        if self.cleanup is not None and hasattr(self, "keys"):
            self.cleanup(self.keys)

    # helpers

    def mem_task(self, task_id: int) -> TaskRecord:
        return self.mem.tasks[task_id]  # type: ignore[return-value]

    def is_final(self, task_id: int) -> bool:
        return self.mem_task(task_id).status in ("D", "F")

    def drop_final_from_queue(self) -> None:
        """Redis removes a task that became DONE/ERROR_FATAL from the ready queue."""
        kept = [t for t in self.mem.ready_to_run if t.status not in ("D", "F")]
        self.mem.ready_to_run.clear()
        self.mem.ready_to_run.extend(kept)

    # rules

    @rule(
        data=st.data(),
        with_limit=st.booleans(),
        with_arrays=st.booleans(),
        with_run_status=st.booleans(),
        sync=st.sampled_from(["none", "tie", "later"]),
    )
    def apply_update(
        self,
        data: st.DataObject,
        with_limit: bool,
        with_arrays: bool,
        with_run_status: bool,
        sync: str,
    ) -> None:
        id_pool = [*range(1, self.n + 1), UNKNOWN_ID]
        statuses = data.draw(
            st.dictionaries(st.sampled_from(id_pool), st.sampled_from(GEN_STATUSES), max_size=8)
        )
        limit = data.draw(st.integers(0, 8)) if with_limit else None
        array_limits = (
            data.draw(st.dictionaries(st.sampled_from((1, 2, 7)), st.integers(0, 4), max_size=3))
            if with_arrays
            else {}
        )
        run_status = data.draw(st.sampled_from(WORKFLOW_RUN_STATUSES)) if with_run_status else None
        sync_time = None
        if sync == "later":
            self.clock += datetime.timedelta(seconds=data.draw(st.integers(1, 5)))
        if sync != "none":
            sync_time = self.clock
        update = StateUpdate(
            task_statuses=statuses,
            max_concurrently_running=limit,
            array_limits=array_limits,
            workflow_run_status=run_status,
            sync_time=sync_time,
        )
        # Documented differences: final tasks do not move; the run status follows the run FSM.
        mem_statuses = {
            k: v for k, v in statuses.items() if k == UNKNOWN_ID or not self.is_final(k)
        }
        mem_run_status = (
            run_status
            if run_status is not None and run_transition_allowed(self.mem.status, run_status)
            else None
        )
        mem_update = StateUpdate(
            task_statuses=mem_statuses,
            max_concurrently_running=limit,
            array_limits=array_limits,
            workflow_run_status=mem_run_status,
            sync_time=sync_time,
        )
        rd_changed = self.rd.apply_update(update)
        mem_changed = self.mem.apply_update(mem_update)
        assert sorted(ids(rd_changed)) == sorted(ids(mem_changed))
        assert all(t is self.rd_tasks[t.task_id - 1] for t in rd_changed)
        assert all(t.status == statuses[t.task_id] for t in rd_changed)
        assert self.rd.last_ready == []  # propagate_on_apply=False
        self.drop_final_from_queue()

    @rule(idx=st.integers(0, 11), status=st.sampled_from(GEN_STATUSES))
    def update_task_status(self, idx: int, status: str) -> None:
        task_id = idx % self.n + 1
        final = self.is_final(task_id)
        got = self.rd.update_task_status(task_id, status)
        if final:
            assert got is False  # documented: final within a run
        else:
            assert got is self.mem.update_task_status(task_id, status)
        self.drop_final_from_queue()

    @rule(picks=st.lists(st.integers(0, 11), max_size=6))
    def propagate_completions(self, picks: list[int]) -> None:
        chosen = [p % self.n + 1 for p in picks]
        rd_ready = self.rd.propagate_completions([self.rd_tasks[i - 1] for i in chosen])
        # Redis counts each DONE task once and ignores the others; the oracle gets exactly
        # the tasks Redis counts (it would over-count the rest: see the explicit test).
        eligible: list[TaskRecord] = []
        for task_id in dict.fromkeys(chosen):
            if self.mem_task(task_id).status == "D" and task_id not in self.propagated:
                eligible.append(self.mem_task(task_id))
                self.propagated.add(task_id)
        mem_ready = self.mem.propagate_completions(eligible)
        assert sorted(ids(rd_ready)) == sorted(ids(mem_ready))
        assert all(t is self.rd_tasks[t.task_id - 1] for t in rd_ready)

    @rule(idx=st.integers(0, 11), front=st.booleans())
    def enqueue_task(self, idx: int, front: bool) -> None:
        task_id = idx % self.n + 1
        self.rd.enqueue_task(self.rd_tasks[task_id - 1], front=front)
        task = self.mem_task(task_id)
        # Documented: at most once, and never a final task.
        if not self.is_final(task_id) and task not in self.mem.ready_to_run:
            self.mem.enqueue_task(task, front=front)

    @rule(picks=st.lists(st.integers(0, 11), max_size=5), front=st.booleans())
    def enqueue_tasks(self, picks: list[int], front: bool) -> None:
        chosen = [p % self.n + 1 for p in picks]
        accepted = self.rd.enqueue_tasks([self.rd_tasks[i - 1] for i in chosen], front=front)
        expected: list[TaskRecord] = []
        for task_id in chosen:
            task = self.mem_task(task_id)
            if (
                not self.is_final(task_id)
                and task not in self.mem.ready_to_run
                and task not in expected
            ):
                expected.append(task)
        assert ids(accepted) == ids(expected)
        # Documented: several tasks at the front keep their given order.
        for task in reversed(expected) if front else expected:
            self.mem.enqueue_task(task, front=front)

    @rule(n=st.integers(1, 4))
    def dequeue(self, n: int) -> None:
        if n == 1:
            got = self.rd.dequeue_task()
            want = self.mem.dequeue_task()
            assert (got.task_id if got else None) == (want.task_id if want else None)
            assert got is None or got is self.rd_tasks[got.task_id - 1]
        else:
            got_list = self.rd.dequeue_tasks(n)
            want_list = [
                self.mem.ready_to_run.popleft() for _ in range(min(n, len(self.mem.ready_to_run)))
            ]
            assert ids(got_list) == ids(want_list)

    @rule(key=st.integers(0, 3), value=st.integers(0, 3))
    def cache_resources(self, key: int, value: int) -> None:
        rd_value = {"num_cores": value, "queue": "all.q"}
        mem_value = {"num_cores": value, "queue": "all.q"}
        got = self.rd.cache_resources(key, rd_value)
        want = self.mem.cache_resources(key, mem_value)
        assert got == want
        if key not in self.cached_first:
            self.cached_first[key] = got
            assert got is rd_value  # the writer gets its own object back
        assert got is self.cached_first[key]
        assert self.replica.get_cached_resources(key) == want

    @rule(idx=st.integers(0, 11), status=st.sampled_from(GEN_STATUSES))
    def readd_from_another_replica(self, idx: int, status: str) -> None:
        """Documented: registering a task again changes nothing (memory would double-bucket)."""
        self.replica.add_task(TaskRecord(idx % self.n + 1, status=status))

    @rule(limit=st.integers(0, 8))
    def set_limit(self, limit: int) -> None:
        self.rd.max_concurrently_running = limit
        self.mem.max_concurrently_running = limit

    @rule()
    def compute_initial_again(self) -> None:
        """Redis propagates every DONE task through the once-only gate: the oracle gets only
        the DONE tasks not counted yet (it would count the others again: see the explicit test).
        """
        self.rd.compute_initial_upstream_done_counts()
        eligible = [
            t for t in self.mem.get_tasks_by_status("D") if t.task_id not in self.propagated
        ]
        self.propagated |= {t.task_id for t in eligible}
        self.mem.propagate_completions(eligible)

    # checks

    @invariant()
    def agree_raw(self) -> None:
        """Cheap, after every step: one pipeline reading the run's keys directly."""
        if not hasattr(self, "rd"):
            return
        keys, mem = self.keys, self.mem
        pipe = self.rd.redis.pipeline(transaction=False)
        pipe.hgetall(keys.task)
        pipe.zrange(keys.ready, 0, -1, withscores=True)
        pipe.zrange(keys.qidx, 0, -1)
        pipe.hmget(keys.meta, "limit", "status", "last_sync")
        for s in TASK_STATUSES:
            pipe.scard(keys.status_set(s))
        records, scored, qidx, (limit, status, last_sync), *sizes = pipe.execute()
        ready = [m for m, _ in scored]
        decoded = {int(text(k)): decode_record(int(text(k)), v) for k, v in records.items()}
        assert {i: (r.status, r.num_upstreams_done) for i, r in decoded.items()} == {
            t.task_id: (t.status, t.num_upstreams_done) for t in mem.tasks.values()
        }
        assert dict(zip(TASK_STATUSES, sizes)) == {
            s: len(mem._task_status_map.get(s, ())) for s in TASK_STATUSES
        }
        assert [int(text(x)) for x in ready] == ids(mem.ready_to_run)
        # the per-array queue index is exact: one member per queue entry, nothing else
        assert sorted(text(m) for m in qidx) == sorted(
            qidx_member(decoded[int(text(m))].array_id, int(sc), int(text(m))) for m, sc in scored
        )
        assert int(limit) == mem.max_concurrently_running
        assert text(status) == mem.status
        assert decode_sync_time(None if last_sync is None else text(last_sync)) == mem.last_sync

    @invariant()
    def agree_through_the_api(self) -> None:
        """Every query of the public API, with mirrors refreshed on the caller's objects.

        Costlier (some 40 round trips): after the setup and then every fifth step.
        """
        if not hasattr(self, "rd"):
            return
        self.steps += 1
        if self.steps % 5 != 1:
            return
        rd, mem = self.rd, self.mem
        for i in range(1, self.n + 1):
            got = rd.get_task(i)
            assert got is self.rd_tasks[i - 1]
            want = self.mem_task(i)
            assert (i, got.status, got.num_upstreams_done) == (
                i,
                want.status,
                want.num_upstreams_done,
            )
        counts = rd.counts()
        assert {s: counts[s] for s in SEED_TRACKED_STATUSES} == {
            s: len(b) for s, b in mem._task_status_map.items()
        }
        assert counts["E"] == 0
        assert counts["tasks"] == len(mem.tasks)
        queue = list(rd.ready_to_run)
        assert ids(queue) == ids(mem.ready_to_run)
        assert all(t is self.rd_tasks[t.task_id - 1] for t in queue)
        assert rd.get_ready_to_run_count() == mem.get_ready_to_run_count()
        assert rd.get_active_task_count() == mem.get_active_task_count()
        assert rd.get_done_count() == mem.get_done_count()
        assert rd.get_failed_count() == mem.get_failed_count()
        assert sorted(ids(rd.get_done_tasks())) == sorted(ids(mem.get_done_tasks()))
        assert sorted(ids(rd.get_failed_tasks())) == sorted(ids(mem.get_failed_tasks()))
        assert rd.all_tasks_final() == mem.all_tasks_final()
        assert rd.get_available_capacity() == mem.get_available_capacity()
        for array_id in (0, 1, 2, 3, 7):
            assert rd.get_array_capacity(array_id) == mem.get_array_capacity(array_id), array_id
        assert rd.get_percent_done() == mem.get_percent_done()
        # has_pending_work: ours also counts 'E', which the machine never generates
        assert rd.has_pending_work() == mem.has_pending_work()
        assert rd.max_concurrently_running == mem.max_concurrently_running
        assert rd.status == mem.status
        assert rd.last_sync == mem.last_sync
        for s in ("G", "R", "D"):
            assert sorted(ids(rd.get_tasks_by_status(s))) == sorted(ids(mem.get_tasks_by_status(s)))


def _fake_connect() -> tuple[Callable[[], redis.Redis], str, None]:
    server = fakeredis.FakeServer(version=(7, 0))
    return (lambda: fakeredis.FakeRedis(server=server, protocol=3)), "swdiff", None


def test_differential_fakeredis() -> None:
    machine = type("FakeDiff", (DiffMachine,), {"connect": staticmethod(_fake_connect)})
    run_state_machine_as_test(machine, settings=FAKE_SETTINGS)


def test_differential_real_redis(real_redis_url: str, prefix: str) -> None:
    clients: list[redis.Redis] = []

    def make() -> redis.Redis:
        client = redis.Redis.from_url(real_redis_url, protocol=3)
        clients.append(client)
        return client

    def cleanup(keys: RunKeys) -> None:
        client = clients[0]
        found = list(client.scan_iter(match=keys.match_all, count=1000))
        if found:
            client.unlink(*found)
        for c in clients:
            c.close()
        clients.clear()

    def connect() -> tuple[Callable[[], redis.Redis], str, Callable[[RunKeys], None]]:
        return make, prefix, cleanup

    machine = type("RealDiff", (DiffMachine,), {"connect": staticmethod(connect)})
    run_state_machine_as_test(machine, settings=REAL_SETTINGS)


# --- the documented differences, side by side ------------------------------------------------------


@pytest.fixture
def pair(
    r: redis.Redis, run_id: int, prefix: str
) -> Callable[..., tuple[SwarmState, RedisSwarmState]]:
    def make(**kw: Any) -> tuple[SwarmState, RedisSwarmState]:
        return SwarmState(1, run_id, 5), RedisSwarmState(1, run_id, 5, redis=r, prefix=prefix, **kw)

    return make


def test_documented_difference_duplicate_enqueue(pair: Any) -> None:
    mem, rd = pair()
    m, r_ = TaskRecord(1), TaskRecord(1)
    mem.add_task(m)
    rd.add_task(r_)
    for _ in range(2):
        mem.enqueue_task(m)
        rd.enqueue_task(r_)
    assert ids(mem.ready_to_run) == [1, 1]
    assert ids(rd.ready_to_run) == [1]


def test_documented_difference_front_order(pair: Any) -> None:
    mem, rd = pair()
    mt, rt = [TaskRecord(i) for i in (1, 2, 3)], [TaskRecord(i) for i in (1, 2, 3)]
    for t in mt:
        mem.add_task(t)
    rd.add_tasks(rt)
    for t in mt:
        mem.enqueue_task(t, front=True)
    rd.enqueue_tasks(rt, front=True)
    assert ids(mem.ready_to_run) == [3, 2, 1]
    assert ids(rd.ready_to_run) == [1, 2, 3]
    # one at a time at the front, Redis behaves like the seed
    _, rd2 = pair()
    rd2.dequeue_tasks(3)
    for t in rt:
        rd2.enqueue_task(t, front=True)
    assert ids(rd2.ready_to_run) == [3, 2, 1]


def test_documented_difference_final_enqueue(pair: Any) -> None:
    mem, rd = pair()
    m, r_ = TaskRecord(1, status="D"), TaskRecord(1, status="D")
    mem.add_task(m)
    rd.add_task(r_)
    mem.enqueue_task(m)
    rd.enqueue_task(r_)
    assert ids(mem.ready_to_run) == [1]
    assert ids(rd.ready_to_run) == []


def test_documented_difference_done_is_final(pair: Any) -> None:
    mem, rd = pair()
    m, r_ = TaskRecord(1, status="R"), TaskRecord(1, status="R")
    mem.add_task(m)
    rd.add_task(r_)
    for update in (StateUpdate(task_statuses={1: "D"}), StateUpdate(task_statuses={1: "R"})):
        mem.apply_update(update)
        rd.apply_update(update)
    assert m.status == "R"
    assert mem.get_done_count() == 0
    assert rd.get_task(1).status == "D"
    assert rd.get_done_count() == 1


def test_documented_difference_final_task_leaves_the_queue(pair: Any) -> None:
    mem, rd = pair()
    m, r_ = TaskRecord(1), TaskRecord(1)
    mem.add_task(m)
    rd.add_task(r_)
    mem.enqueue_task(m)
    rd.enqueue_task(r_)
    update = StateUpdate(task_statuses={1: "F"})
    mem.apply_update(update)
    rd.apply_update(update)
    assert ids(mem.ready_to_run) == [1]
    assert ids(rd.ready_to_run) == []


def test_documented_difference_double_propagation(pair: Any) -> None:
    mem, rd = pair(propagate_on_apply=False)
    mt, rt = chain(3, statuses="DGR"), chain(3, statuses="DGR")
    for t in mt:
        mem.add_task(t)
    rd.add_tasks(rt)
    # downstream R: the seed over-counts silently
    mem.propagate_completions([mt[1]])
    mem.propagate_completions([mt[1]])
    assert mt[2].num_upstreams_done == 2
    assert rd.propagate_completions([rt[1]]) == []  # not DONE: ignored
    rd.apply_update(StateUpdate(task_statuses={2: "D"}))
    rd.propagate_completions([rt[1]])
    rd.propagate_completions([rt[1]])
    assert rd.get_task(3).num_upstreams_done == 1
    # downstream G: the seed's second propagation raises from all_upstreams_done
    assert mem.propagate_completions([mt[0]]) == [mt[1]]
    with pytest.raises(RuntimeError):
        mem.propagate_completions([mt[0]])
    assert rd.propagate_completions([rt[0]]) == []  # already counted? no: 1 was DONE at add
    rd.compute_initial_upstream_done_counts()
    rd.compute_initial_upstream_done_counts()
    assert rd.get_task(2).num_upstreams_done == 1


def test_documented_difference_compute_initial_twice(pair: Any) -> None:
    mem, rd = pair()
    mt, rt = chain(2, statuses="D"), chain(2, statuses="D")
    for t in mt:
        mem.add_task(t)
    rd.add_tasks(rt)
    mem.compute_initial_upstream_done_counts()
    mem.compute_initial_upstream_done_counts()
    rd.compute_initial_upstream_done_counts()
    rd.compute_initial_upstream_done_counts()
    assert mt[1].num_upstreams_done == 2
    assert rd.get_task(2).num_upstreams_done == 1


def test_documented_difference_e_status(pair: Any) -> None:
    mem, rd = pair()
    m, r_ = TaskRecord(1, status="R"), TaskRecord(1, status="R")
    mem.add_task(m)
    rd.add_task(r_)
    update = StateUpdate(task_statuses={1: "E"}, max_concurrently_running=3)
    with pytest.raises(KeyError):
        mem.apply_update(update)
    assert m.status == "E"  # partial mutation: in no bucket, and the limit was not applied
    assert all(m not in b for b in mem._task_status_map.values())
    assert mem.max_concurrently_running == 10000
    assert mem.has_pending_work() is False  # the seed does not count E
    assert rd.apply_update(update) == {r_}
    assert r_.status == "E"
    assert rd.get_tasks_by_status("E") == {r_}
    assert rd.max_concurrently_running == 3
    assert rd.has_pending_work() is True  # ours does
    with pytest.raises(KeyError):
        mem.add_task(TaskRecord(2, status="E"))
    rd.add_task(TaskRecord(2, status="E"))
    assert rd.counts()["E"] == 2


def test_documented_difference_readd_with_another_status(pair: Any) -> None:
    mem, rd = pair()
    mem.add_task(TaskRecord(1, status="G"))
    rd.add_task(TaskRecord(1, status="G"))
    mem.add_task(TaskRecord(1, status="R"))
    rd.add_task(TaskRecord(1, status="R"))
    assert (len(mem._task_status_map["G"]), len(mem._task_status_map["R"])) == (1, 1)
    assert (rd.counts()["G"], rd.counts()["R"]) == (1, 0)


def test_documented_difference_enqueue_of_an_unregistered_task(pair: Any) -> None:
    mem, rd = pair()
    mem.enqueue_task(TaskRecord(5))
    rd.enqueue_task(TaskRecord(5))
    assert mem.get_task(5) is None
    assert rd.get_task(5) is not None
    assert rd.counts()["tasks"] == 1


def test_documented_difference_stale_sync_time(pair: Any) -> None:
    mem, rd = pair()
    m, r_ = TaskRecord(1), TaskRecord(1)
    mem.add_task(m)
    rd.add_task(r_)
    later, earlier = T0 + datetime.timedelta(seconds=5), T0
    for update in (
        StateUpdate(task_statuses={1: "R"}, sync_time=later),
        StateUpdate(task_statuses={1: "Q"}, sync_time=earlier),
    ):
        mem.apply_update(update)
        rd.apply_update(update)
    assert (m.status, mem.last_sync) == ("Q", earlier)
    assert (rd.get_task(1).status, rd.last_sync) == ("R", later)


def test_documented_difference_run_status_fsm(pair: Any) -> None:
    mem, rd = pair()
    for letter in ("R", "C", "R"):
        mem.apply_update(StateUpdate(workflow_run_status=letter))
        rd.apply_update(StateUpdate(workflow_run_status=letter))
    assert mem.status == "R"
    assert rd.status == "C"
