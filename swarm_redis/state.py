"""RedisSwarmState: jobmon's SwarmState API with the run's state in Redis (blocking client)."""

from __future__ import annotations

import datetime
import logging
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from swarm_redis.codec import ResourceCodec
from swarm_redis.constants import (
    ACTIVE_TASK_STATUSES,
    SERVER_STOP_STATUSES,
    TERMINATING_STATUSES,
)
from swarm_redis.engine import coordination as coord
from swarm_redis.engine.coordination import (
    Batch,
    LeaderInfo,
    ReapReport,
    ReconcileReport,
    Replica,
)
from swarm_redis.engine.core import DEFAULT_CHUNK_BUDGET, ApplyResult, Op, StateCore, run_sync
from swarm_redis.engine.keys import RunKeys
from swarm_redis.engine.transport import SyncTransport
from swarm_redis.engine.validation import (
    DEFAULT_MAX_CLOCK_SKEW_S,
    check_mapping,
    check_run_ids,
    coerce_task_id,
    decode_sync_time,
    stored_int,
)
from swarm_redis.engine.views import (
    ArraysView,
    ReadyQueueView,
    ResourceCacheView,
    StatusMapView,
    TasksView,
)
from swarm_redis.errors import InvalidTypeError
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


class RedisSwarmState:
    """A workflow run's scheduling state, shared through Redis by any number of replicas.

    Same methods, arguments and return types as jobmon's ``SwarmState``; see the README for the
    deliberate differences (all nine statuses tracked, completions counted once, no duplicate
    queue entries, final DONE/ERROR_FATAL, stale updates ignored, monotonic ``last_sync``).

    Args:
        workflow_id: The workflow ID.
        workflow_run_id: The workflow run ID (the run's key in Redis).
        dag_id: The DAG ID.
        max_concurrently_running: Initial workflow limit (ignored if the run exists).
        status: Initial run status (ignored if the run exists).
        redis: A redis-py client (``decode_responses`` either way; Cluster clients too).
        prefix: First part of every key of the run.
        codec: How cached resources are stored (default: dicts, dataclasses, to_dict objects).
        chunk_budget: Redis work per script call (status changes plus edge visits).
        propagate_on_apply: ``apply_update`` propagates completions and queues what became
            ready in the same atomic step (default). False keeps jobmon's two-step flow.
        events_maxlen: Cap of the run's event stream, 0..10,000,000 (0 switches events off), set
            at creation.
        max_clock_skew: How far (seconds, or a ``timedelta``; 0..10 years, default one day) a
            ``sync_time`` may lie ahead of this process's clock; a later one is refused with
            InvalidInputError (a far-future stamp would freeze ``last_sync`` and every task's
            stale guard). One day covers naive server times in any time zone.

    Raises:
        InvalidTypeError / InvalidInputError: An id that is not an int in 0..2^53-1 (bool,
            float, nan and str refused), a limit, ``events_maxlen``, ``chunk_budget`` or
            ``max_clock_skew`` out of range (see docs/validation.md). Nothing is written.
    """

    def __init__(
        self,
        workflow_id: int,
        workflow_run_id: int,
        dag_id: int,
        max_concurrently_running: int = 10000,
        status: str = "B",
        *,
        redis: Any = None,
        prefix: str = "swarm",
        codec: ResourceCodec | None = None,
        chunk_budget: int = DEFAULT_CHUNK_BUDGET,
        propagate_on_apply: bool = True,
        events_maxlen: int = 10000,
        max_clock_skew: float | datetime.timedelta = DEFAULT_MAX_CLOCK_SKEW_S,
        _create: bool = True,
    ) -> None:
        if redis is None:
            raise InvalidTypeError("RedisSwarmState needs a redis-py client: redis=Redis(...)")
        self.workflow_id, self.workflow_run_id, self.dag_id = check_run_ids(
            workflow_id, workflow_run_id, dag_id
        )
        self.redis = redis
        self._core = StateCore(
            RunKeys(prefix, self.workflow_run_id),
            codec=codec,
            chunk_budget=chunk_budget,
            propagate_on_apply=propagate_on_apply,
            events_maxlen=events_maxlen,
            max_clock_skew=max_clock_skew,
        )
        self._transport = SyncTransport(redis, self.workflow_run_id)
        if _create:
            self._run(
                self._core.create(
                    workflow_id, self.workflow_run_id, dag_id, max_concurrently_running, status
                )
            )

    @classmethod
    def attach(
        cls, redis: Any, workflow_run_id: int, *, prefix: str = "swarm", **kwargs: Any
    ) -> RedisSwarmState:
        """A working state for an existing run, knowing only the client and the run id.

        Tasks and arrays are rebuilt from Redis as :class:`~swarm_redis.records.TaskRecord` and
        :class:`~swarm_redis.records.ArrayRecord`. Raises UnknownRunError if the run is absent.
        """
        state = cls(0, workflow_run_id, 0, redis=redis, prefix=prefix, _create=False, **kwargs)
        meta = state._run(state._core.read_meta())
        state.workflow_id = stored_int(meta.get("workflow_id"))
        state.dag_id = stored_int(meta.get("dag_id"))
        state._run(state._core.load_all())
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

    @property
    def keys(self) -> RunKeys:
        """The run's key names (see :mod:`swarm_redis.engine.keys`)."""
        return self._core.keys

    @property
    def version(self) -> int:
        """The highest write version of the run this object has seen."""
        return self._core.seen

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
    def active_task_statuses(self) -> tuple[str, ...]:
        return ACTIVE_TASK_STATUSES

    @property
    def status(self) -> str:
        """The run status, shared by all replicas."""
        return self._run(self._core.meta_field("status")) or ""

    @status.setter
    def status(self, value: str) -> None:
        # Follows the run state machine: a transition it forbids (R over C) leaves the stored
        # status, which the next read shows; use set_run_status() to be told.
        self._run(self._core.apply(StateUpdate(workflow_run_status=value)))

    @property
    def max_concurrently_running(self) -> int:
        """The workflow limit, shared by all replicas."""
        return stored_int(self._run(self._core.meta_field("limit")))

    @max_concurrently_running.setter
    def max_concurrently_running(self, value: int) -> None:
        self._run(self._core.apply(StateUpdate(max_concurrently_running=value)))

    @property
    def last_sync(self) -> datetime.datetime | str | None:
        """Server time of the newest applied sync, read back exactly as it was given."""
        return decode_sync_time(self._run(self._core.meta_field("last_sync")))

    @last_sync.setter
    def last_sync(self, value: datetime.datetime | str | None) -> None:
        if value is not None:
            self._run(self._core.apply(StateUpdate(sync_time=value)))

    @property
    def num_previously_complete(self) -> int:
        return stored_int(self._run(self._core.meta_field("npc")))

    @num_previously_complete.setter
    def num_previously_complete(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidTypeError(f"num_previously_complete must be an int, got {value!r}")
        self._run(self._core.set_fields({"npc": value}))

    @property
    def last_ready(self) -> list[Any]:
        """Tasks the last ``apply_update`` of this object made ready and queued."""
        return self._core.last_ready

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
        return set(self._run(self._core.tasks_in_status(status)))

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

    def get_done_count(self) -> int:
        return self._run(self._core.count_statuses(("D",)))

    def get_failed_count(self) -> int:
        return self._run(self._core.count_statuses(("F",)))

    def get_done_tasks(self) -> list[Any]:
        return self._run(self._core.tasks_in_status("D"))

    def get_failed_tasks(self) -> list[Any]:
        return self._run(self._core.tasks_in_status("F"))

    def _get_active_tasks(self) -> set[Any]:
        out: set[Any] = set()
        for status in ACTIVE_TASK_STATUSES:
            out |= self.get_tasks_by_status(status)
        return out

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
        tid = coerce_task_id(task_id)
        result = self.apply(StateUpdate(task_statuses={tid: new_status}))
        return bool(result.changed)

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
        found = self._run(self._core.dequeue(1))
        return found[0] if found else None

    def dequeue_tasks(self, max_n: int) -> list[Any]:
        """Remove and return up to ``max_n`` tasks from the head, in one round trip."""
        return self._run(self._core.dequeue(max_n))

    def get_cached_resources(self, resource_hash: int) -> Any:
        """Cached resources for the hash, or None (see :func:`swarm_redis.resource_digest`)."""
        return self._run(self._core.cached_resources(resource_hash))

    def cache_resources(self, resource_hash: int, task_resources: Any) -> Any:
        """Cache resources (first writer wins) and return the cached value."""
        return self._run(self._core.cache_resources(resource_hash, task_resources))

    # --- several replicas (see the README, "Several replicas") -----------------------------------------------

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
        return self._run(coord.enqueue_initial_fringe(self._core))

    def reconcile(self) -> ReconcileReport:
        """Heal every crash window (idempotent, bounded chunks); what it fixed."""
        return self._run(coord.reconcile(self._core))

    # --- helpers for the views -----------------------------------------------------------------

    def _task_count(self) -> int:
        return self._run(self._core.counts())["tasks"]

    def _all_tasks(self, *, refresh: bool = False) -> dict[int, Any]:
        self._run(self._core.load_all(refresh=refresh))
        return dict(self._core.tasks)

    def _all_arrays(self) -> dict[int, Any]:
        limits = self._run(self._core.read_arrays())
        return {a: self._core.arrays[a] for a in limits}

    def _queue_slice(self, start: int, stop: int) -> list[Any]:
        return self._run(self._core.queue_objects(start, stop))

    def _resource_keys(self) -> list[Any]:
        return [
            int(k) if k.lstrip("-").isdigit() else k for k in self._run(self._core.resource_keys())
        ]

    def __repr__(self) -> str:
        return f"RedisSwarmState(workflow_run_id={self.workflow_run_id}, prefix={self._core.keys.prefix!r})"
