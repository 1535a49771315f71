"""AsyncRedisSwarmState: the same run state as :class:`~swarm_redis.state.RedisSwarmState`, for asyncio.

It drives the very same :class:`~swarm_redis.engine.core.StateCore` generators as the sync front, with
an :class:`~swarm_redis.engine.transport.AsyncTransport` over a ``redis.asyncio`` client (plain,
Sentinel or Cluster). Every method is one line: ``return await self._run(self._core.op(...))``.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar

from swarm_redis.constants import ACTIVE_TASK_STATUSES
from swarm_redis.engine import coordination as coord
from swarm_redis.engine import reconcile as sweeps
from swarm_redis.engine.coordination import Batch, LeaderInfo, ReapReport, Replica
from swarm_redis.engine.core import ApplyResult, Op, run_async
from swarm_redis.engine.front import StateFront
from swarm_redis.engine.reconcile import ReconcileReport
from swarm_redis.engine.transport import AsyncTransport
from swarm_redis.update import StateUpdate

__all__ = ["AsyncRedisSwarmState"]

T = TypeVar("T")
S = TypeVar("S", bound="AsyncRedisSwarmState")


class AsyncRedisSwarmState(StateFront):
    """A workflow run's scheduling state in Redis, for asyncio code (``redis.asyncio`` clients).

    Same methods, arguments and results as :class:`~swarm_redis.state.RedisSwarmState`, as
    coroutines. ``__init__`` cannot await, so make one with ``await AsyncRedisSwarmState.create(...)``
    (creates the run unless it exists) or ``await AsyncRedisSwarmState.attach(redis, run_id)``.

    Attributes of the sync front that read Redis become async methods:

    ==================================  ========================================================
    sync front                          async front
    ==================================  ========================================================
    ``state.status`` / ``= v``          ``await get_status()`` / ``await set_status(v)``
    ``state.max_concurrently_running``  ``await get_max_concurrently_running()`` / ``set_...(v)``
    ``state.last_sync``                 ``await get_last_sync()`` / ``await set_last_sync(v)``
    ``state.num_previously_complete``   ``await get_num_previously_complete()`` / ``set_...(v)``
    ``state.tasks``                     ``await get_all_tasks()`` (dict), ``await task_count()``,
                                        ``await get_task(id)``
    ``state.arrays``                    ``await get_arrays()`` (dict), ``await add_array(a)``
    ``state.ready_to_run``              ``await ready_to_run_list()``, ``await ready_to_run_len()``,
                                        ``enqueue_task`` (append), ``dequeue_task`` (popleft)
    ``state._task_status_map[s]``       ``await get_tasks_by_status(s)``
    ``state.task_resources_cache``      ``await get_cached_resources(h)``,
                                        ``await cache_resources(h, v)``, ``await resource_keys()``
    ==================================  ========================================================

    ``last_ready``, ``version``, ``keys`` and ``active_task_statuses`` need no I/O and stay
    properties.

    Construction writes nothing; the arguments are
    :class:`~swarm_redis.engine.front.StateFront`'s, with a ``redis.asyncio`` client (``Redis``,
    ``Sentinel.master_for`` or ``RedisCluster``) as ``redis``.
    """

    transport_type = AsyncTransport
    client_hint = "a redis.asyncio client: redis=redis.asyncio.Redis(...)"

    @classmethod
    async def create(
        cls,
        workflow_id: int,
        workflow_run_id: int,
        dag_id: int,
        max_concurrently_running: int = 10000,
        status: str = "B",
        **kwargs: Any,
    ) -> AsyncRedisSwarmState:
        """A state whose run exists in Redis: created here unless another replica did first."""
        state = cls(
            workflow_id, workflow_run_id, dag_id, max_concurrently_running, status, **kwargs
        )
        await state.initialize()
        return state

    async def initialize(self) -> bool:
        """Create the run unless it exists (what the sync ``__init__`` does); True if created."""
        return await self._run(self._create())

    @classmethod
    async def attach(
        cls: type[S], redis: Any, workflow_run_id: int, *, prefix: str = "swarm", **kwargs: Any
    ) -> S:
        """A working state for an existing run, knowing only the client and the run id.

        Raises UnknownRunError if the run is absent.
        """
        state = cls._for_existing_run(redis, workflow_run_id, prefix=prefix, **kwargs)
        state.workflow_id, state.dag_id = await state._run(state._core.attach())
        return state

    async def _run(self, op: Op[T]) -> T:
        return await run_async(self._transport.execute, op)

    # --- run attributes (properties on the sync front) -----------------------------------------

    async def get_status(self) -> str:
        """The run status, shared by all replicas."""
        return await self._run(self._core.run_status())

    async def set_status(self, value: str) -> None:
        """Set the run status through the run state machine (a forbidden move is ignored)."""
        await self._run(self._core.apply(StateUpdate(workflow_run_status=value)))

    async def get_max_concurrently_running(self) -> int:
        """The workflow limit, shared by all replicas."""
        return await self._run(self._core.limit())

    async def set_max_concurrently_running(self, value: int) -> None:
        await self._run(self._core.apply(StateUpdate(max_concurrently_running=value)))

    async def get_last_sync(self) -> datetime.datetime | str | None:
        """Server time of the newest applied sync, read back exactly as it was given."""
        return await self._run(self._core.last_sync())

    async def set_last_sync(self, value: datetime.datetime | str | None) -> None:
        await self._run(self._core.set_last_sync(value))

    async def get_num_previously_complete(self) -> int:
        return await self._run(self._core.previously_complete())

    async def set_num_previously_complete(self, value: int) -> None:
        await self._run(self._core.set_previously_complete(value))

    # --- registry -------------------------------------------------------------------------------

    async def add_task(self, task: Any) -> None:
        """Register a task (idempotent: a task already in Redis keeps its stored state)."""
        await self._run(self._core.add_tasks([task]))

    async def add_tasks(self, tasks: Iterable[Any]) -> None:
        """Register many tasks in bounded, pipelined chunks."""
        await self._run(self._core.add_tasks(tasks))

    async def add_array(self, array: Any) -> None:
        """Register an array; its limit overwrites the stored one."""
        await self._run(self._core.add_arrays([array]))

    async def add_arrays(self, arrays: Iterable[Any]) -> None:
        await self._run(self._core.add_arrays(arrays))

    async def get_task(self, task_id: int) -> Any:
        """The task object, refreshed from Redis, or None if the run has no such task."""
        return await self._run(self._core.get_task(task_id))

    async def get_tasks_by_status(self, status: str) -> set[Any]:
        """A snapshot set of the tasks in ``status`` (empty for an unknown letter)."""
        return await self._run(self._core.tasks_by_status(status))

    async def get_all_tasks(self) -> dict[int, Any]:
        """Every task of the run (``state.tasks`` on the sync front), loading unknown ones."""
        return await self._run(self._core.all_tasks())

    async def task_count(self) -> int:
        """How many tasks the run has (``len(state.tasks)``)."""
        return await self._run(self._core.task_count())

    async def get_arrays(self) -> dict[int, Any]:
        """Every registered array (``state.arrays``), with refreshed limits."""
        return await self._run(self._core.all_arrays())

    # --- queries --------------------------------------------------------------------------------

    async def counts(self) -> dict[str, int]:
        """Tasks per status and the sizes of the ready queue, claims and registry."""
        return await self._run(self._core.counts())

    async def has_pending_work(self) -> bool:
        """True while tasks are in Q/I/O/R/E/A, queued, or claimed by a replica."""
        return await self._run(self._core.has_pending_work())

    async def get_active_task_count(self) -> int:
        return await self._run(self._core.count_statuses(ACTIVE_TASK_STATUSES))

    async def get_ready_to_run_count(self) -> int:
        return await self._run(self._core.queue_len())

    async def ready_to_run_len(self) -> int:
        """``len(state.ready_to_run)``."""
        return await self._run(self._core.queue_len())

    async def ready_to_run_list(self, start: int = 0, stop: int = -1) -> list[Any]:
        """The queued tasks from head to tail (``list(state.ready_to_run)``), refreshed."""
        return await self._run(self._core.queue_objects(start, stop))

    async def get_done_count(self) -> int:
        return await self._run(self._core.count_statuses(("D",)))

    async def get_failed_count(self) -> int:
        return await self._run(self._core.count_statuses(("F",)))

    async def get_done_tasks(self) -> list[Any]:
        return await self._run(self._core.tasks_in_status("D"))

    async def get_failed_tasks(self) -> list[Any]:
        return await self._run(self._core.tasks_in_status("F"))

    async def _get_active_tasks(self) -> set[Any]:
        return await self._run(self._core.active_tasks())

    async def all_tasks_final(self) -> bool:
        """True when every task is DONE or ERROR_FATAL and nothing is claimed."""
        return await self._run(self._core.all_tasks_final())

    async def get_available_capacity(self) -> int:
        """``max(0, limit - active - reserved by claims)`` for the whole run."""
        return await self._run(self._core.available_capacity())

    async def get_array_capacity(self, array_id: int) -> int:
        """How many more tasks of the array may be queued (0 for an unregistered array)."""
        return await self._run(self._core.array_capacity(array_id))

    async def get_percent_done(self) -> float:
        return await self._run(self._core.percent_done())

    # --- mutations ------------------------------------------------------------------------------

    async def apply(self, update: StateUpdate, *, propagate: bool | None = None) -> ApplyResult:
        """Apply an update and return the changed tasks and the tasks it queued as ready."""
        return await self._run(self._core.apply(update, propagate))

    async def apply_update(self, update: StateUpdate) -> set[Any]:
        """Apply a StateUpdate; the set of tasks whose status changed (see the sync front)."""
        return (await self.apply(update)).changed

    async def update_task_status(self, task_id: int, new_status: str) -> bool:
        """Set one task's status; True if the task exists and its status changed."""
        return await self._run(self._core.update_task_status(task_id, new_status))

    async def propagate_completions(self, completed_tasks: Iterable[Any]) -> list[Any]:
        """Count each DONE task's completion once; the REGISTERING tasks that became ready."""
        return await self._run(self._core.propagate(completed_tasks, enqueue=False))

    async def compute_initial_upstream_done_counts(self) -> None:
        """Credit every DONE task to its downstreams, once."""
        await self._run(self._core.compute_initial_counts())

    async def enqueue_task(self, task: Any, front: bool = False) -> None:
        """Queue a task unless it is queued, claimed or final already (registers it if new)."""
        await self._run(self._core.enqueue([task], front=front))

    async def enqueue_tasks(self, tasks: Iterable[Any], front: bool = False) -> list[Any]:
        """Queue several tasks in one round trip; at the front they keep their order."""
        return await self._run(self._core.enqueue(list(tasks), front=front))

    async def dequeue_task(self) -> Any:
        """Remove and return the head of the ready queue, or None when it is empty."""
        return await self._run(self._core.dequeue_one())

    async def dequeue_tasks(self, max_n: int) -> list[Any]:
        """Remove and return up to ``max_n`` tasks from the head, in one round trip."""
        return await self._run(self._core.dequeue(max_n))

    async def get_cached_resources(self, resource_hash: int) -> Any:
        """Cached resources for the hash, or None."""
        return await self._run(self._core.cached_resources(resource_hash))

    async def cache_resources(self, resource_hash: int, task_resources: Any) -> Any:
        """Cache resources (first writer wins) and return the cached value."""
        return await self._run(self._core.cache_resources(resource_hash, task_resources))

    async def resource_keys(self) -> list[Any]:
        """The cached resource hashes (``list(state.task_resources_cache)``)."""
        return await self._run(self._core.resource_keys())

    # --- several replicas (see docs/replicas.md) -----------------------------------------------

    async def join_replica(self, ttl_s: float = 10.0, *, replica_id: str | None = None) -> Replica:
        """Join the run as a replica with a lease of ``ttl_s`` (Redis time)."""
        return await self._run(coord.join_replica(self._core, ttl_s, replica_id))

    async def heartbeat(self, replica: Replica) -> None:
        """Extend the replica's lease; LeaseLostError once it expired or was reaped."""
        await self._run(coord.heartbeat(self._core, replica))

    async def leave(self, replica: Replica) -> None:
        """Clean shutdown: unsent claimed batches back to the queue front, leadership resigned."""
        await self._run(coord.leave(self._core, replica))

    async def claim_batch(
        self,
        replica: Replica,
        max_size: int = 500,
        *,
        window: int | None = None,
        scan_limit: int = coord.DEFAULT_SCAN_LIMIT,
    ) -> Batch | None:
        """Claim the next batch to queue on the server (an orphan first), or None."""
        return await self._run(
            coord.claim_batch(self._core, replica, max_size, window=window, scan_limit=scan_limit)
        )

    async def ack_batch(
        self,
        replica: Replica,
        batch: Batch,
        task_statuses: Mapping[int, str],
        *,
        sync_time: datetime.datetime | str | None = None,
    ) -> set[Any]:
        """Apply the server's answer to the batch's queue call and release the claim."""
        return await self._run(
            coord.ack_batch(self._core, replica, batch, task_statuses, sync_time=sync_time)
        )

    async def release_batch(self, replica: Replica, batch: Batch) -> None:
        """Put an unqueued batch back at the queue front in its order."""
        await self._run(coord.release_batch(self._core, replica, batch))

    async def reap(self, *, interval_s: float = 0.5, force: bool = False) -> ReapReport:
        """Remove expired replicas; their batches are re-driven by the next claims."""
        return await self._run(coord.reap(self._core, interval_s=interval_s, force=force))

    async def acquire_leadership(self, replica: Replica, ttl_s: float | None = None) -> int | None:
        """The leadership epoch if this replica leads now, else None."""
        return await self._run(coord.acquire_leadership(self._core, replica, ttl_s))

    async def renew_leadership(self, replica: Replica, epoch: int) -> None:
        """Extend the leadership lease; FencedError if ``epoch`` no longer leads."""
        await self._run(coord.renew_leadership(self._core, replica, epoch))

    async def resign_leadership(self, replica: Replica, epoch: int) -> None:
        """Give up leadership if still held under ``epoch``."""
        await self._run(coord.resign_leadership(self._core, replica, epoch))

    async def leader(self) -> LeaderInfo | None:
        """The current leadership lease, or None."""
        return await self._run(coord.leader(self._core))

    async def set_run_status(
        self, new: str, *, expected: str | None = None, epoch: int | None = None
    ) -> str:
        """Compare-and-set the run status on the run state machine (TransitionError if refused)."""
        return await self._run(
            coord.set_run_status(self._core, new, expected=expected, epoch=epoch)
        )

    async def finalize(self, final_status: str, *, epoch: int | None = None) -> bool:
        """End the run exactly once; True only for the call that did it."""
        return await self._run(coord.finalize(self._core, final_status, epoch=epoch))

    async def enqueue_initial_fringe(self) -> int:
        """Once per run: A tasks to the front, ready G tasks to the back; how many queued."""
        return await self._run(sweeps.enqueue_initial_fringe(self._core))

    async def reconcile(self) -> ReconcileReport:
        """Heal every crash window (idempotent, bounded chunks); what it fixed."""
        return await self._run(sweeps.reconcile(self._core))
