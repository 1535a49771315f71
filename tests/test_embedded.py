"""EmbeddedRedis, start_redis_server and resolve_url: servers start, answer, and leave nothing."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
from replica_procs import interruptible

from swarm_redis.demo.embedded import (
    EmbeddedRedis,
    EmbeddedRedisError,
    connect,
    free_port,
    resolve_url,
)
from swarm_redis.demo.redis_server import start_redis_server

REPO = Path(__file__).resolve().parents[1]
needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="no redis-server on PATH"
)


def gone(pid: int) -> bool:
    """True when `pid` does not run (absent, or a zombie nobody reaped yet)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rpartition(")")[2].split()[0] == "Z"


def wait_gone(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gone(pid):
            return True
        time.sleep(0.02)
    return gone(pid)


# --- redis-server backend -------------------------------------------------------------------


@needs_redis_server
def test_redis_server_backend_starts_and_leaves_nothing() -> None:
    emb = EmbeddedRedis(prefer="redis-server")
    with emb:
        assert emb.backend == "redis-server"
        assert emb.url.startswith("unix://") and emb.url.endswith("/redis.sock")
        assert emb.pid is not None and not gone(emb.pid)
        assert emb.tempdir is not None and Path(emb.tempdir).name.startswith("swarm-redis-")
        pid, tempdir = emb.pid, emb.tempdir
        client = connect(emb.url, decode_responses=True, protocol=3)
        try:
            client.set("k", "v")
            assert client.get("k") == "v"
            assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
            assert client.config_get("save") == {"save": ""}
            assert client.config_get("appendonly") == {"appendonly": "no"}
            assert client.config_get("port") == {"port": "0"}  # no TCP port at all
        finally:
            client.close()
    assert wait_gone(pid, 1.0)
    assert not Path(tempdir).exists()
    assert emb.pid is None and not emb.running
    emb.stop()  # idempotent


@needs_redis_server
def test_extra_args_reach_redis_server() -> None:
    with EmbeddedRedis(prefer="redis-server", extra_args=["--maxmemory", "64mb"]) as emb:
        client = connect(emb.url, protocol=2, decode_responses=True)
        try:
            assert client.config_get("maxmemory") == {"maxmemory": "67108864"}
        finally:
            client.close()


@needs_redis_server
def test_keyboard_interrupt_inside_with_leaves_nothing() -> None:
    pid = tempdir = None
    with pytest.raises(KeyboardInterrupt), EmbeddedRedis(prefer="redis-server") as emb:
        pid, tempdir = emb.pid, emb.tempdir
        raise KeyboardInterrupt
    assert pid is not None and tempdir is not None
    assert wait_gone(pid, 1.0)
    assert not Path(tempdir).exists()


@needs_redis_server
def test_start_twice_is_a_noop_and_stop_reentrant() -> None:
    emb = EmbeddedRedis(prefer="redis-server").start()
    try:
        pid = emb.pid
        assert emb.start() is emb and emb.pid == pid
    finally:
        emb.stop()
        emb.stop()
    assert pid is not None and wait_gone(pid, 1.0)


# --- fakeredis fallback ---------------------------------------------------------------------


def test_fakeredis_backend_shared_by_two_clients() -> None:
    emb = EmbeddedRedis(prefer="fakeredis")
    with emb:
        assert emb.backend == "fakeredis" and emb.pid is None
        assert emb.url.startswith("redis://127.0.0.1:")
        a = connect(emb.url, protocol=3)
        b = connect(emb.url, protocol=2, decode_responses=True)
        try:
            a.set("k", "v")
            assert b.get("k") == "v"
            assert b.incr("n") == 1 and a.incr("n") == 2
        finally:
            a.close()
            b.close()
        url = emb.url
    assert not emb.running
    c = connect(url, protocol=2, socket_connect_timeout=1.0)
    try:
        with pytest.raises(redis.ConnectionError):
            c.ping()
    finally:
        c.close()
    emb.stop()  # idempotent


def test_auto_falls_back_to_fakeredis_without_redis_server(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EmbeddedRedisError, match="no redis-server"):
        EmbeddedRedis(prefer="redis-server").start()
    with EmbeddedRedis() as emb:
        assert emb.backend == "fakeredis"


def test_fakeredis_warns_about_extra_args() -> None:
    with pytest.warns(RuntimeWarning, match="extra_args"):
        EmbeddedRedis(prefer="fakeredis", extra_args=["--maxmemory", "1mb"]).start().stop()


def test_bad_prefer() -> None:
    with pytest.raises(ValueError, match="prefer"):
        EmbeddedRedis(prefer="valkey")


# --- resolve_url ----------------------------------------------------------------------------


def test_resolve_url_precedence(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "redis://env.example:6379/0")
    assert resolve_url("redis://given:1/0") == ("redis://given:1/0", None)
    assert resolve_url(None) == ("redis://env.example:6379/0", None)
    assert resolve_url("") == ("redis://env.example:6379/0", None)
    monkeypatch.delenv("REDIS_URL")
    url, emb = resolve_url(None)
    assert emb is not None
    try:
        assert url == emb.url and emb.running
        client = connect(url, protocol=3)
        try:
            assert client.ping()
        finally:
            client.close()
    finally:
        emb.stop()


# --- start_redis_server ---------------------------------------------------------------------


def test_free_port() -> None:
    port = free_port()
    assert 0 < port < 65536


@needs_redis_server
def test_start_redis_server_tcp_and_sigstop(tmp_path: Path) -> None:
    srv = start_redis_server(["--maxmemory-policy", "allkeys-lru"], workdir=str(tmp_path / "a"))
    try:
        assert srv.port > 0 and srv.url == f"redis://127.0.0.1:{srv.port}/0"
        client = srv.client(decode_responses=True, protocol=3)
        try:
            assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "allkeys-lru"}
        finally:
            client.close()
        srv.kill(signal.SIGSTOP)
        started = time.monotonic()
    finally:
        srv.stop()
    assert time.monotonic() - started < 8
    assert srv.proc.returncode is not None and not srv.alive()
    assert (tmp_path / "a" / "redis.log").exists()  # the workdir is the caller's: kept
    srv.stop()  # idempotent


