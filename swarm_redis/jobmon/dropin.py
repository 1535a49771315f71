"""jobmon's own orchestrator on a RedisSwarmState: the single-process drop-in.

:class:`JobmonSwarmState` is a :class:`~swarm_redis.RedisSwarmState` for jobmon's
``WorkflowRunOrchestrator`` (and its ``Scheduler``) running in one process:

* cached ``TaskResources`` are keyed by :func:`~swarm_redis.jobmon.task_resources_digest`
  (jobmon passes ``hash(tr)``, which Python salts per process) and stored by the
  TaskResources codec (:mod:`swarm_redis.jobmon.resources`);
* the ready queue has a local read-ahead buffer (``read_ahead`` tasks per round trip). jobmon's
  scheduler takes tasks off ``ready_to_run`` one at a time, puts the ones that do not fit the
  current batch back at the tail, and the unscheduled ones back at the head. Here those calls
  work on the buffer: the queue is ``head pushes + buffer + [Redis list] + tail pushes`` and
  goes back to Redis in one round trip before any other operation of the state (the next
  ``apply_update``, count, or read). Correct for one process using the run's queue, which is
  the drop-in's case; replicas sharing a run schedule with ``claim_batch`` instead
  (``read_ahead=0`` switches the buffer off). A crash while tasks sit in the buffer leaves
  them off the queue, as a crash between jobmon's own dequeue and re-enqueue would;
  ``reconcile()`` queues them again.
* the buffer fills in chunks of :data:`~swarm_redis.engine.core.DEQUEUE_CHUNK` tasks (each
  script call stays short): the first is waited for, and each next one is sent as soon as the
  one before arrives and read when the buffer runs dry, so Redis (on another core) runs it
  while jobmon's scheduler works through the tasks already buffered. No thread is involved:
  at most one dequeue is on its way, and every other operation of the state reads it first.

:func:`patch_jobmon` swaps jobmon's ``SwarmState`` for it (``workflow.run()`` then keeps its
state in Redis), and :func:`attach_jobmon` rebuilds jobmon's task objects for a process joining
a run whose state is already in Redis.
"""

from __future__ import annotations

import contextlib
import itertools
import secrets
from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

from swarm_redis.codec import ResourceCodec
from swarm_redis.engine.core import DEQUEUE_CHUNK, Op, Started, gather, start_sync
from swarm_redis.engine.transport import AheadSender
from swarm_redis.errors import InvalidInputError, InvalidTypeError
from swarm_redis.jobmon.resources import (
    JobmonCodec,
    register_queue,
    task_resources_digest,
)
from swarm_redis.state import RedisSwarmState

__all__ = ["JobmonSwarmState", "attach_jobmon", "patch_jobmon"]

T = TypeVar("T")

#: Dequeues on their way at most: Redis has the next one queued while it answers one.
AHEAD = 2
#: Tasks the first dequeue of a refill asks for: the scheduler waits for it, so it is short;
#: the next ones (DEQUEUE_CHUNK each) are on their way while it works.
FIRST_CHUNK = 50

#: Tasks taken off the Redis queue per round trip by the read-ahead buffer.
DEFAULT_READ_AHEAD = 2000


class _ReadAhead:
    """The local part of the ready queue: ``front + buf + [Redis] + back``."""

    __slots__ = (
        "array_caps",
        "arrays",
        "asked",
        "back",
        "buf",
        "front",
        "handed",
        "pending",
        "redis_len",
        "want",
    )

    def __init__(self) -> None:
        self.front: deque[Any] = deque()  # to push at the Redis head, in queue order
        self.buf: deque[Any] = deque()  # taken off the Redis head, not handed out yet
        self.back: deque[Any] = deque()  # to append at the Redis tail, in queue order
        self.handed: set[int] = set()  # handed out since the last flush, not put back
        self.redis_len: int | None = None  # the Redis list's length after the last refill
        self.arrays: dict[int, Any] | None = None  # arrays read while the buffer holds tasks
        # dequeues on their way, in the order sent: (tasks asked for, the started dequeue)
        self.pending: deque[tuple[int, Started[tuple[list[Any], int]]]] = deque()
        self.asked = 0  # tasks the dequeues on their way asked for
        self.want = 0  # tasks the current refill may still ask for
        # the array capacities read at the start of the scheduling pass (see
        # JobmonSwarmState.get_available_capacity)
        self.array_caps: dict[int, int] = {}

    def dirty(self) -> bool:
        return bool(
            self.front
            or self.buf
            or self.back
            or self.handed
            or self.redis_len is not None
            or bool(self.pending)
            or bool(self.array_caps)
        )

    def local_len(self) -> int:
        return len(self.front) + len(self.buf) + len(self.back)


