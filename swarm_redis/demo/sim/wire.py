"""What crosses the simulated server's socket and pipe: authenticated frames and JSON forms.

Nothing on the wire is ever executed: bodies are JSON (orjson) and each side decodes them into
plain values it checks.

Frame::

    length  4 bytes, big-endian: len(tag) + len(body), at most the receiver's limit
    tag     32 bytes: HMAC-SHA256(key, direction || seq (8 bytes, big-endian) || body)
    body    JSON

``direction`` is ``b"C"`` for client -> server frames and ``b"S"`` for the replies; ``seq``
counts the frames sent in that direction on this connection, from 0. The receiver computes the
tag it expects with its own counter, so a frame replayed, reordered, dropped or reflected within
a connection fails the check.

Handshake: the client's first frame (seq 0) is ``{"proto": PROTOCOL, "nonce": hex}``, tagged
with the shared key itself; the server answers (seq 0) ``{"nonce": hex}`` tagged with the session
key ``HMAC-SHA256(key, "swarm-sim session" || client nonce || server nonce)``, and every later
frame in both directions uses the session key. A fresh server nonce per connection means a frame
recorded on one connection is worthless on another; the client accepts the server only once its
answer carries the right tag, and the server accepts the client only once its first request does.

Whoever receives a bad tag, a frame above its size limit, a body that is not JSON or not the
expected shape, closes the connection (the server logs why).

:class:`~swarm_redis.demo.sim.model.SimConfig` and
:class:`~swarm_redis.demo.sim.model.SimReport` travel as plain JSON values
(:func:`config_to_json`, :func:`report_to_json` and their inverses).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from swarm_redis.demo.sim.model import LimitViolation, QueueCall, SimConfig, SimReport

__all__ = [
    "AUTHKEY_ENV",
    "MAX_REPLY_BYTES",
    "MAX_REQUEST_BYTES",
    "PROTOCOL",
    "Channel",
    "WireError",
    "config_from_json",
    "config_to_json",
    "report_from_json",
    "report_to_json",
]

#: Environment variable a replica process reads the server's authkey from (hex).
AUTHKEY_ENV = "SWARM_SIM_AUTHKEY"

PROTOCOL = "swarm-sim/1"
#: Largest request body the server reads (a queue call of ~1M ids fits).
MAX_REQUEST_BYTES = 16 * 1024 * 1024
#: Largest reply body a client reads (every status of a multi-million-task run fits).
MAX_REPLY_BYTES = 256 * 1024 * 1024
#: Shortest shared key a server accepts.
MIN_KEY_BYTES = 16

_TAG = 32
_HEADER = 4
_HELLO_MAX = 1024


class WireError(Exception):
    """The peer broke the protocol (bad tag, oversize or malformed frame) or went away."""


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    chunks = []
    left = n
    while left:
        chunk = sock.recv(min(left, 1 << 20))
        if not chunk:
            raise WireError("connection closed by the peer")
        chunks.append(chunk)
        left -= len(chunk)
    return b"".join(chunks)


def _tag(key: bytes, direction: bytes, seq: int, body: bytes) -> bytes:
    return hmac.new(key, direction + seq.to_bytes(8, "big") + body, hashlib.sha256).digest()


class Channel:
    """One end of an authenticated connection (not thread-safe: callers serialize).

    Args:
        sock: The connected socket.
        key: The shared key.
        side: ``"client"`` or ``"server"``.
        max_in: Largest body this end accepts.
    """

    def __init__(self, sock: socket.socket, key: bytes, *, side: str, max_in: int) -> None:
        self.sock = sock
        self._key = key
        self._send_key = key
        self._recv_key = key
        self._out = b"C" if side == "client" else b"S"
        self._in = b"S" if side == "client" else b"C"
        self._send_seq = 0
        self._recv_seq = 0
        self.max_in = max_in

    # --- frames ---------------------------------------------------------------------------------

    def send(self, obj: Any) -> None:
        """Send one JSON value as an authenticated frame."""
        body = orjson.dumps(obj, option=orjson.OPT_NON_STR_KEYS)
        tag = _tag(self._send_key, self._out, self._send_seq, body)
        self._send_seq += 1
        self.sock.sendall((len(body) + _TAG).to_bytes(_HEADER, "big") + tag + body)

    def recv(self) -> Any:
        """Receive one frame, check its size and tag, and decode its JSON body."""
        size = int.from_bytes(_recv_exact(self.sock, _HEADER), "big")
        if size < _TAG:
            raise WireError(f"frame of {size} bytes is shorter than its tag")
        if size - _TAG > self.max_in:
            raise WireError(f"frame of {size - _TAG} bytes is above the limit of {self.max_in}")
        frame = _recv_exact(self.sock, size)
        tag, body = frame[:_TAG], frame[_TAG:]
        expected = _tag(self._recv_key, self._in, self._recv_seq, body)
        if not hmac.compare_digest(tag, expected):
            raise WireError(f"bad MAC on frame {self._recv_seq} (forged, replayed or wrong key)")
        self._recv_seq += 1
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise WireError(f"frame {self._recv_seq - 1} is not JSON: {e}") from None

    def _session(self, client_nonce: bytes, server_nonce: bytes) -> None:
        material = b"swarm-sim session" + client_nonce + server_nonce
        session = hmac.new(self._key, material, hashlib.sha256).digest()
        self._send_key = self._recv_key = session

    # --- handshake ------------------------------------------------------------------------------

    def client_handshake(self) -> None:
        """Greet the server and check that it knows the key."""
        nonce = secrets.token_bytes(16)
        self.send({"proto": PROTOCOL, "nonce": nonce.hex()})
        # the server's answer is tagged with the session key, which needs its nonce: read the
        # frame first, then derive and check
        size = int.from_bytes(_recv_exact(self.sock, _HEADER), "big")
        if not _TAG <= size <= _TAG + _HELLO_MAX:
            raise WireError(f"handshake answer of {size} bytes")
        frame = _recv_exact(self.sock, size)
        tag, body = frame[:_TAG], frame[_TAG:]
        try:
            answer = orjson.loads(body)
            server_nonce = bytes.fromhex(answer["nonce"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            raise WireError("malformed handshake answer") from None
        if len(server_nonce) != 16:
            raise WireError("malformed handshake answer")
        self._session(nonce, server_nonce)
        if not hmac.compare_digest(tag, _tag(self._recv_key, self._in, 0, body)):
            raise WireError("the server failed authentication (wrong key?)")
        self._recv_seq = 1

    def server_handshake(self) -> None:
        """Check the client's greeting (tagged with the key) and answer with a fresh nonce."""
        limit, self.max_in = self.max_in, _HELLO_MAX  # nobody is authenticated yet: read little
        try:
            hello = self.recv()  # tagged with the shared key: a wrong key fails here
        finally:
            self.max_in = limit
        if (
            not isinstance(hello, dict)
            or hello.get("proto") != PROTOCOL
            or not isinstance(hello.get("nonce"), str)
        ):
            raise WireError(f"unexpected greeting {str(hello)[:80]!r}")
        try:
            client_nonce = bytes.fromhex(hello["nonce"])
        except ValueError:
            raise WireError("malformed greeting nonce") from None
        if len(client_nonce) != 16:
            raise WireError("malformed greeting nonce")
        server_nonce = secrets.token_bytes(16)
        self._session(client_nonce, server_nonce)
        self.send({"nonce": server_nonce.hex()})


