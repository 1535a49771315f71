"""In-memory SwarmState with exactly the semantics of jobmon's seed.

This is the reference for differential tests against the Redis implementation, so it keeps
the seed's quirks on purpose: no 'E' bucket (KeyError after a partial mutation), propagation
that counts every call, an enqueue without dedupe, and a ``last_sync`` that can move backwards.
Do not fix them here; the Redis state documents where it deliberately differs.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any, Protocol

from swarm_redis.constants import (
    ACTIVE_TASK_STATUSES,
    ADJUSTING_RESOURCES,
    DONE,
    ERROR_FATAL,
    REGISTERING,
    SEED_TRACKED_STATUSES,
    SERVER_STOP_STATUSES,
    TERMINATING_STATUSES,
)
from swarm_redis.update import StateUpdate, SyncTime

__all__ = [
    "ACTIVE_TASK_STATUSES",
    "SERVER_STOP_STATUSES",
    "TERMINATING_STATUSES",
    "SwarmArrayLike",
    "SwarmState",
    "SwarmTaskLike",
]


class SwarmTaskLike(Protocol):
    """What the state needs from a task: jobmon's SwarmTask or a TaskRecord."""

    status: str
    num_upstreams_done: int

    @property
    def task_id(self) -> int: ...

    @property
    def array_id(self) -> int | None: ...

    @property
    def downstream_swarm_tasks(self) -> Iterable[SwarmTaskLike]: ...

    @property
    def all_upstreams_done(self) -> bool: ...


class SwarmArrayLike(Protocol):
    """What the state needs from an array: jobmon's SwarmArray or an ArrayRecord."""

    max_concurrently_running: int

    @property
    def array_id(self) -> int: ...


