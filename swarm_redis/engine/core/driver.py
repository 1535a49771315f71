"""How an operation runs: a generator of Redis calls, driven by a blocking or an asyncio client.

Every operation yields a list of :mod:`swarm_redis.engine.commands` calls, receives their
replies, and finally returns its result; it does no I/O itself (sans-I/O). The fronts hand
:func:`run_sync` or :func:`run_async` their transport's ``execute``; :func:`start_sync` sends an
operation's first calls and lets the caller go on while Redis runs them.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

from swarm_redis.engine.commands import Call

T = TypeVar("T")
#: An operation: yields lists of calls, receives their replies, returns a T.
Op = Generator[list[Call], list[Any], T]


def run_sync(execute: Callable[[list[Call]], list[Any]], op: Op[T]) -> T:
    """Drive an operation with a blocking ``execute``."""
    try:
        calls = next(op)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    return _drive(execute, op, lambda: execute(calls))


def _drive(
    execute: Callable[[list[Call]], list[Any]], op: Op[T], replies_of: Callable[[], list[Any]]
) -> T:
    """Hand the operation the replies of its pending calls (``replies_of()``), then run the
    rest of it with ``execute``."""
    try:
        while True:
            try:
                replies = replies_of()
            except BaseException as exc:  # the operation sees it (remembers calls in doubt)
                calls = op.throw(exc)
            else:
                calls = op.send(replies)
            replies_of = functools.partial(execute, calls)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


class Started(Generic[T]):
    """An operation whose first calls are on their way to Redis (see :func:`start_sync`)."""

    def __init__(self, op: Op[T], execute: Callable[[list[Call]], list[Any]]) -> None:
        self._op = op
        self._execute = execute
        self._receive: Callable[[], list[Any]] | None = None
        self._value: T | None = None

    def result(self) -> T:
        """Read the replies of the calls sent and run the rest of the operation (blocking);
        raises what the operation raises. Call it once."""
        if self._receive is None:
            return self._value  # type: ignore[return-value]
        return _drive(self._execute, self._op, self._receive)


def start_sync(
    send: Callable[[list[Call]], Callable[[], list[Any]]],
    execute: Callable[[list[Call]], list[Any]],
    op: Op[T],
) -> Started[T]:
    """Send an operation's first calls with ``send`` (which returns the function that reads
    their replies) and return at once: Redis runs them while the caller goes on, and
    :meth:`Started.result` finishes the operation. Nothing else may use the operation's state
    until then; an error from ``send`` reaches the operation in ``result``, as from ``execute``.
    """
    started = Started(op, execute)
    try:
        calls = next(op)
    except StopIteration as stop:
        started._value = stop.value
        return started
    try:
        started._receive = send(calls)
    except BaseException as exc:  # the operation sees it in result()
        error = exc

        def reraise() -> list[Any]:
            raise error

        started._receive = reraise
    return started


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


def gather(ops: list[Op[Any]]) -> Op[list[Any]]:
    """Run operations side by side, each step's calls of all of them in one round trip; their
    results in order. For reads: an error fails the whole step."""
    results: list[Any] = [None] * len(ops)
    live: dict[int, list[Call]] = {}
    for i, op in enumerate(ops):
        try:
            live[i] = next(op)
        except StopIteration as stop:
            results[i] = stop.value
    while live:
        batch: list[Call] = []
        spans: list[tuple[int, int, int]] = []
        for i, calls in live.items():
            spans.append((i, len(batch), len(calls)))
            batch += calls
        replies = yield batch
        nxt: dict[int, list[Call]] = {}
        for i, start, k in spans:
            try:
                nxt[i] = ops[i].send(replies[start : start + k])
            except StopIteration as stop:
                results[i] = stop.value
        live = nxt
    return results
