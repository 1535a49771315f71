"""Private redis-server processes, tied to our own life: the launcher behind
:class:`~swarm_redis.demo.embedded.EmbeddedRedis`, reused by tests that need their own servers
(clusters, sentinels, TLS, kills).

Process lifetime (how `stop()` stays reliable and nothing is left behind):

* The server runs in the foreground (never `--daemonize`), as our child, in its **own session
  and process group**. A terminal Ctrl-C therefore reaches only the Python process: it gets
  `KeyboardInterrupt`, its `finally`/`with` blocks still find Redis alive (to release leases,
  print a summary), and then `stop()` shuts the server down in order. Were the server in our
  process group, Ctrl-C would kill it at the same moment, under the feet of that cleanup.
* Since the server does not share our fate through the terminal, it is tied to our process
  instead: on Linux the child sets `PR_SET_PDEATHSIG(SIGKILL)` (ctypes `prctl` in a
  `preexec_fn`), so the kernel kills it when we die in any way, including SIGTERM with Python's
  default handler (no `atexit`) and SIGKILL. The death signal fires when the *thread* that forked
  the child ends, so it is used only when starting from the main thread; from another thread, or
  off Linux, a tiny watchdog process holds a pipe from us and SIGKILLs the server at EOF.
* Nothing global is installed in signal handling. `stop()` is idempotent and reentrant (safe in
  `finally` after `KeyboardInterrupt` and from a signal handler); it is also registered with
  `atexit`.
* The one thing a hard death of our process leaves is the temp dir (nobody is left to remove
  it). Each dir carries an owner marker; `EmbeddedRedis.start()` removes marked dirs whose owner
  and server are both dead.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import redis

from swarm_redis.errors import SwarmRedisError

__all__ = [
    "EmbeddedRedisError",
    "RedisProcess",
    "connect",
    "free_port",
    "is_gone",
    "pdeathsig_preexec",
    "start_redis_server",
]

_PR_SET_PDEATHSIG = 1
_SUN_PATH_MAX = 100  # sun_path is 108 bytes on Linux, 104 on macOS; stay below both.
_LOG_TAIL_LINES = 20
_WATCHDOG_SRC = (
    "import os, signal, sys\n"
    "sys.stdin.buffer.read()\n"
    "try:\n"
    "    os.kill(int(sys.argv[1]), signal.SIGKILL)\n"
    "except OSError:\n"
    "    pass\n"
)


class EmbeddedRedisError(SwarmRedisError, RuntimeError):
    """A private Redis server could not be found, started or reached."""


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that was free a moment ago (another process may take it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def connect(
    url: str, *, decode_responses: bool = False, protocol: int = 3, **kw: Any
) -> redis.Redis:
    """Open a redis-py client for `url`, always with an explicit RESP `protocol`."""
    return redis.Redis.from_url(url, protocol=protocol, decode_responses=decode_responses, **kw)


# --------------------------------------------------------------------------------------------
# Child-process plumbing: tie the server's life to ours.


_prctl: Callable[..., int] | None = None


def _load_prctl() -> Callable[..., int] | None:
    """Resolve libc's `prctl` before any fork (resolving it in the child could take locks)."""
    global _prctl
    if _prctl is None and sys.platform.startswith("linux"):
        try:
            fn = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            return None
        fn.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
        fn.restype = ctypes.c_int
        _prctl = fn
    return _prctl


