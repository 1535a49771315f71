"""What the Lua-less implementations share: the record format helpers, replicas and batches,
and the transition rules that turn status changes into one plan of bulk writes (:class:`Writes`).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarm_redis.engine.keys import RunKeys

ACTIVE = frozenset("QIOR")
FINAL = frozenset("DF")
#: Field/value pairs per HSET and members per SADD/SREM in a transaction.
BULK = 1000
#: Cap of the event stream, as in the scripts' default.
EVENTS_MAXLEN = 10000

Cmd = tuple[Any, ...]


def chunks(seq: Sequence[Any], size: int) -> Iterable[Sequence[Any]]:
    """Consecutive slices of ``seq`` of at most ``size`` items."""
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


def record(raw: str) -> list[str]:
    """A task record split into its 8 fields (children stay one comma-joined string)."""
    return raw.split("|", 7)


def now_ms(time_reply: Any) -> int:
    """Milliseconds of a TIME reply (the Redis clock every lease is measured on)."""
    return int(time_reply[0]) * 1000 + int(time_reply[1]) // 1000


def mirror(obj: Any, rec: list[str]) -> None:
    """Copy a record's status and done count onto the caller's task object, if any."""
    if obj is not None:
        obj.status = rec[0]
        obj.num_upstreams_done = int(rec[1])


@dataclass(frozen=True)
class AltReplica:
    """A member of the run: id, incarnation token and lease length."""

    id: str
    incarnation: str
    ttl_ms: int


@dataclass
class AltBatch:
    """A claimed batch: the same facts the Lua claim records in ``batches``."""

    batch_id: str
    array_id: int
    resource_key: str
    task_ids: tuple[int, ...]
    tasks: list[Any]


@dataclass
class Writes:
    """What a transition plan writes, collected before the MULTI."""

    records: dict[int, list[str]] = field(default_factory=dict)
    moves: dict[tuple[str, str], list[int]] = field(default_factory=lambda: defaultdict(list))
    active: Counter[str] = field(default_factory=Counter)
    into: Counter[str] = field(default_factory=Counter)
    finals_queued: list[int] = field(default_factory=list)
    ready: list[int] = field(default_factory=list)
    changed: list[int] = field(default_factory=list)
    touched: list[int] = field(default_factory=list)
    propagated: int = 0

    def commands(self, keys: RunKeys, actor: str) -> list[Cmd]:
        """The bulk write commands of the plan (version bump and event included)."""
        out: list[Cmd] = []
        pairs: list[Any] = []
        for tid, rec in self.records.items():
            pairs += (tid, "|".join(rec))
        for part in chunks(pairs, 2 * BULK):
            out.append(("HSET", keys.task, *part))
        for (old, new), ids in self.moves.items():
            for part in chunks(ids, BULK):
                out.append(("SREM", keys.status_set(old), *part))
                out.append(("SADD", keys.status_set(new), *part))
        for arr, delta in self.active.items():
            if delta:
                out.append(("HINCRBY", keys.active, arr, delta))
        if self.finals_queued:
            out.append(("SREM", keys.queued, *self.finals_queued))
            out += [("LREM", keys.ready, 0, tid) for tid in self.finals_queued]
            out.append(("HDEL", keys.qres, *self.finals_queued))
        for part in chunks(self.ready, BULK):
            out.append(("SADD", keys.queued, *part))
            out.append(("RPUSH", keys.ready, *part))
        for status, n in self.into.items():
            out.append(("HINCRBY", keys.counters, "to:" + status, n))
        if self.propagated:
            out.append(("HINCRBY", keys.counters, "propagations", self.propagated))
        if self.changed or self.propagated:
            into = ",".join(f"{s}={n}" for s, n in sorted(self.into.items()))
            out.append(event(keys, actor, "update", "n", len(self.changed), "into", into))
        return out


def event(keys: RunKeys, actor: str, kind: str, *fields: Any) -> Cmd:
    return (
        "XADD", keys.events, "MAXLEN", "~", EVENTS_MAXLEN, "*",
        "actor", actor, "epoch", "", "type", kind, *fields,
    )  # fmt: skip


def transitions(
    w: Writes,
    records: dict[int, list[str]],
    changes: Iterable[tuple[int, str]],
    *,
    propagate: bool,
    stamp: int | None,
) -> list[str]:
    """Apply status changes to parsed records (the scripts' rules); the children strings of
    the completions to propagate."""
    completed: list[str] = []
    for tid, new in changes:
        rec = records.get(tid)
        if rec is None:
            continue
        old = rec[0]
        dirty = False
        if (stamp is None or rec[2] == "" or stamp >= int(rec[2])) and old not in FINAL:
            if stamp is not None and rec[2] != str(stamp):
                rec[2] = str(stamp)
                dirty = True
            if old != new:
                rec[0] = new
                w.moves[(old, new)].append(tid)
                if (old in ACTIVE) != (new in ACTIVE):
                    w.active[rec[4]] += 1 if new in ACTIVE else -1
                w.into[new] += 1
                w.changed.append(tid)
                dirty = True
        if propagate and rec[0] == "D" and "p" not in rec[3]:
            rec[3] += "p"
            dirty = True
            w.propagated += 1
            if rec[7]:
                completed.append(rec[7])
        if dirty:
            w.records[tid] = rec
    return completed
