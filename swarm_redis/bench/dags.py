"""Layered benchmark DAGs: fan-in 3, one array per layer (cycled), built fast at 1M tasks.

Task ``i`` (0-based) sits in layer ``i // width`` at position ``i % width``. A task of layer
``L > 0`` at position ``p`` depends on the tasks of layer ``L - 1`` at positions
``p, p + 1, ..., p + fan_in - 1`` (mod the width), so every full layer has ``width * fan_in``
edges and every task of a full layer has exactly ``fan_in`` children. Layer 0 holds the roots.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from swarm_redis.engine.commands import TaskDef
from swarm_redis.records import ArrayRecord, TaskRecord

#: Default layer width: a 100k-task DAG has 100 layers, a 1M-task DAG 1,000.
DEFAULT_WIDTH = 1000
#: Default number of arrays; layer ``L`` belongs to array ``L % n_arrays + 1``.
DEFAULT_ARRAYS = 10


@dataclass(frozen=True)
class DagShape:
    """The shape of a layered DAG; cheap to pass to other processes (they rebuild it)."""

    n_tasks: int
    width: int = DEFAULT_WIDTH
    fan_in: int = 3
    n_arrays: int = DEFAULT_ARRAYS
    first_id: int = 1

    def __post_init__(self) -> None:
        if self.n_tasks < 1 or self.width < 1 or self.n_arrays < 1:
            raise ValueError("n_tasks, width and n_arrays must be >= 1")
        if not 1 <= self.fan_in <= self.width:
            raise ValueError("fan_in must be between 1 and the width")

    @property
    def n_layers(self) -> int:
        """Number of layers (the last one may be partial)."""
        return -(-self.n_tasks // self.width)

    @property
    def n_edges(self) -> int:
        """Number of dependency edges."""
        return max(0, self.n_tasks - self.width) * self.fan_in

    def layer_ids(self, layer: int) -> range:
        """Task ids of one layer."""
        start = layer * self.width
        stop = min(self.n_tasks, start + self.width)
        return range(self.first_id + start, self.first_id + max(start, stop))

    def array_of(self, index: int) -> int:
        """Array id of the task at 0-based ``index``."""
        return (index // self.width) % self.n_arrays + 1

    def parents_of(self, index: int) -> list[int]:
        """0-based indexes of the upstreams of the task at ``index``."""
        if index < self.width:
            return []
        prev = (index // self.width - 1) * self.width
        pos = index % self.width
        return [prev + (pos + k) % self.width for k in range(self.fan_in)]

    def children_of(self, index: int) -> list[int]:
        """0-based indexes of the downstreams of the task at ``index``."""
        nxt = (index // self.width + 1) * self.width
        if nxt >= self.n_tasks:
            return []
        pos = index % self.width
        out = []
        for k in range(self.fan_in):
            child = nxt + (pos - k) % self.width
            if child < self.n_tasks:
                out.append(child)
        return out

    def describe(self) -> dict[str, int]:
        """The shape as plain numbers, for reports."""
        return {
            "tasks": self.n_tasks,
            "width": self.width,
            "layers": self.n_layers,
            "fan_in": self.fan_in,
            "arrays": self.n_arrays,
            "edges": self.n_edges,
        }


class Dag:
    """A built DAG: TaskRecord objects linked to their downstreams, and ArrayRecords.

    Objects are fresh per build, so each implementation under test gets its own mirrors.
    """

    def __init__(self, shape: DagShape, tasks: list[TaskRecord], arrays: list[ArrayRecord]):
        self.shape = shape
        self.tasks = tasks
        self.arrays = arrays

    @property
    def roots(self) -> list[TaskRecord]:
        """The tasks of layer 0 (no upstreams)."""
        return self.tasks[: min(self.shape.width, self.shape.n_tasks)]

    def layer(self, layer: int) -> list[TaskRecord]:
        """The tasks of one layer."""
        w = self.shape.width
        return self.tasks[layer * w : (layer + 1) * w]


def build_dag(shape: DagShape, array_limit: int = 1_000_000) -> Dag:
    """Build the TaskRecords of ``shape`` (about 3 s per million tasks).

    Args:
        shape: The DAG shape.
        array_limit: ``max_concurrently_running`` of every array.
    """
    n, w, fan_in, first = shape.n_tasks, shape.width, shape.fan_in, shape.first_id
    n_arrays = shape.n_arrays
    tasks = [
        TaskRecord(
            first + i,
            (i // w) % n_arrays + 1,
            "G",
            fan_in if i >= w else 0,
            0,
        )
        for i in range(n)
    ]
    for start in range(w, n, w):
        prev = tasks[start - w : start]
        cur = tasks[start : start + w]
        if fan_in == 3 and len(cur) == w:  # the common case, with set literals (2x faster)
            for p, parent in enumerate(prev):
                parent.downstream_swarm_tasks = {cur[p], cur[p - 1], cur[p - 2]}
            continue
        for p, parent in enumerate(prev):
            parent.downstream_swarm_tasks = {
                cur[(p - k) % w] for k in range(fan_in) if (p - k) % w < len(cur)
            }
    arrays = [ArrayRecord(a, array_limit) for a in range(1, min(n_arrays, shape.n_layers) + 1)]
    return Dag(shape, tasks, arrays)


def task_defs(shape: DagShape) -> Iterator[TaskDef]:
    """Registration records of every task, computed from the shape alone (no objects)."""
    first = shape.first_id
    for i in range(shape.n_tasks):
        yield TaskDef(
            task_id=first + i,
            status="G",
            array_id=shape.array_of(i),
            num_upstreams=shape.fan_in if i >= shape.width else 0,
            num_upstreams_done=0,
            downstream_ids=tuple(first + c for c in shape.children_of(i)),
        )
