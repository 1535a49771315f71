"""Unit tests of memory.SwarmState: jobmon's seed semantics, quirks included."""

from __future__ import annotations

import datetime
from collections import deque
from typing import Any, cast

import pytest

from swarm_redis import constants
from swarm_redis.records import ArrayRecord, TaskRecord
from swarm_redis.testing import oracle as memory
from swarm_redis.testing.oracle import SwarmState
from swarm_redis.update import StateUpdate


def make_state(*tasks: TaskRecord, **kwargs: Any) -> SwarmState:
    state = SwarmState(workflow_id=1, workflow_run_id=10, dag_id=5, **kwargs)
    for task in tasks:
        state.add_task(task)
    return state


def link(upstream: TaskRecord, *downstreams: TaskRecord) -> None:
    for downstream in downstreams:
        upstream.downstream_swarm_tasks.add(downstream)
        downstream.num_upstreams += 1


def buckets_of(state: SwarmState, task: TaskRecord) -> list[str]:
    return [s for s, bucket in state._task_status_map.items() if task in bucket]


# Module surface and construction


def test_module_reexports_constants() -> None:
    assert memory.ACTIVE_TASK_STATUSES is constants.ACTIVE_TASK_STATUSES
    assert memory.SERVER_STOP_STATUSES is constants.SERVER_STOP_STATUSES
    assert memory.TERMINATING_STATUSES is constants.TERMINATING_STATUSES
    assert memory.ACTIVE_TASK_STATUSES == ("Q", "I", "O", "R")


def test_constructor_defaults() -> None:
    state = SwarmState(1, 10, 5)
    assert (state.workflow_id, state.workflow_run_id, state.dag_id) == (1, 10, 5)
    assert state.max_concurrently_running == 10000
    assert state.status == "B"
    assert state.tasks == {}
    assert state.arrays == {}
    assert isinstance(state.ready_to_run, deque)
    assert len(state.ready_to_run) == 0
    assert state.last_sync is None
    assert state.task_resources_cache == {}
    assert state.num_previously_complete == 0


def test_constructor_arguments_are_not_validated() -> None:
    state = SwarmState(1, 10, 5, max_concurrently_running=-3, status="?")
    assert state.max_concurrently_running == -3
    assert state.status == "?"


def test_status_map_has_exactly_eight_buckets_without_e() -> None:
    state = make_state()
    assert set(state._task_status_map) == {"G", "Q", "I", "O", "R", "D", "A", "F"}
    assert all(bucket == set() for bucket in state._task_status_map.values())


def test_active_task_statuses_property() -> None:
    assert make_state().active_task_statuses == ("Q", "I", "O", "R")
    assert isinstance(SwarmState.__dict__["active_task_statuses"], property)


def test_attributes_are_plain_and_assignable() -> None:
    state = make_state(TaskRecord(1, status="R"))
    state.max_concurrently_running = 3
    state.status = "R"
    state.num_previously_complete = 5
    assert state.get_available_capacity() == 2
    assert state.status == "R"
    assert state.num_previously_complete == 5


# Registry


def test_add_task_registers_and_buckets() -> None:
    task = TaskRecord(1, status="Q")
    state = make_state(task)
    assert state.tasks == {1: task}
    assert state.get_task(1) is task
    assert buckets_of(state, task) == ["Q"]


def test_add_task_same_status_twice_is_harmless() -> None:
    task = TaskRecord(1)
    state = make_state(task, task)
    assert len(state.tasks) == 1
    assert len(state._task_status_map["G"]) == 1


def test_add_task_again_with_other_status_counts_one_id_twice() -> None:
    state = make_state(TaskRecord(1, status="G"))
    newer = TaskRecord(1, status="R")
    state.add_task(newer)
    assert state.tasks[1] is newer
    assert buckets_of(state, newer) == ["G", "R"]
    assert state.get_active_task_count() == 1
    assert not state.all_tasks_final()


def test_add_task_with_status_e_raises_after_registering() -> None:
    state = make_state()
    task = TaskRecord(7, status="E")
    with pytest.raises(KeyError, match="E"):
        state.add_task(task)
    assert state.tasks == {7: task}
    assert buckets_of(state, task) == []


def test_add_array_overwrites_silently() -> None:
    state = make_state()
    first, second = ArrayRecord(3, 5), ArrayRecord(3, 9)
    state.add_array(first)
    state.add_array(second)
    assert state.arrays == {3: second}
    assert state.arrays[3] is second


