"""The simulated jobmon server: its queueing rules, its checks, its clock and its process."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
import redis

from swarm_redis import ArrayRecord, RedisSwarmState, TaskRecord
from swarm_redis.demo.sim import (
    SimClient,
    SimConfig,
    SimCore,
    SimServer,
    config_from_json,
    config_to_json,
    format_server_time,
    report_from_json,
    report_to_json,
    serve_connection,
)
from swarm_redis.demo.sim import wire as simwire
from swarm_redis.errors import InvalidInputError
from swarm_redis.replica.gateway import Gateway, GatewayError, by_status, invert

MakeClient = Callable[..., redis.Redis]


def config(n: int = 6, **kw: object) -> SimConfig:
    """Tasks 1..n; odd ids in array 1, even ids in array 2."""
    base: dict[str, object] = {
        "tasks": {i: 1 if i % 2 else 2 for i in range(1, n + 1)},
        "workflow_limit": 100,
        "array_limits": {1: 100, 2: 100},
        "step_s": (0.0, 0.0),
        "seed": 7,
    }
    base.update(kw)
    return SimConfig(**base)  # type: ignore[arg-type]


def drive(core: SimCore) -> None:
    """Run the clock until no task is active (each step is due at once with step_s (0, 0))."""
    for _ in range(10_000):
        core.advance()
        counts = core.report().counts
        if not any(counts[s] for s in "QIOR"):
            return
    raise AssertionError("tasks still active after 10,000 clock steps")


def test_gateway_helpers_invert_each_other() -> None:
    shape = {"G": [3, 1], "D": [2]}
    assert invert(shape) == {3: "G", 1: "G", 2: "D"}
    assert by_status(invert(shape)) == {"G": [1, 3], "D": [2]}


def test_only_registering_and_adjusting_tasks_are_queued() -> None:
    core = SimCore(config(initial_statuses={2: "A", 3: "D", 4: "F"}))
    answer, when = core.queue_task_batch(1, [1, 3], "")
    assert answer == {"Q": [1], "D": [3]}
    answer, _ = core.queue_task_batch(2, [2, 4], "")
    assert answer == {"Q": [2], "F": [4]}
    again, _ = core.queue_task_batch(1, [1], "")  # already Q: answered, not queued again
    assert again == {"Q": [1]}
    report = core.report()
    assert report.attempts == {1: 1, 2: 1}
    assert report.attempts_started == 2
    assert report.resent == 3  # 3 (D), 4 (F) and the second request for 1
    assert report.duplicates == [] and report.ok
    assert when.count(":") == 2 and "." in when  # "YYYY-MM-DD HH:MM:SS.ffffff"


def test_tasks_run_to_done() -> None:
    core = SimCore(config())
    core.queue_task_batch(1, [1, 3, 5], "")
    drive(core)
    report = core.report()
    assert {report.statuses[t] for t in (1, 3, 5)} == {"D"}
    assert report.counts["D"] == 3 and report.counts["G"] == 3


def test_failures_retry_then_become_fatal_after_max_attempts() -> None:
    core = SimCore(config(always_fail=frozenset({1}), resource_error_share=0.0, max_attempts=3))
    for attempt in (1, 2):
        core.queue_task_batch(1, [1], "")
        drive(core)
        assert core.report().statuses[1] == "G"
        assert core.report().attempts[1] == attempt
    core.queue_task_batch(1, [1], "")
    drive(core)
    report = core.report()
    assert report.statuses[1] == "F" and report.attempts[1] == 3
    answer, _ = core.queue_task_batch(1, [1], "")
    assert answer == {"F": [1]} and core.report().attempts[1] == 3


def test_resource_errors_go_to_adjusting_and_are_queued_again() -> None:
    core = SimCore(config(always_fail=frozenset({1}), resource_error_share=1.0, max_attempts=2))
    core.queue_task_batch(1, [1], "")
    drive(core)
    assert core.report().statuses[1] == "A"
    answer, _ = core.queue_task_batch(1, [1], "bigger")
    assert answer == {"Q": [1]}
    drive(core)
    report = core.report()
    assert report.statuses[1] == "F" and report.attempts[1] == 2


def test_limit_checker_records_a_violation_it_is_given() -> None:
    core = SimCore(config(workflow_limit=2, array_limits={1: 1, 2: 5}))
    core.queue_task_batch(1, [1, 3], "")  # array 1 holds 2 > 1
    core.queue_task_batch(2, [2], "")  # the run holds 3 > 2
    report = core.report()
    scopes = [(v.scope, v.active, v.limit, v.task_id) for v in report.limit_violations]
    assert scopes == [("array 1", 2, 1, 3), ("workflow", 3, 2, 2)]
    assert report.max_active == 3 and report.max_active_per_array == {1: 2, 2: 1}
    assert not report.ok and any("limit" in p for p in report.problems)


def test_within_limits_is_clean() -> None:
    core = SimCore(config(workflow_limit=3, array_limits={1: 2, 2: 1}))
    core.queue_task_batch(1, [1, 3], "")
    core.queue_task_batch(2, [2], "")
    drive(core)
    core.queue_task_batch(1, [5], "")
    assert core.report().limit_violations == []


def test_queueing_before_upstreams_are_done_is_recorded() -> None:
    core = SimCore(config(upstreams={3: [1]}))
    core.queue_task_batch(1, [3], "")
    assert core.report().dependency_violations == [(3, 1)]
    core2 = SimCore(config(upstreams={3: [1]}))
    core2.queue_task_batch(1, [1], "")
    drive(core2)
    core2.queue_task_batch(1, [3], "")
    assert core2.report().dependency_violations == []


def test_wrong_array_and_unknown_ids_are_not_queued() -> None:
    core = SimCore(config())
    answer, _ = core.queue_task_batch(2, [1, 99], "")
    assert answer == {"G": [1]}  # known ids are answered, unknown ones are not
    report = core.report()
    assert report.wrong_array == [(1, 2)] and report.unknown_ids == 1
    assert report.statuses[1] == "G" and not report.ok


def test_overlapping_calls_with_one_id_create_a_duplicate_instance() -> None:
    gate = threading.Barrier(2, timeout=30)

    def hold() -> None:  # both calls have selected before either updates
        gate.wait()

    core = SimCore(config(), between=hold)
    answers: list[dict[str, list[int]]] = []

    def call() -> None:
        answers.append(core.queue_task_batch(1, [1], "")[0])

    threads = [threading.Thread(target=call) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report = core.report()
    assert answers == [{"Q": [1]}, {"Q": [1]}]
    assert report.attempts[1] == 1
    assert report.duplicates == [(1, 1, 2)]
    assert [(t, a) for t, a, _ in report.overlaps] == [(1, 1)]
    assert not report.ok


def test_sequential_resends_are_not_duplicates() -> None:
    core = SimCore(config())
    for _ in range(3):
        core.queue_task_batch(1, [1, 3], "")
    report = core.report(include_log=True)
    assert report.duplicates == [] and report.overlaps == []
    assert [c.queued for c in report.queue_log] == [((1, 1), (3, 1)), (), ()]
    assert [c.task_ids for c in report.queue_log] == [(1, 3)] * 3
    assert report.resent == 4


def test_incremental_fetch_is_inclusive_and_ordered() -> None:
    core = SimCore(config())
    everything, t0 = core.get_task_statuses(None)
    assert everything == {"G": [1, 2, 3, 4, 5, 6]}
    nothing, t1 = core.get_task_statuses(t0)
    assert nothing == {} and t1 > t0
    _, tq = core.queue_task_batch(1, [1], "")
    changed, t2 = core.get_task_statuses(t1)
    assert changed == {"Q": [1]}
    assert core.get_task_statuses(tq)[0] == {"Q": [1]}  # inclusive: a change at `since` counts
    assert core.get_task_statuses(t2)[0] == {}
    drive(core)
    assert core.get_task_statuses(t2)[0] == {"D": [1]}


def test_run_status_follows_the_state_machine() -> None:
    core = SimCore(config())
    assert core.log_heartbeat("R") == "R"
    assert core.signal_run_status("C") == "C"
    assert core.log_heartbeat("R") == "C"  # a replica that missed the signal cannot undo it
    assert core.update_run_status("T") == "T"
    assert core.update_run_status("R") == "T"
    report = core.report()
    assert report.run_status_history == ["B", "R", "C", "T"] and report.heartbeats == 2


def test_config_is_validated() -> None:
    with pytest.raises(InvalidInputError):
        config(workflow_limit=-1)
    with pytest.raises(InvalidInputError):
        config(fail_rate=1.5)
    with pytest.raises(InvalidInputError):
        config(initial_statuses={1: "R"})
    with pytest.raises(InvalidInputError):
        config(initial_statuses={99: "D"})
    with pytest.raises(InvalidInputError):
        config(step_s=(0.2, 0.1))


def test_server_time_format() -> None:
    assert format_server_time(1_000_000) == "1970-01-01 00:00:01.000000"


def test_config_from_state(make_client: MakeClient, prefix: str, run_id: int) -> None:
    client = make_client()
    state = RedisSwarmState(1, run_id, 1, max_concurrently_running=9, redis=client, prefix=prefix)
    a, b, c = TaskRecord(1, 5), TaskRecord(2, 5, num_upstreams=1), TaskRecord(3, 6, "D")
    a.downstream_swarm_tasks.add(b)
    state.add_arrays([ArrayRecord(5, 2), ArrayRecord(6, 4)])
    state.add_tasks([a, b, c])
    cfg = SimConfig.from_state(state, fail_rate=0.1)
    assert dict(cfg.tasks) == {1: 5, 2: 5, 3: 6}
    assert dict(cfg.upstreams) == {2: [1]}
    assert dict(cfg.array_limits) == {5: 2, 6: 4}
    assert cfg.workflow_limit == 9 and dict(cfg.initial_statuses) == {3: "D"}
    assert cfg.fail_rate == 0.1


# --- the server process --------------------------------------------------------------------------


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def _wait_gone(pid: int) -> bool:
    for _ in range(200):  # a bounded wait, not a timing assertion
        if _gone(pid):
            return True
        time.sleep(0.05)
    return _gone(pid)


def test_server_process_serves_clients_and_stops() -> None:
    server = SimServer.start(config(step_s=(0.001, 0.002)))
    try:
        with server.client() as client:
            assert isinstance(client, Gateway)
            answer, _ = client.queue_task_batch(1, [1, 3], "")
            assert answer == {"Q": [1, 3]}
            assert client.log_heartbeat("R") == "R"
        with SimClient(server.address, server.authkey_hex) as other:
            assert other.get_task_statuses(None)[0]["G"] == [2, 4, 5, 6]
        with pytest.raises(GatewayError):
            SimClient(server.address, b"wrong key")
        assert server.report().queue_calls == 1
    finally:
        final = server.stop()
    assert final is not None and final.queue_calls == 1 and final.run_status == "R"
    assert not server.alive() and _wait_gone(server.pid)
    assert server.stop() is final  # idempotent


def test_client_reads_the_authkey_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with SimServer.start(config()) as server:
        monkeypatch.setenv("SWARM_SIM_AUTHKEY", server.authkey_hex)
        with SimClient(server.address) as client:
            assert client.update_run_status("R") == "R"
    assert not server.alive()


def test_a_bad_request_is_refused_without_killing_the_server() -> None:
    with SimServer.start(config()) as server, server.client() as client:
        with pytest.raises(GatewayError, match="refused"):
            client.get_task_statuses("not a time")
        assert client.update_run_status("R") == "R"


def test_server_exits_when_its_parent_is_killed() -> None:
    script = textwrap.dedent(
        """
        import sys, time
        from swarm_redis.demo.sim import SimConfig, SimServer
        server = SimServer.start(SimConfig(tasks={1: 1}, workflow_limit=1))
        print(server.pid, flush=True)
        time.sleep(600)
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        sim_pid = int(parent.stdout.readline())
        assert not _gone(sim_pid)
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait()
    assert _wait_gone(sim_pid)


