"""The simulated server's process: serving the model over TCP, and starting and stopping it.

The server is one OS process (``python -m swarm_redis.demo.sim``, configured through its stdin
as JSON) holding the whole model (:class:`~swarm_redis.demo.sim.model.SimCore`) in memory and
serving requests over TCP (127.0.0.1 and a free port by default) with the protocol of
:mod:`swarm_redis.demo.sim.wire`. Each client connection gets a thread; one lock serializes the
model, so its checks see every instant; a clock thread moves tasks along.

Lifetime: :meth:`SimServer.start` returns once the server listens; :meth:`SimServer.stop`
shuts it down and returns the final report. The server runs in its own session and ignores
SIGINT (a terminal Ctrl-C reaches only the parent, whose cleanup stops it); it exits by itself
when its parent dies (its stdin pipe closes).
"""

from __future__ import annotations

import logging
import os
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from types import TracebackType
from typing import Any

import orjson

from swarm_redis.demo.sim import wire
from swarm_redis.demo.sim.client import SimClient
from swarm_redis.demo.sim.model import SimConfig, SimCore, SimReport
from swarm_redis.errors import InvalidInputError
from swarm_redis.replica.gateway import GatewayError

__all__ = ["SimServer", "child_main", "listen", "serve_connection"]

logger = logging.getLogger(__name__)

# --- serving ------------------------------------------------------------------------------------

_CALLS = frozenset(
    {
        "queue_task_batch",
        "get_task_statuses",
        "log_heartbeat",
        "update_run_status",
        "signal_run_status",
        "report",
    }
)

#: Seconds a new connection has to complete the handshake.
HANDSHAKE_TIMEOUT_S = 10.0
#: Seconds the process waits, once asked to shut down, for its final report to be sent (a run of
#: 20k tasks takes well over the old fixed 50 ms to report).
SHUTDOWN_ANSWER_S = 60.0
_SHUTDOWN_ASKED = threading.Event()
_SHUTDOWN_ANSWERED = threading.Event()


def _result_json(name: str, result: Any) -> Any:
    if isinstance(result, SimReport):
        return wire.report_to_json(result)
    return result


def serve_connection(
    core: SimCore, sock: socket.socket, authkey: bytes, stop: threading.Event
) -> None:
    """Authenticate one client, then answer its calls until it disconnects or breaks the protocol.

    A bad MAC, an oversize or malformed frame closes the connection with a logged reason; a
    well-formed request the model refuses gets an error answer and the connection stays.
    """
    peer = _peer(sock)
    channel = wire.Channel(sock, authkey, side="server", max_in=wire.MAX_REQUEST_BYTES)
    with sock:
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT_S)
            channel.server_handshake()
            sock.settimeout(None)
        except (wire.WireError, OSError) as e:
            logger.warning("simulated server: closing connection from %s: handshake: %s", peer, e)
            return
        while not stop.is_set():
            try:
                request = channel.recv()
            except wire.WireError as e:
                if "closed by the peer" not in str(e):
                    logger.warning("simulated server: closing connection from %s: %s", peer, e)
                return
            except OSError:
                return
            if (
                not isinstance(request, dict)
                or not isinstance(request.get("call"), str)
                or not isinstance(request.get("args"), list)
            ):
                logger.warning(
                    "simulated server: closing connection from %s: malformed request %.80r",
                    peer,
                    request,
                )
                return
            name, args = request["call"], request["args"]
            try:
                if name == "shutdown":
                    _SHUTDOWN_ASKED.set()
                    stop.set()
                    core.wake()
                    try:
                        report = core.report(include_log=bool(args and args[0]))
                        channel.send({"ok": wire.report_to_json(report)})
                    finally:
                        _SHUTDOWN_ANSWERED.set()
                    return
                if name not in _CALLS:
                    channel.send({"err": f"unknown call {name[:80]!r}"})
                    continue
                try:
                    result = getattr(core, name)(*args)
                except Exception as e:  # a bad request must not kill the server
                    channel.send({"err": f"{type(e).__name__}: {e}"})
                else:
                    channel.send({"ok": _result_json(name, result)})
            except OSError:  # the client died waiting
                return


def _peer(sock: socket.socket) -> str:
    try:
        name = sock.getpeername()
    except OSError:
        return "?"
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name) or "local"


def _accept_loop(
    core: SimCore, listener: socket.socket, authkey: bytes, stop: threading.Event
) -> None:
    """Hand each new connection to its own thread."""
    while not stop.is_set():
        try:
            sock, _ = listener.accept()
        except OSError:
            if stop.is_set():
                return
            logger.warning("simulated server: accept failed", exc_info=True)
            time.sleep(0.05)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(
            target=serve_connection,
            args=(core, sock, authkey, stop),
            daemon=True,
            name="sim-conn",
        ).start()


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    return listener


def _watch_parent(parent_pid: int, stop: threading.Event) -> None:
    """Stop when the parent closes our stdin (it died, or stop() closed it) or is gone."""

    def eof() -> None:
        sys.stdin.buffer.read()
        stop.set()

    threading.Thread(target=eof, daemon=True, name="sim-stdin").start()
    while not stop.wait(0.5):
        if os.getppid() != parent_pid:
            stop.set()