def pdeathsig_preexec() -> Callable[[], None] | None:
    """A `preexec_fn` that makes the child die with us, or None when that is not reliable here."""
    if threading.current_thread() is not threading.main_thread():
        return None  # PDEATHSIG follows the forking thread, which may end long before we do.
    prctl = _load_prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # we died between fork() and prctl(): follow at once.
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def _start_watchdog(pid: int) -> subprocess.Popen[bytes]:
    """Start a process that SIGKILLs `pid` when our end of its stdin pipe closes (we died)."""
    return subprocess.Popen(
        [sys.executable, "-c", _WATCHDOG_SRC, str(pid)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def is_gone(pid: int) -> bool:
    """True when `pid` no longer runs (no such process, or a zombie waiting to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[:1] == ["Z"]


def _tail(path: Path, lines: int = _LOG_TAIL_LINES) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# Generic private redis-server.


class RedisProcess:
    """A `redis-server` child started by `start_redis_server`; stop it with `stop()`.

    Attributes:
        port: The TCP port clients use (the TLS port with `tls=True`); 0 when TCP is off.
        url: A redis-py URL for the server (`unix://...` when started with a unix socket).
        proc: The `subprocess.Popen` of the server.
        workdir: The server's `--dir`, holding `redis.log` and `redis.stderr` (kept on stop).
        unixsocket: The socket path, or None.
    """

    def __init__(
        self,
        *,
        port: int,
        url: str,
        proc: subprocess.Popen[bytes],
        workdir: str,
        unixsocket: str | None,
        client_kwargs: Mapping[str, Any],
        watchdog: subprocess.Popen[bytes] | None,
        own_sockdir: str | None,
    ) -> None:
        self.port = port
        self.url = url
        self.proc = proc
        self.workdir = workdir
        self.unixsocket = unixsocket
        self._client_kwargs = dict(client_kwargs)
        self._watchdog = watchdog
        self._own_sockdir = own_sockdir
        self._lock = threading.RLock()
        atexit.register(self.stop)

    def __repr__(self) -> str:
        return f"RedisProcess(pid={self.proc.pid}, url={self.url!r})"

    @property
    def pid(self) -> int:
        """The server's process id."""
        return self.proc.pid

    @property
    def logfile(self) -> Path:
        """The server's log file."""
        return Path(self.workdir, "redis.log")

    def alive(self) -> bool:
        """True while the server process runs (a SIGSTOPped server counts as alive)."""
        return self.proc.poll() is None

    def client(
        self, *, decode_responses: bool = False, protocol: int = 3, **kw: Any
    ) -> redis.Redis:
        """A new redis-py client for this server (TLS settings given at start are included)."""
        return connect(
            self.url,
            decode_responses=decode_responses,
            protocol=protocol,
            **{**self._client_kwargs, **kw},
        )

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server's log and stderr, for error messages."""
        parts = [_tail(self.logfile, lines), _tail(Path(self.workdir, "redis.stderr"), lines)]
        return "\n".join(p for p in parts if p)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the server (SIGKILL, SIGSTOP, SIGCONT...); `stop()` still cleans up."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.proc.pid, sig)

    def stop(self, nosave: bool = True, timeout: float = 5.0) -> None:
        """Shut the server down and reap it; idempotent and safe to call again from a handler.

        Sends `SHUTDOWN NOSAVE` (plain `SHUTDOWN` with `nosave=False`), then escalates to
        SIGTERM and SIGKILL if the process does not exit within `timeout` seconds.
        """
        with self._lock:
            self._stop_watchdog()
            if self.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.proc.pid, signal.SIGCONT)  # in case a test SIGSTOPped it
                self._send_shutdown(nosave)
                self._reap(timeout)
            if self._own_sockdir is not None:
                shutil.rmtree(self._own_sockdir, ignore_errors=True)
                self._own_sockdir = None
            atexit.unregister(self.stop)

    def _send_shutdown(self, nosave: bool) -> None:
        kwargs: dict[str, Any] = {
            **self._client_kwargs,
            "socket_connect_timeout": 1.0,
            "socket_timeout": 2.0,
        }
        try:
            client = connect(self.url, protocol=2, **kwargs)
        except (redis.RedisError, OSError, ValueError):
            return
        try:
            client.shutdown(nosave=nosave)
        except (redis.RedisError, OSError):
            pass  # gone already, auth, TLS, sentinel quirks: the signals below still work
        finally:
            with contextlib.suppress(Exception):
                client.close()

    def _reap(self, timeout: float) -> None:
        try:
            self.proc.wait(timeout=timeout)
            return
        except subprocess.TimeoutExpired:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def _stop_watchdog(self) -> None:
        # Kill the watchdog *before* reaping the server: once reaped, its pid could be reused
        # and the watchdog must never signal a stranger.
        wd = self._watchdog
        if wd is None:
            return
        if wd.poll() is None:
            wd.kill()
            wd.wait()
        if wd.stdin is not None:
            with contextlib.suppress(OSError):
                wd.stdin.close()
        self._watchdog = None


def _split_config_file(args: Sequence[str]) -> tuple[list[str], list[str]]:
    """Separate a leading config-file path (redis-server wants it first) from the options."""
    if args and not args[0].startswith("-"):
        return [args[0]], list(args[1:])
    return [], list(args)


def _wait_ready(
    proc: subprocess.Popen[bytes], url: str, client_kwargs: Mapping[str, Any], deadline: float
) -> bool:
    """Poll PING until it answers (True), the process exits or the deadline passes (False)."""
    kwargs: dict[str, Any] = {
        **client_kwargs,
        "socket_connect_timeout": 0.5,
        "socket_timeout": 1.0,
    }
    client = connect(url, protocol=2, **kwargs)
    try:
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                if client.ping():
                    return True
            except (redis.ConnectionError, redis.TimeoutError, OSError):
                pass  # not listening yet, or still loading (BusyLoadingError)
            time.sleep(0.02)
        return False
    finally:
        client.close()


def start_redis_server(
    args: Sequence[str],
    *,
    workdir: str,
    port: int | None = None,
    unixsocket: bool = False,
    ready_timeout: float = 10.0,
    tls: bool = False,
    client_kwargs: Mapping[str, Any] | None = None,
    executable: str | None = None,
) -> RedisProcess:
    """Start a private foreground `redis-server` and wait until it answers PING.

    The command line is `redis-server [CONFIG] --bind 127.0.0.1 --port P [--unixsocket S
    --unixsocketperm 700] --save "" --appendonly no --dir WORKDIR --logfile WORKDIR/redis.log
    [ARGS...] --daemonize no`, so `args` can override any default except daemonizing. A first
    argument not starting with `-` is taken as a config file (e.g. a sentinel's) and put first.

    Args:
        args: Extra redis-server arguments, e.g. `["--cluster-enabled", "yes"]`.
        workdir: The server's directory (created if missing, kept after stop for its logs).
        port: The TCP port; None picks a free one, or turns TCP off (0) with `unixsocket`.
            With `tls=True` it is the TLS port and the plain port is off. Cluster nodes also
            need `port + 10000` free, which a picked port does not guarantee.
        unixsocket: Also listen on `WORKDIR/redis.sock` (or a short temp dir when that path is
            too long for a socket); the url then uses the socket.
        ready_timeout: Seconds to wait for PING before giving up.
        tls: Serve TLS on `port`; pass the certificate options in `args` and the client's
            `ssl_*` settings in `client_kwargs`.
        client_kwargs: Extra redis-py client arguments for the readiness and shutdown clients.
        executable: The redis-server binary; default: the one on PATH.

    Returns:
        The running server.

    Raises:
        EmbeddedRedisError: No redis-server, or it exited or did not answer in time (the
            message carries the tail of its log).
    """
    exe = executable or shutil.which("redis-server")
    if exe is None:
        raise EmbeddedRedisError("no redis-server on PATH")
    work = Path(workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    ckw: dict[str, Any] = dict(client_kwargs or {})
    conf, rest = _split_config_file(args)
    attempts = 5 if port is None and not unixsocket else 1

    for attempt in range(attempts):
        own_sockdir: str | None = None
        sock: str | None = None
        if unixsocket:
            sock = str(work / "redis.sock")
            if len(sock.encode()) > _SUN_PATH_MAX:
                own_sockdir = tempfile.mkdtemp(
                    prefix="swr-", dir="/tmp" if os.name == "posix" else None
                )
                sock = os.path.join(own_sockdir, "redis.sock")
        tcp_port = (0 if unixsocket else free_port()) if port is None else port
        cmd = [exe, *conf, "--bind", "127.0.0.1"]
        if tls:
            cmd += ["--port", "0", "--tls-port", str(tcp_port)]
        else:
            cmd += ["--port", str(tcp_port)]
        if sock is not None:
            cmd += ["--unixsocket", sock, "--unixsocketperm", "700"]
        cmd += ["--save", "", "--appendonly", "no", "--dir", str(work)]
        cmd += ["--logfile", str(work / "redis.log"), *rest, "--daemonize", "no"]

        if sock is not None:
            url = f"unix://{sock}"
        else:
            url = f"{'rediss' if tls else 'redis'}://127.0.0.1:{tcp_port}/0"

        preexec = pdeathsig_preexec()
        with open(work / "redis.stderr", "ab") as err:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                cwd=str(work),
                start_new_session=True,
                preexec_fn=preexec,
            )
        watchdog = _start_watchdog(proc.pid) if preexec is None else None
        server = RedisProcess(
            port=tcp_port,
            url=url,
            proc=proc,
            workdir=str(work),
            unixsocket=sock,
            client_kwargs=ckw,
            watchdog=watchdog,
            own_sockdir=own_sockdir,
        )
        try:
            ready = _wait_ready(proc, url, ckw, time.monotonic() + ready_timeout)
        except BaseException:
            server.stop()
            raise
        if ready:
            return server
        exited = proc.poll() is not None
        tail = server.log_tail()
        server.stop()
        if exited and "already in use" in tail and attempt + 1 < attempts:
            continue  # the picked port was taken in the meantime: pick another
        what = f"exited with code {proc.returncode}" if exited else "did not answer PING"
        raise EmbeddedRedisError(
            f"redis-server {what} within {ready_timeout:g} s ({' '.join(cmd)}); "
            f"log tail:\n{tail or '(empty)'}"
        )
    raise AssertionError("unreachable")  # pragma: no cover
