"""The behaviour tests, run on both fronts (sync and asyncio) and both backends (fake and real)."""

from __future__ import annotations

import asyncio
import datetime
import inspect
from collections.abc import Iterator

import fakeredis
import pytest
from fronts import Front

from swarm_redis import (
    ArrayRecord,
    AsyncRedisSwarmState,
    InvalidInputError,
    RedisSwarmState,
    StateUpdate,
    TaskRecord,
    UnknownRunError,
)
from swarm_redis.engine.front import StateFront
from swarm_redis.testing.dags import diamond


def test_front_kind(front: Front, run_id: int, prefix: str) -> None:
    st = front.state(run_id, prefix=prefix)
    expected = AsyncRedisSwarmState if front.is_async else RedisSwarmState
    assert isinstance(st.raw, expected)
    assert st.front == front.name


def test_create_run_and_fields(front: Front, run_id: int, prefix: str) -> None:
    st = front.state(run_id, prefix=prefix, workflow_id=11, dag_id=22, max_concurrently_running=5)
    assert st.get_status() == "B"
    assert st.get_max_concurrently_running() == 5
    assert st.version >= 1
    st.set_status("R")
    assert st.get_status() == "R"
    st.set_max_concurrently_running(9)
    assert st.get_max_concurrently_running() == 9
    stamp = datetime.datetime(2026, 1, 2, 3, 4, 5, 6000)
    st.set_last_sync(stamp)
    assert st.get_last_sync() == stamp
    st.set_num_previously_complete(3)
    assert st.get_num_previously_complete() == 3
    # A second creator joins the run: the first creator's values win.
    again = front.state(
        run_id, prefix=prefix, workflow_id=11, dag_id=22, max_concurrently_running=1
    )
    assert again.get_max_concurrently_running() == 9


def test_add_tasks_and_reads(front: Front, run_id: int, prefix: str) -> None:
    st = front.state(run_id, prefix=prefix)
    tasks = diamond(7)
    st.add_array(ArrayRecord(7, 2))
    st.add_tasks(tasks)
    st.add_tasks(tasks)  # idempotent
    assert st.task_count() == 4
    assert st.get_task(3) is tasks[2]
    assert st.get_task(99) is None
    assert st.get_tasks_by_status("G") == set(tasks)
    assert st.get_tasks_by_status("Z") == set()
    assert set(st.get_all_tasks()) == {1, 2, 3, 4}
    assert st.get_arrays()[7].max_concurrently_running == 2
    counts = st.counts()
    assert counts["G"] == 4 and counts["tasks"] == 4 and counts["ready"] == 0
    assert st.get_percent_done() == 0.0


def test_invalid_input_writes_nothing(front: Front, run_id: int, prefix: str) -> None:
    st = front.state(run_id, prefix=prefix)
    st.add_tasks(diamond(7))
    before = st.version
    with pytest.raises(InvalidInputError):
        st.apply_update(StateUpdate(task_statuses={1: "R", 2: "Z"}))
    assert st.get_task(1).status == "G"
    assert st.version == before


def test_apply_propagates_and_queues(front: Front, run_id: int, prefix: str) -> None:
    st = front.state(run_id, prefix=prefix)
    t1, t2, t3, t4 = diamond(7)
    st.add_tasks([t1, t2, t3, t4])
    changed = st.apply_update(StateUpdate(task_statuses={1: "R", 2: "R"}))
    assert changed == {t1, t2}
    assert st.get_active_task_count() == 2
    changed = st.apply_update(StateUpdate(task_statuses={1: "D"}))
    assert changed == {t1}
    assert t3.num_upstreams_done == 1 and st.last_ready == []
    changed = st.apply_update(StateUpdate(task_statuses={2: "D"}))
    assert changed == {t2}
    assert t3.num_upstreams_done == 2
    assert st.last_ready == [t3]
    assert st.ready_to_run_list() == [t3]
    # A replayed DONE changes nothing and is not counted again.
    assert st.apply_update(StateUpdate(task_statuses={1: "D", 2: "D"})) == set()
    assert st.get_task(3).num_upstreams_done == 2
    assert st.ready_to_run_len() == 1
    assert st.get_done_count() == 2
    assert st.get_percent_done() == 50.0
    assert set(st.get_done_tasks()) == {t1, t2}
    assert st.has_pending_work()


