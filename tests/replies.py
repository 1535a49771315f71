"""Typed reads of raw replies, for tests that look at a run's keys with a plain bytes client.

redis-py annotates replies loosely (``bytes | str`` values, an optional stream). A client made
with ``decode_responses=False`` (the fixtures' default) returns bytes; these helpers check that
shape and hand the reply on precisely typed.
"""

from __future__ import annotations

import redis


def as_bytes(value: object) -> bytes:
    """``value``, checked to be the bytes a non-decoding client returns."""
    assert isinstance(value, bytes), value
    return value


def stream_entries(client: redis.Redis, key: str) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Every entry of the stream at ``key`` (none when it does not exist), ids and fields as bytes."""
    entries = client.xrange(key)
    assert entries is not None  # XRANGE answers an array, empty for a missing key
    out: list[tuple[bytes, dict[bytes, bytes]]] = []
    for eid, fields in entries:
        assert fields is not None  # only XCLAIM answers nil fields (for deleted entries)
        out.append((as_bytes(eid), {as_bytes(k): as_bytes(v) for k, v in fields.items()}))
    return out


def scored_members(
    client: redis.Redis, key: str, start: int = 0, end: int = -1
) -> list[tuple[bytes, float]]:
    """``ZRANGE key start end WITHSCORES``: (member as bytes, score) pairs in rank order."""
    out: list[tuple[bytes, float]] = []
    for pair in client.zrange(key, start, end, withscores=True):
        assert isinstance(pair, (tuple, list)) and len(pair) == 2, pair
        out.append((as_bytes(pair[0]), float(pair[1])))
    return out