class JobmonSwarmState(RedisSwarmState):
    """RedisSwarmState for jobmon's own orchestrator in one process (see the module docstring).

    Same arguments as :class:`~swarm_redis.RedisSwarmState`, plus:

    Args:
        read_ahead: Tasks taken off the Redis queue per round trip while jobmon's scheduler
            works through it (0: no buffer, every queue call goes to Redis).
        codec: Default :class:`~swarm_redis.jobmon.JobmonCodec`.
    """

    def __init__(
        self,
        *args: Any,
        codec: ResourceCodec | None = None,
        read_ahead: int = DEFAULT_READ_AHEAD,
        **kwargs: Any,
    ) -> None:
        if isinstance(read_ahead, bool) or not isinstance(read_ahead, int):
            raise InvalidTypeError(f"read_ahead must be an int, got {read_ahead!r}")
        if read_ahead < 0:
            raise InvalidInputError(f"read_ahead must be >= 0, got {read_ahead}")
        self._ra = _ReadAhead()
        self._read_ahead = read_ahead
        self._flushing = False
        super().__init__(*args, codec=codec if codec is not None else JobmonCodec(), **kwargs)

    def seal(self) -> int:
        """Write now the final DAG of the tasks registered here (see :meth:`StateCore.seal`).

        Any first use (apply, propagate, enqueue ...) does it anyway; call it after building a
        run with jobmon's ``SwarmBuilder`` when other processes attach before this one uses it.
        Returns the number of task records changed.
        """
        return self._run(self._core.seal())

    # --- every other operation sees the buffer written back first -------------------------------

    def _run(self, op: Op[T]) -> T:
        if not self._flushing and self._ra.dirty():
            self.flush_queue()
        return super()._run(op)

    def _raw(self, op: Op[T]) -> T:
        self._await_fetch()  # one operation at a time: the dequeue on its way is read first
        return super()._run(op)

    @property
    def _ahead(self) -> AheadSender:
        """The sender of the dequeues sent ahead (one per state, made on first use)."""
        sender: AheadSender | None = self.__dict__.get("_ahead_sender")
        if sender is None:
            sender = self.__dict__["_ahead_sender"] = AheadSender(self._transport)
        return sender

    def _await_fetch(self) -> None:
        """Read every dequeue on its way into the buffer, in the order sent."""
        while self._ra.pending:
            self._read_one()

    def _read_one(self) -> None:
        """Read the oldest dequeue on its way into the buffer (blocking until it is there).

        A reply lost to a connection error is asked for again with the same request id (see
        AheadSender); if that fails too, the error is raised here and the dequeue's tasks are
        left to ``reconcile()``, as after a crash."""
        ra = self._ra
        n, started = ra.pending.popleft()
        try:
            got, ra.redis_len = started.result()
        finally:
            ra.asked -= n
        ra.buf.extend(got)

    def _fetch_ahead(self) -> None:
        """Send the refill's next dequeues (up to :data:`AHEAD` on their way) without waiting:
        Redis runs them while jobmon's scheduler works through the tasks already buffered."""
        ra = self._ra
        while len(ra.pending) < AHEAD and ra.want > 0 and (ra.redis_len or 0) > ra.asked:
            first = ra.want == self._read_ahead
            n = min(
                FIRST_CHUNK if first else DEQUEUE_CHUNK, ra.want, (ra.redis_len or 0) - ra.asked
            )
            started = start_sync(self._ahead.send, self._transport.execute, self._core.take(n))
            ra.pending.append((n, started))
            ra.want -= n
            ra.asked += n

    def _refill(self) -> None:
        """More tasks in the buffer: the oldest dequeue on its way, else one sent now."""
        ra = self._ra
        if ra.pending:
            self._read_one()
        elif ra.redis_len != 0:
            if ra.want <= 0:  # a new refill: up to read_ahead tasks until the buffer is empty
                ra.want = self._read_ahead
            n = min(FIRST_CHUNK if ra.want == self._read_ahead else DEQUEUE_CHUNK, ra.want)
            got, ra.redis_len = self._raw(self._core.take(n))
            ra.want -= n
            ra.buf.extend(got)
        self._fetch_ahead()

    def flush_queue(self) -> None:
        """Write the read-ahead buffer back to the Redis queue (one round trip), if needed."""
        self._await_fetch()
        ra = self._ra
        front = [*ra.front, *ra.buf]
        back = list(ra.back)
        self._flushing = True
        try:
            if front or back:
                self._raw(self._core.requeue(front, back))
        finally:
            self._flushing = False
        ra.front.clear()
        ra.buf.clear()
        ra.back.clear()
        ra.handed.clear()
        ra.redis_len = None
        ra.arrays = None
        ra.want = 0
        ra.asked = 0
        ra.array_caps = {}

    # reads that do not look at the queue leave the buffer where it is (jobmon's scheduler reads
    # the array of every batch it builds, and the limits, in the middle of its pass)

    def get_arrays(self) -> dict[int, Any]:
        # while the buffer holds tasks nothing but this scheduler pass runs: the arrays read at
        # its start stand (limits change through apply_update and add_array, which flush first)
        if self._ra.dirty() and self._ra.arrays is not None:
            return dict(self._ra.arrays)
        arrays = self._raw(self._core.all_arrays())
        self._ra.arrays = arrays
        return dict(arrays)

    def get_available_capacity(self) -> int:
        """The run's free capacity; it starts a scheduling pass, so it also reads the rest of
        what the pass reads.

        jobmon's scheduler starts every pass with this call, then reads the arrays, their
        capacities and the queue's length, then dequeues. Here the buffer of an earlier pass
        goes back to Redis first (if it holds anything), all of these are read in one round
        trip and kept until the pass ends (the next operation that is not a queue call
        flushes the buffer), and when there is room and work, the pass's first dequeues are
        sent ahead at once.
        """
        if not self._read_ahead:
            return self._raw(self._core.available_capacity())
        ra = self._ra
        if ra.dirty():
            self.flush_queue()
        core = self._core
        ids = list(core.arrays)
        reads = [core.available_capacity(), core.all_arrays(), core.queue_len()]
        capacity, arrays, queued, *caps = self._raw(
            gather(reads + [core.array_capacity(a) for a in ids])
        )
        ra.arrays, ra.redis_len = arrays, queued
        ra.array_caps = dict(zip(ids, caps, strict=True))
        if capacity > 0 and queued > 0:
            ra.want = self._read_ahead
            self._fetch_ahead()
        return int(capacity)

    def get_array_capacity(self, array_id: int) -> int:
        cached = self._ra.array_caps.get(array_id) if isinstance(array_id, int) else None
        if cached is not None:
            return cached
        return self._raw(self._core.array_capacity(array_id))

    # --- the queue, buffered ------------------------------------------------------------------

    def dequeue_task(self) -> Any:
        """The head of the ready queue (through the read-ahead buffer), or None."""
        # jobmon's scheduler calls this once per task: the common paths come first
        ra = self._ra
        if ra.front:
            task = ra.front.popleft()
        elif ra.buf:
            task = ra.buf.popleft()
        elif not self._read_ahead:
            return super().dequeue_task()
        else:
            if ra.pending or ra.redis_len != 0:
                self._refill()
            if ra.buf:
                task = ra.buf.popleft()
            elif ra.back:
                task = ra.back.popleft()
            else:
                return None
        ra.handed.add(task.task_id)  # an int: the registry's objects come from int ids
        return task

    def dequeue_tasks(self, max_n: int) -> list[Any]:
        if self._read_ahead == 0:
            return super().dequeue_tasks(max_n)
        if isinstance(max_n, bool) or not isinstance(max_n, int):
            raise InvalidTypeError(f"dequeue count must be an int, got {max_n!r}")
        if max_n < 1:
            raise InvalidInputError(f"dequeue count must be >= 1, got {max_n}")
        out = []
        for _ in range(max_n):
            task = self.dequeue_task()
            if task is None:
                break
            out.append(task)
        return out

    def enqueue_task(self, task: Any, front: bool = False) -> None:
        """Queue a task; one the buffer handed out goes back into the buffer (no round trip)."""
        ra = self._ra
        try:
            ra.handed.remove(task.task_id)  # only ints are in it: anything else is not found
        except (KeyError, TypeError, AttributeError):
            super().enqueue_task(task, front)
            return
        if front:
            ra.front.appendleft(task)
        else:
            ra.back.append(task)

    def enqueue_tasks(self, tasks: Iterable[Any], front: bool = False) -> list[Any]:
        items = list(tasks)
        if not self._read_ahead:
            return super().enqueue_tasks(items, front)
        handed = [t for t in items if int(getattr(t, "task_id", -1)) in self._ra.handed]
        if len(handed) != len(items) or len({int(t.task_id) for t in items}) != len(items):
            return super().enqueue_tasks(items, front)
        if front:
            self._ra.front.extendleft(reversed(items))
        else:
            self._ra.back.extend(items)
        self._ra.handed.difference_update(int(t.task_id) for t in items)
        return items

    def get_ready_to_run_count(self) -> int:
        """Tasks in the ready queue, buffered ones included."""
        if not self._read_ahead or not self._ra.dirty():
            return super().get_ready_to_run_count()
        # the tasks of the dequeues on their way still count in redis_len (the length before
        # them) until their replies are read: no need to wait for them
        ra = self._ra
        in_redis = ra.redis_len
        if in_redis is None:
            in_redis = self._raw(self._core.queue_len())
        return ra.local_len() + in_redis

    # --- jobmon's objects -----------------------------------------------------------------------

    def _bind(self, built: dict[int, Any]) -> None:
        """Make ``built`` jobmon objects the registry's objects, mirrored from Redis."""
        core = self._core
        records = dict(core.tasks)
        for task_id, obj in built.items():
            rec = records.get(task_id)
            if rec is None:
                continue
            obj.status = rec.status
            obj.num_upstreams = rec.num_upstreams
            obj.num_upstreams_done = rec.num_upstreams_done
            core.tasks[task_id] = obj
        # downstream links: to the jobmon object where there is one, else to the record
        for task_id, obj in built.items():
            if task_id not in records:
                continue
            rec = records[task_id]
            obj.downstream_swarm_tasks = {
                core.tasks[c.task_id] for c in rec.downstream_swarm_tasks if c.task_id in core.tasks
            }
        for rec in records.values():
            if rec.task_id not in built:
                rec.downstream_swarm_tasks = {
                    core.tasks[c.task_id] for c in rec.downstream_swarm_tasks
                }

    # --- resources ----------------------------------------------------------------------------

    def cache_resources(self, resource_hash: int, task_resources: Any) -> Any:
        """Cache resources; jobmon's TaskResources under their stable digest, not ``hash()``."""
        key = resource_hash
        if _is_task_resources(task_resources):
            key = task_resources_digest(task_resources)
        return super().cache_resources(key, task_resources)


