"""Behaviour of RedisSwarmState (issue 2), on fakeredis and a real Redis, with both client kinds.

Every test runs four times: {fake, real} backend x {bytes, str} client (``decode_responses``).
Where a second replica is involved it uses the other client kind, so mixed replicas are covered.
"""

from __future__ import annotations

import datetime
import os
import subprocess
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, cast

import pytest
import redis

from swarm_redis import (
    ArrayRecord,
    InvalidInputError,
    InvalidTypeError,
    RedisSwarmState,
    StateUpdate,
    SwarmRedisError,
    TaskRecord,
    UnknownRunError,
    register_resource_class,
    resource_digest,
)
from swarm_redis.constants import SEED_TRACKED_STATUSES, TASK_STATUSES
from swarm_redis.engine.commands import ScriptCall
from swarm_redis.testing import dags
from swarm_redis.testing.dags import layered, link

MakeClient = Callable[..., redis.Redis]
StateFactory = Callable[..., RedisSwarmState]

UTC = datetime.timezone.utc
T0 = datetime.datetime(2024, 5, 1, 12, 0, 0)


# --- fixtures and helpers ----------------------------------------------------------------------


@pytest.fixture(params=[False, True], ids=["bytes", "str"])
def decode(request: pytest.FixtureRequest) -> bool:
    """decode_responses of the client the state under test uses."""
    value: bool = request.param
    return value


@pytest.fixture
def client(make_client: MakeClient, decode: bool) -> redis.Redis:
    return make_client(decode_responses=decode)


@pytest.fixture
def other_client(make_client: MakeClient, decode: bool) -> redis.Redis:
    """A second replica's client, of the other kind."""
    return make_client(decode_responses=not decode)


@pytest.fixture
def new_state(client: redis.Redis, run_id: int, prefix: str) -> StateFactory:
    """Build a state for this test's run (extra kwargs go to the constructor)."""

    def make(**kw: Any) -> RedisSwarmState:
        args = {"workflow_id": 1, "workflow_run_id": run_id, "dag_id": 5}
        for name in ("workflow_id", "workflow_run_id", "dag_id"):
            if name in kw:
                args[name] = kw.pop(name)
        kw.setdefault("redis", client)
        kw.setdefault("prefix", prefix)
        return RedisSwarmState(args["workflow_id"], args["workflow_run_id"], args["dag_id"], **kw)

    return make


@pytest.fixture
def replica(other_client: redis.Redis, run_id: int, prefix: str) -> Callable[[], RedisSwarmState]:
    """Attach a second replica (other client kind) to this test's run."""

    def make() -> RedisSwarmState:
        return RedisSwarmState.attach(other_client, run_id, prefix=prefix)

    return make


def ids(tasks: Iterable[Any]) -> list[int]:
    return [t.task_id for t in tasks]


def sorted_ids(tasks: Iterable[Any]) -> list[int]:
    return sorted(t.task_id for t in tasks)


def diamond() -> dict[str, TaskRecord]:
    """a, b -> c -> d; e independent."""
    return dict(zip("abcde", dags.diamond(lone=True), strict=True))


def one_per_status() -> list[TaskRecord]:
    return [TaskRecord(100 + i, status=s) for i, s in enumerate(TASK_STATUSES)]


@dataclass
class Resources:
    """A dataclass resource value (decoded by class path: must be importable)."""

    num_cores: int
    memory: str
    queue: str = "all.q"


class ToDictResources:
    """An object with to_dict/from_dict, like jobmon's TaskResources."""

    def __init__(self, requested: dict[str, Any], queue: str) -> None:
        self.requested = requested
        self.queue = queue

    def to_dict(self) -> dict[str, Any]:
        return {"requested": self.requested, "queue": self.queue}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToDictResources:
        return cls(d["requested"], d["queue"])

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, ToDictResources)
            and self.requested == other.requested
            and self.queue == other.queue
        )

    __hash__ = None  # type: ignore[assignment]


# resource classes are decoded only when registered (the codec never imports a stored name)
register_resource_class(Resources)
register_resource_class(ToDictResources)


