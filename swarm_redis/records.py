"""Light task and array records: what a replica rebuilds from Redis when it attaches to a run
whose Python objects it never saw, and a handy stand-in for jobmon's SwarmTask in tests."""

from __future__ import annotations

from typing import Any


class TaskRecord:
    """A SwarmTask-shaped record: identity and definition plus the two mirrored run fields.

    Hash and equality go by ``task_id``, like jobmon's SwarmTask.
    """

    __slots__ = (
        "array_id",
        "current_task_resources",
        "downstream_swarm_tasks",
        "num_upstreams",
        "num_upstreams_done",
        "status",
        "task_id",
    )

    def __init__(
        self,
        task_id: int,
        array_id: int = 0,
        status: str = "G",
        num_upstreams: int = 0,
        num_upstreams_done: int = 0,
        downstream_swarm_tasks: set[Any] | None = None,
        current_task_resources: Any = None,
    ) -> None:
        self.task_id = task_id
        self.array_id = array_id
        self.status = status
        self.num_upstreams = num_upstreams
        self.num_upstreams_done = num_upstreams_done
        self.downstream_swarm_tasks: set[Any] = (
            downstream_swarm_tasks if downstream_swarm_tasks is not None else set()
        )
        self.current_task_resources = current_task_resources

    @property
    def all_upstreams_done(self) -> bool:
        """True when every upstream has finished (jobmon raises on an over-count; so do we)."""
        if self.num_upstreams_done > self.num_upstreams:
            raise RuntimeError(
                f"task {self.task_id}: {self.num_upstreams_done} upstreams done "
                f"but only {self.num_upstreams} upstreams"
            )
        return self.num_upstreams_done == self.num_upstreams

    @property
    def downstream_tasks(self) -> list[Any]:
        return list(self.downstream_swarm_tasks)

    def __hash__(self) -> int:
        return hash(self.task_id)

    def __eq__(self, other: object) -> bool:
        return hasattr(other, "task_id") and self.task_id == other.task_id

    def __lt__(self, other: Any) -> bool:
        return bool(self.task_id < other.task_id)

    def __repr__(self) -> str:
        return (
            f"TaskRecord(task_id={self.task_id}, array_id={self.array_id}, status={self.status!r})"
        )


class ArrayRecord:
    """A SwarmArray-shaped record: id, name, limit and the tasks it holds."""

    __slots__ = ("array_id", "array_name", "max_concurrently_running", "tasks")

    def __init__(
        self, array_id: int, max_concurrently_running: int = 10000, array_name: str | None = None
    ) -> None:
        self.array_id = array_id
        self.max_concurrently_running = max_concurrently_running
        self.array_name = array_name if array_name is not None else f"array_{array_id}"
        self.tasks: set[Any] = set()

    def add_task(self, task: Any) -> None:
        if task.array_id != self.array_id:
            raise ValueError(
                f"task {task.task_id} belongs to array {task.array_id}, not {self.array_id}"
            )
        self.tasks.add(task)

    def __hash__(self) -> int:
        return hash(self.array_id)

    def __eq__(self, other: object) -> bool:
        return hasattr(other, "array_id") and self.array_id == other.array_id

    def __repr__(self) -> str:
        return f"ArrayRecord(array_id={self.array_id}, max_concurrently_running={self.max_concurrently_running})"