def test_get_task_unknown_is_none() -> None:
    assert make_state(TaskRecord(1)).get_task(2) is None


# Queries


def test_get_tasks_by_status_returns_the_live_bucket() -> None:
    task = TaskRecord(1, status="D")
    state = make_state(task)
    bucket = state.get_tasks_by_status("D")
    assert bucket is state._task_status_map["D"]
    assert bucket == {task}
    state.update_task_status(1, "F")
    assert bucket == set()


@pytest.mark.parametrize("status", ["E", "X", ""])
def test_get_tasks_by_status_untracked_is_fresh_empty_set(status: str) -> None:
    state = make_state(TaskRecord(1))
    first = state.get_tasks_by_status(status)
    first.add(TaskRecord(99))
    second = state.get_tasks_by_status(status)
    assert second == set()
    assert second is not first
    assert status not in state._task_status_map


def test_counts() -> None:
    statuses = ["G", "Q", "I", "O", "R", "R", "D", "D", "D", "A", "F"]
    state = make_state(*(TaskRecord(i, status=s) for i, s in enumerate(statuses)))
    state.enqueue_task(state.tasks[0])
    assert state.get_active_task_count() == 5
    assert state.get_ready_to_run_count() == 1
    assert state.get_done_count() == 3
    assert state.get_failed_count() == 1


def test_done_and_failed_tasks_are_new_list_copies() -> None:
    done, failed = TaskRecord(1, status="D"), TaskRecord(2, status="F")
    state = make_state(done, failed, TaskRecord(3))
    done_list = state.get_done_tasks()
    failed_list = state.get_failed_tasks()
    assert done_list == [done]
    assert failed_list == [failed]
    done_list.clear()
    failed_list.append(done)
    assert state.get_done_tasks() == [done]
    assert state.get_failed_tasks() == [failed]
    assert state.get_done_tasks() is not state.get_done_tasks()


def test_all_tasks_final() -> None:
    assert make_state().all_tasks_final() is True
    state = make_state(TaskRecord(1, status="D"), TaskRecord(2, status="F"))
    assert state.all_tasks_final() is True
    state.add_task(TaskRecord(3, status="A"))
    assert state.all_tasks_final() is False


def test_all_tasks_final_is_permanently_false_with_an_e_task() -> None:
    state = make_state(TaskRecord(1, status="D"))
    with pytest.raises(KeyError):
        state.add_task(TaskRecord(2, status="E"))
    assert state.all_tasks_final() is False


@pytest.mark.parametrize(
    ("status", "pending"),
    [
        ("G", False),
        ("Q", True),
        ("I", True),
        ("O", True),
        ("R", True),
        ("D", False),
        ("A", True),
        ("F", False),
    ],
)
def test_has_pending_work_by_status(status: str, pending: bool) -> None:
    assert make_state(TaskRecord(1, status=status)).has_pending_work() is pending


def test_has_pending_work_empty_and_queued() -> None:
    state = make_state(TaskRecord(1))
    assert state.has_pending_work() is False
    state.enqueue_task(state.tasks[1])
    assert state.has_pending_work() is True
    state.dequeue_task()
    assert state.has_pending_work() is False


def test_available_capacity_is_clamped_at_zero() -> None:
    state = make_state(*(TaskRecord(i, status="R") for i in range(3)), max_concurrently_running=5)
    assert state.get_available_capacity() == 2
    state.max_concurrently_running = 2
    assert state.get_available_capacity() == 0
    state.max_concurrently_running = 0
    assert state.get_available_capacity() == 0


def test_array_capacity_unregistered_array_is_zero() -> None:
    state = make_state(TaskRecord(1, array_id=4, status="G"))
    assert state.get_array_capacity(4) == 0
    assert state.get_array_capacity(99) == 0


def test_array_capacity_counts_active_tasks_of_that_array_only() -> None:
    tasks = [
        TaskRecord(1, array_id=1, status="Q"),
        TaskRecord(2, array_id=1, status="R"),
        TaskRecord(3, array_id=1, status="D"),
        TaskRecord(4, array_id=1, status="A"),
        TaskRecord(5, array_id=2, status="R"),
    ]
    state = make_state(*tasks)
    state.add_array(ArrayRecord(1, max_concurrently_running=5))
    state.add_array(ArrayRecord(2, max_concurrently_running=1))
    assert state.get_array_capacity(1) == 3
    assert state.get_array_capacity(2) == 0


