"""The client side of the simulated server: the replica gateway over an authenticated socket."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Sequence
from types import TracebackType
from typing import Any

from swarm_redis.demo.sim import wire
from swarm_redis.demo.sim.model import SimReport
from swarm_redis.errors import InvalidInputError
from swarm_redis.replica.gateway import GatewayError, StatusesByLetter

__all__ = ["SimClient"]


def _parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(address, tuple):
        return address
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInputError(f"simulated server address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _authkey(authkey: bytes | str | None) -> bytes:
    if authkey is None:
        authkey = os.environ.get(wire.AUTHKEY_ENV, "")
        if not authkey:
            raise InvalidInputError(f"no authkey given and {wire.AUTHKEY_ENV} is not set")
    if isinstance(authkey, str):
        try:
            return bytes.fromhex(authkey.strip())
        except ValueError:
            raise InvalidInputError("the simulated server's authkey must be hex") from None
    return authkey


class SimClient:
    """The gateway over a connection to a :class:`SimServer` (thread-safe).

    Each call is one authenticated request and its answer. After a failed call (timeout, broken
    connection) the connection is dropped and the next call opens a new one.

    Args:
        address: ``"HOST:PORT"`` (:attr:`SimServer.address`) or a (host, port) tuple.
        authkey: The server's key, bytes or hex; default: the ``SWARM_SIM_AUTHKEY`` variable.
        timeout: Seconds to wait for each answer before raising GatewayError.
    """

    def __init__(
        self,
        address: str | tuple[str, int],
        authkey: bytes | str | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.address = _parse_address(address)
        self.timeout = timeout
        self._key = _authkey(authkey)
        self._lock = threading.Lock()
        self._closed = False
        self._channel: wire.Channel | None = self._connect()

    def _connect(self) -> wire.Channel:
        try:
            sock = socket.create_connection(self.address, timeout=self.timeout)
        except OSError as e:
            raise GatewayError(f"cannot reach the simulated server at {self.address}: {e}") from e
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            channel = wire.Channel(sock, self._key, side="client", max_in=wire.MAX_REPLY_BYTES)
            channel.client_handshake()
        except (OSError, wire.WireError) as e:
            sock.close()
            raise GatewayError(f"cannot reach the simulated server at {self.address}: {e}") from e
        return channel

    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            if self._closed:
                raise GatewayError("the connection to the simulated server is closed")
            channel = self._channel or self._connect()
            self._channel = channel
            try:
                channel.sock.settimeout(self.timeout)
                channel.send({"call": name, "args": list(args)})
                reply = channel.recv()
            except (OSError, wire.WireError) as e:
                self._channel = None
                channel.sock.close()
                what = "no answer within" if isinstance(e, TimeoutError) else "failed:"
                detail = f"{self.timeout} s" if isinstance(e, TimeoutError) else str(e)
                raise GatewayError(f"{name} {what} {detail}") from e
        if isinstance(reply, dict) and "ok" in reply:
            return reply["ok"]
        if isinstance(reply, dict) and isinstance(reply.get("err"), str):
            raise GatewayError(f"{name} refused: {reply['err']}")
        raise GatewayError(f"{name}: malformed answer {str(reply)[:80]!r}")

    def _shaped(self, name: str, reply: Any) -> tuple[StatusesByLetter, str | None]:
        try:
            answer, when = reply
            statuses = {str(s): [int(t) for t in ids] for s, ids in answer.items()}
        except (TypeError, ValueError, AttributeError):
            raise GatewayError(f"{name}: malformed answer {str(reply)[:80]!r}") from None
        if when is not None and not isinstance(when, str):
            raise GatewayError(f"{name}: malformed server time {when!r}")
        return statuses, when

    def _report(self, name: str, reply: Any) -> SimReport:
        try:
            return wire.report_from_json(reply)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise GatewayError(f"{name}: malformed report") from None

    def queue_task_batch(
        self, array_id: int, task_ids: Sequence[int], resource_key: str
    ) -> tuple[StatusesByLetter, str | None]:
        """Queue the tasks that are G or A; every requested id's status, and the server time."""
        reply = self._call(
            "queue_task_batch", int(array_id), [int(t) for t in task_ids], str(resource_key)
        )
        return self._shaped("queue_task_batch", reply)

    def get_task_statuses(self, since: str | None) -> tuple[StatusesByLetter, str]:
        """Statuses of the tasks changed at or after ``since`` (all if None), and the time now."""
        answer, when = self._shaped("get_task_statuses", self._call("get_task_statuses", since))
        if when is None:
            raise GatewayError("get_task_statuses: no server time in the answer")
        return answer, when

    def log_heartbeat(self, run_status: str) -> str:
        """Report the run's status; the status the server holds afterwards."""
        return str(self._call("log_heartbeat", run_status))

    def update_run_status(self, status: str) -> str:
        """Ask for a run-status transition; the status the server holds afterwards."""
        return str(self._call("update_run_status", status))

    def signal_run_status(self, status: str) -> str:
        """Force the run's status on the server (test hook: resume or stop signals)."""
        return str(self._call("signal_run_status", status))

    def report(self, include_log: bool = False) -> SimReport:
        """What the server observed so far."""
        return self._report("report", self._call("report", bool(include_log)))

    def shutdown(self, include_log: bool = False) -> SimReport:
        """Stop the server; its final report."""
        return self._report("shutdown", self._call("shutdown", bool(include_log)))

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._closed = True
            if self._channel is not None:
                self._channel.sock.close()
                self._channel = None

    def __enter__(self) -> SimClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
