"""DAG builders for tests, the demo and the benchmark: linked TaskRecords of known shapes.

Every builder returns fresh :class:`~swarm_redis.records.TaskRecord` objects (ids from
``first_id``, in id order, ids a topological order), each linked to its downstreams and with
its upstream count set, ready for ``add_tasks``:

* small fixed shapes: :func:`chain`, :func:`diamond`, and any DAG from its edges
  (:func:`from_edges`);
* sliding layered DAGs (:class:`DagShape`): task ``i`` of layer ``L > 0`` depends on the tasks
  ``i, i + 1, ..., i + fan_in - 1`` (mod the width) of layer ``L - 1``; :func:`layered` for tests,
  :func:`build_dag` (about 3 s per million tasks) and :func:`task_defs` for the benchmark;
* random layered DAGs (:func:`random_layered`): each task after 1-3 random tasks of the layer
  before, the same DAG for the same random generator;
* the demo's shapes (:data:`SHAPES`, :func:`shape_parents`).
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from swarm_redis.engine.commands import TaskDef
from swarm_redis.records import ArrayRecord, TaskRecord

__all__ = [
    "DEFAULT_ARRAYS",
    "DEFAULT_WIDTH",
    "SHAPES",
    "Dag",
    "DagShape",
    "build_dag",
    "chain",
    "diamond",
    "from_edges",
    "from_parents",
    "layered",
    "link",
    "random_layered",
    "random_parents",
    "shape_parents",
    "task_defs",
    "upstreams_of",
]

#: Shapes of :func:`shape_parents` (the demo's ``--shape``).
SHAPES: tuple[str, ...] = ("layered", "wide", "chain", "random")


# --- any DAG, and small fixed ones ------------------------------------------------------------------


def link(upstream: TaskRecord, *downstreams: TaskRecord) -> None:
    """Make each of ``downstreams`` wait for ``upstream`` (one more upstream each)."""
    for down in downstreams:
        upstream.downstream_swarm_tasks.add(down)
        down.num_upstreams += 1


def from_parents(
    parents: Sequence[Sequence[int]],
    *,
    first_id: int = 1,
    arrays: int | Sequence[int] = 0,
    statuses: Sequence[str] = "",
) -> list[TaskRecord]:
    """Tasks ``first_id, first_id + 1, ...``; ``parents[i]`` are the 0-based upstreams of task i.

    Args:
        parents: One list of 0-based upstream indexes per task.
        first_id: Id of the first task.
        arrays: One array id for all tasks, or one per task.
        statuses: One status per task; tasks past its end are "G".
    """
    n = len(parents)
    array_ids = [arrays] * n if isinstance(arrays, int) else list(arrays)
    tasks = [
        TaskRecord(first_id + i, array_ids[i], statuses[i] if i < len(statuses) else "G")
        for i in range(n)
    ]
    for i, ups in enumerate(parents):
        for p in ups:
            link(tasks[p], tasks[i])
    return tasks


def from_edges(
    n: int,
    edges: Iterable[tuple[int, int]],
    *,
    first_id: int = 1,
    arrays: int | Sequence[int] = 0,
    statuses: Sequence[str] = "",
) -> list[TaskRecord]:
    """Tasks ``first_id .. first_id + n - 1`` with the ``(upstream id, downstream id)`` edges.

    ``arrays`` and ``statuses`` as in :func:`from_parents`.
    """
    parents: list[list[int]] = [[] for _ in range(n)]
    for up, down in edges:
        parents[down - first_id].append(up - first_id)
    return from_parents(parents, first_id=first_id, arrays=arrays, statuses=statuses)


def chain(
    n: int, *, first_id: int = 1, array_id: int = 0, statuses: Sequence[str] = ""
) -> list[TaskRecord]:
    """Task 1 feeds 2 feeds 3 ... feeds n (``statuses`` as in :func:`from_parents`)."""
    parents = [[i - 1] if i else [] for i in range(n)]
    return from_parents(parents, first_id=first_id, arrays=array_id, statuses=statuses)


def diamond(array_id: int = 0, *, lone: bool = False) -> list[TaskRecord]:
    """1 and 2 feed 3; 3 feeds 4; with ``lone``, a fifth task stands alone."""
    edges = [(1, 3), (2, 3), (3, 4)]
    return from_edges(5 if lone else 4, edges, arrays=array_id)


def upstreams_of(tasks: Iterable[TaskRecord]) -> dict[int, list[int]]:
    """Task id -> its upstream ids (sorted), for the tasks that have upstreams."""
    out: dict[int, list[int]] = {}
    for task in tasks:
        for down in task.downstream_swarm_tasks:
            out.setdefault(int(down.task_id), []).append(int(task.task_id))
    return {t: sorted(ups) for t, ups in out.items()}


# --- random layered DAGs ----------------------------------------------------------------------------


def random_parents(
    rng: random.Random, n_layers: int, width: int, fan_in: int | tuple[int, int] = (1, 3)
) -> list[list[int]]:
    """0-based upstreams of ``n_layers`` layers of ``width``, each task after random ones before.

    Every task of a layer after the first depends on ``fan_in`` random tasks of the layer
    before: a number, or a (low, high) range drawn per task.
    """
    parents: list[list[int]] = [[] for _ in range(width)]
    for layer in range(1, n_layers):
        before = range((layer - 1) * width, layer * width)
        for _ in range(width):
            k = fan_in if isinstance(fan_in, int) else rng.randint(*fan_in)
            parents.append(rng.sample(before, k))
    return parents


def random_layered(
    rng: random.Random,
    n_layers: int,
    width: int,
    *,
    fan_in: int | tuple[int, int] = (1, 3),
    n_arrays: int = 4,
) -> list[TaskRecord]:
    """Tasks 1..``n_layers * width`` after :func:`random_parents`, task t in array 1 + t % n_arrays."""
    parents = random_parents(rng, n_layers, width, fan_in)
    return from_parents(parents, arrays=[1 + t % n_arrays for t in range(1, len(parents) + 1)])


# --- the demo's shapes ------------------------------------------------------------------------------


def shape_parents(n: int, shape: str, rng: random.Random) -> list[list[int]]:
    """0-based upstreams of ``n`` tasks of one of :data:`SHAPES` (every parent index is smaller).

    layered: up to 20 sliding layers of fan-in 3 (:class:`DagShape`); wide: three wide layers,
    every task of layers 1 and 2 after two random tasks of the layer before; chain: parallel
    chains of at most 25 steps, interleaved; random: up to 15 random levels, 1 to 3 parents from
    lower levels, mostly the one below.
    """
    parents: list[list[int]] = [[] for _ in range(n)]
    if shape == "layered":
        layers = max(1, min(20, n // 100))
        width = -(-n // layers)
        sliding = DagShape(n, width=width, fan_in=min(3, width))
        parents = [sorted(set(sliding.parents_of(i))) for i in range(n)]
    elif shape == "wide":
        width = -(-n // 3)
        for i in range(width, n):
            prev = (i // width - 1) * width
            parents[i] = sorted(rng.sample(range(prev, prev + width), min(2, width)))
    elif shape == "chain":
        n_chains = max(1, -(-n // 25))  # interleaved so that ids stay topological
        for i in range(n_chains, n):
            parents[i] = [i - n_chains]
    elif shape == "random":
        levels = max(1, min(15, n // 50))
        level_of = sorted(rng.randrange(levels) for _ in range(n))
        starts = [level_of.index(lv) if lv in level_of else -1 for lv in range(levels)]
        for i in range(n):
            lv = level_of[i]
            if lv == 0 or rng.random() < 0.05:
                continue
            below = max(x for x in range(lv) if starts[x] >= 0)
            lo = starts[below]
            hi = starts[lv]
            picks = {rng.randrange(lo, hi)}
            for _ in range(rng.randint(0, 2)):
                picks.add(rng.randrange(0, hi))
            parents[i] = sorted(picks)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    return parents


# --- sliding layered DAGs, up to millions of tasks --------------------------------------------------


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


def layered(
    n_layers: int, width: int, *, fan_in: int = 2, first_id: int = 1, array_id: int = 0
) -> list[TaskRecord]:
    """A sliding layered DAG of ``n_layers`` full layers (:class:`DagShape`), all in one array."""
    shape = DagShape(n_layers * width, width=width, fan_in=fan_in, first_id=first_id)
    parents = [shape.parents_of(i) for i in range(shape.n_tasks)]
    return from_parents(parents, first_id=first_id, arrays=array_id)
