"""The jobmon drop-in on both fronts: jobmon's own StateUpdate class (duck typing) and edges
wired after registration (jobmon's resume path), sealed before their first use (issue 11)."""

from __future__ import annotations

import datetime
import logging
from dataclasses import dataclass, field
from typing import Any

import pytest
from fronts import Front

from swarm_redis import InvalidTypeError, RedisSwarmState

WHEN = datetime.datetime(2024, 5, 1, 12, 0, 0)


@dataclass
class ForeignUpdate:
    """jobmon's StateUpdate: a mutable dataclass of another class with the same five fields."""

    task_statuses: dict[int, str] = field(default_factory=dict)
    max_concurrently_running: int | None = None
    array_limits: dict[int, int] = field(default_factory=dict)
    workflow_run_status: str | None = None
    sync_time: datetime.datetime | None = None


class Task:
    """jobmon's SwarmTask, as far as the state reads it."""

    def __init__(self, task_id: int, array_id: int = 1, status: str = "G") -> None:
        self.task_id = task_id
        self.array_id = array_id
        self.status = status
        self.num_upstreams = 0
        self.num_upstreams_done = 0
        self.downstream_swarm_tasks: set[Task] = set()

    def __hash__(self) -> int:
        return self.task_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Task) and other.task_id == self.task_id


class Array:
    def __init__(self, array_id: int, limit: int) -> None:
        self.array_id = array_id
        self.max_concurrently_running = limit


def _stored_def(
    front: Front, run_id: int, prefix: str, task_id: int
) -> tuple[int, tuple[int, ...]]:
    """(number of upstreams, downstream ids) of the task's record, read by a fresh replica."""
    rec = front.attach(run_id, prefix=prefix).get_task(task_id)
    return rec.num_upstreams, tuple(sorted(t.task_id for t in rec.downstream_swarm_tasks))


def test_jobmon_style_update_is_applied(front: Front, run_id: int, prefix: str) -> None:
    st = front.state(run_id, prefix=prefix)
    st.add_array(Array(1, 5))
    a, b = Task(1), Task(2)
    for t in (a, b):
        st.add_task(t)
    changed = st.apply_update(
        ForeignUpdate(
            task_statuses={1: "Q", 2: "R"},
            max_concurrently_running=7,
            array_limits={1: 3},
            workflow_run_status="R",
            sync_time=WHEN,
        )
    )
    assert {t.task_id for t in changed} == {1, 2}
    assert a.status == "Q" and b.status == "R"
    assert st.get_max_concurrently_running() == 7
    assert st.get_status() == "R"
    assert st.get_last_sync() == WHEN
    assert st.get_array_capacity(1) == 1  # limit 3, two active


@pytest.mark.parametrize("missing", ["task_statuses", "sync_time", "array_limits"])
def test_object_without_update_fields_is_refused(
    front: Front, run_id: int, prefix: str, missing: str
) -> None:
    st = front.state(run_id, prefix=prefix)
    st.add_task(Task(1))
    fields = {
        "task_statuses": {1: "D"},
        "max_concurrently_running": 3,
        "array_limits": {},
        "workflow_run_status": None,
        "sync_time": None,
    }
    del fields[missing]
    bogus = type("Bogus", (), fields)()
    version = st.version
    with pytest.raises(InvalidTypeError, match=missing):
        st.apply_update(bogus)
    assert st.version == version
    assert st.get_max_concurrently_running() == 10000
    assert st.counts()["G"] == 1


def test_bad_field_of_a_foreign_update_writes_nothing(
    front: Front, run_id: int, prefix: str
) -> None:
    st = front.state(run_id, prefix=prefix)
    st.add_task(Task(1))
    version = st.version
    with pytest.raises(Exception, match="status"):
        st.apply_update(ForeignUpdate(task_statuses={1: "Z"}, max_concurrently_running=3))
    assert st.version == version and st.get_max_concurrently_running() == 10000


def _resume_like(st: Any, n: int = 4) -> list[Task]:
    """jobmon's build_from_workflow_id: add every task, then wire the edges on the objects."""
    st.add_array(Array(1, 100))
    tasks = [Task(i) for i in range(1, n + 1)]
    for t in tasks:
        st.add_task(t)
    # a chain 1 -> 2 -> 3 and a fan-in 1 -> 4 <- 3
    for up, down in ((1, 2), (2, 3), (1, 4), (3, 4)):
        tasks[up - 1].downstream_swarm_tasks.add(tasks[down - 1])
        tasks[down - 1].num_upstreams += 1
    return tasks