def meta(client: redis.Redis, state: RedisSwarmState) -> dict[str, str]:
    raw = client.hgetall(state.keys.meta)
    return {
        (k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
        for k, v in raw.items()
    }


# --- construction ------------------------------------------------------------------------------


def test_constructor_defaults(new_state: StateFactory) -> None:
    state = new_state()
    assert (state.workflow_id, state.dag_id) == (1, 5)
    assert state.max_concurrently_running == 10000
    assert state.status == "B"
    assert state.last_sync is None
    assert state.num_previously_complete == 0
    assert len(state.tasks) == 0
    assert len(state.arrays) == 0
    assert len(state.ready_to_run) == 0
    assert not state.ready_to_run
    assert len(state.task_resources_cache) == 0
    assert state.active_task_statuses == ("Q", "I", "O", "R")
    assert state.has_pending_work() is False
    assert state.all_tasks_final() is True
    assert state.get_percent_done() == 0.0


def test_run_meta_is_created_once(
    new_state: StateFactory, client: redis.Redis, other_client: redis.Redis
) -> None:
    first = new_state(workflow_id=3, dag_id=4, max_concurrently_running=50, status="B")
    first_meta = meta(client, first)
    assert first_meta["workflow_id"] == "3"
    assert first_meta["dag_id"] == "4"
    assert first_meta["limit"] == "50"
    assert first_meta["status"] == "B"
    second = new_state(
        workflow_id=9, dag_id=8, max_concurrently_running=7, status="R", redis=other_client
    )
    assert second.max_concurrently_running == 50
    assert second.status == "B"
    again = meta(client, first)
    for name in ("workflow_id", "dag_id", "limit", "status", "created_ms", "workflow_run_id"):
        assert again[name] == first_meta[name], name


def test_constructor_needs_a_client(run_id: int, prefix: str) -> None:
    with pytest.raises(InvalidTypeError, match="redis"):
        RedisSwarmState(1, run_id, 5, prefix=prefix)


def test_keys_carry_one_hash_tag(new_state: StateFactory, run_id: int, prefix: str) -> None:
    state = new_state()
    assert all(k.startswith(f"{prefix}:{{{run_id}}}:") for k in state.keys.all)
    assert len(set(state.keys.all)) == len(state.keys.all)


# --- registry ------------------------------------------------------------------------------------


def test_add_task_registers_and_returns_the_same_object(new_state: StateFactory) -> None:
    state = new_state()
    task = TaskRecord(1, status="Q", array_id=0)
    state.add_task(task)
    assert state.get_task(1) is task
    assert state.tasks[1] is task
    assert 1 in state.tasks
    assert 2 not in state.tasks
    assert list(state.tasks) == [1]
    assert state.get_tasks_by_status("Q") == {task}
    assert state.counts()["Q"] == 1
    assert state.counts()["tasks"] == 1


def test_add_task_again_with_another_status_changes_nothing(new_state: StateFactory) -> None:
    """Deliberate difference: the seed would put one id in two buckets."""
    state = new_state()
    state.add_task(TaskRecord(1, status="G"))
    newer = TaskRecord(1, status="R")
    state.add_task(newer)
    counts = state.counts()
    assert counts["G"] == 1
    assert counts["R"] == 0
    assert counts["tasks"] == 1
    assert state.get_active_task_count() == 0
    assert newer.status == "G"  # the mirror was refreshed from Redis
    assert ids(state.get_tasks_by_status("G")) == [1]
    assert state.get_tasks_by_status("R") == set()


def test_add_tasks_is_idempotent(new_state: StateFactory, client: redis.Redis) -> None:
    state = new_state()
    t = diamond()
    state.add_tasks(t.values())
    before = {k: client.hgetall(k) for k in (state.keys.task, state.keys.active)}
    version = state.version
    state.add_tasks(t.values())
    state.add_tasks([TaskRecord(1, status="D"), TaskRecord(2, status="Q")])
    after = {k: client.hgetall(k) for k in (state.keys.task, state.keys.active)}
    assert after == before
    assert state.counts()["G"] == 5
    assert state.counts()["tasks"] == 5
    assert state.version == version  # nothing was written


def test_add_task_keeps_its_starting_done_count(new_state: StateFactory) -> None:
    state = new_state()
    task = TaskRecord(1, num_upstreams=3, num_upstreams_done=2)
    state.add_task(task)
    task.num_upstreams_done = 0  # a stale local value is overwritten by the next read
    assert state.get_task(1) is task
    assert task.num_upstreams_done == 2


def test_add_array_and_arrays_view(new_state: StateFactory, replica: Any) -> None:
    state = new_state()
    first = ArrayRecord(7, 3)
    state.add_array(first)
    assert state.arrays[7] is first
    assert 7 in state.arrays
    assert len(state.arrays) == 1
    second = ArrayRecord(8, 2)
    state.arrays[8] = second
    assert sorted(state.arrays) == [7, 8]
    assert state.arrays[8] is second
    with pytest.raises(KeyError):
        state.arrays[9] = ArrayRecord(8, 1)
    with pytest.raises(TypeError):
        del state.arrays[7]
    with pytest.raises(KeyError):
        state.arrays[99]
    # re-adding overwrites the limit (as jobmon's add_array)
    state.add_array(ArrayRecord(7, 11))
    assert state.get_array_capacity(7) == 11
    other = replica()
    assert other.arrays[7].max_concurrently_running == 11
    assert other.arrays[8].max_concurrently_running == 2
    assert other.arrays[7].array_id == 7


def test_get_task_unknown_is_none(new_state: StateFactory) -> None:
    state = new_state()
    state.add_task(TaskRecord(1))
    assert state.get_task(2) is None
    with pytest.raises(KeyError):
        state.tasks[2]


def test_get_task_refreshes_the_same_object_after_another_replica_wrote(
    new_state: StateFactory, replica: Any
) -> None:
    state = new_state()
    t = diamond()
    state.add_tasks(t.values())
    other = replica()
    other.apply_update(StateUpdate(task_statuses={1: "D", 3: "R"}))
    assert t["a"].status == "G"  # not refreshed yet: nobody read
    got_a = state.get_task(1)
    got_c = state.get_task(3)
    assert got_a is t["a"]
    assert got_c is t["c"]
    assert t["a"].status == "D"
    assert t["c"].status == "R"
    assert t["c"].num_upstreams_done == 1
    assert state.tasks[3] is t["c"]


def test_get_tasks_by_status_all_nine_letters(new_state: StateFactory) -> None:
    state = new_state()
    tasks = one_per_status()
    state.add_tasks(tasks)
    for task, status in zip(tasks, TASK_STATUSES):
        found = state.get_tasks_by_status(status)
        assert found == {task}
        assert next(iter(found)) is task
    assert state.get_tasks_by_status("Z") == set()
    assert state.get_tasks_by_status("") == set()
    assert state.get_tasks_by_status("GQ") == set()


def test_get_tasks_by_status_is_a_snapshot(new_state: StateFactory) -> None:
    state = new_state()
    state.add_tasks([TaskRecord(1, status="D"), TaskRecord(2)])
    snap = state.get_tasks_by_status("D")
    snap.clear()
    assert ids(state.get_tasks_by_status("D")) == [1]


def test_get_tasks_by_status_builds_objects_for_tasks_it_never_saw(
    new_state: StateFactory, replica: Any
) -> None:
    state = new_state()
    state.add_task(TaskRecord(1))
    other = replica()
    other.add_task(TaskRecord(2, status="R", array_id=4))
    found = state.get_tasks_by_status("R")
    assert ids(found) == [2]
    rec = next(iter(found))
    assert rec.array_id == 4
    assert state.get_task(2) is rec


# --- queries ---------------------------------------------------------------------------------------


def test_count_queries(new_state: StateFactory) -> None:
    state = new_state(max_concurrently_running=6)
    statuses = ["G", "Q", "I", "O", "R", "R", "D", "D", "E", "A", "F"]
    tasks = [TaskRecord(i, status=s) for i, s in enumerate(statuses, start=1)]
    state.add_tasks(tasks)
    state.enqueue_task(tasks[0])
    assert state.get_active_task_count() == 5
    assert state.get_ready_to_run_count() == 1
    assert state.get_done_count() == 2
    assert state.get_failed_count() == 1
    assert sorted_ids(state.get_done_tasks()) == [7, 8]
    assert ids(state.get_failed_tasks()) == [11]
    assert isinstance(state.get_done_tasks(), list)
    assert state.get_done_tasks() is not state.get_done_tasks()
    assert all(t is tasks[t.task_id - 1] for t in state.get_done_tasks())
    assert state.all_tasks_final() is False
    assert state.get_available_capacity() == 1
    assert state.get_percent_done() == round(2 / 11 * 100, 2)
    assert {t.task_id for t in state._get_active_tasks()} == {2, 3, 4, 5, 6}
    counts = state.counts()
    assert {s: counts[s] for s in TASK_STATUSES} == {
        "G": 1, "Q": 1, "I": 1, "O": 1, "R": 2, "D": 2, "E": 1, "A": 1, "F": 1
    }  # fmt: skip
    assert counts["ready"] == 1
    assert counts["tasks"] == 11
    assert counts["claimed"] == 0
    assert len(state.tasks) == 11


def test_all_tasks_final(new_state: StateFactory) -> None:
    state = new_state()
    state.add_tasks([TaskRecord(1, status="D"), TaskRecord(2, status="F")])
    assert state.all_tasks_final() is True
    assert state.get_percent_done() == 50.0
    state.add_task(TaskRecord(3, status="E"))
    assert state.all_tasks_final() is False


@pytest.mark.parametrize("status", list(TASK_STATUSES))
def test_has_pending_work_by_status(new_state: StateFactory, status: str) -> None:
    state = new_state()
    state.add_task(TaskRecord(1, status=status))
    assert state.has_pending_work() is (status in "QIOREA")


def test_has_pending_work_counts_the_queue(new_state: StateFactory) -> None:
    state = new_state()
    task = TaskRecord(1)
    state.add_task(task)
    assert state.has_pending_work() is False
    state.enqueue_task(task)
    assert state.has_pending_work() is True
    assert state.dequeue_task() is task
    assert state.has_pending_work() is False


def test_workflow_capacity_is_clamped_at_zero(new_state: StateFactory) -> None:
    state = new_state(max_concurrently_running=5)
    state.add_tasks([TaskRecord(i, status="R") for i in range(1, 5)])
    assert state.get_available_capacity() == 1
    state.max_concurrently_running = 2
    assert state.get_available_capacity() == 0
    state.apply_update(StateUpdate(task_statuses={1: "D", 2: "D", 3: "D"}))
    assert state.get_available_capacity() == 1


def test_array_capacity(new_state: StateFactory) -> None:
    state = new_state(max_concurrently_running=0)
    state.add_array(ArrayRecord(7, 2))
    state.add_array(ArrayRecord(8, 5))
    tasks = [TaskRecord(i, array_id=7, status="R") for i in (1, 2, 3)]
    tasks += [TaskRecord(4, array_id=8, status="Q"), TaskRecord(5, array_id=8, status="G")]
    tasks += [TaskRecord(6, array_id=9, status="R")]
    state.add_tasks(tasks)
    assert state.get_array_capacity(7) == 0  # 2 - 3, clamped
    assert state.get_array_capacity(8) == 4
    assert state.get_array_capacity(9) == 0  # unregistered
    assert state.get_array_capacity(12345) == 0
    assert state.get_available_capacity() == 0  # independent of the array capacities
    state.apply_update(StateUpdate(task_statuses={1: "D", 2: "F", 4: "I", 5: "O"}))
    assert state.get_array_capacity(7) == 1
    assert state.get_array_capacity(8) == 3
    state.apply_update(StateUpdate(task_statuses={3: "E", 4: "A", 5: "G"}))
    assert state.get_array_capacity(7) == 2
    assert state.get_array_capacity(8) == 5


# --- apply_update rules ------------------------------------------------------------------------


def test_apply_update_returns_the_changed_objects(new_state: StateFactory) -> None:
    state = new_state()
    tasks = [TaskRecord(i) for i in (1, 2, 3)]
    state.add_tasks(tasks)
    changed = state.apply_update(StateUpdate(task_statuses={1: "Q", 2: "G", 99: "R"}))
    assert changed == {tasks[0]}
    assert next(iter(changed)) is tasks[0]
    assert tasks[0].status == "Q"
    assert state.get_task(99) is None  # unknown ids are skipped, not registered
    assert state.counts()["tasks"] == 3
    assert state.apply_update(StateUpdate(task_statuses={1: "Q"})) == set()
    assert state.update_task_status(1, "R") is True
    assert state.update_task_status(1, "R") is False
    assert state.update_task_status(77, "R") is False
    assert tasks[0].status == "R"


def test_apply_update_any_transition_that_is_not_from_a_final_status(
    new_state: StateFactory,
) -> None:
    state = new_state()
    task = TaskRecord(1, status="R")
    state.add_task(task)
    for status in ["G", "A", "E", "Q", "I", "O", "R", "E", "G"]:
        assert state.apply_update(StateUpdate(task_statuses={1: status})) == {task}
        assert task.status == status
        assert ids(state.get_tasks_by_status(status)) == [1]
        assert sum(state.counts()[s] for s in TASK_STATUSES) == 1


@pytest.mark.parametrize("final", ["D", "F"])
def test_done_and_fatal_are_final(new_state: StateFactory, final: str) -> None:
    state = new_state()
    task = TaskRecord(1, status="R")
    state.add_task(task)
    state.apply_update(StateUpdate(task_statuses={1: final}))
    for status in TASK_STATUSES:
        assert state.apply_update(StateUpdate(task_statuses={1: status})) == set()
        assert task.status == final
    assert ids(state.get_tasks_by_status(final)) == [1]
    assert state.get_active_task_count() == 0


def test_stale_sync_time_is_ignored_per_task(new_state: StateFactory) -> None:
    state = new_state()
    a, b = TaskRecord(1), TaskRecord(2)
    state.add_tasks([a, b])
    t1, t2 = T0, T0 + datetime.timedelta(seconds=10)
    state.apply_update(StateUpdate(task_statuses={1: "Q"}, sync_time=t2))
    # older stamp: task 1 was stamped t2 and is skipped; task 2 has no stamp yet and applies
    changed = state.apply_update(StateUpdate(task_statuses={1: "R", 2: "Q"}, sync_time=t1))
    assert changed == {b}
    assert (a.status, b.status) == ("Q", "Q")
    # a tie applies
    assert state.apply_update(StateUpdate(task_statuses={1: "I"}, sync_time=t2)) == {a}
    # no sync time applies
    assert state.apply_update(StateUpdate(task_statuses={1: "O"})) == {a}
    # still stamped t2: an older one is still refused
    assert state.apply_update(StateUpdate(task_statuses={1: "R"}, sync_time=t1)) == set()
    assert state.get_task(1).status == "O"
    assert state.last_sync == t2


def test_stale_guard_compares_strings_and_datetimes_alike(new_state: StateFactory) -> None:
    state = new_state()
    task = TaskRecord(1)
    state.add_task(task)
    state.apply_update(StateUpdate(task_statuses={1: "Q"}, sync_time="2024-05-01 12:00:10"))
    assert state.apply_update(StateUpdate(task_statuses={1: "R"}, sync_time=T0)) == set()
    later = T0 + datetime.timedelta(seconds=11)
    assert state.apply_update(StateUpdate(task_statuses={1: "R"}, sync_time=later)) == {task}
    assert state.last_sync == later


def test_same_status_with_newer_stamp_moves_the_stamp_forward(new_state: StateFactory) -> None:
    state = new_state()
    task = TaskRecord(1)
    state.add_task(task)
    t1, t2 = T0, T0 + datetime.timedelta(seconds=5)
    state.apply_update(StateUpdate(task_statuses={1: "Q"}, sync_time=t1))
    assert state.apply_update(StateUpdate(task_statuses={1: "Q"}, sync_time=t2)) == set()
    mid = t1 + datetime.timedelta(seconds=1)
    assert state.apply_update(StateUpdate(task_statuses={1: "R"}, sync_time=mid)) == set()
    assert state.get_task(1).status == "Q"


def test_last_sync_is_monotonic(new_state: StateFactory, replica: Any) -> None:
    state = new_state()
    t1, t2 = T0, T0 + datetime.timedelta(minutes=1)
    state.apply_update(StateUpdate(sync_time=t2))
    state.apply_update(StateUpdate(sync_time=t1))
    assert state.last_sync == t2
    state.last_sync = t1  # the setter follows the same rule
    assert state.last_sync == t2
    state.last_sync = None  # ignored
    assert state.last_sync == t2
    assert replica().last_sync == t2
    t3 = t2 + datetime.timedelta(microseconds=1)
    state.apply_update(StateUpdate(sync_time=t3))
    assert state.last_sync == t3


@pytest.mark.parametrize(
    "value",
    [
        datetime.datetime(2024, 5, 1, 12, 0, 0),
        datetime.datetime(2024, 5, 1, 12, 0, 0, 123456),
        datetime.datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC),
        datetime.datetime(
            2024, 5, 1, 14, 0, 7, 5, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
        ),
        "2024-05-01 12:00:00",
        "2024-05-01T12:00:00.250000+05:30",
    ],
    ids=["naive", "naive-us", "utc", "plus2", "str", "str-tz"],
)
def test_last_sync_reads_back_exactly(
    new_state: StateFactory, replica: Any, value: datetime.datetime | str
) -> None:
    state = new_state()
    state.apply_update(StateUpdate(sync_time=value))
    for got in (state.last_sync, replica().last_sync):
        assert type(got) is type(value)
        assert got == value
        if isinstance(value, datetime.datetime):
            assert isinstance(got, datetime.datetime)
            assert got.tzinfo == value.tzinfo
            assert got.utcoffset() == value.utcoffset()
            assert got.isoformat() == value.isoformat()


