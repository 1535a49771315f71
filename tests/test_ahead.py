"""Calls sent ahead (engine.transport.AheadSender, engine.core.start_sync) and operations run
side by side (engine.core.gather), on both backends.

Dequeues sent ahead run in the order sent and their replies are read in that order; a reply
lost to a connection error, or a NOSCRIPT reply, is got by sending the call again with its
request id, and every later call waiting on the same connection is sent again at once, in
order: no task is lost or taken twice and the run's write version never goes backwards.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from servers import private_redis

from swarm_redis.demo.redis_server import start_redis_server
from swarm_redis.engine.core import Started, gather, run_sync, start_sync
from swarm_redis.engine.transport import AheadSender
from swarm_redis.ops import verify
from swarm_redis.records import ArrayRecord, TaskRecord
from swarm_redis.state import RedisSwarmState

MakeClient = Callable[..., redis.Redis]


def _run(client: redis.Redis, run_id: int, prefix: str, n: int) -> RedisSwarmState:
    s = RedisSwarmState(1, run_id, 1, redis=client, prefix=prefix, max_concurrently_running=n)
    s.add_array(ArrayRecord(1, n))
    tasks = [TaskRecord(i, 1, "G", 0, 0) for i in range(1, n + 1)]
    s.add_tasks(tasks)
    s.enqueue_tasks(tasks)
    return s


def _queued_run(
    client: redis.Redis, run_id: int, prefix: str, n: int
) -> tuple[RedisSwarmState, AheadSender]:
    """A run of ``n`` queued tasks and a sender on its transport."""
    s = _run(client, run_id, prefix, n)
    return s, AheadSender(s._transport)


def _take_ahead(s: RedisSwarmState, sender: AheadSender, n: int) -> Started[Any]:
    return start_sync(sender.send, s._transport.execute, s._core.take(n))


def _ids(started: Started[Any]) -> list[int]:
    tasks, _left = started.result()
    return [t.task_id for t in tasks]


def test_dequeues_sent_ahead_come_back_in_the_order_sent(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s, sender = _queued_run(client, run_id, prefix, 600)
    first = [_take_ahead(s, sender, 100) for _ in range(2)]
    got = _ids(first[0])
    third = _take_ahead(s, sender, 100)  # sent while the second is still unread
    got += _ids(first[1]) + _ids(third)
    assert got == list(range(1, 301))
    assert [t.task_id for t in s.ready_to_run_list()] == list(range(301, 601))
    assert verify.find_drift(client, s.keys).clean
    # the connection went back to the pool once nothing waited on it
    assert sender._link is None


def test_replies_must_be_read_in_the_order_sent(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    s, sender = _queued_run(make_client(), run_id, prefix, 10)
    a, b = (_take_ahead(s, sender, 2) for _ in range(2))
    with pytest.raises(RuntimeError, match="in the order sent"):
        b.result()
    assert _ids(a) == [1, 2]


def test_a_lost_connection_sends_every_waiting_call_again_in_order(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s, sender = _queued_run(client, run_id, prefix, 600)
    started = [_take_ahead(s, sender, 100) for _ in range(3)]
    assert sender._link is not None
    sender._link.conn.disconnect()  # the replies of all three are lost on the way back
    got = [_ids(x) for x in started]
    # each call ran once: the second sending was answered from the reply cache
    assert got == [list(range(1, 101)), list(range(101, 201)), list(range(201, 301))]
    assert [t.task_id for t in s.ready_to_run_list()] == list(range(301, 601))
    assert verify.find_drift(client, s.keys).clean


@pytest.fixture
def private() -> Iterator[redis.Redis]:
    """A redis-server of this test alone (its script cache is flushed)."""
    with private_redis("this test") as client:
        yield client


@pytest.mark.parametrize("server", ["fake", "private"])
def test_noscript_sends_the_waiting_calls_again_before_anything_new(
    request: pytest.FixtureRequest, server: str, run_id: int, prefix: str
) -> None:
    if server == "fake":
        import fakeredis

        client: redis.Redis = fakeredis.FakeRedis(server=fakeredis.FakeServer(version=(7, 0)))
    else:
        client = request.getfixturevalue("private")
    s, sender = _queued_run(client, run_id, prefix, 400)
    client.script_flush()  # a restart or failover: the first dequeue meets NOSCRIPT
    a, b = (_take_ahead(s, sender, 50) for _ in range(2))
    got = _ids(a)  # NOSCRIPT: a and b run again, in order, before c goes out
    c = _take_ahead(s, sender, 50)
    got += _ids(b) + _ids(c)
    assert got == list(range(1, 151))  # no StateLostError: versions came in order
    assert verify.find_drift(client, s.keys).clean


def test_gather_runs_reads_in_one_round_trip(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    s = _run(make_client(), run_id, prefix, 30)
    trips: list[int] = []

    def execute(calls: Any) -> Any:
        trips.append(len(calls))
        return s._transport.execute(calls)

    core = s._core
    capacity, length, array_cap = run_sync(
        execute, gather([core.available_capacity(), core.queue_len(), core.array_capacity(1)])
    )
    assert (capacity, length, array_cap) == (30, 30, 30)
    assert len(trips) == 1
    assert run_sync(execute, gather([])) == []


def test_a_socket_broken_under_waiting_calls(
    real_only: redis.Redis, run_id: int, prefix: str
) -> None:
    """The socket of the held connection breaks (as when the server or the network drops it)
    with three dequeues on their way, and again before the next send: every call runs once,
    in order."""
    import socket

    s, sender = _queued_run(real_only, run_id, prefix, 600)
    started = [_take_ahead(s, sender, 100) for _ in range(3)]
    assert sender._link is not None
    sender._link.conn._sock.shutdown(socket.SHUT_RDWR)
    got = _ids(started[0])
    started.append(_take_ahead(s, sender, 100))
    got += [i for x in started[1:] for i in _ids(x)]
    assert got == list(range(1, 401))
    assert [t.task_id for t in s.ready_to_run_list()] == list(range(401, 601))
    assert verify.find_drift(real_only, s.keys).clean


def test_a_send_that_fails_under_waiting_calls(
    real_only: redis.Redis, run_id: int, prefix: str
) -> None:
    """The socket breaks with two dequeues waiting and the third cannot be written: the two are
    sent again first, in order, then the third."""
    import socket

    s, sender = _queued_run(real_only, run_id, prefix, 600)
    started = [_take_ahead(s, sender, 100) for _ in range(2)]
    assert sender._link is not None
    sender._link.conn._sock.shutdown(socket.SHUT_RDWR)
    started.append(_take_ahead(s, sender, 100))
    assert [i for x in started for i in _ids(x)] == list(range(1, 301))
    assert verify.find_drift(real_only, s.keys).clean


def test_a_connection_closed_between_sends(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    """Closed while two calls wait (redis-py would reconnect on the next send and their
    replies would never come): they are sent again before the new call goes out."""
    client = make_client()
    s, sender = _queued_run(client, run_id, prefix, 600)
    started = [_take_ahead(s, sender, 100) for _ in range(2)]
    assert sender._link is not None
    sender._link.conn.disconnect()
    started.append(_take_ahead(s, sender, 100))
    assert [i for x in started for i in _ids(x)] == list(range(1, 301))
    assert verify.find_drift(client, s.keys).clean


@pytest.mark.slow
def test_a_stall_past_the_socket_timeout_under_waiting_calls(run_id: int, prefix: str) -> None:
    """Redis stalls (DEBUG SLEEP) past the client's socket timeout while three dequeues wait on
    the held connection: they are sent again (redis-py retries), the first deliveries run after
    the stall, and the second ones are answered from the reply cache: 300 tasks, in order,
    each once."""
    if shutil.which("redis-server") is None:
        from servers import skip_or_fail

        skip_or_fail("this test needs redis-server on PATH")
    workdir = tempfile.mkdtemp(prefix="swarm-ahead-")
    server = start_redis_server(["--enable-debug-command", "yes"], workdir=workdir)
    client = redis.Redis(host="127.0.0.1", port=server.port, protocol=3, socket_timeout=0.5)
    admin = redis.Redis(host="127.0.0.1", port=server.port, protocol=3, socket_timeout=None)
    try:
        s, sender = _queued_run(client, run_id, prefix, 600)
        _take_ahead(s, sender, 1).result()  # the dequeue script is loaded: no NOSCRIPT round
        before = int(admin.info("commandstats")["cmdstat_evalsha"]["calls"])
        sleeper = threading.Thread(target=admin.execute_command, args=("DEBUG", "SLEEP", 1.5))
        sleeper.start()
        time.sleep(0.2)  # the stall has begun
        started = [_take_ahead(s, sender, 100) for _ in range(3)]
        got = [i for x in started for i in _ids(x)]
        sleeper.join()
        assert got == list(range(2, 302))
        assert [t.task_id for t in s.ready_to_run_list()] == list(range(302, 601))
        sent = int(admin.info("commandstats")["cmdstat_evalsha"]["calls"]) - before
        assert sent > 3  # sent again after the timeout ...
        assert verify.find_drift(admin, s.keys).clean  # ... and each ran once
    finally:
        client.close()
        admin.close()
        server.stop()
        shutil.rmtree(workdir, ignore_errors=True)