# --- the wire: authenticated JSON frames, nothing executed --------------------------------------

KEY = bytes(range(16))


class _Served:
    """serve_connection in a thread on one end of a socketpair; the test holds the other end."""

    def __init__(self, core: SimCore | None = None) -> None:
        self.core = core or SimCore(config())
        self.stop = threading.Event()
        self.sock, server_end = socket.socketpair()
        self.sock.settimeout(10)
        self.thread = threading.Thread(
            target=serve_connection, args=(self.core, server_end, KEY, self.stop), daemon=True
        )
        self.thread.start()

    def channel(self) -> simwire.Channel:
        ch = simwire.Channel(self.sock, KEY, side="client", max_in=simwire.MAX_REPLY_BYTES)
        ch.client_handshake()
        return ch

    def closed(self) -> bool:
        """True once the server closed its end (after answering whatever it answered)."""
        self.thread.join(10)
        if self.thread.is_alive():
            return False
        try:
            while self.sock.recv(65536):
                pass
        except OSError:
            pass
        return True


def _frame(key: bytes, seq: int, body: bytes) -> bytes:
    tag = hmac.new(key, b"C" + seq.to_bytes(8, "big") + body, hashlib.sha256).digest()
    return (len(tag) + len(body)).to_bytes(4, "big") + tag + body


