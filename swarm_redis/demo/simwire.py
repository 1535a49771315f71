"""The simulated server's wire protocol: length-prefixed JSON, every frame authenticated.

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
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import socket
from typing import Any

import orjson

__all__ = [
    "MAX_REPLY_BYTES",
    "MAX_REQUEST_BYTES",
    "PROTOCOL",
    "Channel",
    "WireError",
]

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