def _is_task_resources(value: Any) -> bool:
    from jobmon.client.task_resources import TaskResources

    return isinstance(value, TaskResources)


_STATE_MODULES = ("jobmon.client.swarm.builder", "jobmon.client.swarm.state")


@contextlib.contextmanager
def patch_jobmon(
    redis: Any, *, prefix: str = "swarm", unique: bool = False, **state_kwargs: Any
) -> Iterator[list[JobmonSwarmState]]:
    """While the block runs, jobmon's ``SwarmState`` is :class:`JobmonSwarmState` on ``redis``.

    jobmon's builder creates the state of every ``workflow.run()`` / ``resume_workflow_run``
    as ``SwarmState(workflow_id=..., workflow_run_id=..., dag_id=..., ...)``; this swaps that
    name in ``jobmon.client.swarm.builder`` and ``jobmon.client.swarm.state``. Yields the list of
    states created, in order.

    Args:
        redis: The redis-py client every state uses.
        prefix: Key prefix of the states.
        unique: Give every state its own prefix (``<prefix>:<n>``), as jobmon's in-memory states
            share nothing even for the same workflow run id (jobmon's tests rely on that).
        state_kwargs: More :class:`JobmonSwarmState` arguments (``read_ahead``, ...).
    """
    import importlib

    modules = [importlib.import_module(name) for name in _STATE_MODULES]
    saved = [getattr(m, "SwarmState") for m in modules]  # noqa: B009
    created: list[JobmonSwarmState] = []
    counter = itertools.count(1)
    tag = secrets.token_hex(3)

    class SwappedSwarmState(JobmonSwarmState):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if "redis" in kwargs:  # attach() and explicit uses
                super().__init__(*args, **kwargs)
                return
            own = f"{prefix}:{tag}.{next(counter)}" if unique else prefix
            super().__init__(*args, redis=redis, prefix=own, **{**state_kwargs, **kwargs})
            created.append(self)

    SwappedSwarmState.__name__ = SwappedSwarmState.__qualname__ = "SwarmState"
    for m in modules:
        setattr(m, "SwarmState", SwappedSwarmState)  # noqa: B010
    try:
        yield created
    finally:
        for m, old in zip(modules, saved):
            setattr(m, "SwarmState", old)  # noqa: B010


