"""Shapes of plain Redis replies that differ between RESP2 and RESP3, read one way.

A hash (HGETALL, HSCAN's page) is a dict in RESP3 and in redis-py's RESP2 callbacks, but a flat
``[field, value, ...]`` list where no callback applies (pipelined ``execute_command``); sorted-set
replies WITHSCORES are flat in RESP2 and pairs in RESP3.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from swarm_redis.engine.commands import text


def pairs(flat: Sequence[Any]) -> list[tuple[Any, Any]]:
    """``[a, b, c, d]`` as ``[(a, b), (c, d)]``."""
    return [(flat[i], flat[i + 1]) for i in range(0, len(flat), 2)]


def hash_items(reply: Any) -> list[tuple[Any, Any]]:
    """The (field, value) entries of a hash reply, a mapping or a flat list."""
    if isinstance(reply, Mapping):
        return list(reply.items())
    return pairs(reply)


def score_pairs(raw: Sequence[Any]) -> list[tuple[Any, str]]:
    """(member, score as integer text) of a ZRANGE WITHSCORES reply (RESP2 flat or RESP3 pairs)."""
    if raw and isinstance(raw[0], (list, tuple)):
        return [(m, _score_text(sc)) for m, sc in raw]
    return [(m, _score_text(sc)) for m, sc in pairs(raw)]


def _score_text(score: Any) -> str:
    value = float(text(score)) if not isinstance(score, (int, float)) else float(score)
    return str(int(value))
