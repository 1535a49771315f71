"""The shared DAG builders (swarm_redis.testing.dags): shapes, links and reproducibility."""

from __future__ import annotations

import random

import pytest

from swarm_redis.records import TaskRecord
from swarm_redis.testing.dags import (
    SHAPES,
    DagShape,
    build_dag,
    chain,
    diamond,
    from_edges,
    layered,
    random_layered,
    shape_parents,
    task_defs,
    upstreams_of,
)


def edges(tasks: list[TaskRecord]) -> set[tuple[int, int]]:
    return {(t.task_id, d.task_id) for t in tasks for d in t.downstream_swarm_tasks}


def assert_linked(tasks: list[TaskRecord]) -> None:
    """Ids in order, every count equal to the upstreams pointing at the task."""
    ups = upstreams_of(tasks)
    for task in tasks:
        assert task.num_upstreams == len(ups.get(task.task_id, []))
        assert all(u < task.task_id for u in ups.get(task.task_id, []))


def test_small_shapes() -> None:
    c = chain(4, first_id=10, array_id=2, statuses="DR")
    assert [t.task_id for t in c] == [10, 11, 12, 13]
    assert [t.status for t in c] == ["D", "R", "G", "G"]
    assert {t.array_id for t in c} == {2}
    assert edges(c) == {(10, 11), (11, 12), (12, 13)}
    d = diamond(7, lone=True)
    assert edges(d) == {(1, 3), (2, 3), (3, 4)} and len(d) == 5
    assert [t.num_upstreams for t in d] == [0, 0, 2, 1, 0]
    e = from_edges(3, [(1, 3), (2, 3)], arrays=[1, 2, 1], statuses=["G", "D", "G"])
    assert [t.array_id for t in e] == [1, 2, 1] and e[1].status == "D"
    for tasks in (c, d, e):
        assert_linked(tasks)


def test_layered_matches_the_benchmark_build() -> None:
    shape = DagShape(40, width=8, fan_in=3, n_arrays=1)
    bench = build_dag(shape)
    tests = layered(5, 8, fan_in=3, array_id=1)
    assert edges(bench.tasks) == edges(tests)
    assert [t.num_upstreams for t in bench.tasks] == [t.num_upstreams for t in tests]
    defs = {d.task_id: d for d in task_defs(shape)}
    for task in bench.tasks:
        down = sorted(t.task_id for t in task.downstream_swarm_tasks)
        assert sorted(defs[task.task_id].downstream_ids) == down
    assert len(edges(tests)) == shape.n_edges
    assert_linked(tests)


def test_random_layered_is_reproducible() -> None:
    a = random_layered(random.Random(5), 4, 30, n_arrays=3)
    b = random_layered(random.Random(5), 4, 30, n_arrays=3)
    assert edges(a) == edges(b)
    assert all(t.array_id == 1 + t.task_id % 3 for t in a)
    ups = upstreams_of(a)
    for task in a[30:]:
        layer = (task.task_id - 1) // 30
        assert 1 <= len(ups[task.task_id]) <= 3
        assert all((u - 1) // 30 == layer - 1 for u in ups[task.task_id])
    fixed = random_layered(random.Random(5), 3, 10, fan_in=2)
    assert all(t.num_upstreams == 2 for t in fixed[10:])
    assert_linked(a)


@pytest.mark.parametrize("shape", SHAPES)
def test_demo_shapes_are_topological(shape: str) -> None:
    parents = shape_parents(700, shape, random.Random(2))
    assert len(parents) == 700
    assert all(all(p < i for p in ps) and len(set(ps)) == len(ps) for i, ps in enumerate(parents))
    assert sum(1 for ps in parents if ps) > 0
    with pytest.raises(ValueError, match="unknown shape"):
        shape_parents(10, "star", random.Random(0))
