"""What the blocking and the asyncio front share: construction, local properties and repr.

A front is a :class:`~swarm_redis.engine.core.StateCore` plus a transport; its methods only drive
the core's operations (``run_sync`` or ``run_async``). The constructor is written here once, so
:class:`~swarm_redis.state.RedisSwarmState`, :class:`~swarm_redis.aio.AsyncRedisSwarmState` and
their subclasses take the same arguments.
"""

from __future__ import annotations

import datetime
from typing import Any, ClassVar, TypeVar

from swarm_redis.codec import ResourceCodec
from swarm_redis.constants import ACTIVE_TASK_STATUSES
from swarm_redis.engine.core import DEFAULT_CHUNK_BUDGET, Op, StateCore
from swarm_redis.engine.keys import RunKeys
from swarm_redis.engine.validation import DEFAULT_MAX_CLOCK_SKEW_S, check_run_ids
from swarm_redis.errors import InvalidTypeError

S = TypeVar("S", bound="StateFront")


class StateFront:
    """The state of one workflow run in Redis, as seen by one front (see the subclasses).

    Args:
        workflow_id: The workflow ID.
        workflow_run_id: The workflow run ID (the run's key in Redis).
        dag_id: The DAG ID.
        max_concurrently_running: Initial workflow limit (ignored if the run exists).
        status: Initial run status (ignored if the run exists).
        redis: The client (see the front: redis-py or ``redis.asyncio``; plain, Sentinel or
            Cluster; ``decode_responses`` either way).
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
        InvalidTypeError / InvalidInputError: No client, an id that is not an int in
            0..2^53-1 (bool, float, nan and str refused), a limit, ``events_maxlen``,
            ``chunk_budget`` or ``max_clock_skew`` out of range (see docs/validation.md).
            Nothing is written.
    """

    #: Builds the front's transport from (client, run id).
    transport_type: ClassVar[type[Any]]
    #: What the front needs as ``redis``, for the error when it is missing.
    client_hint: ClassVar[str]

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
    ) -> None:
        if redis is None:
            raise InvalidTypeError(f"{type(self).__name__} needs {self.client_hint}")
        self.workflow_id, self.workflow_run_id, self.dag_id = check_run_ids(
            workflow_id, workflow_run_id, dag_id
        )
        self.redis = redis
        self._initial = (max_concurrently_running, status)
        self._core = StateCore(
            RunKeys(prefix, self.workflow_run_id),
            codec=codec,
            chunk_budget=chunk_budget,
            propagate_on_apply=propagate_on_apply,
            events_maxlen=events_maxlen,
            max_clock_skew=max_clock_skew,
        )
        self._transport = self.transport_type(redis, self.workflow_run_id)
        if not self.__dict__.pop("_existing_run", False):
            self._opened()

    def _opened(self) -> None:
        """Called at the end of construction, except by :meth:`_for_existing_run`."""

    @classmethod
    def _for_existing_run(
        cls: type[S], redis: Any, workflow_run_id: int, *, prefix: str = "swarm", **kwargs: Any
    ) -> S:
        """An object for a run that exists already, made without :meth:`_opened`: nothing is
        read or written (attach reads the ids it does not know yet; a helper that only sends
        heartbeats needs none)."""
        state = cls.__new__(cls)
        state.__dict__["_existing_run"] = True
        cls.__init__(state, 0, workflow_run_id, 0, redis=redis, prefix=prefix, **kwargs)
        return state

    def _create(self) -> Op[bool]:
        """The operation that creates the run unless it exists (True when it did)."""
        limit, status = self._initial
        return self._core.create(self.workflow_id, self.workflow_run_id, self.dag_id, limit, status)

    # --- local properties (no I/O) -------------------------------------------------------------

    @property
    def keys(self) -> RunKeys:
        """The run's key names (see :mod:`swarm_redis.engine.keys`)."""
        return self._core.keys

    @property
    def version(self) -> int:
        """The highest write version of the run this object has seen."""
        return self._core.seen

    @property
    def active_task_statuses(self) -> tuple[str, ...]:
        return ACTIVE_TASK_STATUSES

    @property
    def last_ready(self) -> list[Any]:
        """Tasks the last ``apply_update`` of this object made ready and queued."""
        return self._core.last_ready

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(workflow_run_id={self.workflow_run_id}, "
            f"prefix={self._core.keys.prefix!r})"
        )