@needs_redis_server
def test_start_redis_server_config_file_and_long_socket_path(tmp_path: Path) -> None:
    conf = tmp_path / "r.conf"
    conf.write_text("maxmemory 10mb\n")
    workdir = tmp_path / ("d" * 90)
    srv = start_redis_server([str(conf)], workdir=str(workdir), unixsocket=True)
    try:
        assert srv.port == 0 and srv.unixsocket is not None
        assert len(srv.unixsocket) <= 100
        client = srv.client(protocol=2, decode_responses=True)
        try:
            assert client.config_get("maxmemory") == {"maxmemory": "10485760"}
        finally:
            client.close()
    finally:
        srv.stop()
    assert not Path(srv.unixsocket).parent.exists()


@needs_redis_server
def test_start_redis_server_reports_failure(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match=r"(?s)exited.*no-such-option"):
        start_redis_server(["--no-such-option", "1"], workdir=str(tmp_path))


@needs_redis_server
def test_sigkill_then_stop(tmp_path: Path) -> None:
    srv = start_redis_server([], workdir=str(tmp_path), unixsocket=True)
    srv.kill()
    srv.stop()
    assert srv.proc.returncode == -signal.SIGKILL


# --- a child process that is interrupted or terminated --------------------------------------

CHILD = """
import json, sys, threading, time
from swarm_redis.demo.embedded import EmbeddedRedis

def report(emb):
    print(json.dumps({"pid": emb.pid, "dir": emb.tempdir, "url": emb.url}), flush=True)

if sys.argv[1] == "main":
    with EmbeddedRedis(prefer="redis-server") as emb:
        report(emb)
        while True:
            time.sleep(0.05)
else:  # started from a thread that ends at once: the server must outlive that thread
    box = []
    t = threading.Thread(target=lambda: box.append(EmbeddedRedis(prefer="redis-server").start()))
    t.start()
    t.join()
    report(box[0])
    while True:
        time.sleep(0.05)
"""


@needs_redis_server
@pytest.mark.parametrize("where", ["main", "thread"])
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signalled_child_leaves_no_server(sig: signal.Signals, where: str) -> None:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), where],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
        preexec_fn=interruptible,
    )
    try:
        assert child.stdout is not None
        line = child.stdout.readline()
        assert line, child.stderr.read() if child.stderr else ""
        info = json.loads(line)
        pid, tempdir = info["pid"], Path(info["dir"])
        client = connect(info["url"], protocol=3)
        try:
            assert client.ping()  # alive, also after the starting thread ended
        finally:
            client.close()
        child.send_signal(sig)
        child.wait(timeout=20)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert wait_gone(pid), f"redis-server {pid} survived {sig.name} of its parent"
    if sig == signal.SIGINT:  # KeyboardInterrupt: with-block / atexit cleanup ran
        assert not tempdir.exists()
    else:  # killed without cleanup: the next EmbeddedRedis sweeps the orphaned dir
        assert tempdir.exists()
        EmbeddedRedis(prefer="redis-server").start().stop()
        assert not tempdir.exists()