def child_main() -> None:
    """The server process (``python -m swarm_redis.demo.sim``): config on stdin, address on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s sim[{os.getpid()}] %(levelname)s %(message)s"
    )
    stop = threading.Event()
    try:
        size = int.from_bytes(sys.stdin.buffer.read(8), "big")
        doc = orjson.loads(sys.stdin.buffer.read(size))
        config = wire.config_from_json(doc["config"])
        host, port, parent_pid = str(doc["host"]), int(doc["port"]), int(doc["parent_pid"])
        authkey = bytes.fromhex(doc["authkey"])
        core = SimCore(config)
        listener = listen(host, port)
    except Exception as e:
        print(f"error {type(e).__name__}: {e}", flush=True)
        return
    for target, args in (
        (core.run_clock, (stop,)),
        (_accept_loop, (core, listener, authkey, stop)),
        (_watch_parent, (parent_pid, stop)),
    ):
        threading.Thread(target=target, args=args, daemon=True).start()
    bound_host, bound_port = listener.getsockname()[:2]
    print(f"ready {bound_host} {bound_port}", flush=True)
    stop.wait()
    if _SHUTDOWN_ASKED.is_set():  # the final report must leave before the process ends
        _SHUTDOWN_ANSWERED.wait(SHUTDOWN_ANSWER_S)
    time.sleep(0.05)
    listener.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # not a normal exit: daemon threads may hold stdin's lock (fatal at finalization)


class SimServer:
    """A running simulated server process; use :meth:`start`, :meth:`client`, :meth:`stop`."""

    def __init__(
        self, process: subprocess.Popen[bytes], address: tuple[str, int], authkey: bytes
    ) -> None:
        self._process = process
        self._address = address
        self.authkey = authkey
        self.final_report: SimReport | None = None

    @classmethod
    def start(
        cls,
        config: SimConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        authkey: bytes | None = None,
        timeout: float = 60.0,
    ) -> SimServer:
        """Start the server process (``python -m swarm_redis.demo.sim``); return once it listens.

        Args:
            config: The DAG, limits and behaviour.
            host: Address to listen on: loopback by default. Listen elsewhere only on a private
                network (a compose network, say) with a key of your own.
            port: Port (0: a free one).
            authkey: Shared key, at least 16 bytes (default: 16 random bytes).
            timeout: Seconds to wait for the server to listen.
        """
        key = authkey if authkey is not None else secrets.token_bytes(16)
        if len(key) < wire.MIN_KEY_BYTES:
            raise InvalidInputError(
                f"the simulated server's authkey must be at least {wire.MIN_KEY_BYTES} bytes"
            )
        payload = orjson.dumps(
            {
                "config": wire.config_to_json(config),
                "host": host,
                "port": int(port),
                "authkey": key.hex(),
                "parent_pid": os.getpid(),
            }
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "swarm_redis.demo.sim"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a terminal Ctrl-C reaches only the parent, which stops us
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(len(payload).to_bytes(8, "big") + payload)
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], timeout)
            line = process.stdout.readline().decode() if ready else ""
        except OSError as e:
            line = f"error {e}"
        if not line.startswith("ready "):
            process.kill()
            process.wait(timeout)
            why = line.strip() or f"no answer within {timeout} s"
            raise GatewayError(f"the simulated server failed to start: {why}")
        _, bound_host, bound_port = line.split()
        server = cls(process, (bound_host, int(bound_port)), key)
        logger.info("simulated server pid %s listening on %s", process.pid, server.address)
        return server

    @property
    def address(self) -> str:
        """``"HOST:PORT"``, for :class:`SimClient` and a replica's ``--sim`` option."""
        return f"{self._address[0]}:{self._address[1]}"

    @property
    def authkey_hex(self) -> str:
        """The authkey as hex, for ``SWARM_SIM_AUTHKEY`` or a replica's ``--sim-key``."""
        return self.authkey.hex()

    @property
    def pid(self) -> int:
        """The server process id."""
        return self._process.pid

    def alive(self) -> bool:
        """True while the server process runs."""
        return self._process.poll() is None

    def client(self, timeout: float = 30.0) -> SimClient:
        """A new connection to the server."""
        return SimClient(self._address, self.authkey, timeout=timeout)

    def report(self, include_log: bool = False) -> SimReport:
        """What the server observed so far (the final report once stopped)."""
        if self.final_report is not None:
            return self.final_report
        with self.client() as c:
            return c.report(include_log)

    def signal_run_status(self, status: str) -> str:
        """Force the run's status on the server (test hook)."""
        with self.client() as c:
            return c.signal_run_status(status)

    def stop(self, timeout: float = 5.0, include_log: bool = False) -> SimReport | None:
        """Shut the server down (idempotent); its final report, None if it was already gone."""
        if self.alive() and self.final_report is None:
            try:
                with self.client(timeout=timeout) as c:
                    self.final_report = c.shutdown(include_log)
            except GatewayError as e:
                logger.warning("simulated server did not shut down cleanly: %s", e)
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                stream.close()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout)
        return self.final_report

    def __enter__(self) -> SimServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