def test_two_step_propagation(front: Front, run_id: int, prefix: str) -> None:
    st = front.state(run_id, prefix=prefix, propagate_on_apply=False)
    t1, t2, t3, _ = diamond(7)
    st.add_tasks([t1, t2, t3])
    st.apply_update(StateUpdate(task_statuses={1: "D", 2: "D"}))
    assert st.get_task(3).num_upstreams_done == 0
    assert st.propagate_completions([t1, t2]) == [t3]
    assert st.propagate_completions([t1, t2]) == []  # counted once
    assert st.get_task(3).num_upstreams_done == 2
    assert st.ready_to_run_len() == 0  # propagate does not queue


def test_initial_counts(front: Front, run_id: int, prefix: str) -> None:
    st = front.state(run_id, prefix=prefix)
    t1, t2, t3, t4 = diamond(7)
    t1.status = "D"
    st.add_tasks([t1, t2, t3, t4])
    st.compute_initial_upstream_done_counts()
    st.compute_initial_upstream_done_counts()  # absolute, not incremental
    assert st.get_task(3).num_upstreams_done == 1


def test_enqueue_dequeue(front: Front, run_id: int, prefix: str) -> None:
    st = front.state(run_id, prefix=prefix)
    tasks = [TaskRecord(i) for i in range(1, 6)]
    st.add_tasks(tasks)
    st.enqueue_task(tasks[0])
    st.enqueue_task(tasks[0])  # at most once
    assert st.enqueue_tasks(tasks[1:3]) == tasks[1:3]
    st.enqueue_task(tasks[3], front=True)
    assert st.ready_to_run_list() == [tasks[3], tasks[0], tasks[1], tasks[2]]
    assert st.get_ready_to_run_count() == 4
    assert st.dequeue_task() is tasks[3]
    assert st.dequeue_tasks(10) == [tasks[0], tasks[1], tasks[2]]
    assert st.dequeue_task() is None
    assert st.ready_to_run_len() == 0
    # An unknown task is registered on the way in.
    extra = TaskRecord(42)
    st.enqueue_task(extra)
    assert st.get_task(42) is extra
    assert st.dequeue_task() is extra


def test_capacity(front: Front, run_id: int, prefix: str) -> None:
    st = front.state(run_id, prefix=prefix, max_concurrently_running=3)
    st.add_array(ArrayRecord(7, 2))
    st.add_tasks(diamond(7))
    assert st.get_available_capacity() == 3
    assert st.get_array_capacity(7) == 2
    assert st.get_array_capacity(8) == 0
    st.apply_update(StateUpdate(task_statuses={1: "Q", 2: "R"}))
    assert st.get_available_capacity() == 1
    assert st.get_array_capacity(7) == 0
    st.apply_update(StateUpdate(task_statuses={1: "D"}))
    assert st.get_available_capacity() == 2
    assert st.get_array_capacity(7) == 1
    st.apply_update(StateUpdate(array_limits={7: 5}, max_concurrently_running=10))
    assert st.get_array_capacity(7) == 4
    assert st.get_available_capacity() == 9


def test_resource_cache(front: Front, run_id: int, prefix: str) -> None:
    st = front.state(run_id, prefix=prefix)
    other = front.attach(run_id, prefix=prefix)
    assert st.get_cached_resources(5) is None
    assert st.cache_resources(5, {"mem": "1G"}) == {"mem": "1G"}
    # First writer wins, across replicas.
    assert other.cache_resources(5, {"mem": "9G"}) == {"mem": "1G"}
    assert other.get_cached_resources(5) == {"mem": "1G"}
    assert st.resource_keys() == [5]
    # decimal hashes read back as ints, anything else as the text it was given
    for odd in ("--5", "-7x", "\u00b2", "-12"):
        st.cache_resources(odd, {"mem": odd})
    assert sorted(map(str, st.resource_keys())) == sorted(["5", "--5", "-7x", "\u00b2", "-12"])
    assert -12 in st.resource_keys()


