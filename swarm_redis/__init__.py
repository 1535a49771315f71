"""swarm_redis: jobmon's SwarmState in Redis, so several orchestrator replicas share one run."""

from swarm_redis import _moved
from swarm_redis.aio import AsyncRedisSwarmState
from swarm_redis.codec import (
    DefaultCodec,
    ResourceCodec,
    register_resource_class,
    resource_digest,
)
from swarm_redis.engine.coordination import (
    Batch,
    LeaderInfo,
    ReapReport,
    Replica,
)
from swarm_redis.engine.core import ApplyResult
from swarm_redis.engine.reconcile import ReconcileReport
from swarm_redis.errors import (
    FencedError,
    InvalidInputError,
    InvalidTypeError,
    LeaseLostError,
    ResourceDecodeError,
    StateLostError,
    SwarmRedisError,
    TransitionError,
    UnknownResourceClassError,
    UnknownRunError,
)
from swarm_redis.records import ArrayRecord, TaskRecord
from swarm_redis.state import RedisSwarmState
from swarm_redis.update import StateUpdate

__all__ = [
    "ApplyResult",
    "ArrayRecord",
    "AsyncRedisSwarmState",
    "Batch",
    "DefaultCodec",
    "FencedError",
    "InvalidInputError",
    "InvalidTypeError",
    "LeaderInfo",
    "LeaseLostError",
    "ReapReport",
    "ReconcileReport",
    "RedisSwarmState",
    "Replica",
    "ResourceCodec",
    "ResourceDecodeError",
    "StateLostError",
    "StateUpdate",
    "SwarmRedisError",
    "TaskRecord",
    "TransitionError",
    "UnknownResourceClassError",
    "UnknownRunError",
    "register_resource_class",
    "resource_digest",
]
__version__ = "0.1.0"

_moved.install()