def test_last_sync_orders_aware_and_naive_times(new_state: StateFactory) -> None:
    """Naive times are read as UTC for ordering only."""
    state = new_state()
    aware = datetime.datetime(
        2024, 5, 1, 12, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=2))
    )
    state.apply_update(StateUpdate(sync_time=aware))  # 10:00 UTC
    naive_earlier = datetime.datetime(2024, 5, 1, 9, 59, 59)
    state.apply_update(StateUpdate(sync_time=naive_earlier))
    assert state.last_sync == aware
    naive_later = datetime.datetime(2024, 5, 1, 10, 0, 1)
    state.apply_update(StateUpdate(sync_time=naive_later))
    assert state.last_sync == naive_later
    assert state.last_sync.tzinfo is None  # type: ignore[union-attr]


def test_limits(new_state: StateFactory, replica: Any) -> None:
    state = new_state()
    seven = ArrayRecord(7, 3)
    state.add_array(seven)
    state.apply_update(StateUpdate(max_concurrently_running=0, array_limits={7: 1, 99: 5}))
    assert state.max_concurrently_running == 0
    assert state.get_available_capacity() == 0
    assert state.get_array_capacity(7) == 1
    assert seven.max_concurrently_running == 1  # the local object is refreshed
    assert state.arrays[7] is seven
    assert 99 not in state.arrays  # only registered arrays
    assert state.get_array_capacity(99) == 0
    other = replica()
    assert other.max_concurrently_running == 0
    assert sorted(other.arrays) == [7]
    assert other.arrays[7].max_concurrently_running == 1
    state.apply_update(StateUpdate(max_concurrently_running=12))
    assert other.max_concurrently_running == 12
    assert other.get_available_capacity() == 12