def test_attach_rebuilds_the_run(front: Front, run_id: int, prefix: str) -> None:
    st = front.state(run_id, prefix=prefix, workflow_id=3, dag_id=4)
    st.add_array(ArrayRecord(7, 2))
    st.add_tasks(diamond(7))
    st.apply_update(StateUpdate(task_statuses={1: "D", 2: "D"}))
    other = front.attach(run_id, prefix=prefix)
    assert other.version == st.version
    assert (other.workflow_id, other.dag_id) == (3, 4)
    assert other.task_count() == 4
    rebuilt = other.get_task(3)
    assert isinstance(rebuilt, TaskRecord)
    assert (rebuilt.status, rebuilt.num_upstreams_done, rebuilt.num_upstreams) == ("G", 2, 2)
    assert {t.task_id for t in rebuilt.downstream_swarm_tasks} == {4}
    assert other.get_arrays()[7].max_concurrently_running == 2
    # The attached replica sees the queue the first one filled, and shares it.
    assert other.dequeue_task().task_id == 3
    assert st.ready_to_run_len() == 0


def test_attach_unknown_run(front: Front, run_id: int, prefix: str) -> None:
    with pytest.raises(UnknownRunError):
        front.attach(run_id, prefix=prefix)


def test_two_replicas_see_each_others_writes(front: Front, run_id: int, prefix: str) -> None:
    a = front.state(run_id, prefix=prefix)
    tasks = diamond(7)
    a.add_tasks(tasks)
    b = front.attach(run_id, prefix=prefix)
    b.apply_update(StateUpdate(task_statuses={1: "D", 2: "D"}))
    assert a.get_task(3).num_upstreams_done == 2
    assert a.dequeue_task() is tasks[2]
    assert b.dequeue_task() is None


@pytest.fixture
def async_front(
    request: pytest.FixtureRequest, backend: str, fake_server: fakeredis.FakeServer
) -> Iterator[Front]:
    """The async front alone, on this test's backend."""
    url = request.getfixturevalue("real_redis_url") if backend == "real" else None
    made = Front("async", url=url, fake_server=None if url else fake_server)
    yield made
    made.close()


def test_async_front_interleaves_on_one_loop(async_front: Front, run_id: int, prefix: str) -> None:
    """Many coroutines on one loop, each with its own client: nothing is dequeued twice."""
    front = async_front
    st = front.state(run_id, prefix=prefix)
    tasks = [TaskRecord(i) for i in range(1, 201)]
    st.add_tasks(tasks)
    st.enqueue_tasks(tasks)
    workers = [
        front.run(AsyncRedisSwarmState.attach(front.client(), run_id, prefix=prefix))
        for _ in range(4)
    ]

    async def drain(w: AsyncRedisSwarmState) -> list[int]:
        got: list[int] = []
        while True:
            batch = await w.dequeue_tasks(7)
            if not batch:
                return got
            got += [t.task_id for t in batch]

    async def all_of() -> list[list[int]]:
        return list(await asyncio.gather(*(drain(w) for w in workers)))

    results = front.run(all_of())
    flat = [i for r in results for i in r]
    assert sorted(flat) == list(range(1, 201))


