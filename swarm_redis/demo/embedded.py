"""Private Redis servers: the "embedded default" used when no URL is given, and a helper for tests.

`EmbeddedRedis` starts a throw-away `redis-server` from PATH (unix socket only, no TCP port, no
persistence, temp dir) or, when there is none, an in-process `fakeredis.TcpFakeServer`.
`start_redis_server` is the generic launcher behind it, reused by tests that need their own
servers (clusters, sentinels, TLS, kills).

The server processes themselves (lifetime, clean-up) are :mod:`swarm_redis.demo.redis_server`.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from swarm_redis.demo.redis_server import (
    EmbeddedRedisError,
    RedisProcess,
    connect,
    free_port,
    is_gone,
    start_redis_server,
)

__all__ = ["EmbeddedRedis", "EmbeddedRedisError", "connect", "free_port", "resolve_url"]

_TMP_PREFIX = "swarm-redis-"
_OWNER_MARKER = "owner.pid"


# --------------------------------------------------------------------------------------------
# The embedded default.


def _sweep_stale_dirs() -> None:
    """Remove temp dirs left by embedded servers whose owner process died without `stop()`."""
    try:
        candidates = list(Path(tempfile.gettempdir()).glob(f"{_TMP_PREFIX}*"))
    except OSError:
        return
    for d in candidates:
        try:
            owner, _, server = (d / _OWNER_MARKER).read_text().partition(" ")
            pids = [int(owner), *([int(server)] if server.strip() else [])]
        except (OSError, ValueError):
            continue  # not ours, not finished being created, or not readable
        if all(is_gone(p) for p in pids):
            shutil.rmtree(d, ignore_errors=True)


class EmbeddedRedis:
    """A throw-away Redis for the CLI, demo and benchmarks when no URL is given.

    Prefers a private `redis-server` from PATH (unix socket, no TCP, no persistence,
    `noeviction`, temp dir); falls back to a `fakeredis.TcpFakeServer` on 127.0.0.1 served by a
    daemon thread. Use as a context manager, or call `start()` and `stop()`.

    Attributes:
        url: A redis-py URL for the server (`unix:///.../redis.sock` or `redis://127.0.0.1:P/0`).
        backend: "redis-server" or "fakeredis" once started, "" before.
        pid: The redis-server's process id; None for fakeredis or when not running.
    """

    def __init__(self, prefer: str = "auto", extra_args: Sequence[str] = ()) -> None:
        """Configure, without starting.

        Args:
            prefer: "auto" (redis-server if on PATH, else fakeredis), "redis-server" or
                "fakeredis".
            extra_args: Extra redis-server arguments (ignored, with a warning, by fakeredis).
        """
        if prefer not in ("auto", "redis-server", "fakeredis"):
            raise ValueError(
                f"prefer must be 'auto', 'redis-server' or 'fakeredis', not {prefer!r}"
            )
        self.prefer = prefer
        self.extra_args: tuple[str, ...] = tuple(extra_args)
        self.url = ""
        self.backend = ""
        self.pid: int | None = None
        self.tempdir: str | None = None
        self._server: RedisProcess | None = None
        self._fake: Any = None  # fakeredis.TcpFakeServer (untyped package)
        self._fake_thread: threading.Thread | None = None
        self._lock = threading.RLock()

    def __repr__(self) -> str:
        return f"EmbeddedRedis(backend={self.backend!r}, url={self.url!r}, pid={self.pid})"

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        """True between a successful `start()` and `stop()`."""
        return self._server is not None or self._fake is not None

    def start(self) -> EmbeddedRedis:
        """Start the server (no-op when running) and wait until it answers PING.

        Returns:
            self, with `url`, `backend` and `pid` set.

        Raises:
            EmbeddedRedisError: The preferred backend is unavailable or did not start.
        """
        with self._lock:
            if self.running:
                return self
            exe = shutil.which("redis-server")
            if self.prefer == "redis-server" or (self.prefer == "auto" and exe is not None):
                if exe is None:
                    raise EmbeddedRedisError("prefer='redis-server' but no redis-server on PATH")
                self._start_redis_server(exe)
            else:
                self._start_fakeredis()
            atexit.register(self.stop)
            return self

    def _start_redis_server(self, exe: str) -> None:
        _sweep_stale_dirs()
        tmp = tempfile.mkdtemp(prefix=_TMP_PREFIX)
        self.tempdir = tmp
        marker = Path(tmp, _OWNER_MARKER)
        try:
            marker.write_text(f"{os.getpid()}")
            server = start_redis_server(
                ["--maxmemory-policy", "noeviction", *self.extra_args],
                workdir=tmp,
                port=0,
                unixsocket=True,
                executable=exe,
            )
            marker.write_text(f"{os.getpid()} {server.pid}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            self.tempdir = None
            raise
        self._server = server
        self.url = server.url
        self.pid = server.pid
        self.backend = "redis-server"

    def _start_fakeredis(self) -> None:
        try:
            from fakeredis import TcpFakeServer
        except ImportError as e:
            raise EmbeddedRedisError(
                "no redis-server on PATH and fakeredis is not installed: install redis-server, "
                "or `pip install 'swarm-redis[embedded]'`, or pass a Redis URL"
            ) from e
        if self.extra_args:
            warnings.warn(
                "EmbeddedRedis: extra_args are ignored by the fakeredis backend",
                RuntimeWarning,
                stacklevel=3,
            )
        srv = TcpFakeServer(("127.0.0.1", 0), server_type="redis", server_version=(7, 0))
        srv.daemon_threads = True  # else shutdown would wait for every connected client
        thread = threading.Thread(
            target=srv.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="swarm-redis-fakeredis",
            daemon=True,
        )
        thread.start()
        self._fake, self._fake_thread = srv, thread
        self.url = f"redis://127.0.0.1:{srv.server_address[1]}/0"
        self.backend = "fakeredis"
        self.pid = None
        client = connect(self.url, protocol=2, socket_connect_timeout=1.0, socket_timeout=2.0)
        try:
            client.ping()
        except BaseException:
            self.stop()
            raise
        finally:
            client.close()

    def stop(self) -> None:
        """Shut the server down and remove its temp dir; idempotent, reentrant, never raises
        for a server that is already gone."""
        with self._lock:
            server = self._server
            if server is not None:
                server.stop()
                self._server = None
            srv, thread = self._fake, self._fake_thread
            if srv is not None:
                if thread is not None and thread.is_alive():
                    srv.shutdown()
                srv.server_close()
                if thread is not None:
                    thread.join(timeout=5.0)
                self._fake = self._fake_thread = None
            if self.tempdir is not None:
                shutil.rmtree(self.tempdir, ignore_errors=True)
                self.tempdir = None
            self.pid = None
            atexit.unregister(self.stop)


def resolve_url(url: str | None) -> tuple[str, EmbeddedRedis | None]:
    """Pick the Redis to use: `url`, else env `REDIS_URL`, else a new embedded server.

    Returns:
        The URL, and the `EmbeddedRedis` that was started for it (the caller stops it) or None.
    """
    if url:
        return url, None
    env = os.environ.get("REDIS_URL", "").strip()
    if env:
        return env, None
    emb = EmbeddedRedis().start()
    return emb.url, emb
