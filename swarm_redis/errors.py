"""The error hierarchy: one root, a few precise subclasses that also subclass the builtin a
caller would expect. Redis connection errors are not wrapped: they pass through."""

from __future__ import annotations


class SwarmRedisError(Exception):
    """Root of every error raised by swarm_redis itself."""


class InvalidInputError(SwarmRedisError, ValueError):
    """An argument is malformed (unknown status letter, negative limit, ...). Nothing was written."""


class InvalidTypeError(SwarmRedisError, TypeError):
    """An argument has the wrong type (a non-integer id, a non-mapping, ...). Nothing was written."""


class UnknownRunError(SwarmRedisError, KeyError):
    """The workflow run has no keys in Redis (never created, purged, or lost)."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want a plain message.
        return str(self.args[0]) if self.args else "unknown run"


class StateLostError(SwarmRedisError):
    """The run's write version went backwards: Redis lost writes (failover, restart)."""

    def __init__(
        self, run_id: int | str, seen: int, found: int, *, recreated: bool = False
    ) -> None:
        self.run_id = run_id
        self.seen = seen
        self.found = found
        self.recreated = recreated
        what = (
            f"was recreated after its keys were lost (this replica saw write version {seen} of "
            f"the original run; Redis now holds version {found} of a new one)"
            if recreated
            else f"went backwards: this replica saw write version {seen}, Redis now holds "
            f"{found} (writes were lost by a failover or a restart)"
        )
        super().__init__(
            f"state of workflow run {run_id} {what}; rebuild the run from the server's task statuses"
        )


class LeaseLostError(SwarmRedisError):
    """This replica no longer holds the lease, claim or leadership it acted on."""


class FencedError(LeaseLostError):
    """A leader-only write carried an epoch older than the current leadership epoch."""


class TransitionError(SwarmRedisError, ValueError):
    """The workflow-run state machine does not allow the requested transition."""


class ResourceDecodeError(SwarmRedisError, ValueError):
    """A cached resources value read from Redis cannot be decoded (malformed, wrong fields)."""


class UnknownResourceClassError(ResourceDecodeError):
    """A cached resources value names a class that was not registered: it is never imported."""

    def __init__(self, name: str) -> None:
        self.name = name
        super().__init__(
            f"cached resources name class {name!r}, which is not registered: register it with "
            "swarm_redis.register_resource_class (or DefaultCodec(allowed=...)) in every "
            "replica; stored class names are never imported"
        )
