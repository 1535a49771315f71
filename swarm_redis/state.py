"""RedisSwarmState: jobmon's SwarmState API with the run's state in Redis (blocking client)."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from swarm_redis.constants import (
    ACTIVE_TASK_STATUSES,
    SERVER_STOP_STATUSES,
    TERMINATING_STATUSES,
)
from swarm_redis.engine import coordination as coord
from swarm_redis.engine import reconcile as sweeps
from swarm_redis.engine.coordination import (
    Batch,
    LeaderInfo,
    ReapReport,
    Replica,
)
from swarm_redis.engine.core import ApplyResult, Op, run_sync
from swarm_redis.engine.front import StateFront
from swarm_redis.engine.reconcile import ReconcileReport
from swarm_redis.engine.transport import SyncTransport
from swarm_redis.engine.validation import (
    check_mapping,
)
from swarm_redis.engine.views import (
    ArraysView,
    ReadyQueueView,
    ResourceCacheView,
    StatusMapView,
    TasksView,
)
from swarm_redis.update import StateUpdate

__all__ = [
    "ACTIVE_TASK_STATUSES",
    "SERVER_STOP_STATUSES",
    "TERMINATING_STATUSES",
    "RedisSwarmState",
]

logger = logging.getLogger(__name__)
T = TypeVar("T")
V = TypeVar("V")
S = TypeVar("S", bound="RedisSwarmState")


class RedisSwarmState(StateFront):
    """A workflow run's scheduling state, shared through Redis by any number of replicas.

    Same methods, arguments and return types as jobmon's ``SwarmState``; see docs/api.md for the
    deliberate differences (all nine statuses tracked, completions counted once, no duplicate
    queue entries, final DONE/ERROR_FATAL, stale updates ignored, monotonic ``last_sync``).
    Construction creates the run unless it exists; the arguments are
    :class:`~swarm_redis.engine.front.StateFront`'s, with a redis-py client as ``redis``.
    """

    transport_type = SyncTransport
    client_hint = "a redis-py client: redis=Redis(...)"

    def _opened(self) -> None:
        self._run(self._create())

    @classmethod
    def attach(
        cls: type[S], redis: Any, workflow_run_id: int, *, prefix: str = "swarm", **kwargs: Any
    ) -> S:
        """A working state for an existing run, knowing only the client and the run id.

        Tasks and arrays are rebuilt from Redis as :class:`~swarm_redis.records.TaskRecord` and
        :class:`~swarm_redis.records.ArrayRecord`. Raises UnknownRunError if the run is absent.
        """
        state = cls._for_existing_run(redis, workflow_run_id, prefix=prefix, **kwargs)
        state.workflow_id, state.dag_id = state._run(state._core.attach())
        return state

    def _run(self, op: Op[T]) -> T:
        return run_sync(self._transport.execute, op)

    def _view(self, name: str, cls: type[V]) -> V:
        # one view object per attribute, so `state.tasks is state.tasks` as with jobmon's dicts
        views = self.__dict__.setdefault("_views", {})
        if name not in views:
            views[name] = cls(self)  # type: ignore[call-arg]
        view: V = views[name]
        return view

    # --- attributes jobmon reads and writes ---------------------------------------------------

    @property
    def tasks(self) -> TasksView:
        return self._view("tasks", TasksView)

    @tasks.setter
    def tasks(self, tasks: Mapping[int, Any]) -> None:
        # jobmon's tests assign whole registries: register them (idempotent, nothing removed)
        self.add_tasks(check_mapping(tasks, "tasks").values())

    @property
    def arrays(self) -> ArraysView:
        return self._view("arrays", ArraysView)

    @arrays.setter
    def arrays(self, arrays: Mapping[int, Any]) -> None:
        self.add_arrays(check_mapping(arrays, "arrays").values())

    @property
    def ready_to_run(self) -> ReadyQueueView:
        return self._view("ready", ReadyQueueView)

    @property
    def _task_status_map(self) -> StatusMapView:
        return self._view("status_map", StatusMapView)

    @_task_status_map.setter
    def _task_status_map(self, buckets: Mapping[str, Iterable[Any]]) -> None:
        # jobmon's tests assign whole status maps: every task in bucket S is registered with
        # status S, or moved there (without propagation) if Redis has it in another one; nothing
        # is removed. Everything is validated before the first write.
        self._run(self._core.set_status_map(check_mapping(buckets, "_task_status_map")))

    @property
    def task_resources_cache(self) -> ResourceCacheView:
        return self._view("resources", ResourceCacheView)

    @property
    def status(self) -> str:
        """The run status, shared by all replicas."""
        return self._run(self._core.run_status())

    @status.setter
    def status(self, value: str) -> None:
        # Follows the run state machine: a transition it forbids (R over C) leaves the stored
        # status, which the next read shows; use set_run_status() to be told.
        self._run(self._core.apply(StateUpdate(workflow_run_status=value)))

    @property
    def max_concurrently_running(self) -> int:
        """The workflow limit, shared by all replicas."""
        return self._run(self._core.limit())

    @max_concurrently_running.setter
    def max_concurrently_running(self, value: int) -> None:
        self._run(self._core.apply(StateUpdate(max_concurrently_running=value)))

    @property
    def last_sync(self) -> datetime.datetime | str | None:
        """Server time of the newest applied sync, read back exactly as it was given."""
        return self._run(self._core.last_sync())

    @last_sync.setter
    def last_sync(self, value: datetime.datetime | str | None) -> None:
        self._run(self._core.set_last_sync(value))

    @property
    def num_previously_complete(self) -> int:
        return self._run(self._core.previously_complete())

    @num_previously_complete.setter
    def num_previously_complete(self, value: int) -> None:
        self._run(self._core.set_previously_complete(value))

    # --- registry -------------------------------------------------------------------------------

    def add_task(self, task: Any) -> None:
        """Register a task (idempotent: a task already in Redis keeps its stored state)."""
        self._run(self._core.add_tasks([task]))

    def add_tasks(self, tasks: Iterable[Any]) -> None:
        """Register many tasks in bounded, pipelined chunks."""
        self._run(self._core.add_tasks(tasks))

    def add_array(self, array: Any) -> None:
        """Register an array; its limit overwrites the stored one."""
        self._run(self._core.add_arrays([array]))

    def add_arrays(self, arrays: Iterable[Any]) -> None:
        self._run(self._core.add_arrays(arrays))

    def get_task(self, task_id: int) -> Any:
        """The task object, refreshed from Redis, or None if the run has no such task."""
        return self._run(self._core.get_task(task_id))

    def get_tasks_by_status(self, status: str) -> set[Any]:
        """A snapshot set of the tasks in ``status`` (empty for an unknown letter)."""
        return self._run(self._core.tasks_by_status(status))

    def get_all_tasks(self) -> dict[int, Any]:
        """Every task of the run (what ``state.tasks`` shows), loading unknown ones."""
        return self._run(self._core.all_tasks())

    def task_count(self) -> int:
        """How many tasks the run has (``len(state.tasks)``)."""
        return self._run(self._core.task_count())

    def get_arrays(self) -> dict[int, Any]:
        """Every registered array (what ``state.arrays`` shows), with refreshed limits."""
        return self._run(self._core.all_arrays())

    # --- queries --------------------------------------------------------------------------------

    def counts(self) -> dict[str, int]:
        """Tasks per status and the sizes of the ready queue, claims and registry."""
        return self._run(self._core.counts())

    def has_pending_work(self) -> bool:
        """True while tasks are in Q/I/O/R/E/A, queued, or claimed by a replica."""
        return self._run(self._core.has_pending_work())

    def get_active_task_count(self) -> int:
        return self._run(self._core.count_statuses(ACTIVE_TASK_STATUSES))

    def get_ready_to_run_count(self) -> int:
        return self._run(self._core.queue_len())

    def ready_to_run_len(self) -> int:
        """``len(state.ready_to_run)``."""
        return self._run(self._core.queue_len())

    def ready_to_run_list(self, start: int = 0, stop: int = -1) -> list[Any]:
        """The queued tasks from head to tail (``list(state.ready_to_run)``), refreshed."""
        return self._run(self._core.queue_objects(start, stop))

    def get_done_count(self) -> int:
        return self._run(self._core.count_statuses(("D",)))

    def get_failed_count(self) -> int:
        return self._run(self._core.count_statuses(("F",)))

    def get_done_tasks(self) -> list[Any]:
        return self._run(self._core.tasks_in_status("D"))

    def get_failed_tasks(self) -> list[Any]:
        return self._run(self._core.tasks_in_status("F"))

    def _get_active_tasks(self) -> set[Any]:
        return self._run(self._core.active_tasks())

    def all_tasks_final(self) -> bool:
        """True when every task is DONE or ERROR_FATAL and nothing is claimed."""
        return self._run(self._core.all_tasks_final())

    def get_available_capacity(self) -> int:
        """``max(0, limit - active - reserved by claims)`` for the whole run."""
        return self._run(self._core.available_capacity())

    def get_array_capacity(self, array_id: int) -> int:
        """How many more tasks of the array may be queued (0 for an unregistered array)."""
        return self._run(self._core.array_capacity(array_id))

    def get_percent_done(self) -> float:
        return self._run(self._core.percent_done())

    # --- mutations ------------------------------------------------------------------------------

    def apply(self, update: StateUpdate, *, propagate: bool | None = None) -> ApplyResult:
        """Apply an update and return the changed tasks and the tasks it queued as ready."""
        return self._run(self._core.apply(update, propagate))

    def apply_update(self, update: StateUpdate) -> set[Any]:
        """Apply a StateUpdate; the set of tasks whose status changed.

        With ``propagate_on_apply`` (default) new completions are propagated and the tasks
        they made ready are queued in the same atomic step; they are in :attr:`last_ready`.
        """
        return self.apply(update).changed

    def update_task_status(self, task_id: int, new_status: str) -> bool:
        """Set one task's status; True if the task exists and its status changed."""
        return self._run(self._core.update_task_status(task_id, new_status))

    def propagate_completions(self, completed_tasks: Iterable[Any]) -> list[Any]:
        """Count each DONE task's completion once; the REGISTERING tasks that became ready.

        Not-DONE tasks and completions already counted are ignored. It does not queue.
        """
        return self._run(self._core.propagate(completed_tasks, enqueue=False))

    def compute_initial_upstream_done_counts(self) -> None:
        """Credit every DONE task to its downstreams, once (calling it again changes nothing)."""
        self._run(self._core.compute_initial_counts())

    def enqueue_task(self, task: Any, front: bool = False) -> None:
        """Queue a task unless it is queued, claimed or final already (registers it if new)."""
        self._run(self._core.enqueue([task], front=front))

    def enqueue_tasks(self, tasks: Iterable[Any], front: bool = False) -> list[Any]:
        """Queue several tasks in one round trip; at the front they keep their order."""
        return self._run(self._core.enqueue(list(tasks), front=front))

    def dequeue_task(self) -> Any:
        """Remove and return the head of the ready queue, or None when it is empty."""
        return self._run(self._core.dequeue_one())

    def dequeue_tasks(self, max_n: int) -> list[Any]:
        """Remove and return up to ``max_n`` tasks from the head, in one round trip."""
        return self._run(self._core.dequeue(max_n))

    def get_cached_resources(self, resource_hash: int) -> Any:
        """Cached resources for the hash, or None (see :func:`swarm_redis.resource_digest`)."""
        return self._run(self._core.cached_resources(resource_hash))

    def cache_resources(self, resource_hash: int, task_resources: Any) -> Any:
        """Cache resources (first writer wins) and return the cached value."""
        return self._run(self._core.cache_resources(resource_hash, task_resources))

    def resource_keys(self) -> list[Any]:
        """The cached resource hashes (``list(state.task_resources_cache)``)."""
        return self._run(self._core.resource_keys())

    # --- several replicas (see docs/replicas.md) -----------------------------------------------

    def join_replica(self, ttl_s: float = 10.0, *, replica_id: str | None = None) -> Replica:
        """Join the run as a replica with a lease of ``ttl_s`` (Redis time)."""
        return self._run(coord.join_replica(self._core, ttl_s, replica_id))

    def heartbeat(self, replica: Replica) -> None:
        """Extend the replica's lease; LeaseLostError once it expired or was reaped."""
        self._run(coord.heartbeat(self._core, replica))

    def leave(self, replica: Replica) -> None:
        """Clean shutdown: unsent claimed batches back to the queue front, leadership resigned."""
        self._run(coord.leave(self._core, replica))

    def claim_batch(
        self,
        replica: Replica,
        max_size: int = 500,
        *,
        window: int | None = None,
        scan_limit: int = coord.DEFAULT_SCAN_LIMIT,
    ) -> Batch | None:
        """Claim the next batch to queue on the server (an orphan first), or None."""
        return self._run(
            coord.claim_batch(self._core, replica, max_size, window=window, scan_limit=scan_limit)
        )

    def ack_batch(
        self,
        replica: Replica,
        batch: Batch,
        task_statuses: Mapping[int, str],
        *,
        sync_time: datetime.datetime | str | None = None,
    ) -> set[Any]:
        """Apply the server's answer to the batch's queue call and release the claim."""
        return self._run(
            coord.ack_batch(self._core, replica, batch, task_statuses, sync_time=sync_time)
        )

    def release_batch(self, replica: Replica, batch: Batch) -> None:
        """Put an unqueued batch back at the queue front in its order."""
        self._run(coord.release_batch(self._core, replica, batch))

    def reap(self, *, interval_s: float = 0.5, force: bool = False) -> ReapReport:
        """Remove expired replicas; their batches are re-driven by the next claims."""
        return self._run(coord.reap(self._core, interval_s=interval_s, force=force))

    def acquire_leadership(self, replica: Replica, ttl_s: float | None = None) -> int | None:
        """The leadership epoch if this replica leads now, else None."""
        return self._run(coord.acquire_leadership(self._core, replica, ttl_s))

    def renew_leadership(self, replica: Replica, epoch: int) -> None:
        """Extend the leadership lease; FencedError if ``epoch`` no longer leads."""
        self._run(coord.renew_leadership(self._core, replica, epoch))

    def resign_leadership(self, replica: Replica, epoch: int) -> None:
        """Give up leadership if still held under ``epoch``."""
        self._run(coord.resign_leadership(self._core, replica, epoch))

    def leader(self) -> LeaderInfo | None:
        """The current leadership lease, or None."""
        return self._run(coord.leader(self._core))

    def set_run_status(
        self, new: str, *, expected: str | None = None, epoch: int | None = None
    ) -> str:
        """Compare-and-set the run status on the run state machine (TransitionError if refused)."""
        return self._run(coord.set_run_status(self._core, new, expected=expected, epoch=epoch))

    def finalize(self, final_status: str, *, epoch: int | None = None) -> bool:
        """End the run exactly once; True only for the call that did it."""
        return self._run(coord.finalize(self._core, final_status, epoch=epoch))

    def enqueue_initial_fringe(self) -> int:
        """Once per run: A tasks to the front, ready G tasks to the back; how many queued."""
        return self._run(sweeps.enqueue_initial_fringe(self._core))

    def reconcile(self) -> ReconcileReport:
        """Heal every crash window (idempotent, bounded chunks); what it fixed."""
        return self._run(sweeps.reconcile(self._core))