def test_run_status_follows_the_state_machine(new_state: StateFactory, replica: Any) -> None:
    state = new_state()
    assert state.apply(StateUpdate(workflow_run_status="R")).run_status == "R"
    assert state.status == "R"
    assert state.apply(StateUpdate(workflow_run_status="C")).run_status == "C"
    # C -> R is not a transition of the run FSM: ignored, the stored status is reported
    assert state.apply(StateUpdate(workflow_run_status="R")).run_status == "C"
    assert state.status == "C"
    state.apply_update(StateUpdate(workflow_run_status="T"))
    assert replica().status == "T"
    state.apply_update(StateUpdate(workflow_run_status="R"))  # terminal: absorbing
    assert state.status == "T"


def test_status_setter_is_shared(new_state: StateFactory, replica: Any) -> None:
    state = new_state()
    other = replica()
    state.status = "R"
    assert other.status == "R"
    state.status = "B"  # R -> B is refused by the FSM, silently
    assert state.status == "R"
    other.status = "D"
    assert state.status == "D"


def test_max_concurrently_running_setter_is_shared(new_state: StateFactory, replica: Any) -> None:
    state = new_state(max_concurrently_running=4)
    other = replica()
    state.add_tasks([TaskRecord(1, status="R"), TaskRecord(2, status="Q")])
    assert other.max_concurrently_running == 4
    assert other.get_available_capacity() == 2
    state.max_concurrently_running = 7
    assert other.max_concurrently_running == 7
    assert other.get_available_capacity() == 5
    other.max_concurrently_running = 1
    assert state.max_concurrently_running == 1
    assert state.get_available_capacity() == 0
    with pytest.raises(InvalidInputError):
        state.max_concurrently_running = -1
    assert other.max_concurrently_running == 1


def test_num_previously_complete(new_state: StateFactory, replica: Any) -> None:
    state = new_state()
    assert state.num_previously_complete == 0
    state.num_previously_complete = 5
    assert state.num_previously_complete == 5
    assert replica().num_previously_complete == 5
    with pytest.raises(InvalidTypeError):
        state.num_previously_complete = True
    assert state.num_previously_complete == 5


# --- propagation -----------------------------------------------------------------------------------


def test_apply_propagates_and_queues_newly_ready_tasks_once(new_state: StateFactory) -> None:
    state = new_state()
    t = diamond()
    state.add_tasks(t.values())
    result = state.apply(StateUpdate(task_statuses={1: "D"}))
    assert result.changed == {t["a"]}
    assert result.ready == []
    assert state.last_ready == []
    assert t["c"].num_upstreams_done == 1
    # a again (duplicate) and b: a is not counted a second time
    result = state.apply(StateUpdate(task_statuses={1: "D", 2: "D"}))
    assert result.changed == {t["b"]}
    assert result.ready == [t["c"]]
    assert result.ready[0] is t["c"]
    assert state.last_ready == [t["c"]]
    assert t["c"].num_upstreams_done == 2
    assert list(state.ready_to_run) == [t["c"]]
    # replaying both changes nothing
    changed = state.apply_update(StateUpdate(task_statuses={1: "D", 2: "D"}))
    assert changed == set()
    assert state.last_ready == []
    assert state.get_task(3).num_upstreams_done == 2
    assert state.get_ready_to_run_count() == 1
    # propagate_completions after apply has propagated: reports c once (jobmon validates the
    # resources of what it returns), credits nothing more
    assert state.propagate_completions([t["a"], t["b"]]) == [t["c"]]
    assert state.propagate_completions([t["a"], t["b"]]) == []
    assert state.get_task(3).num_upstreams_done == 2
    assert state.get_ready_to_run_count() == 1
    # c done -> d ready
    state.dequeue_task()
    state.apply_update(StateUpdate(task_statuses={3: "Q"}))
    state.apply_update(StateUpdate(task_statuses={3: "D"}))
    assert state.last_ready == [t["d"]]
    assert t["d"].num_upstreams_done == 1
    assert list(state.ready_to_run) == [t["d"]]