def attach_jobmon(
    redis: Any,
    workflow_run_id: int,
    *,
    requester: Any = None,
    prefix: str = "swarm",
    chunk_size: int = 500,
    **state_kwargs: Any,
) -> JobmonSwarmState:
    """A state for a process joining a run in Redis, with jobmon's own task objects.

    :meth:`RedisSwarmState.attach` rebuilds tasks as records (no ``current_task_resources``,
    no ``cluster``), which jobmon's scheduler needs. This attaches, then builds jobmon's
    ``SwarmTask`` objects of the run's unfinished tasks from jobmon's server with jobmon's own
    builder code (``SwarmBuilder``'s task and edge fetches: clusters, queues, TaskResources,
    resource scales, fallback queues, downstream links) and binds them to the registry: status
    and done counts come from Redis, and the queues are registered for the TaskResources codec.
    DONE tasks (the server does not send them) stay records. Nothing is written to the server
    or to Redis.

    Args:
        redis: A redis-py client.
        workflow_run_id: The run (its state must exist in Redis: UnknownRunError otherwise).
        requester: jobmon's ``Requester`` (default ``Requester.from_defaults()``).
        prefix: Key prefix of the run.
        chunk_size: Tasks and edges per server request.
        state_kwargs: More :class:`JobmonSwarmState` arguments.
    """
    from jobmon.client.swarm.builder import SwarmBuilder
    from jobmon.client.swarm.state import SwarmState as MemoryState
    from jobmon.core.requester import Requester

    state = JobmonSwarmState.attach(redis, workflow_run_id, prefix=prefix, **state_kwargs)
    requester = requester if requester is not None else Requester.from_defaults()
    builder = SwarmBuilder(requester=requester, workflow_run_id=workflow_run_id)
    builder._last_heartbeat_time = float("inf")  # a joining process sends no heartbeat here
    builder._workflow_id = state.workflow_id
    builder._dag_id = state.dag_id
    builder._state = MemoryState(
        workflow_id=state.workflow_id, workflow_run_id=workflow_run_id, dag_id=state.dag_id
    )
    builder._set_tasks_from_db(chunk_size=chunk_size)
    builder._set_downstreams_from_db(chunk_size=chunk_size)
    built: dict[int, Any] = dict(builder._state.tasks)
    state._bind(built)
    for task in built.values():
        register_queue(task.current_task_resources.queue)
        for q in task.fallback_queues or ():
            register_queue(q)
    return state