def test_array_capacity_is_clamped_and_independent_of_workflow_capacity() -> None:
    state = make_state(
        *(TaskRecord(i, array_id=1, status="R") for i in range(3)), max_concurrently_running=0
    )
    state.add_array(ArrayRecord(1, max_concurrently_running=2))
    state.add_array(ArrayRecord(2, max_concurrently_running=47))
    assert state.get_available_capacity() == 0
    assert state.get_array_capacity(1) == 0
    assert state.get_array_capacity(2) == 47


def test_array_capacity_reads_buckets_not_array_tasks() -> None:
    array = ArrayRecord(1, max_concurrently_running=10)
    array.add_task(TaskRecord(50, array_id=1, status="R"))  # not registered with the state
    state = make_state(TaskRecord(1, array_id=1, status="Q"))
    state.add_array(array)
    assert state.get_array_capacity(1) == 9


def test_get_active_tasks_is_union_of_active_buckets() -> None:
    tasks = [TaskRecord(i, status=s) for i, s in enumerate("GQIORDAF")]
    state = make_state(*tasks)
    active = state._get_active_tasks()
    assert active == {tasks[1], tasks[2], tasks[3], tasks[4]}
    active.clear()
    assert state.get_active_task_count() == 4


def test_percent_done() -> None:
    assert make_state().get_percent_done() == 0.0
    state = make_state(TaskRecord(1, status="D"), TaskRecord(2, status="F"), TaskRecord(3))
    assert state.get_percent_done() == 33.33
    state.update_task_status(3, "D")
    assert state.get_percent_done() == 66.67
    state.update_task_status(2, "D")
    assert state.get_percent_done() == 100.0


# apply_update


def test_apply_update_moves_tasks_and_returns_changed() -> None:
    t1, t2, t3 = TaskRecord(1, status="Q"), TaskRecord(2, status="R"), TaskRecord(3)
    state = make_state(t1, t2, t3)
    changed = state.apply_update(StateUpdate(task_statuses={1: "R", 2: "R", 3: "G", 99: "D"}))
    assert changed == {t1}
    assert next(iter(changed)) is t1
    assert t1.status == "R"
    assert buckets_of(state, t1) == ["R"]
    assert state._task_status_map["Q"] == set()
    assert 99 not in state.tasks


def test_apply_update_has_no_fsm_check() -> None:
    task = TaskRecord(1, status="D")
    state = make_state(task)
    assert state.apply_update(StateUpdate(task_statuses={1: "R"})) == {task}
    assert task.status == "R"
    assert state.get_done_count() == 0
    assert state.get_active_task_count() == 1


def test_apply_update_scalars_and_array_limits() -> None:
    array = ArrayRecord(1, max_concurrently_running=5)
    state = make_state()
    state.add_array(array)
    when = datetime.datetime(2024, 5, 1, 12, 0, 0)
    changed = state.apply_update(
        StateUpdate(
            max_concurrently_running=0,
            array_limits={1: 2, 77: 3},
            workflow_run_status="R",
            sync_time=when,
        )
    )
    assert changed == set()
    assert state.max_concurrently_running == 0
    assert array.max_concurrently_running == 2
    assert 77 not in state.arrays
    assert state.status == "R"
    assert state.last_sync is when


def test_apply_update_none_fields_change_nothing() -> None:
    state = make_state(max_concurrently_running=7, status="R")
    state.last_sync = "2024-01-01 00:00:00"
    assert state.apply_update(StateUpdate.empty()) == set()
    assert (state.max_concurrently_running, state.status) == (7, "R")
    assert state.last_sync == "2024-01-01 00:00:00"


def test_apply_update_last_sync_can_move_backwards() -> None:
    state = make_state()
    state.apply_update(StateUpdate(sync_time="2024-05-01 12:00:00"))
    state.apply_update(StateUpdate(sync_time="2020-01-01 00:00:00"))
    assert state.last_sync == "2020-01-01 00:00:00"


class _ExplodingArray:
    """An array whose limit cannot be set: shows how far apply_update got."""

    array_id = 1

    @property
    def max_concurrently_running(self) -> int:
        return 1

    @max_concurrently_running.setter
    def max_concurrently_running(self, value: int) -> None:
        raise RuntimeError("array limit step reached")