def test_apply_update_counts_duplicates_from_two_replicas_once(
    new_state: StateFactory, replica: Any
) -> None:
    state = new_state()
    t = diamond()
    state.add_tasks(t.values())
    other = replica()
    state.apply_update(StateUpdate(task_statuses={1: "D", 2: "D"}))
    other.apply_update(StateUpdate(task_statuses={1: "D", 2: "D"}))
    assert other.last_ready == []
    assert state.get_task(3).num_upstreams_done == 2
    assert other.get_task(3).num_upstreams_done == 2
    assert ids(other.ready_to_run) == [3]


def test_ready_task_not_in_g_is_not_queued(new_state: StateFactory) -> None:
    state = new_state()
    a, c = TaskRecord(1), TaskRecord(2, status="R")
    link(a, c)
    state.add_tasks([a, c])
    result = state.apply(StateUpdate(task_statuses={1: "D"}))
    assert result.ready == []
    assert c.num_upstreams_done == 1
    assert state.get_ready_to_run_count() == 0


def test_two_step_flow_without_propagate_on_apply(new_state: StateFactory) -> None:
    state = new_state(propagate_on_apply=False)
    a, b, c, d = TaskRecord(1), TaskRecord(2), TaskRecord(3), TaskRecord(4)
    link(a, c)
    link(b, d)
    state.add_tasks([a, b, c, d])
    changed = state.apply_update(StateUpdate(task_statuses={1: "D"}))
    assert changed == {a}
    assert state.last_ready == []
    assert state.get_task(3).num_upstreams_done == 0
    assert state.get_ready_to_run_count() == 0
    ready = state.propagate_completions(changed)
    assert ready == [c]
    assert ready[0] is c
    assert c.num_upstreams_done == 1
    assert state.get_ready_to_run_count() == 0  # propagate does not queue
    state.enqueue_task(c)
    assert list(state.ready_to_run) == [c]
    assert state.propagate_completions(changed) == []  # counted once
    assert state.get_task(3).num_upstreams_done == 1
    # b is not DONE: ignored
    assert state.propagate_completions([b]) == []
    assert state.get_task(4).num_upstreams_done == 0
    assert state.get_task(3).num_upstreams_done == 1
    # ids work as well as objects; unknown ids are ignored
    assert state.propagate_completions([1, 999]) == []


def test_propagate_completions_ignores_tasks_that_are_not_done(new_state: StateFactory) -> None:
    state = new_state(propagate_on_apply=False)
    a, c = TaskRecord(1, status="R"), TaskRecord(2)
    link(a, c)
    state.add_tasks([a, c])
    a.status = "D"  # a local mirror that lies: Redis decides
    assert state.propagate_completions([a]) == []
    assert state.get_task(2).num_upstreams_done == 0
    state.apply_update(StateUpdate(task_statuses={1: "D"}))
    assert state.propagate_completions([a]) == [c]
    assert state.propagate_completions([a]) == []
    assert state.get_task(2).num_upstreams_done == 1


def test_apply_with_explicit_propagate_override(new_state: StateFactory) -> None:
    state = new_state(propagate_on_apply=False)
    a, c = TaskRecord(1), TaskRecord(2)
    link(a, c)
    state.add_tasks([a, c])
    result = state.apply(StateUpdate(task_statuses={1: "D"}), propagate=True)
    assert result.ready == [c]
    assert ids(state.ready_to_run) == [2]


def test_compute_initial_counts_twice_equals_once(new_state: StateFactory) -> None:
    state = new_state()
    a, b = TaskRecord(1, status="D"), TaskRecord(2, status="D")
    c, d, e = TaskRecord(3), TaskRecord(4), TaskRecord(5)
    link(a, c, d)
    link(b, c)
    link(c, e)
    state.add_tasks([a, b, c, d, e])
    assert (c.num_upstreams_done, d.num_upstreams_done) == (0, 0)
    state.compute_initial_upstream_done_counts()
    assert state.get_task(3).num_upstreams_done == 2
    assert state.get_task(4).num_upstreams_done == 1
    assert state.get_task(5).num_upstreams_done == 0
    state.compute_initial_upstream_done_counts()
    assert state.get_task(3).num_upstreams_done == 2
    assert state.get_task(4).num_upstreams_done == 1
    assert state.get_ready_to_run_count() == 0  # it counts, it does not queue
    # a later replay of the DONE updates is a no-op too
    state.apply_update(StateUpdate(task_statuses={1: "D", 2: "D"}))
    assert state.get_task(3).num_upstreams_done == 2


def test_compute_initial_counts_over_several_scan_pages(new_state: StateFactory) -> None:
    state = new_state()
    sink = TaskRecord(10_000)
    done = [TaskRecord(i, status="D") for i in range(1, 1201)]
    for t in done:
        link(t, sink)
    state.add_tasks([*done, sink])
    state.compute_initial_upstream_done_counts()
    state.compute_initial_upstream_done_counts()
    assert state.get_task(10_000).num_upstreams_done == 1200
    assert sink.all_upstreams_done


# --- queue -----------------------------------------------------------------------------------------


def test_enqueue_dequeue_fifo_and_front(new_state: StateFactory) -> None:
    state = new_state()
    tasks = [TaskRecord(i) for i in range(1, 7)]
    state.add_tasks(tasks)
    state.enqueue_task(tasks[0])
    state.enqueue_task(tasks[1])
    state.enqueue_task(tasks[2], front=True)
    assert ids(state.ready_to_run) == [3, 1, 2]
    queued = state.enqueue_tasks([tasks[3], tasks[4], tasks[5]], front=True)
    assert queued == [tasks[3], tasks[4], tasks[5]]
    assert ids(state.ready_to_run) == [4, 5, 6, 3, 1, 2]
    assert state.dequeue_task() is tasks[3]
    assert state.dequeue_tasks(3) == [tasks[4], tasks[5], tasks[2]]
    assert state.dequeue_tasks(10) == [tasks[0], tasks[1]]
    assert state.dequeue_task() is None
    assert state.dequeue_tasks(5) == []


def test_enqueue_is_at_most_once(new_state: StateFactory, replica: Any) -> None:
    state = new_state()
    task = TaskRecord(1)
    state.add_task(task)
    state.enqueue_task(task)
    state.enqueue_task(task)
    state.enqueue_task(task, front=True)
    assert state.enqueue_tasks([task, task]) == []
    replica().enqueue_task(TaskRecord(1))
    assert state.get_ready_to_run_count() == 1
    assert state.dequeue_task() is task
    assert state.dequeue_task() is None
    # after the dequeue it may be queued again
    state.enqueue_task(task)
    assert state.get_ready_to_run_count() == 1


