"""The thin Redis I/O layer: executes the values built by :mod:`swarm_redis.engine.commands`.

A list of calls goes out as one non-transactional pipeline (each script is atomic on its own),
except on Redis Cluster clients, which cannot pipeline scripts: there the calls go one after
another (every key of a run is in one slot, so ordering is the same). A script that Redis does
not know (NOSCRIPT after a restart, failover or SCRIPT FLUSH) is loaded and the call retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from redis.exceptions import NoScriptError, ResponseError

from swarm_redis.engine import scripts
from swarm_redis.engine.commands import Call, ScriptCall, error_from_reply


def is_cluster(client: Any) -> bool:
    """True for a redis-py ``RedisCluster`` client, blocking or asyncio."""
    return hasattr(client, "get_nodes") and hasattr(client, "nodes_manager")


def raise_first_error(replies: Sequence[Any], run_id: int | str) -> None:
    """Raise our exception (or the original) for the first error among ``replies``."""
    for reply in replies:
        if isinstance(reply, Exception):
            raise map_error(reply, run_id) from None


def map_error(exc: Exception, run_id: int | str) -> Exception:
    if isinstance(exc, ResponseError):
        ours = error_from_reply(str(exc), run_id)
        if ours is not None:
            return ours
    return exc


def _evalsha_args(call: ScriptCall) -> tuple[Any, ...]:
    return (scripts.load(call.script).sha, len(call.keys), *call.keys, *call.args)


class SyncTransport:
    """Runs calls on a redis-py ``Redis`` or ``RedisCluster`` client."""

    def __init__(self, client: Any, run_id: int | str) -> None:
        self.client = client
        self.run_id = run_id
        self.cluster = is_cluster(client)

    def execute(self, calls: Sequence[Call]) -> list[Any]:
        """Replies in call order; our coded script errors are raised as our exceptions."""
        if len(calls) == 1 or (self.cluster and any(isinstance(c, ScriptCall) for c in calls)):
            replies = [self._one(call) for call in calls]
        else:
            replies = self._pipeline(calls)
        raise_first_error(replies, self.run_id)
        return replies

    def _one(self, call: Call) -> Any:
        try:
            if isinstance(call, ScriptCall):
                try:
                    return self.client.evalsha(*_evalsha_args(call))
                except NoScriptError:
                    self.client.script_load(scripts.load(call.script).source)
                    return self.client.evalsha(*_evalsha_args(call))
            return self.client.execute_command(*call.args)
        except ResponseError as exc:
            return exc

    def _pipeline(self, calls: Sequence[Call]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            if isinstance(call, ScriptCall):
                pipe.evalsha(*_evalsha_args(call))
            else:
                pipe.execute_command(*call.args)
        replies: list[Any] = pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                replies[i] = self._one(calls[i])
        return replies


class AsyncTransport:
    """Runs calls on a ``redis.asyncio`` ``Redis`` or ``RedisCluster`` client."""

    def __init__(self, client: Any, run_id: int | str) -> None:
        self.client = client
        self.run_id = run_id
        self.cluster = is_cluster(client)

    async def execute(self, calls: Sequence[Call]) -> list[Any]:
        """Replies in call order; our coded script errors are raised as our exceptions."""
        if len(calls) == 1 or (self.cluster and any(isinstance(c, ScriptCall) for c in calls)):
            replies = [await self._one(call) for call in calls]
        else:
            replies = await self._pipeline(calls)
        raise_first_error(replies, self.run_id)
        return replies

    async def _one(self, call: Call) -> Any:
        try:
            if isinstance(call, ScriptCall):
                try:
                    return await self.client.evalsha(*_evalsha_args(call))
                except NoScriptError:
                    await self.client.script_load(scripts.load(call.script).source)
                    return await self.client.evalsha(*_evalsha_args(call))
            return await self.client.execute_command(*call.args)
        except ResponseError as exc:
            return exc

    async def _pipeline(self, calls: Sequence[Call]) -> list[Any]:
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            if isinstance(call, ScriptCall):
                pipe.evalsha(*_evalsha_args(call))
            else:
                pipe.execute_command(*call.args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
        for i, reply in enumerate(replies):
            if isinstance(reply, NoScriptError):
                replies[i] = await self._one(calls[i])
        return replies
