"""The demo's DAG: a synthetic workflow with several arrays, limits and resource shapes.

The shapes come from the shared builder (:mod:`swarm_redis.testing.dags`); this module adds what
the demo needs on top: a task's array is its depth modulo :data:`N_ARRAYS` (one per "phase"),
per-array limits derived from the workflow limit, resource requests the tasks cycle through, the
registration of the run and the simulated server's view of it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from swarm_redis.demo.sim import SimConfig
from swarm_redis.records import ArrayRecord, TaskRecord
from swarm_redis.state import RedisSwarmState
from swarm_redis.testing.dags import SHAPES, from_parents, shape_parents

__all__ = [
    "N_ARRAYS",
    "RESOURCE_SHAPES",
    "SHAPES",
    "STEP_S",
    "DemoDag",
    "array_limits",
    "build_dag",
    "register_run",
    "sim_config",
]

#: Resource requests the tasks cycle through: batches form per array and per shape.
RESOURCE_SHAPES: tuple[dict[str, Any], ...] = (
    {"num_cores": 1, "memory_gb": 1, "runtime_s": 600, "queue": "all.q"},
    {"num_cores": 4, "memory_gb": 8, "runtime_s": 3600, "queue": "all.q"},
    {"num_cores": 16, "memory_gb": 64, "runtime_s": 7200, "queue": "long.q"},
)
#: Number of arrays; a task's array is its depth in the DAG modulo this (one per "phase").
N_ARRAYS = 4
#: Range of each simulated Q, I, O and R step, in seconds.
STEP_S = (0.01, 0.08)


@dataclass
class DemoDag:
    """A synthetic DAG: linked TaskRecords, their arrays, and each task's upstream ids."""

    shape: str
    tasks: list[TaskRecord]
    arrays: list[ArrayRecord]
    upstreams: dict[int, list[int]]
    depth: int

    @property
    def roots(self) -> list[TaskRecord]:
        """Tasks without upstreams, in id order."""
        return [t for t in self.tasks if t.num_upstreams == 0]

    @property
    def n_edges(self) -> int:
        return sum(len(u) for u in self.upstreams.values())

    def describe(self) -> str:
        """One line for humans."""
        limits = ", ".join(f"{a.array_id}:{a.max_concurrently_running}" for a in self.arrays)
        return (
            f"{len(self.tasks)} tasks, {self.n_edges} edges, depth {self.depth}, "
            f"{len(self.roots)} roots, shape {self.shape}, array limits {{{limits}}}, "
            f"{len(RESOURCE_SHAPES)} resource shapes"
        )


def array_limits(limit: int, n_arrays: int = N_ARRAYS) -> list[int]:
    """Per-array limits derived from the workflow limit: some tighter, one equal to it."""
    fractions = (0.5, 0.25, 1.0, 0.35)
    return [max(1, int(limit * fractions[i % len(fractions)])) for i in range(n_arrays)]


def build_dag(
    n_tasks: int,
    shape: str = "layered",
    *,
    limit: int = 200,
    seed: int | None = None,
    first_id: int = 1,
) -> DemoDag:
    """Build a synthetic DAG of ``n_tasks`` TaskRecords (ids from ``first_id``).

    Args:
        n_tasks: Number of tasks (>= 1).
        shape: One of :data:`SHAPES`.
        limit: The workflow limit the array limits are derived from (:func:`array_limits`).
        seed: Seed of the random choices (the same seed gives the same DAG).
        first_id: Id of the first task.
    """
    if n_tasks < 1:
        raise ValueError("n_tasks must be >= 1")
    rng = random.Random(seed)
    parents = shape_parents(n_tasks, shape, rng)
    depth = [0] * n_tasks
    for i, ps in enumerate(parents):
        if ps:
            depth[i] = 1 + max(depth[p] for p in ps)
    tasks = from_parents(parents, first_id=first_id, arrays=[d % N_ARRAYS + 1 for d in depth])
    for task in tasks:
        task.current_task_resources = dict(RESOURCE_SHAPES[rng.randrange(len(RESOURCE_SHAPES))])
    limits = array_limits(limit)
    arrays = [ArrayRecord(a + 1, limits[a], f"phase_{a + 1}") for a in range(N_ARRAYS)]
    for task in tasks:
        arrays[task.array_id - 1].add_task(task)
    upstreams = {first_id + i: [first_id + p for p in ps] for i, ps in enumerate(parents) if ps}
    return DemoDag(shape, tasks, arrays, upstreams, max(depth) + 1)


def register_run(
    client: Any, prefix: str, run_id: int, dag: DemoDag, limit: int
) -> RedisSwarmState:
    """Register the DAG as run ``run_id`` and queue its roots with their resources.

    Idempotent (registration keeps what a run already holds). The roots are queued here, with
    their resource keys, so the first batches form per resource shape; the leader's initial
    fringe then finds nothing more to queue.
    """
    state = RedisSwarmState(
        run_id, run_id, run_id, limit, "B", redis=client, prefix=prefix, events_maxlen=20000
    )
    state.add_arrays(dag.arrays)
    state.add_tasks(dag.tasks)
    state.enqueue_tasks(dag.roots)
    return state


def sim_config(
    dag: DemoDag, limit: int, fail_rate: float, seed: int | None, max_attempts: int = 4
) -> SimConfig:
    """The simulated server's view of the DAG and its limits."""
    return SimConfig(
        tasks={t.task_id: t.array_id for t in dag.tasks},
        workflow_limit=limit,
        array_limits={a.array_id: a.max_concurrently_running for a in dag.arrays},
        upstreams=dag.upstreams,
        step_s=STEP_S,
        fail_rate=fail_rate,
        max_attempts=max_attempts,
        seed=seed,
    )