def test_enqueue_several_copies_of_one_task_in_one_call(new_state: StateFactory) -> None:
    state = new_state()
    a, b = TaskRecord(1), TaskRecord(2)
    state.add_tasks([a, b])
    assert state.enqueue_tasks([a, b, a], front=True) == [a, b]
    assert ids(state.ready_to_run) == [1, 2]


@pytest.mark.parametrize("final", ["D", "F"])
def test_enqueue_refuses_final_tasks(new_state: StateFactory, final: str) -> None:
    state = new_state()
    task = TaskRecord(1, status=final)
    state.add_task(task)
    state.enqueue_task(task)
    state.enqueue_task(task, front=True)
    assert state.get_ready_to_run_count() == 0
    assert not state.has_pending_work()


def test_queued_task_that_becomes_final_leaves_the_queue(new_state: StateFactory) -> None:
    state = new_state()
    a, b = TaskRecord(1), TaskRecord(2)
    state.add_tasks([a, b])
    state.enqueue_tasks([a, b])
    state.apply_update(StateUpdate(task_statuses={1: "D"}))
    assert ids(state.ready_to_run) == [2]


def test_enqueue_registers_an_unknown_task(new_state: StateFactory, replica: Any) -> None:
    state = new_state()
    task = TaskRecord(50, status="G", array_id=3)
    state.enqueue_task(task)
    assert state.get_task(50) is task
    assert state.counts()["tasks"] == 1
    assert state.counts()["G"] == 1
    assert ids(state.ready_to_run) == [50]
    rec = replica().get_task(50)
    assert (rec.task_id, rec.array_id, rec.status) == (50, 3, "G")


def test_dequeue_returns_the_registered_objects(new_state: StateFactory, replica: Any) -> None:
    state = new_state()
    tasks = [TaskRecord(i) for i in range(1, 4)]
    state.add_tasks(tasks)
    other = replica()
    other.enqueue_tasks([other.get_task(2), other.get_task(1)])
    assert state.dequeue_task() is tasks[1]
    assert state.dequeue_task() is tasks[0]


def test_ready_to_run_view(new_state: StateFactory) -> None:
    state = new_state()
    tasks = [TaskRecord(i) for i in range(1, 5)]
    state.add_tasks(tasks)
    view = state.ready_to_run
    assert len(view) == 0
    assert not view
    with pytest.raises(IndexError):
        view[0]
    with pytest.raises(IndexError):
        view.popleft()
    view.append(tasks[0])
    view.append(tasks[1])
    view.appendleft(tasks[2])
    assert len(view) == 3
    assert bool(view) is True
    assert view[0] is tasks[2]
    assert view[1] is tasks[0]
    assert view[-1] is tasks[1]
    with pytest.raises(IndexError):
        view[3]
    with pytest.raises(TypeError):
        view["0"]  # type: ignore[index]
    assert [t for t in view] == [tasks[2], tasks[0], tasks[1]]
    assert tasks[0] in view
    assert tasks[3] not in view
    view.extend([tasks[3], tasks[0]])
    assert ids(view) == [3, 1, 2, 4]
    assert view.popleft() is tasks[2]
    assert len(state.ready_to_run) == 3
    assert state.get_ready_to_run_count() == 3


# --- views -------------------------------------------------------------------------------------


def test_task_status_map_view(new_state: StateFactory) -> None:
    state = new_state()
    tasks = one_per_status()
    state.add_tasks(tasks)
    view = state._task_status_map
    assert set(view) == set(SEED_TRACKED_STATUSES)
    assert len(view) == 8
    assert "E" not in set(view)
    for task, status in zip(tasks, TASK_STATUSES):
        assert view[status] == {task}
        assert next(iter(view[status])) is task
    with pytest.raises(KeyError):
        view["Z"]
    with pytest.raises(TypeError):
        view["G"] = set()  # type: ignore[index]
    assert {s: len(v) for s, v in view.items()} == {s: 1 for s in SEED_TRACKED_STATUSES}


def test_task_resources_cache_view(new_state: StateFactory, replica: Any) -> None:
    state = new_state()
    cache = state.task_resources_cache
    assert len(cache) == 0
    value = {"num_cores": 2, "memory": "4G"}
    cache[11] = value
    assert cache[11] is value
    assert 11 in cache
    assert list(cache) == [11]
    assert len(cache) == 1
    with pytest.raises(KeyError):
        cache[12]
    with pytest.raises(TypeError):
        del cache[11]
    other = replica().task_resources_cache
    assert other[11] == value
    assert list(other) == [11]
    assert cache.get(12) is None


def test_tasks_view(new_state: StateFactory) -> None:
    state = new_state()
    t = diamond()
    state.add_tasks(t.values())
    view = state.tasks
    assert len(view) == 5
    assert sorted(view) == [1, 2, 3, 4, 5]
    assert all(view[k] is t[n] for k, n in zip(range(1, 6), "abcde"))
    assert {k: v.task_id for k, v in view.items()} == {k: k for k in range(1, 6)}
    assert sorted_ids(view.values()) == [1, 2, 3, 4, 5]
    assert True not in view
    assert cast(object, "1") not in view  # a str key is absent, not an error


# --- resource cache --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "first,second",
    [
        ({"num_cores": 2, "memory": "4G"}, {"num_cores": 8}),
        (Resources(2, "4G"), Resources(8, "1G")),
        (ToDictResources({"cores": 2}, "long.q"), ToDictResources({"cores": 9}, "all.q")),
    ],
    ids=["dict", "dataclass", "to_dict"],
)
def test_cache_resources_first_writer_wins(
    new_state: StateFactory, replica: Any, first: Any, second: Any
) -> None:
    state = new_state()
    assert state.get_cached_resources(42) is None
    assert state.cache_resources(42, first) is first
    assert state.get_cached_resources(42) is first
    assert state.cache_resources(42, second) is first
    other = replica()
    got = other.get_cached_resources(42)
    assert got == first
    assert type(got) is type(first)
    assert got is not first
    won = other.cache_resources(42, second)
    assert won == first
    assert type(won) is type(first)
    # a brand new replica that writes first on another key wins there
    assert other.cache_resources(43, second) is second
    assert state.get_cached_resources(43) == second


def test_cache_resources_with_a_stable_digest(new_state: StateFactory, replica: Any) -> None:
    state = new_state()
    value = Resources(4, "8G")
    key = resource_digest(value)
    assert key == resource_digest(Resources(4, "8G"))
    assert key != resource_digest(Resources(4, "9G"))
    state.cache_resources(key, value)
    assert replica().get_cached_resources(resource_digest(Resources(4, "8G"))) == value


class Unencodable:
    pass


