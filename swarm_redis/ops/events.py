"""Reading a run's event stream (``<prefix>:{<run>}:events``), written by the Lua scripts.

Each entry has the fields ``actor`` (replica id or "-"), ``epoch`` (leadership epoch or ""),
``type`` and the fields of its type; the README (Operating a run) lists them. Entry ids are Redis
stream ids (``<ms>-<seq>``), so the id also tells when the event happened (Redis time).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from swarm_redis.engine.commands import text
from swarm_redis.engine.keys import RunKeys
from swarm_redis.ops.reads import str_map

__all__ = [
    "Event",
    "check_stream_id",
    "follow_events",
    "format_event",
    "read_events",
    "read_last_events",
]

_PAGE = 1000
_STREAM_ID = re.compile(r"([0-9]{1,20})(?:-([0-9]{1,20}))?")
_U64_MAX = (1 << 64) - 1


def check_stream_id(value: str) -> str:
    """``<ms>-<seq>`` or ``<ms>`` (both parts unsigned 64-bit), as XRANGE takes it.

    Raises:
        ValueError: Anything else, with a message for the command line.
    """
    match = _STREAM_ID.fullmatch(value.strip())
    if match is None or any(int(p) > _U64_MAX for p in match.groups() if p is not None):
        raise ValueError(
            f"{value!r} is not an event id: expected <ms>-<seq> or <ms> (as `events` prints)"
        )
    return value.strip()


@dataclass(frozen=True)
class Event:
    """One stream entry."""

    id: str
    fields: dict[str, str]

    @property
    def type(self) -> str:
        return self.fields.get("type", "")

    @property
    def time_ms(self) -> int:
        """Redis time of the event, from the entry id."""
        return int(self.id.split("-")[0])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "time_ms": self.time_ms, **self.fields}


def _event(entry: Any) -> Event:
    entry_id, raw = entry
    return Event(text(entry_id), str_map(raw))  # (str_map escapes bytes that are not UTF-8)


def _unwrap(entries: Any) -> list[Any]:
    """XREAD's entries of one stream (redis-py wraps them in one more list under RESP3)."""
    items = list(entries or [])
    if len(items) == 1 and isinstance(items[0], list):
        inner = items[0]
        if not inner or not isinstance(inner[0], (bytes, str)):
            return list(inner)
    return items


def read_events(
    client: Any, keys: RunKeys, *, since: str | None = None, count: int | None = None
) -> Iterator[Event]:
    """Events after ``since`` (exclusive; default: from the oldest kept), oldest first."""
    start = "-" if since is None else f"({since}"
    left = count
    while left is None or left > 0:
        page = _PAGE if left is None else min(_PAGE, left)
        entries = client.xrange(keys.events, min=start, max="+", count=page)
        if not entries:
            return
        for entry in entries:
            event = _event(entry)
            yield event
        if left is not None:
            left -= len(entries)
        start = f"({event.id}"
        if len(entries) < page:
            return


def read_last_events(
    client: Any, keys: RunKeys, count: int, *, since: str | None = None
) -> list[Event]:
    """The latest ``count`` events (after ``since``, exclusive, when given), oldest first.

    Read newest first with XREVRANGE in pages of at most 1000 entries.
    """
    stop = "-" if since is None else f"({since}"
    start = "+"
    out: list[Event] = []
    while len(out) < count:
        page = min(_PAGE, count - len(out))
        entries = client.xrevrange(keys.events, max=start, min=stop, count=page)
        out += [_event(entry) for entry in entries]
        if len(entries) < page:
            break
        start = f"({out[-1].id}"
    out.reverse()
    return out


def follow_events(
    client: Any, keys: RunKeys, *, after: str = "$", block_ms: int = 1000
) -> Iterator[Event | None]:
    """New events as they arrive (XREAD BLOCK); yields None after each quiet ``block_ms``.

    The None lets the caller check its own stop conditions between waits. ``after`` is the id
    to read after ("$": only events added from now on).
    """
    last = after
    if last == "$":
        info = client.xrevrange(keys.events, max="+", min="-", count=1)
        last = text(info[0][0]) if info else "0-0"
    while True:
        reply = client.xread({keys.events: last}, count=_PAGE, block=block_ms)
        streams = (
            list(reply.values()) if isinstance(reply, Mapping) else [s[1] for s in reply or []]
        )
        got = False
        for entries in streams:
            for entry in _unwrap(entries):
                event = _event(entry)
                last = event.id
                got = True
                yield event
        if not got:
            yield None


def format_event(event: Event) -> str:
    """One human line: time, id, type, actor (and epoch), then the type's fields."""
    when = datetime.datetime.fromtimestamp(event.time_ms / 1000, tz=datetime.timezone.utc)
    who = event.fields.get("actor", "-")
    epoch = event.fields.get("epoch", "")
    if epoch:
        who += f"@{epoch}"
    rest = " ".join(
        f"{k}={v}" for k, v in event.fields.items() if k not in ("type", "actor", "epoch")
    )
    return f"{when:%H:%M:%S}.{event.time_ms % 1000:03d} {event.id} {event.type:<11} {who:<10} {rest}".rstrip()