class SwarmState:
    """Centralized state of one workflow run, held in this process (jobmon's seed semantics).

    Usage:
        state = SwarmState(workflow_id=1, workflow_run_id=10, dag_id=5)
        state.add_task(task)
        state.apply_update(StateUpdate(task_statuses={1: "D"}))
    """

    def __init__(
        self,
        workflow_id: int,
        workflow_run_id: int,
        dag_id: int,
        max_concurrently_running: int = 10000,
        status: str = "B",
    ) -> None:
        """Initialize an empty state; no argument is validated (as in the seed).

        Args:
            workflow_id: The workflow ID.
            workflow_run_id: The workflow run ID.
            dag_id: The DAG ID.
            max_concurrently_running: Initial workflow concurrency limit.
            status: Initial workflow run status.
        """
        self.workflow_id = workflow_id
        self.workflow_run_id = workflow_run_id
        self.dag_id = dag_id
        self.tasks: dict[int, SwarmTaskLike] = {}
        self.arrays: dict[int, SwarmArrayLike] = {}
        # Eight buckets: 'E' has none, so moving a task to 'E' raises KeyError.
        self._task_status_map: dict[str, set[SwarmTaskLike]] = {
            s: set() for s in SEED_TRACKED_STATUSES
        }
        self.ready_to_run: deque[SwarmTaskLike] = deque()
        self.status = status
        self.max_concurrently_running = max_concurrently_running
        self.last_sync: SyncTime | None = None
        self.task_resources_cache: dict[int, Any] = {}
        self.num_previously_complete: int = 0

    # Registry

    def add_task(self, task: SwarmTaskLike) -> None:
        """Register a task and put it in the bucket of its status.

        Args:
            task: The task to add. The registry is updated before the bucket, so a status
                without a bucket ('E') raises KeyError with the task already registered.
        """
        self.tasks[task.task_id] = task
        self._task_status_map[task.status].add(task)

    def add_array(self, array: SwarmArrayLike) -> None:
        """Register an array, silently replacing one with the same id.

        Args:
            array: The array to add.
        """
        self.arrays[array.array_id] = array

    def get_task(self, task_id: int) -> SwarmTaskLike | None:
        """The registered task with this id, or None.

        Args:
            task_id: The task ID to look up.
        """
        return self.tasks.get(task_id)

    # Queries

    @property
    def active_task_statuses(self) -> tuple[str, ...]:
        """Task statuses representing in-flight work (Q, I, O, R)."""
        return ACTIVE_TASK_STATUSES

    def get_tasks_by_status(self, status: str) -> set[SwarmTaskLike]:
        """The live bucket for a tracked status; a fresh empty set for any other.

        Args:
            status: The task status letter.

        Returns:
            The bucket itself (copy it before mutating the state while iterating).
        """
        return self._task_status_map.get(status, set())

    def get_active_task_count(self) -> int:
        """Number of tasks in Q, I, O and R (summed bucket sizes)."""
        return sum(len(self._task_status_map[s]) for s in ACTIVE_TASK_STATUSES)

    def get_ready_to_run_count(self) -> int:
        """Length of the ready-to-run queue."""
        return len(self.ready_to_run)

    def get_done_count(self) -> int:
        """Number of DONE tasks."""
        return len(self._task_status_map[DONE])

    def get_failed_count(self) -> int:
        """Number of ERROR_FATAL tasks."""
        return len(self._task_status_map[ERROR_FATAL])

    def get_done_tasks(self) -> list[SwarmTaskLike]:
        """A new list of the DONE tasks, in no particular order."""
        return list(self._task_status_map[DONE])

    def get_failed_tasks(self) -> list[SwarmTaskLike]:
        """A new list of the ERROR_FATAL tasks, in no particular order."""
        return list(self._task_status_map[ERROR_FATAL])

    def all_tasks_final(self) -> bool:
        """True when every registered task is DONE or ERROR_FATAL (vacuously true if none)."""
        return len(self.tasks) == self.get_done_count() + self.get_failed_count()

    def has_pending_work(self) -> bool:
        """True if any task is active or ADJUSTING_RESOURCES, or the ready queue is non-empty.

        ADJUSTING_RESOURCES counts because those tasks are re-queued on the next pass.
        """
        return (
            self.get_active_task_count() > 0
            or len(self.ready_to_run) > 0
            or len(self._task_status_map[ADJUSTING_RESOURCES]) > 0
        )

    def get_available_capacity(self) -> int:
        """How many more tasks the workflow limit allows, clamped at 0."""
        return max(0, self.max_concurrently_running - self.get_active_task_count())

    def get_array_capacity(self, array_id: int) -> int:
        """How many more tasks can be queued for this array.

        Args:
            array_id: The array to check.

        Returns:
            0 for an unregistered array; otherwise its limit minus its active tasks, clamped
            at 0. Independent of the workflow capacity.
        """
        array = self.arrays.get(array_id)
        if array is None:
            return 0
        active = sum(1 for t in self._get_active_tasks() if t.array_id == array_id)
        return max(0, array.max_concurrently_running - active)

    def _get_active_tasks(self) -> set[SwarmTaskLike]:
        """Union of the four active buckets."""
        return set().union(*(self._task_status_map[s] for s in ACTIVE_TASK_STATUSES))

    def get_percent_done(self) -> float:
        """Percentage of registered tasks that are DONE, rounded to 2 places (0.0 if none)."""
        if not self.tasks:
            return 0.0
        return round(self.get_done_count() / len(self.tasks) * 100, 2)

    # Mutations

    def _move(self, task: SwarmTaskLike, new_status: str) -> None:
        # Seed order: discard, assign, add. An untracked status raises KeyError part-way.
        self._task_status_map[task.status].discard(task)
        task.status = new_status
        self._task_status_map[new_status].add(task)

    def apply_update(self, update: StateUpdate) -> set[SwarmTaskLike]:
        """Apply statuses, then the workflow limit, array limits, run status and sync time.

        Unknown task and array ids are skipped. There is no rollback: a KeyError on an
        untracked status leaves earlier entries applied and everything after it unapplied.

        Args:
            update: The StateUpdate to apply.

        Returns:
            The tasks whose status changed (their ``status`` is already the new one).
        """
        changed: set[SwarmTaskLike] = set()
        for task_id, new_status in update.task_statuses.items():
            task = self.tasks.get(task_id)
            if task is None or task.status == new_status:
                continue
            self._move(task, new_status)
            changed.add(task)
        if update.max_concurrently_running is not None:
            self.max_concurrently_running = update.max_concurrently_running
        for array_id, limit in update.array_limits.items():
            array = self.arrays.get(array_id)
            if array is not None:
                array.max_concurrently_running = limit
        if update.workflow_run_status is not None:
            self.status = update.workflow_run_status
        if update.sync_time is not None:
            self.last_sync = update.sync_time
        return changed

    def update_task_status(self, task_id: int, new_status: str) -> bool:
        """Move one task to a new status.

        Args:
            task_id: The task to update.
            new_status: The new status.

        Returns:
            True if the task was found and its status changed.
        """
        task = self.tasks.get(task_id)
        if task is None or task.status == new_status:
            return False
        self._move(task, new_status)
        return True

    def propagate_completions(
        self, completed_tasks: Iterable[SwarmTaskLike]
    ) -> list[SwarmTaskLike]:
        """Add one finished upstream to every downstream of each given task.

        Not idempotent: each call counts again, whatever the given tasks' status.

        Args:
            completed_tasks: Tasks that just completed.

        Returns:
            Downstreams that are REGISTERING with all upstreams done (not enqueued).
        """
        ready: list[SwarmTaskLike] = []
        for task in completed_tasks:
            for downstream in task.downstream_swarm_tasks:
                downstream.num_upstreams_done += 1
                if downstream.status == REGISTERING and downstream.all_upstreams_done:
                    ready.append(downstream)
        return ready

    def enqueue_task(self, task: SwarmTaskLike, front: bool = False) -> None:
        """Add a task to the ready queue, without checking whether it is already there.

        Args:
            task: The task to enqueue.
            front: If True, add to the front of the queue (higher priority).
        """
        if front:
            self.ready_to_run.appendleft(task)
        else:
            self.ready_to_run.append(task)

    def dequeue_task(self) -> SwarmTaskLike | None:
        """Remove and return the task at the front of the queue, or None if it is empty."""
        return self.ready_to_run.popleft() if self.ready_to_run else None

    # Resource cache

    def get_cached_resources(self, resource_hash: int) -> Any | None:
        """The TaskResources cached under this hash, or None.

        Args:
            resource_hash: The hash of the TaskResources.
        """
        return self.task_resources_cache.get(resource_hash)

    def cache_resources(self, resource_hash: int, task_resources: Any) -> Any:
        """Cache TaskResources unless the hash is taken; first writer wins.

        Args:
            resource_hash: The hash of the TaskResources.
            task_resources: The TaskResources to cache.

        Returns:
            The object cached first under this hash (the very same object).
        """
        return self.task_resources_cache.setdefault(resource_hash, task_resources)

    # Initialization

    def compute_initial_upstream_done_counts(self) -> None:
        """Credit every DONE task once to each of its downstreams.

        No reset first: calling it twice doubles the counts (as in the seed).
        """
        for task in self._task_status_map[DONE]:
            for downstream in task.downstream_swarm_tasks:
                downstream.num_upstreams_done += 1