@pytest.mark.parametrize(
    "bad,name",
    [
        (Unencodable(), "Unencodable"),
        (object(), "object"),
        ([1, 2], "list"),
        ({"x": {1, 2}}, "dict"),
    ],
    ids=["class", "object", "list", "dict-with-set"],
)
def test_cache_resources_unencodable_raises_type_error(
    new_state: StateFactory, client: redis.Redis, bad: Any, name: str
) -> None:
    state = new_state()
    with pytest.raises(TypeError, match=name) as info:
        state.cache_resources(42, bad)
    assert isinstance(info.value, SwarmRedisError)
    assert client.exists(state.keys.resources) == 0
    assert state.get_cached_resources(42) is None
    assert len(state.task_resources_cache) == 0


def test_resource_digest_is_stable_across_processes(tmp_path: Any) -> None:
    value = {"num_cores": 2, "memory": "4G", "queue": "all.q", "runtime": 3600}
    reordered = dict(reversed(list(value.items())))
    here = resource_digest(value)
    assert resource_digest(reordered) == here
    assert 0 <= here < 2**63
    code = (
        "import sys, json\n"
        "from swarm_redis import resource_digest\n"
        "v = json.loads(sys.argv[1])\n"
        "print(resource_digest(v), hash('salted'))\n"
    )
    import json

    outputs = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        proc = subprocess.run(
            [sys.executable, "-c", code, json.dumps(value)],
            env=env,
            capture_output=True,
            text=True,
            check=True,
            cwd=tmp_path,
        )
        digest, salted = proc.stdout.split()
        outputs.append((int(digest), salted))
    assert outputs[0][0] == outputs[1][0] == here
    assert outputs[0][1] != outputs[1][1]  # hash() really differs between the processes


# --- attach --------------------------------------------------------------------------------------


def test_attach_rebuilds_records(new_state: StateFactory, replica: Any) -> None:
    state = new_state(workflow_id=3, dag_id=4, max_concurrently_running=9)
    t = diamond()
    t["a"].array_id = 7
    t["e"].array_id = 8
    state.add_arrays([ArrayRecord(7, 2), ArrayRecord(8, 5)])
    state.add_tasks(t.values())
    state.apply_update(StateUpdate(task_statuses={1: "D", 5: "R"}))
    other = replica()
    assert (other.workflow_id, other.dag_id) == (3, 4)
    assert other.max_concurrently_running == 9
    assert sorted(other.tasks) == [1, 2, 3, 4, 5]
    recs = {k: other.tasks[k] for k in range(1, 6)}
    for k, rec in recs.items():
        assert isinstance(rec, TaskRecord)
        assert rec.task_id == k
        assert other.get_task(k) is rec
    assert (recs[1].status, recs[1].array_id) == ("D", 7)
    assert (recs[5].status, recs[5].array_id) == ("R", 8)
    assert recs[3].num_upstreams == 2
    assert recs[3].num_upstreams_done == 1
    assert recs[3].all_upstreams_done is False
    assert recs[4].num_upstreams == 1
    assert recs[1].num_upstreams == 0
    assert recs[1].all_upstreams_done is True
    assert recs[1].downstream_swarm_tasks == {recs[3]}
    assert next(iter(recs[1].downstream_swarm_tasks)) is recs[3]
    assert recs[2].downstream_swarm_tasks == {recs[3]}
    assert recs[3].downstream_swarm_tasks == {recs[4]}
    assert recs[4].downstream_swarm_tasks == set()
    arrays = {k: other.arrays[k] for k in other.arrays}
    assert sorted(arrays) == [7, 8]
    assert isinstance(arrays[7], ArrayRecord)
    assert (arrays[7].array_id, arrays[7].max_concurrently_running) == (7, 2)
    assert (arrays[8].array_id, arrays[8].max_concurrently_running) == (8, 5)
    # the attached replica works: b DONE makes c ready, queued once
    assert other.apply(StateUpdate(task_statuses={2: "D"})).ready == [recs[3]]
    assert recs[3].all_upstreams_done is True
    assert state.dequeue_task() is t["c"]


def test_attach_to_an_unknown_run(client: redis.Redis, prefix: str, run_id: int) -> None:
    with pytest.raises(UnknownRunError) as info:
        RedisSwarmState.attach(client, run_id, prefix=prefix)
    assert isinstance(info.value, KeyError)
    assert str(run_id) in str(info.value)


# --- chunking --------------------------------------------------------------------------------------


def snapshot(state: RedisSwarmState) -> dict[str, Any]:
    fresh = {k: state.get_task(k) for k in sorted(state.tasks)}
    return {
        "statuses": {k: t.status for k, t in fresh.items()},
        "done": {k: t.num_upstreams_done for k, t in fresh.items()},
        "counts": state.counts(),
        "queue": ids(state.ready_to_run),
        "limit": state.max_concurrently_running,
        "status": state.status,
        "last_sync": state.last_sync,
    }


def big_update(tasks: list[TaskRecord], width: int) -> StateUpdate:
    statuses = {t.task_id: "D" for t in tasks[: 2 * width]}
    statuses.update({t.task_id: "R" for t in tasks[2 * width : 3 * width]})
    statuses[tasks[-1].task_id] = "F"
    return StateUpdate(
        task_statuses=statuses,
        max_concurrently_running=33,
        workflow_run_status="R",
        sync_time=T0,
    )


def count_apply_calls(state: RedisSwarmState) -> list[int]:
    """Wrap the state's transport; return a list that collects apply_update calls per round."""
    seen: list[int] = []
    inner = state._transport.execute

    def execute(calls: Any) -> Any:
        seen.append(
            sum(1 for c in calls if isinstance(c, ScriptCall) and c.script == "apply_update")
        )
        return inner(calls)

    state._transport.execute = execute
    return seen


def test_chunked_apply_equals_one_chunk(
    new_state: StateFactory, client: redis.Redis, prefix: str, run_id: int
) -> None:
    width = 10
    small = new_state(chunk_budget=3)
    whole = RedisSwarmState(1, run_id + 1, 5, redis=client, prefix=prefix, chunk_budget=10**6)
    small_tasks, whole_tasks = layered(4, width, fan_in=2), layered(4, width, fan_in=2)
    small.add_tasks(small_tasks)
    whole.add_tasks(whole_tasks)
    small_calls = count_apply_calls(small)
    whole_calls = count_apply_calls(whole)
    r_small = small.apply(big_update(small_tasks, width))
    r_whole = whole.apply(big_update(whole_tasks, width))
    assert sum(small_calls) > 10  # really chunked
    assert sum(whole_calls) == 1
    assert sorted_ids(r_small.changed) == sorted_ids(r_whole.changed)
    assert ids(r_small.ready) == ids(r_whole.ready)
    assert ids(small.ready_to_run) == [t.task_id for t in small_tasks[2 * width : 3 * width]]
    assert snapshot(small) == snapshot(whole)
    # registration is chunked as well, with the same result
    assert small.counts()["tasks"] == 4 * width