# --- JSON forms of the config and the report ---------------------------------------------------


def _pairs(mapping: Mapping[int, Any]) -> list[list[Any]]:
    return [[int(k), v] for k, v in mapping.items()]


def config_to_json(config: SimConfig) -> dict[str, Any]:
    """A SimConfig as plain JSON values (int keys as pairs)."""
    return {
        "tasks": _pairs(config.tasks),
        "workflow_limit": config.workflow_limit,
        "array_limits": _pairs(config.array_limits),
        "upstreams": [[int(t), [int(u) for u in us]] for t, us in config.upstreams.items()],
        "step_s": list(config.step_s),
        "fail_rate": config.fail_rate,
        "resource_error_share": config.resource_error_share,
        "max_attempts": config.max_attempts,
        "always_fail": sorted(int(t) for t in config.always_fail),
        "queue_latency_s": list(config.queue_latency_s),
        "initial_statuses": _pairs(config.initial_statuses),
        "run_status": config.run_status,
        "seed": config.seed,
    }


def config_from_json(doc: Mapping[str, Any]) -> SimConfig:
    """The inverse of :func:`config_to_json` (SimConfig checks the values)."""
    return SimConfig(
        tasks={int(t): int(a) for t, a in doc["tasks"]},
        workflow_limit=int(doc["workflow_limit"]),
        array_limits={int(a): int(n) for a, n in doc["array_limits"]},
        upstreams={int(t): [int(u) for u in us] for t, us in doc["upstreams"]},
        step_s=(float(doc["step_s"][0]), float(doc["step_s"][1])),
        fail_rate=float(doc["fail_rate"]),
        resource_error_share=float(doc["resource_error_share"]),
        max_attempts=int(doc["max_attempts"]),
        always_fail=frozenset(int(t) for t in doc["always_fail"]),
        queue_latency_s=(float(doc["queue_latency_s"][0]), float(doc["queue_latency_s"][1])),
        initial_statuses={int(t): str(s) for t, s in doc["initial_statuses"]},
        run_status=str(doc["run_status"]),
        seed=None if doc["seed"] is None else int(doc["seed"]),
    )


