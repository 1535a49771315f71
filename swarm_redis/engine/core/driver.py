"""How an operation runs: a generator of Redis calls, driven by a blocking or an asyncio client.

Every operation yields a list of :mod:`swarm_redis.engine.commands` calls, receives their
replies, and finally returns its result; it does no I/O itself (sans-I/O). The fronts hand
:func:`run_sync` or :func:`run_async` their transport's ``execute``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator
from typing import Any, TypeVar

from swarm_redis.engine.commands import Call

T = TypeVar("T")
#: An operation: yields lists of calls, receives their replies, returns a T.
Op = Generator[list[Call], list[Any], T]


def run_sync(execute: Callable[[list[Call]], list[Any]], op: Op[T]) -> T:
    """Drive an operation with a blocking ``execute``."""
    try:
        calls = next(op)
        while True:
            try:
                replies = execute(calls)
            except BaseException as exc:  # the operation sees it (remembers calls in doubt)
                calls = op.throw(exc)
            else:
                calls = op.send(replies)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def run_async(execute: Callable[[list[Call]], Awaitable[list[Any]]], op: Op[T]) -> T:
    """Drive an operation with an awaitable ``execute`` (the asyncio front)."""
    try:
        calls = next(op)
        while True:
            try:
                replies = await execute(calls)
            except BaseException as exc:  # the operation sees it (remembers calls in doubt)
                calls = op.throw(exc)
            else:
                calls = op.send(replies)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