def test_apply_update_order_statuses_limit_arrays_then_status_and_sync() -> None:
    task = TaskRecord(1, status="Q")
    state = make_state(task, max_concurrently_running=10)
    state.add_array(_ExplodingArray())
    update = StateUpdate(
        task_statuses={1: "R"},
        max_concurrently_running=3,
        array_limits={1: 2},
        workflow_run_status="R",
        sync_time="2024-05-01 12:00:00",
    )
    with pytest.raises(RuntimeError, match="array limit step"):
        state.apply_update(update)
    assert task.status == "R"  # step 1 done
    assert state.max_concurrently_running == 3  # step 2 done
    assert state.status == "B"  # steps 4 and 5 not reached
    assert state.last_sync is None


def test_apply_update_e_raises_with_partial_mutation() -> None:
    t1, t2, t3 = TaskRecord(1), TaskRecord(2, status="R"), TaskRecord(3)
    state = make_state(t1, t2, t3)
    state.add_array(ArrayRecord(1, max_concurrently_running=5))
    update = StateUpdate(
        task_statuses={1: "Q", 2: "E", 3: "Q"},
        max_concurrently_running=1,
        array_limits={1: 1},
        workflow_run_status="R",
        sync_time="2024-05-01 12:00:00",
    )
    with pytest.raises(KeyError, match="E"):
        state.apply_update(update)
    assert t1.status == "Q"  # before the E entry: applied
    assert t2.status == "E"  # the E entry: left its bucket, carries E, in no bucket
    assert buckets_of(state, t2) == []
    assert t3.status == "G"  # after the E entry: not applied
    assert state.max_concurrently_running == 10000
    assert state.arrays[1].max_concurrently_running == 5
    assert state.status == "B"
    assert state.last_sync is None


def test_task_in_e_poisons_later_updates_before_any_mutation() -> None:
    task = TaskRecord(1, status="R")
    state = make_state(task)
    with pytest.raises(KeyError):
        state.apply_update(StateUpdate(task_statuses={1: "E"}))
    with pytest.raises(KeyError, match="E"):
        state.apply_update(StateUpdate(task_statuses={1: "A"}))
    assert task.status == "E"
    assert state._task_status_map["A"] == set()
    with pytest.raises(KeyError):
        state.update_task_status(1, "A")
    assert task.status == "E"


# update_task_status


def test_update_task_status() -> None:
    task = TaskRecord(1, status="Q")
    state = make_state(task)
    assert state.update_task_status(2, "R") is False
    assert state.update_task_status(1, "Q") is False
    assert state.update_task_status(1, "R") is True
    assert task.status == "R"
    assert buckets_of(state, task) == ["R"]


def test_update_task_status_to_e_raises_with_partial_mutation() -> None:
    task = TaskRecord(1, status="R")
    state = make_state(task)
    with pytest.raises(KeyError, match="E"):
        state.update_task_status(1, "E")
    assert task.status == "E"
    assert buckets_of(state, task) == []
    assert state.tasks[1] is task


# propagate_completions


def test_propagate_completions_counts_and_returns_ready_registering() -> None:
    a, b, c, d = TaskRecord(1, status="D"), TaskRecord(2, status="D"), TaskRecord(3), TaskRecord(4)
    link(a, c)
    link(b, c, d)
    link(TaskRecord(9), d)  # d has a second, unfinished upstream
    state = make_state(a, b, c, d)
    ready = state.propagate_completions({a, b})
    assert ready == [c]
    assert ready[0] is c
    assert (c.num_upstreams_done, d.num_upstreams_done) == (2, 1)


def test_propagate_completions_only_returns_registering_downstreams() -> None:
    up, down = TaskRecord(1, status="D"), TaskRecord(2, status="A")
    link(up, down)
    state = make_state(up, down)
    assert state.propagate_completions({up}) == []
    assert down.num_upstreams_done == 1
    assert down.all_upstreams_done


def test_propagate_completions_does_not_check_status_enqueue_or_move() -> None:
    up, down = TaskRecord(1, status="G"), TaskRecord(2)
    link(up, down)
    state = make_state(up, down)
    assert state.propagate_completions([up]) == [down]
    assert state.get_ready_to_run_count() == 0
    assert buckets_of(state, up) == ["G"]
    assert buckets_of(state, down) == ["G"]


def test_double_propagation_overcounts() -> None:
    up, running, waiting = TaskRecord(1, status="D"), TaskRecord(2, status="R"), TaskRecord(3)
    link(up, running, waiting)
    state = make_state(up, running, waiting)
    assert set(map(id, state.propagate_completions({up}))) == {id(waiting)}
    with pytest.raises(RuntimeError):  # a still-G downstream: all_upstreams_done raises
        state.propagate_completions({up})
    assert waiting.num_upstreams_done == 2