def report_to_json(report: SimReport) -> dict[str, Any]:
    """A SimReport as plain JSON values (int keys as pairs)."""
    return {
        "queue_calls": report.queue_calls,
        "attempts_started": report.attempts_started,
        "resent": report.resent,
        "unknown_ids": report.unknown_ids,
        "duplicates": [list(d) for d in report.duplicates],
        "overlaps": [list(o) for o in report.overlaps],
        "limit_violations": [
            [v.server_time, v.scope, v.active, v.limit, v.task_id] for v in report.limit_violations
        ],
        "dependency_violations": [list(d) for d in report.dependency_violations],
        "wrong_array": [list(w) for w in report.wrong_array],
        "max_active": report.max_active,
        "max_active_per_array": _pairs(report.max_active_per_array),
        "statuses": _pairs(report.statuses),
        "attempts": _pairs(report.attempts),
        "counts": dict(report.counts),
        "run_status": report.run_status,
        "run_status_history": list(report.run_status_history),
        "heartbeats": report.heartbeats,
        "fetches": report.fetches,
        "queue_log": [
            [q.call_id, q.server_time, q.array_id, q.resource_key, list(q.task_ids), q.queued]
            for q in report.queue_log
        ],
    }


def _ints(values: Sequence[Any]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def report_from_json(doc: Mapping[str, Any]) -> SimReport:
    """The inverse of :func:`report_to_json`; raises KeyError/TypeError/ValueError if malformed."""
    return SimReport(
        queue_calls=int(doc["queue_calls"]),
        attempts_started=int(doc["attempts_started"]),
        resent=int(doc["resent"]),
        unknown_ids=int(doc["unknown_ids"]),
        duplicates=[(int(a), int(b), int(c)) for a, b, c in doc["duplicates"]],
        overlaps=[(int(a), int(b), int(c)) for a, b, c in doc["overlaps"]],
        limit_violations=[
            LimitViolation(str(w), str(s), int(a), int(n), int(t))
            for w, s, a, n, t in doc["limit_violations"]
        ],
        dependency_violations=[(int(a), int(b)) for a, b in doc["dependency_violations"]],
        wrong_array=[(int(a), int(b)) for a, b in doc["wrong_array"]],
        max_active=int(doc["max_active"]),
        max_active_per_array={int(a): int(n) for a, n in doc["max_active_per_array"]},
        statuses={int(t): str(s) for t, s in doc["statuses"]},
        attempts={int(t): int(n) for t, n in doc["attempts"]},
        counts={str(s): int(n) for s, n in doc["counts"].items()},
        run_status=str(doc["run_status"]),
        run_status_history=[str(s) for s in doc["run_status_history"]],
        heartbeats=int(doc["heartbeats"]),
        fetches=int(doc["fetches"]),
        queue_log=[
            QueueCall(
                int(c),
                str(w),
                int(a),
                str(k),
                _ints(ids),
                tuple((int(t), int(n)) for t, n in queued),
            )
            for c, w, a, k, ids, queued in doc["queue_log"]
        ],
    )
