"""Read-only inspection of runs: what the CLI, the exporter and a monitoring user look at.

Everything here uses plain read commands (HGETALL, SCARD, ZCARD, SCAN, TIME ...) and never a
script, so it works for a Redis ACL user that may only read (see the README (Operating a run)). The
reads of one run go out as one pipeline; they are not a point-in-time snapshot of a live run
(each script is atomic, but two of them may land between two reads of the pipeline).
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from swarm_redis.constants import (
    ACTIVE_TASK_STATUSES,
    FINAL_TASK_STATUSES,
    TASK_STATUSES,
    TERMINAL_RUN_STATUSES,
    WORKFLOW_RUN_STATUS_NAMES,
)
from swarm_redis.engine.commands import text
from swarm_redis.engine.coordination import LeaderInfo
from swarm_redis.engine.keys import RunKeys, meta_pattern, run_id_from_meta_key
from swarm_redis.engine.transport import is_cluster
from swarm_redis.engine.validation import decode_sync_time
from swarm_redis.errors import SwarmRedisError, UnknownRunError

__all__ = [
    "ArrayUsage",
    "BatchRecord",
    "CorruptValueError",
    "LeaderInfo",
    "ReplicaInfo",
    "RunLiveness",
    "RunSnapshot",
    "RunSummary",
    "is_cluster",
    "list_runs",
    "parse_batch",
    "parse_int",
    "read_liveness",
    "read_only_acl_rules",
    "read_snapshot",
    "run_status_name",
    "scan_keys",
    "shown",
    "str_map",
    "sync_text",
]

_SCAN_COUNT = 1000


class CorruptValueError(SwarmRedisError, ValueError):
    """A value read from Redis does not parse (hand-edited or damaged): the message names the
    key, the field and the value, and points to ``verify``."""

    def __init__(self, key: str, where: str, value: Any, problem: str) -> None:
        super().__init__(
            f"corrupt value in {key} at {where}: {shown(value)} ({problem}); "
            "run `swarm-redis verify` (or repair the key by hand)"
        )


def shown(value: Any, limit: int = 120) -> str:
    """A stored value for a message: quoted, non-UTF-8 bytes escaped, cut at ``limit``."""
    out = repr(_display(value))
    return out if len(out) <= limit else out[:limit] + "..."


def parse_int(value: Any, key: str, where: str) -> int:
    """A stored integer (field, member or value), else :class:`CorruptValueError`."""
    try:
        return int(text(value))
    except (TypeError, ValueError):
        raise CorruptValueError(key, where, value, "not an integer") from None


def read_only_acl_rules(prefix: str = "swarm") -> list[str]:
    """ACL SETUSER rules of a monitoring user: read commands on the prefix's keys only.

    Enough for ``runs``, ``status``, ``watch``, ``tasks``, ``task``, ``events``, ``replicas``,
    ``verify`` (MULTI/EXEC make its read a snapshot), ``export`` and the exporter; any write
    (scripts included) is refused with NOPERM. On a Cluster add ``+cluster|slots
    +cluster|shards +cluster|nodes``.
    """
    return [
        f"~{prefix}:*",
        "resetchannels",
        "-@all",
        "+@read",
        "-@dangerous",
        "+ping",
        "+hello",
        "+auth",
        "+select",
        "+client|setname",
        "+time",
        "+multi",
        "+exec",
        "+discard",
    ]


def scan_keys(client: Any, match: str, count: int = _SCAN_COUNT) -> Iterator[str]:
    """Every key matching ``match`` (SCAN; on a Cluster client, on each primary in turn)."""
    if is_cluster(client):
        keys = client.scan_iter(match=match, count=count, target_nodes=client.get_primaries())
    else:
        keys = client.scan_iter(match=match, count=count)
    for key in keys:
        yield text(key)


def _display(value: Any) -> str:
    """A reply element as str; bytes that are not UTF-8 escaped (``\\xff``), so a damaged
    value is shown (and then fails its parse by name) instead of stopping the read."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="backslashreplace")
    return str(value)