#: Sync attributes that read Redis, and the async methods standing in for them.
PROPERTY_METHODS = {
    "status": ("get_status", "set_status"),
    "max_concurrently_running": (
        "get_max_concurrently_running",
        "set_max_concurrently_running",
    ),
    "last_sync": ("get_last_sync", "set_last_sync"),
    "num_previously_complete": (
        "get_num_previously_complete",
        "set_num_previously_complete",
    ),
    "tasks": ("get_all_tasks", "task_count"),
    "arrays": ("get_arrays", "add_array"),
    "ready_to_run": ("ready_to_run_list", "ready_to_run_len"),
    "_task_status_map": ("get_tasks_by_status",),
    "task_resources_cache": ("get_cached_resources", "cache_resources", "resource_keys"),
}
#: Sync properties without I/O: plain properties on the async front too.
LOCAL_PROPERTIES = ("keys", "version", "last_ready", "active_task_statuses")
#: Sync helpers that only serve the views.
VIEW_HELPERS = ("_view",)  # one object per attribute view: the views are sync-only


def test_async_front_mirrors_every_sync_method() -> None:
    """Every method of RedisSwarmState is a coroutine with the same parameters on the async front."""
    for name, fn in inspect.getmembers(RedisSwarmState, inspect.isfunction):
        if name in VIEW_HELPERS or (name.startswith("__") and name.endswith("__")):
            continue
        if name in vars(StateFront):  # construction, shared by both fronts (or its hooks)
            continue
        twin = getattr(AsyncRedisSwarmState, name, None)
        assert twin is not None, f"AsyncRedisSwarmState lacks {name}"
        assert inspect.iscoroutinefunction(twin), f"{name} is not a coroutine function"
        sync_params = list(inspect.signature(fn).parameters.values())
        async_params = list(inspect.signature(twin).parameters.values())
        assert sync_params == async_params, name
    sync_attach = inspect.signature(RedisSwarmState.attach).parameters
    async_attach = inspect.signature(AsyncRedisSwarmState.attach).parameters
    assert list(sync_attach) == list(async_attach)
    for name in dir(RedisSwarmState):
        if not isinstance(inspect.getattr_static(RedisSwarmState, name), property):
            continue
        if name in LOCAL_PROPERTIES:
            assert isinstance(inspect.getattr_static(AsyncRedisSwarmState, name), property)
            continue
        assert name in PROPERTY_METHODS, f"no async mapping for the sync attribute {name}"
        for method in PROPERTY_METHODS[name]:
            assert inspect.iscoroutinefunction(getattr(AsyncRedisSwarmState, method)), method


def test_replicas_on_both_fronts(front: Front, run_id: int, prefix: str) -> None:
    replicas_scenario(front, run_id, prefix)


def replicas_scenario(front: Front, run_id: int, prefix: str) -> None:
    """Two replicas claim disjoint batches, ack them, lead one at a time, finalize once."""
    a = front.state(run_id, prefix=prefix, max_concurrently_running=4)
    b = front.attach(run_id, prefix=prefix)
    tasks = [TaskRecord(i, 7) for i in range(1, 7)]
    a.add_array(ArrayRecord(7, 4))
    a.add_tasks(tasks)
    ra, rb = a.join_replica(ttl_s=30), b.join_replica(ttl_s=30)
    assert a.enqueue_initial_fringe() == 6
    first = a.claim_batch(ra, max_size=2)
    second = b.claim_batch(rb, max_size=2)
    assert first is not None and second is not None
    assert not set(first.task_ids) & set(second.task_ids)
    assert a.get_available_capacity() == 0  # four tasks reserved by the two claims
    changed = a.ack_batch(ra, first, dict.fromkeys(first.task_ids, "Q"))
    assert {t.task_id for t in changed} == set(first.task_ids)
    b.release_batch(rb, second)
    assert a.get_available_capacity() == 2
    epoch = a.acquire_leadership(ra, ttl_s=30)
    assert epoch is not None
    assert b.acquire_leadership(rb, ttl_s=30) is None
    leader = b.leader()
    assert leader is not None and leader.replica_id == ra.id and leader.epoch == epoch
    a.set_run_status("R", epoch=epoch)
    assert b.get_status() == "R"
    assert a.reconcile().clean
    a.apply_update(StateUpdate(task_statuses=dict.fromkeys(range(1, 7), "D")))
    assert a.finalize("D", epoch=epoch) is True
    assert b.finalize("D") is False
    b.leave(rb)
    a.leave(ra)