def test_double_propagation_is_silent_for_non_registering_downstream() -> None:
    up, running = TaskRecord(1, status="D"), TaskRecord(2, status="R")
    link(up, running)
    state = make_state(up, running)
    assert state.propagate_completions({up}) == []
    assert state.propagate_completions({up}) == []
    assert running.num_upstreams_done == 2
    assert running.num_upstreams == 1


# Queue


def test_enqueue_dequeue_fifo_and_front() -> None:
    t1, t2, t3 = TaskRecord(1), TaskRecord(2), TaskRecord(3)
    state = make_state(t1, t2, t3)
    assert state.dequeue_task() is None
    state.enqueue_task(t1)
    state.enqueue_task(t2)
    state.enqueue_task(t3, front=True)
    assert list(state.ready_to_run) == [t3, t1, t2]
    assert state.dequeue_task() is t3
    assert state.dequeue_task() is t1
    assert state.dequeue_task() is t2
    assert state.dequeue_task() is None


def test_enqueue_does_not_dedupe() -> None:
    task = TaskRecord(1)
    state = make_state(task)
    state.enqueue_task(task)
    state.enqueue_task(task)
    state.enqueue_task(task, front=True)
    assert state.get_ready_to_run_count() == 3
    assert all(t is task for t in state.ready_to_run)


def test_enqueue_accepts_unregistered_tasks() -> None:
    state = make_state()
    stranger = TaskRecord(42)
    state.enqueue_task(stranger)
    assert state.dequeue_task() is stranger
    assert state.tasks == {}


# Resource cache


def test_cache_first_writer_wins_and_keeps_identity() -> None:
    state = make_state()
    first, second = {"cores": 1}, {"cores": 1}
    assert state.get_cached_resources(123) is None
    assert state.cache_resources(123, first) is first
    assert state.cache_resources(123, second) is first
    assert state.get_cached_resources(123) is first
    assert state.task_resources_cache == {123: first}


def test_cache_keys_are_independent() -> None:
    state = make_state()
    a, b = object(), object()
    assert state.cache_resources(1, a) is a
    assert state.cache_resources(2, b) is b
    assert state.get_cached_resources(1) is a
    assert state.get_cached_resources(2) is b
    assert state.get_cached_resources(3) is None


# Initial counts


def test_compute_initial_upstream_done_counts_credits_done_tasks_only() -> None:
    done, running, down = TaskRecord(1, status="D"), TaskRecord(2, status="R"), TaskRecord(3)
    link(done, down)
    link(running, down)
    state = make_state(done, running, down)
    assert cast(object, state.compute_initial_upstream_done_counts()) is None  # returns nothing
    assert down.num_upstreams_done == 1
    assert not down.all_upstreams_done


def test_compute_initial_upstream_done_counts_twice_doubles() -> None:
    done, down = TaskRecord(1, status="D"), TaskRecord(2)
    link(done, down)
    state = make_state(done, down)
    state.compute_initial_upstream_done_counts()
    assert down.all_upstreams_done
    state.compute_initial_upstream_done_counts()
    assert down.num_upstreams_done == 2
    with pytest.raises(RuntimeError):
        _ = down.all_upstreams_done


# A short end-to-end run, the way the orchestrator drives it


def test_orchestrator_like_run_reaches_all_final() -> None:
    a, b, c = TaskRecord(1), TaskRecord(2), TaskRecord(3)
    link(a, c)
    link(b, c)
    state = make_state(a, b, c, max_concurrently_running=1)
    state.compute_initial_upstream_done_counts()
    for task in list(state.get_tasks_by_status("G")):
        if task.all_upstreams_done:
            state.enqueue_task(task)
    order: list[int] = []
    while state.has_pending_work():
        if state.get_available_capacity() and state.ready_to_run:
            dequeued = state.dequeue_task()
            assert dequeued is not None
            state.apply_update(StateUpdate(task_statuses={dequeued.task_id: "R"}))
            continue
        running = list(state.get_tasks_by_status("R"))
        changed = state.apply_update(StateUpdate(task_statuses={t.task_id: "D" for t in running}))
        order.extend(t.task_id for t in changed)
        for ready in state.propagate_completions(changed):
            state.enqueue_task(ready)
    assert sorted(order[:2]) == [1, 2]
    assert order[2:] == [3]
    assert state.all_tasks_final()
    assert state.get_percent_done() == 100.0