def str_map(raw: Any) -> dict[str, str]:
    """A hash reply (dict in RESP2 and RESP3, or a flat list) as a str -> str dict."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {_display(k): _display(v) for k, v in raw.items()}
    items = list(raw)
    return {_display(items[i]): _display(items[i + 1]) for i in range(0, len(items), 2)}


def _int(value: Any, default: int = 0) -> int:
    try:
        return int(text(value))
    except (TypeError, ValueError):
        return default


def _opt_int(value: Any) -> int | None:
    if value is None or text(value) == "":
        return None
    try:
        return int(text(value))
    except ValueError:
        return None


def run_status_name(letter: str) -> str:
    """``R`` -> ``RUNNING (R)``; an unknown letter as ``unknown (X)``."""
    name = WORKFLOW_RUN_STATUS_NAMES.get(letter)
    return f"{name} ({letter})" if name else f"unknown ({letter or '?'})"


def sync_text(raw: str | None) -> str | None:
    """The run's stored ``last_sync`` as a time to show: the value as the server gave it (an
    ISO date-time, or jobmon's text), without the storage tag; a value that does not decode is
    shown as stored."""
    try:
        value = decode_sync_time(raw)
    except ValueError:
        return raw
    if value is None:
        return None
    return value.isoformat(sep=" ") if isinstance(value, datetime.datetime) else value


def _time_ms(reply: Any) -> int:
    """TIME's reply (a (seconds, microseconds) pair) in milliseconds."""
    seconds, micros = reply
    return int(text(seconds)) * 1000 + int(text(micros)) // 1000


def _pipeline(client: Any, commands: Sequence[tuple[Any, ...]]) -> list[Any]:
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    replies: list[Any] = pipe.execute()
    return replies


@dataclass(frozen=True)
class BatchRecord:
    """A claimed batch: ``holder|incarnation|array|resource key|id,id,...`` in ``batches``.

    An empty holder means orphaned: taken over from a dead replica, waiting in ``orphans``.
    """

    holder: str
    incarnation: str
    array_id: str
    resource_key: str
    task_ids: tuple[int, ...]


def parse_batch(raw: Any, key: str, batch_id: Any) -> BatchRecord:
    """Decode a ``batches`` value (CorruptValueError naming the batch when it does not parse)."""
    try:
        parts = text(raw).split("|", 4)
        parts += [""] * (5 - len(parts))
        ids = tuple(int(i) for i in parts[4].split(",") if i)
    except ValueError:  # (UnicodeDecodeError is one)
        raise CorruptValueError(
            key, f"batch {shown(batch_id)}", raw, "expected holder|incarnation|array|key|ids"
        ) from None
    return BatchRecord(parts[0], parts[1], parts[2], parts[3], ids)


@dataclass(frozen=True)
class ArrayUsage:
    """One array's limit, active tasks and the capacity held by claimed batches."""

    array_id: str
    limit: int | None
    active: int
    reserved: int


@dataclass(frozen=True)
class ReplicaInfo:
    """A replica's lease (from ``replicas``) and the claimed batches it holds."""

    replica_id: str
    incarnation: str
    deadline_ms: int | None
    joined_ms: int | None
    lease_left_ms: int | None
    alive: bool
    batches: int
    claimed: int