@pytest.mark.parametrize("propagate_on_apply", [True, False])
def test_edges_wired_after_registration_are_used(
    front: Front, run_id: int, prefix: str, propagate_on_apply: bool
) -> None:
    st = front.state(run_id, prefix=prefix, propagate_on_apply=propagate_on_apply)
    tasks = _resume_like(st)
    st.enqueue_task(tasks[0])
    assert [t.task_id for t in st.ready_to_run_list()] == [1]
    assert _stored_def(front, run_id, prefix, 1) == (0, (2, 4))
    assert _stored_def(front, run_id, prefix, 4) == (2, ())

    def complete(task_id: int) -> list[int]:
        changed = st.apply_update(ForeignUpdate(task_statuses={task_id: "D"}))
        if propagate_on_apply:
            return sorted(t.task_id for t in st.last_ready)
        ready = st.propagate_completions(changed)
        return sorted(t.task_id for t in ready)

    st.dequeue_task()
    assert complete(1) == [2]
    assert tasks[3].num_upstreams_done == 1  # fan-in: one of two
    assert complete(2) == [3]
    assert complete(3) == [4]
    other = front.attach(run_id, prefix=prefix)
    rec = other.get_task(4)
    assert rec.num_upstreams == 2 and rec.num_upstreams_done == 2


def test_sealing_twice_or_from_two_replicas_gives_the_same_records(
    front: Front, run_id: int, prefix: str
) -> None:
    a = front.state(run_id, prefix=prefix)
    _resume_like(a)
    a.compute_initial_upstream_done_counts()  # first use: seals
    version = a.version
    b = front.state(run_id, prefix=prefix)  # a second replica builds the same DAG
    _resume_like(b)
    b.compute_initial_upstream_done_counts()
    a.compute_initial_upstream_done_counts()
    other = front.attach(run_id, prefix=prefix)
    got = {
        i: (other.get_task(i).num_upstreams, other.get_task(i).num_upstreams_done)
        for i in (1, 2, 3, 4)
    }
    assert got == {1: (0, 0), 2: (1, 0), 3: (1, 0), 4: (2, 0)}
    assert b.version == version  # b's identical definitions changed nothing


def test_children_added_after_propagation_are_refused_and_logged(
    front: Front, run_id: int, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    st = front.state(run_id, prefix=prefix)
    st.add_array(Array(1, 100))
    up, down = Task(1), Task(2)
    st.add_task(up)
    st.add_task(down)
    st.apply_update(ForeignUpdate(task_statuses={1: "D"}))  # seals (no edges yet), propagates
    up.downstream_swarm_tasks.add(down)
    down.num_upstreams = 1
    st.add_task(up)  # registered again (already there): unsealed again
    with caplog.at_level(logging.WARNING, logger="swarm_redis.engine.core"):
        st.compute_initial_upstream_done_counts()
    assert "after their completion was propagated" in caplog.text
    assert _stored_def(front, run_id, prefix, 1) == (0, ())


def test_downstreams_queued_by_apply_are_reported_once(
    front: Front, run_id: int, prefix: str
) -> None:
    st = front.state(run_id, prefix=prefix)  # propagate_on_apply=True: apply queues them
    st.add_array(Array(1, 100))
    tasks = _resume_like(st)
    st.enqueue_task(tasks[0])
    st.dequeue_task()
    changed = st.apply_update(ForeignUpdate(task_statuses={1: "D"}))
    assert [t.task_id for t in st.last_ready] == [2]
    assert [t.task_id for t in st.ready_to_run_list()] == [2]
    # jobmon's orchestrator: propagate_completions({task}) for each DONE task, validates what
    # comes back, then enqueue_task (a no-op here: already queued)
    assert [t.task_id for t in st.propagate_completions(changed)] == [2]
    assert st.propagate_completions(changed) == []
    st.enqueue_task(tasks[1])
    assert [t.task_id for t in st.ready_to_run_list()] == [2]
    # another replica's apply is not reported here
    other = front.attach(run_id, prefix=prefix)
    other.dequeue_task()
    other.apply_update(ForeignUpdate(task_statuses={2: "D"}))
    assert st.propagate_completions([tasks[1]]) == []


def test_status_map_and_task_assignment_register(
    make_client: Any, run_id: int, prefix: str
) -> None:
    """Attribute assignment (the sync front's; jobmon's unit tests set states up this way)."""
    st = RedisSwarmState(1, run_id, 1, redis=make_client(), prefix=prefix)
    st.add_array(Array(1, 5))
    a, b, c = Task(1), Task(2, status="R"), Task(3, status="D")
    st.tasks[1] = a
    with pytest.raises(KeyError):
        st.tasks[9] = Task(2)
    st._task_status_map = {"R": {b}, "D": [c], "G": set()}
    assert st.counts()["R"] == 1 and st.counts()["D"] == 1 and st.counts()["G"] == 1
    assert st.get_array_capacity(1) == 4
    st._task_status_map = {"Q": [a]}  # a known task moves (no propagation)
    assert st.get_task(1).status == "Q"
    version = st.version
    with pytest.raises(InvalidTypeError):
        st._task_status_map = {"Q": [a], "R": [object()]}
    with pytest.raises(Exception, match="status"):
        st._task_status_map = {"Z": [a]}
    assert st.version == version
    assert st.tasks is st.tasks and st.ready_to_run is st.ready_to_run
