"""The state logic, written once for both fronts (sans-I/O).

Every operation is a generator: it yields a list of :mod:`swarm_redis.engine.commands` calls,
receives their replies, and finally returns its result (:mod:`.driver`).
:class:`swarm_redis.state.RedisSwarmState` drives the generators with a blocking client,
:class:`swarm_redis.aio.AsyncRedisSwarmState` with an asyncio one; neither holds logic of its own.

The core also keeps the local identity registry (task id -> the caller's object) and refreshes
the mirrored fields (``status``, ``num_upstreams_done``) from every reply that carries them.
:class:`StateCore` is put together from one class per concern: :mod:`.base` (plumbing and
registry), :mod:`.registration`, :mod:`.writes`, :mod:`.queue` and :mod:`.reads`.
"""

from __future__ import annotations

from swarm_redis.engine.core.base import (
    CHANGE_COST,
    DEFAULT_CHUNK_BUDGET,
    DEQUEUE_CHUNK,
    ENQUEUE_CHUNK,
    IN_DOUBT_ERRORS,
    IN_DOUBT_MAX,
    QUEUE_PAGE,
    STATUS_PAGE,
)
from swarm_redis.engine.core.driver import Op, Started, gather, run_async, run_sync, start_sync
from swarm_redis.engine.core.queue import Queue
from swarm_redis.engine.core.reads import Reads
from swarm_redis.engine.core.writes import ApplyResult, Writes

__all__ = [
    "CHANGE_COST",
    "DEFAULT_CHUNK_BUDGET",
    "DEQUEUE_CHUNK",
    "ENQUEUE_CHUNK",
    "IN_DOUBT_ERRORS",
    "IN_DOUBT_MAX",
    "QUEUE_PAGE",
    "STATUS_PAGE",
    "ApplyResult",
    "Op",
    "Started",
    "StateCore",
    "gather",
    "run_async",
    "run_sync",
    "start_sync",
]


class StateCore(Writes, Queue, Reads):
    """Keys, local registry, version tracking and every operation of one run."""