@dataclass(frozen=True)
class RunSnapshot:
    """What ``status`` shows: counts, queue, claims, limits, replicas, leader and counters."""

    run_id: str
    prefix: str
    run_status: str
    version: int
    limit: int
    last_sync: str | None
    tasks: int
    counts: dict[str, int]
    ready: int
    queued: int
    claimed: int
    batches: int
    orphans: int
    reserved: int
    arrays: list[ArrayUsage]
    replicas: list[ReplicaInfo]
    leader: LeaderInfo | None
    counters: dict[str, int]
    events: int
    now_ms: int
    meta: dict[str, str] = field(repr=False)

    @property
    def active(self) -> int:
        """Tasks in Q/I/O/R: what counts against the workflow limit."""
        return sum(self.counts[s] for s in ACTIVE_TASK_STATUSES)

    @property
    def done(self) -> int:
        return self.counts["D"]

    @property
    def percent_done(self) -> float:
        return round(self.done / self.tasks * 100, 2) if self.tasks else 0.0

    @property
    def all_final(self) -> bool:
        """Every task DONE or ERROR_FATAL and nothing claimed (an empty run is not final)."""
        final = sum(self.counts[s] for s in FINAL_TASK_STATUSES)
        return self.tasks > 0 and final == self.tasks and self.claimed == 0

    @property
    def terminal(self) -> bool:
        """The run status is terminal (DONE, ERROR, STOPPED, TERMINATED, ABORTED)."""
        return self.run_status in TERMINAL_RUN_STATUSES

    @property
    def replicas_alive(self) -> int:
        return sum(1 for r in self.replicas if r.alive)

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (the ``--json`` form of ``status``)."""
        out = asdict(self)
        out.pop("meta")
        out.update(
            active=self.active,
            percent_done=self.percent_done,
            all_final=self.all_final,
            terminal=self.terminal,
            replicas_alive=self.replicas_alive,
        )
        return out


def _replicas(
    raw: Mapping[str, str], batches: Mapping[str, str], now: int, batches_key: str = ""
) -> list[ReplicaInfo]:
    held: dict[str, list[int]] = {}
    for batch_id, value in batches.items():
        b = parse_batch(value, batches_key, batch_id)
        entry = held.setdefault(b.holder, [0, 0])
        entry[0] += 1
        entry[1] += len(b.task_ids)
    out = []
    for rid, value in sorted(raw.items()):
        parts = value.split("|")
        deadline = _opt_int(parts[1]) if len(parts) > 1 else None
        joined = _opt_int(parts[2]) if len(parts) > 2 else None
        batches_n, claimed = held.get(rid, [0, 0])
        out.append(
            ReplicaInfo(
                replica_id=rid,
                incarnation=parts[0],
                deadline_ms=deadline,
                joined_ms=joined,
                lease_left_ms=None if deadline is None else deadline - now,
                alive=deadline is not None and deadline > now,
                batches=batches_n,
                claimed=claimed,
            )
        )
    return out


def _leader(raw: Mapping[str, str], now: int) -> LeaderInfo | None:
    """The lease, or None when no replica ever led (a cleared lease keeps its epoch)."""
    if not raw:
        return None
    return LeaderInfo.from_hash(raw, now)


def read_snapshot(client: Any, keys: RunKeys) -> RunSnapshot:
    """Read a run's figures in one pipeline of plain reads.

    Raises:
        UnknownRunError: The run has no meta key.
    """
    commands: list[tuple[Any, ...]] = [
        ("HGETALL", keys.meta),
        ("HLEN", keys.task),
        *(("SCARD", keys.status_set(s)) for s in TASK_STATUSES),
        ("ZCARD", keys.ready),
        ("SCARD", keys.queued),
        ("HLEN", keys.claims),
        ("HGETALL", keys.batches),
        ("LLEN", keys.orphans),
        ("HGETALL", keys.reserved),
        ("HGETALL", keys.arrays),
        ("HGETALL", keys.active),
        ("HGETALL", keys.replicas),
        ("HGETALL", keys.leader),
        ("HGETALL", keys.counters),
        ("XLEN", keys.events),
        ("TIME",),
    ]
    replies = _pipeline(client, commands)
    meta = str_map(replies[0])
    if not meta:
        raise UnknownRunError(f"workflow run {keys.run_id} not found under prefix {keys.prefix!r}")
    tasks = _int(replies[1])
    n = len(TASK_STATUSES)
    counts = {s: _int(v) for s, v in zip(TASK_STATUSES, replies[2 : 2 + n])}
    (ready, queued, claimed, batches_raw, orphans, reserved, arrays, active, replicas, leader,
     counters, events, now_raw) = replies[2 + n :]  # fmt: skip
    batches = str_map(batches_raw)
    reserved_map = str_map(reserved)
    limits = str_map(arrays)
    active_map = str_map(active)
    now = _time_ms(now_raw)
    array_ids = sorted(set(limits) | set(active_map), key=lambda a: (len(a), a))
    usage = [
        ArrayUsage(
            array_id=a,
            limit=_opt_int(limits.get(a)),
            active=_int(active_map.get(a)),
            reserved=_int(reserved_map.get(a)),
        )
        for a in array_ids
    ]
    return RunSnapshot(
        run_id=str(keys.run_id),
        prefix=keys.prefix,
        run_status=meta.get("status", ""),
        version=_int(meta.get("version")),
        limit=_int(meta.get("limit")),
        last_sync=sync_text(meta.get("last_sync")),
        tasks=tasks,
        counts=counts,
        ready=_int(ready),
        queued=_int(queued),
        claimed=_int(claimed),
        batches=len(batches),
        orphans=_int(orphans),
        reserved=_int(reserved_map.get("run")),
        arrays=usage,
        replicas=_replicas(str_map(replicas), batches, now, keys.batches),
        leader=_leader(str_map(leader), now),
        counters={k: _int(v) for k, v in sorted(str_map(counters).items())},
        events=_int(events),
        now_ms=now,
        meta=meta,
    )


@dataclass(frozen=True)
class RunLiveness:
    """Whether a run may still be in use: what ``purge`` checks before deleting.

    A run is live when its status is not terminal (DONE, ERROR, STOPPED, TERMINATED, ABORTED) or
    a replica holds a lease that has not expired by Redis's clock (``replicas``:
    ``incarnation|lease deadline ms|joined ms``, compared with TIME). A lease that cannot be
    parsed counts as live (stored data is not trusted to say "dead"). A run without a meta key
    has no status and counts as not live on that account.
    """

    run_status: str | None
    live_replicas: list[ReplicaInfo]
    expired_replicas: list[ReplicaInfo]
    now_ms: int
    unreadable_replicas: dict[str, str] = field(default_factory=dict)

    @property
    def status_live(self) -> bool:
        return self.run_status is not None and self.run_status not in TERMINAL_RUN_STATUSES

    @property
    def live(self) -> bool:
        return self.status_live or bool(self.live_replicas) or bool(self.unreadable_replicas)


def read_liveness(client: Any, keys: RunKeys) -> RunLiveness:
    """The run's status and replica leases, read in one pipeline with Redis's TIME."""
    status, replicas, now_raw = _pipeline(
        client, [("HGET", keys.meta, "status"), ("HGETALL", keys.replicas), ("TIME",)]
    )
    now = _time_ms(now_raw)
    leases = str_map(replicas)
    unreadable = {rid: v for rid, v in leases.items() if _LEASE_RE.fullmatch(v) is None}
    infos = _replicas({k: v for k, v in leases.items() if k not in unreadable}, {}, now)
    return RunLiveness(
        run_status=None if status is None else _display(status),
        live_replicas=[r for r in infos if r.alive],
        expired_replicas=[r for r in infos if not r.alive],
        now_ms=now,
        unreadable_replicas=unreadable,
    )


_LEASE_RE = re.compile(r"[^|]*\|-?[0-9]{1,19}\|(-?[0-9]{1,19})?")


# --- runs -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunSummary:
    """One line of ``runs``."""

    run_id: str
    status: str
    tasks: int
    done: int
    failed: int
    claimed: int

    @property
    def percent_done(self) -> float:
        return round(self.done / self.tasks * 100, 2) if self.tasks else 0.0

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "percent_done": self.percent_done}


def list_runs(client: Any, prefix: str) -> list[RunSummary]:
    """Every run under ``prefix`` (SCAN over meta keys, each primary of a Cluster)."""
    run_ids = sorted(
        {
            run_id
            for k in scan_keys(client, meta_pattern(prefix))
            if (run_id := run_id_from_meta_key(prefix, k)) is not None
        },
        key=int,
    )
    out = []
    for run_id in run_ids:
        keys = RunKeys(prefix, run_id)
        status, tasks, done, failed, claimed = _pipeline(
            client,
            [
                ("HGET", keys.meta, "status"),
                ("HLEN", keys.task),
                ("SCARD", keys.status_set("D")),
                ("SCARD", keys.status_set("F")),
                ("HLEN", keys.claims),
            ],
        )
        out.append(
            RunSummary(
                run_id,
                "" if status is None else _display(status),
                _int(tasks),
                _int(done),
                _int(failed),
                _int(claimed),
            )
        )
    return out


_MOVED_TO_TASKS = frozenset({"TaskDetail", "list_tasks", "task_detail"})


def __getattr__(name: str) -> Any:
    """``TaskDetail``, ``list_tasks`` and ``task_detail`` live in :mod:`swarm_redis.ops.tasks`;
    imports from here (and from the old ``swarm_redis.inspect``) keep working."""
    if name in _MOVED_TO_TASKS:
        from swarm_redis.ops import tasks

        return getattr(tasks, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
