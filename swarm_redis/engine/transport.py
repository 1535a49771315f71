"""The thin Redis I/O layer: executes the values built by :mod:`swarm_redis.engine.commands`.

A list of calls goes out as one non-transactional pipeline (each script is atomic on its own),
except on Redis Cluster clients, which cannot pipeline scripts: there the calls go one after
another (every key of a run is in one slot, so ordering is the same). A script that Redis does
not know (NOSCRIPT after a restart, failover or SCRIPT FLUSH) is loaded and the call retried.
"""

from __future__ import annotations

import functools
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import NoScriptError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

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


#: Errors after which a call sent ahead is sent again (it may or may not have run: its request
#: id makes Redis answer the first reply if it did).
_RESEND_ERRORS = (RedisConnectionError, RedisTimeoutError, OSError)


class _Sent:
    """One call sent ahead, and its replies once they are known."""

    __slots__ = ("calls", "error", "replies")

    def __init__(self, calls: Sequence[Call]) -> None:
        self.calls = calls
        self.replies: list[Any] | None = None
        self.error: BaseException | None = None

    def run_now(self, transport: SyncTransport) -> None:
        """Send the call again through the transport and keep its replies (or its error)."""
        try:
            self.replies = transport.execute(self.calls)
        except BaseException as exc:  # its reader raises it
            self.error = exc

    def result(self) -> list[Any]:
        if self.error is not None:
            raise self.error
        assert self.replies is not None
        return self.replies


class _Link:
    """One pool connection held while calls sent on it await their replies, oldest first."""

    __slots__ = ("alive", "conn", "waiting")

    def __init__(self, conn: Any) -> None:
        self.conn = conn
        self.alive = True
        self.waiting: deque[_Sent] = deque()


class AheadSender:
    """Sends script calls ahead and reads their replies later, in the order sent.

    :meth:`send` writes one script call on a pool connection held for the purpose and returns
    at once with the function that reads its reply (as :meth:`SyncTransport.execute` returns
    it): Redis runs the call while the caller goes on. Calls go out on one connection, so Redis
    runs them in the order sent, and the caller must read the replies in that order.

    A reply that is lost (a connection error) or that says the call did not run (NOSCRIPT) is
    got by sending the call again through the transport, with its request id: Redis answers
    the first reply if the call ran, else runs it now. Every later call still waiting on that
    connection is sent again at once too, in order, before the caller can send anything new:
    the calls still run in the order sent. Anything but one script call, or a cluster client,
    runs at once. Not thread-safe: one owner.
    """

    def __init__(self, transport: SyncTransport) -> None:
        self._transport = transport
        self._link: _Link | None = None

    def send(self, calls: Sequence[Call]) -> Callable[[], list[Any]]:
        t = self._transport
        pool = getattr(t.client, "connection_pool", None)
        sent = _Sent(calls)
        if len(calls) != 1 or not isinstance(calls[0], ScriptCall) or t.cluster or pool is None:
            sent.run_now(t)
            return sent.result
        if self._link is not None and getattr(self._link.conn, "_sock", True) is None:
            # disconnected since the last send (redis-py would reconnect on this send, and the
            # replies still awaited would never come): those calls are sent again first
            self._break(self._link)
        if self._link is None:
            self._link = _Link(pool.get_connection())
        link = self._link
        try:
            link.conn.send_command("EVALSHA", *_evalsha_args(calls[0]))
        except _RESEND_ERRORS:
            self._break(link)  # the calls waiting on it go again first, in order
            sent.run_now(t)  # whether it went out or not, its request id settles it
            return sent.result
        except BaseException:
            self._drop(link)  # an interrupt: the calls waiting on it go again when read
            raise
        link.waiting.append(sent)
        return functools.partial(self._receive, link, sent)

    def _receive(self, link: _Link, sent: _Sent) -> list[Any]:
        if sent.replies is not None or sent.error is not None:
            return sent.result()
        if not link.alive:  # the link broke while this call waited: send it again
            link.waiting.remove(sent)
            sent.run_now(self._transport)
            return sent.result()
        if link.waiting[0] is not sent:
            raise RuntimeError("replies sent ahead must be read in the order sent")
        try:
            reply = link.conn.read_response()
        except ResponseError as exc:
            reply = exc
        except _RESEND_ERRORS:
            reply = None  # lost
        except BaseException:
            self._drop(link)  # a reply may be half read: the connection is not reused
            raise
        if reply is None or isinstance(reply, NoScriptError):
            self._break(link)
            return sent.result()
        link.waiting.popleft()
        if not link.waiting:
            self._release(link)
        raise_first_error([reply], self._transport.run_id)
        return [reply]

    def _break(self, link: _Link) -> None:
        """The link's replies are lost: every call still waiting on it is sent again now, in
        the order sent, before anything new goes out."""
        self._drop(link)
        waiting = list(link.waiting)
        link.waiting.clear()
        for sent in waiting:
            sent.run_now(self._transport)

    def _drop(self, link: _Link) -> None:
        """Stop using a link whose replies can no longer be read in order."""
        if link.alive:
            link.conn.disconnect()
            self._release(link)

    def _release(self, link: _Link) -> None:
        """Give the link's connection back to the pool (once)."""
        link.alive = False
        if self._link is link:
            self._link = None
        self._transport.client.connection_pool.release(link.conn)


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