def test_chunked_apply_writes_run_fields_only_with_the_last_chunk(
    new_state: StateFactory,
) -> None:
    """A crash after the first chunks leaves last_sync, limits and run status unwritten."""
    width = 10
    state = new_state(chunk_budget=3)
    tasks = layered(4, width, fan_in=2)
    state.add_tasks(tasks)
    inner = state._transport.execute
    crashed: list[int] = []
    applied: list[int] = []

    def execute(calls: Any) -> Any:
        applied.extend(1 for c in calls if isinstance(c, ScriptCall) and c.script == "apply_update")
        if len(applied) == 5 and not crashed:  # four chunks reached Redis, then the crash
            crashed.append(len(applied))
            raise redis.ConnectionError("simulated crash between chunks")
        return inner(calls)

    state._transport.execute = execute
    update = big_update(tasks, width)
    with pytest.raises(redis.ConnectionError):
        state.apply_update(update)
    assert crashed
    assert state.last_sync is None
    assert state.max_concurrently_running == 10000
    assert state.status == "B"
    partial = state.counts()
    assert 0 < partial["D"] + partial["R"] < 3 * width  # some chunks were applied
    # the retry completes the update exactly once
    state.apply_update(update)
    assert state.last_sync == T0
    assert state.max_concurrently_running == 33
    assert state.status == "R"
    counts = state.counts()
    assert (counts["D"], counts["R"], counts["F"]) == (2 * width, width, 1)
    by_id = {t.task_id: t for t in tasks}
    for t in tasks[2 * width : 3 * width]:  # layer 2: both upstreams DONE, counted once
        assert state.get_task(t.task_id).num_upstreams_done == 2
    for t in tasks[3 * width :]:
        assert state.get_task(t.task_id).num_upstreams_done == 0
    assert len(by_id) == 4 * width


def test_tasks_view_values_and_items_are_refreshed(new_state: StateFactory, replica: Any) -> None:
    """DESIGN section 4: every read refreshes the mirrored fields, the bulk views included."""
    state = new_state()
    a, c = TaskRecord(1), TaskRecord(2)
    link(a, c)
    state.add_tasks([a, c])
    replica().apply_update(StateUpdate(task_statuses={1: "D", 2: "R"}))
    values = {t.task_id: (t.status, t.num_upstreams_done) for t in state.tasks.values()}
    assert values == {1: ("D", 0), 2: ("R", 1)}
    items = {k: (t.status, t.num_upstreams_done) for k, t in state.tasks.items()}
    assert items == {1: ("D", 0), 2: ("R", 1)}


def test_apply_queues_retries_and_resource_errors_in_the_same_step(
    new_state: StateFactory,
) -> None:
    state = new_state()
    up, a, b, c = TaskRecord(1), TaskRecord(2), TaskRecord(3), TaskRecord(4)
    link(up, a)
    state.add_tasks([up, a, b, c])
    state.apply_update(StateUpdate(task_statuses={1: "R", 3: "R", 4: "R"}))
    state.enqueue_task(TaskRecord(5))
    # 3 is retried (back to G, no upstreams): queued at the back; 4 failed on resources (A):
    # queued at the front; 1 back to G is ready too; nothing is queued twice on a replay.
    result = state.apply(StateUpdate(task_statuses={3: "G", 4: "A", 1: "G"}))
    assert sorted_ids(result.ready) == [1, 3, 4]
    assert [t.task_id for t in state.ready_to_run] == [4, 5, 3, 1]
    again = state.apply(StateUpdate(task_statuses={3: "G", 4: "A", 1: "G"}))
    assert again.ready == [] and state.get_ready_to_run_count() == 4
    # a task whose upstreams are not all done is not queued by a retry
    state.apply_update(StateUpdate(task_statuses={2: "R"}))
    assert state.apply(StateUpdate(task_statuses={2: "G"})).ready == []


def test_two_step_flow_does_not_queue_retries(new_state: StateFactory) -> None:
    state = new_state(propagate_on_apply=False)
    state.add_tasks([TaskRecord(1), TaskRecord(2)])
    state.apply_update(StateUpdate(task_statuses={1: "R", 2: "R"}))
    result = state.apply(StateUpdate(task_statuses={1: "G", 2: "A"}))
    assert result.ready == [] and state.get_ready_to_run_count() == 0


def test_enqueue_of_a_queued_task_takes_the_new_resource_key(
    new_state: StateFactory, client: redis.Redis
) -> None:
    state = new_state()
    task = TaskRecord(1, current_task_resources={"memory": 1})
    state.add_task(task)
    state.apply_update(StateUpdate(task_statuses={1: "R"}))
    state.apply_update(StateUpdate(task_statuses={1: "A"}))  # queued at once, old resources
    task.current_task_resources = {"memory": 2}
    state.enqueue_task(task, front=True)  # the adjusted resources reach the queue entry
    assert state.get_ready_to_run_count() == 1
    stored = client.hget(state.keys.qres, 1)
    expected = format(resource_digest({"memory": 2}), "x")
    assert (stored.decode() if isinstance(stored, bytes) else stored) == expected


def test_assigning_tasks_and_arrays_registers_them(new_state: StateFactory) -> None:
    state = new_state()
    a, b = TaskRecord(1, array_id=7), TaskRecord(2, array_id=7)
    state.tasks = {1: a, 2: b}
    state.arrays = {7: ArrayRecord(7, 3)}
    assert state.tasks[1] is a and len(state.tasks) == 2
    assert state.get_array_capacity(7) == 3
    with pytest.raises(TypeError):
        state.tasks = [a]  # type: ignore[assignment]


def test_many_final_tasks_leave_the_queue_in_one_pass(new_state: StateFactory) -> None:
    state = new_state()
    tasks = [TaskRecord(i) for i in range(1, 11)]
    state.add_tasks(tasks)
    state.enqueue_tasks(tasks)
    state.apply_update(StateUpdate(task_statuses={2: "D", 3: "F", 5: "D", 6: "D", 8: "F", 9: "D"}))
    assert [t.task_id for t in state.ready_to_run] == [1, 4, 7, 10]
    state.apply_update(StateUpdate(task_statuses={4: "D"}))  # the few-at-a-time path
    assert [t.task_id for t in state.ready_to_run] == [1, 7, 10]
    assert state.dequeue_tasks(10) == [tasks[0], tasks[6], tasks[9]]


def test_ready_to_run_clear_empties_the_shared_queue(new_state: StateFactory) -> None:
    state = new_state()
    tasks = [TaskRecord(i) for i in range(1, 4)]
    state.enqueue_tasks(tasks)
    state.ready_to_run.clear()
    assert not state.ready_to_run and len(state.tasks) == 3
    state.enqueue_task(tasks[0])  # the at-most-once gate was released too
    assert [t.task_id for t in state.ready_to_run] == [1]