def _session(key: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    material = b"swarm-sim session" + client_nonce + server_nonce
    return hmac.new(key, material, hashlib.sha256).digest()


def test_authenticated_calls_round_trip() -> None:
    served = _Served()
    ch = served.channel()
    ch.send({"call": "queue_task_batch", "args": [1, [1, 3], ""]})
    reply = ch.recv()
    assert reply["ok"][0] == {"Q": [1, 3]}
    ch.send({"call": "no_such_call", "args": []})
    assert "unknown call" in ch.recv()["err"]
    ch.send({"call": "report", "args": [True]})
    assert report_from_json(ch.recv()["ok"]).queue_calls == 1


@pytest.mark.parametrize(
    "case",
    ["bad-mac", "wrong-key-hello", "oversize", "short", "not-json", "malformed", "replay"],
)
def test_a_bad_frame_closes_the_connection_with_a_logged_reason(
    case: str, caplog: pytest.LogCaptureFixture
) -> None:
    served = _Served()
    reasons = {
        "bad-mac": "bad MAC on frame 1",
        "wrong-key-hello": "handshake: bad MAC on frame 0",
        "oversize": "above the limit",
        "short": "shorter than its tag",
        "not-json": "not JSON",
        "malformed": "malformed request",
        "replay": "bad MAC on frame 2",
    }
    with caplog.at_level(logging.WARNING, logger="swarm_redis.demo.sim"):
        if case == "wrong-key-hello":
            wrong = simwire.Channel(
                served.sock, b"x" * 16, side="client", max_in=simwire.MAX_REPLY_BYTES
            )
            with pytest.raises(simwire.WireError):
                wrong.client_handshake()
        else:
            ch = served.channel()
            key = ch._send_key  # the session key (the test plays both the client and a forger)
            if case == "bad-mac":
                body = orjson.dumps({"call": "signal_run_status", "args": ["C"]})
                forged = bytearray(_frame(key, 1, body))
                forged[10] ^= 1
                served.sock.sendall(bytes(forged))
            elif case == "oversize":
                served.sock.sendall((simwire.MAX_REQUEST_BYTES + 33).to_bytes(4, "big"))
            elif case == "short":
                served.sock.sendall((5).to_bytes(4, "big") + b"12345")
            elif case == "not-json":
                served.sock.sendall(_frame(key, 1, b"\x80\x04 not json"))
            elif case == "malformed":
                served.sock.sendall(_frame(key, 1, orjson.dumps(["update_run_status", "R"])))
            elif case == "replay":
                frame = _frame(key, 1, orjson.dumps({"call": "update_run_status", "args": ["R"]}))
                served.sock.sendall(frame)
                assert ch.recv() == {"ok": "R"}  # the first copy is answered (its reply: seq 1)
                served.sock.sendall(frame)  # the same bytes again: seq 2 expected
        assert served.closed()
    assert reasons[case] in caplog.text, caplog.text
    assert served.core.report().run_status == ("R" if case == "replay" else "B")


def test_frames_recorded_on_one_connection_fail_on_another(
    caplog: pytest.LogCaptureFixture,
) -> None:
    core = SimCore(config())
    first = _Served(core)
    client_nonce = bytes(16)
    hello = orjson.dumps({"proto": simwire.PROTOCOL, "nonce": client_nonce.hex()})
    first.sock.sendall(_frame(KEY, 0, hello))
    size = int.from_bytes(first.sock.recv(4), "big")
    answer = first.sock.recv(size)
    server_nonce = bytes.fromhex(orjson.loads(answer[32:])["nonce"])
    request = _frame(
        _session(KEY, client_nonce, server_nonce),
        1,
        orjson.dumps({"call": "signal_run_status", "args": ["H"]}),
    )
    first.sock.sendall(request)
    assert first.sock.recv(4)  # answered on the first connection
    second = _Served(core)
    with caplog.at_level(logging.WARNING, logger="swarm_redis.demo.sim"):
        second.sock.sendall(_frame(KEY, 0, hello) + request)  # replayed byte for byte
        assert second.closed()
    assert "bad MAC on frame 1" in caplog.text
    assert core.report().run_status_history == ["B", "H"]  # the replay changed nothing


def test_server_process_refuses_garbage_and_keeps_serving() -> None:
    with SimServer.start(config()) as server:
        host, port = server.address.rsplit(":", 1)
        for garbage in (
            b"\x80\x04\x95" + b"\x00" * 40,
            b"\xff\xff\xff\xff",
            b"GET / HTTP/1.0\r\n\r\n",
        ):
            with socket.create_connection((host, int(port)), timeout=10) as raw:
                raw.sendall(garbage)
                raw.shutdown(socket.SHUT_WR)
                try:
                    answer = raw.recv(1024)
                except ConnectionResetError:  # closed with our bytes unread
                    answer = b""
                assert answer == b""  # closed without an answer
        with pytest.raises(GatewayError, match=r"authentication|closed"):
            SimClient(server.address, b"y" * 16)
        with server.client() as client:
            assert client.update_run_status("R") == "R"
        assert server.report().run_status_history == ["B", "R"]


def test_server_key_must_be_long_enough() -> None:
    with pytest.raises(InvalidInputError, match="at least 16 bytes"):
        SimServer.start(config(), authkey=b"short")


def test_report_and_config_survive_json() -> None:
    cfg = config(
        upstreams={2: [1]},
        always_fail=frozenset({5}),
        initial_statuses={3: "D"},
        queue_latency_s=(0.0, 0.01),
    )
    assert config_from_json(orjson.loads(orjson.dumps(config_to_json(cfg)))) == cfg
    core = SimCore(cfg)
    core.queue_task_batch(1, [1, 1], "k")
    drive(core)
    report = core.report(include_log=True)
    assert report.queue_log and report.statuses
    again = report_from_json(orjson.loads(orjson.dumps(report_to_json(report))))
    assert again == report


def test_nothing_uses_pickle() -> None:
    """No pickle anywhere: the library and its tests hold no such import or call."""
    root = Path(__file__).resolve().parents[1]
    word = "pick" + "le"
    found = [
        str(path.relative_to(root))
        for folder in ("swarm_redis", "tests")
        for path in (root / folder).rglob("*.py")
        if path.name != "test_sim.py" and word in path.read_text()
    ]
    assert found == []


def test_listeners_default_to_loopback(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    with SimServer.start(config()) as server:
        assert server.address.startswith("127.0.0.1:")
    from swarm_redis.demo.cli import run_demo
    from swarm_redis.exit_codes import EXIT_USAGE
    from swarm_redis.ops.cli import build_parser

    args = build_parser().parse_args(["demo", "--role", "sim", "--run", "1"])
    assert args.listen.startswith("127.0.0.1:")
    # listening elsewhere needs a key of the operator's own (never a random one nobody knows,
    # never a default): refused before anything starts
    monkeypatch.delenv("SWARM_SIM_AUTHKEY", raising=False)
    args = build_parser().parse_args(
        ["demo", "--role", "sim", "--run", "1", "--listen", "0.0.0.0:0"]
    )
    assert run_demo(args) == EXIT_USAGE
    assert "is not loopback: set SWARM_SIM_AUTHKEY" in capsys.readouterr().out


def test_client_reconnects_after_a_broken_connection() -> None:
    with SimServer.start(config()) as server, server.client(timeout=5) as client:
        assert client.update_run_status("R") == "R"
        channel = client._channel
        assert channel is not None
        channel.sock.shutdown(socket.SHUT_RDWR)  # the connection breaks under the client
        with pytest.raises(GatewayError, match="log_heartbeat failed"):
            client.log_heartbeat("R")
        assert client.log_heartbeat("R") == "R"  # a new, authenticated connection
        assert client._channel is not channel
    with pytest.raises(GatewayError, match="closed"):
        client.log_heartbeat("R")  # closed on purpose: stays closed
