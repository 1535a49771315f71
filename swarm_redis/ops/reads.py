"""Read-only inspection of runs: what the CLI, the exporter and a monitoring user look at.

Everything here uses plain read commands (HGETALL, SCARD, ZCARD, SCAN, TIME ...) and never a
script, so it works for a Redis ACL user that may only read (see the README (Operating a run)). The
reads of one run go out as one pipeline; they are not a point-in-time snapshot of a live run
(each script is atomic, but two of them may land between two reads of the pipeline).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from swarm_redis.constants import (
    ACTIVE_TASK_STATUSES,
    FINAL_TASK_STATUSES,
    TASK_STATUS_NAMES,
    TASK_STATUSES,
    TERMINAL_RUN_STATUSES,
)
from swarm_redis.engine.commands import (
    TaskState,
    decode_record,
    slice_names,
    text,
    with_slices,
)
from swarm_redis.engine.coordination import LeaderInfo
from swarm_redis.engine.keys import RunKeys, meta_pattern, run_id_from_meta_key
from swarm_redis.engine.transport import is_cluster
from swarm_redis.errors import UnknownRunError

__all__ = [
    "ArrayUsage",
    "BatchRecord",
    "LeaderInfo",
    "ReplicaInfo",
    "RunLiveness",
    "RunSnapshot",
    "RunSummary",
    "TaskDetail",
    "is_cluster",
    "list_runs",
    "list_tasks",
    "parse_batch",
    "read_liveness",
    "read_only_acl_rules",
    "read_snapshot",
    "scan_keys",
    "str_map",
    "task_detail",
]

_SCAN_COUNT = 1000


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


def str_map(raw: Any) -> dict[str, str]:
    """A hash reply (dict in RESP2 and RESP3, or a flat list) as a str -> str dict."""
    if raw is None:
        return {}
    if isinstance(raw, Mapping):
        return {text(k): text(v) for k, v in raw.items()}
    items = list(raw)
    return {text(items[i]): text(items[i + 1]) for i in range(0, len(items), 2)}


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


def parse_batch(raw: str) -> BatchRecord:
    """Decode a ``batches`` value."""
    parts = raw.split("|", 4)
    parts += [""] * (5 - len(parts))
    ids = tuple(int(i) for i in parts[4].split(",") if i)
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


def _replicas(raw: Mapping[str, str], batches: Mapping[str, str], now: int) -> list[ReplicaInfo]:
    held: dict[str, list[int]] = {}
    for value in batches.values():
        b = parse_batch(value)
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
        last_sync=meta.get("last_sync") or None,
        tasks=tasks,
        counts=counts,
        ready=_int(ready),
        queued=_int(queued),
        claimed=_int(claimed),
        batches=len(batches),
        orphans=_int(orphans),
        reserved=_int(reserved_map.get("run")),
        arrays=usage,
        replicas=_replicas(str_map(replicas), batches, now),
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
        run_status=None if status is None else text(status),
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
                "" if status is None else text(status),
                _int(tasks),
                _int(done),
                _int(failed),
                _int(claimed),
            )
        )
    return out


# --- tasks ----------------------------------------------------------------------------------


def _record_dict(state: TaskState) -> dict[str, Any]:
    return {
        "task_id": state.task_id,
        "status": state.status,
        "done": state.num_upstreams_done,
        "upstreams": state.num_upstreams,
        "start": state.start,
        "array_id": state.array_id,
        "propagated": state.propagated,
        "stamp": state.stamp,
        "downstream": list(state.downstream_ids),
    }


def _with_kids(client: Any, keys: RunKeys, state: TaskState) -> TaskState:
    """``state`` with its downstream ids read from its ``kids`` slices, if it has some."""
    if not state.slices:
        return state
    names = slice_names(state.task_id, state.slices)
    raws: list[Any] = []
    for at in range(0, len(names), 50):
        raws += client.execute_command("HMGET", keys.kids, *names[at : at + 50])
    return with_slices(state, raws)


def _scan_records(client: Any, key: str, count: int = _SCAN_COUNT) -> Iterator[TaskState]:
    for field_, raw in client.hscan_iter(key, count=count):
        yield decode_record(int(text(field_)), raw)


def list_tasks(
    client: Any,
    keys: RunKeys,
    *,
    status: str | None = None,
    array_id: int | None = None,
    limit: int = 50,
) -> tuple[list[dict[str, Any]], int | None]:
    """Up to ``limit`` tasks (sorted by id) matching the filters, and the total when known.

    With ``status`` it scans that status set (total = its size); otherwise it scans the task
    records (total known only without ``array_id``).
    """
    found: list[TaskState] = []
    total: int | None
    if status is not None:
        total = _int(client.execute_command("SCARD", keys.status_set(status)))
        ids: list[int] = []
        for member in client.sscan_iter(keys.status_set(status), count=_SCAN_COUNT):
            ids.append(int(text(member)))
        ids.sort()
        if array_id is not None:
            total = None
        for start in range(0, len(ids), _SCAN_COUNT):
            batch = ids[start : start + _SCAN_COUNT]
            raws = client.execute_command("HMGET", keys.task, *batch)
            for task_id, raw in zip(batch, raws):
                if raw is None:
                    continue
                state = decode_record(task_id, raw)
                if array_id is None or state.array_id == array_id:
                    found.append(state)
            if len(found) >= limit:
                break
    else:
        total = _int(client.execute_command("HLEN", keys.task)) if array_id is None else None
        for state in _scan_records(client, keys.task):
            if array_id is None or state.array_id == array_id:
                found.append(state)
    found.sort(key=lambda s: s.task_id)
    return [_record_dict(s) for s in found[:limit]], total


@dataclass(frozen=True)
class TaskDetail:
    """Everything ``task`` shows about one task, and the verdict on why it is not running."""

    task: dict[str, Any]
    downstream: list[dict[str, Any]]
    upstream: list[dict[str, Any]]
    scanned_records: int
    queue_position: int | None
    queue_length: int
    claim_batch: str | None
    claim_replica: str | None
    claim_replica_alive: bool | None
    run_status: str
    run_active: int
    run_limit: int
    run_reserved: int
    array_active: int
    array_limit: int | None
    array_reserved: int
    verdict: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _brief(state: TaskState | None, task_id: int) -> dict[str, Any]:
    if state is None:
        return {"task_id": task_id, "status": None}
    return {
        "task_id": task_id,
        "status": state.status,
        "done": state.num_upstreams_done,
        "upstreams": state.num_upstreams,
        "propagated": state.propagated,
    }


def _verdict(d: dict[str, Any]) -> str:
    """One line that answers "why is this task not running?"."""
    s = d["status"]
    name = TASK_STATUS_NAMES.get(s, s)
    if s == "D":
        return "DONE: it ran and finished"
    if s == "F":
        return "ERROR_FATAL: it failed for good and will not run again in this run"
    if s in ACTIVE_TASK_STATUSES:
        return f"{name}: it is on the cluster (queued there, starting or running)"
    if d["claim_batch"] is not None:
        who = d["claim_replica"]
        if who == "":
            return (
                f"claimed in batch {d['claim_batch']}, orphaned by a dead replica: the next "
                "claim_batch of any replica re-drives it"
            )
        if who is None:
            return f"claimed in batch {d['claim_batch']}, which does not exist: drift, run `verify`"
        if d["claim_replica_alive"] is False:
            return (
                f"claimed by replica {who} in batch {d['claim_batch']}, whose lease expired: "
                "a reap hands the batch to a live replica"
            )
        return (
            f"claimed by replica {who} in batch {d['claim_batch']}: "
            "being sent to the server right now"
        )
    if d["queue_position"] is not None:
        where = f"queued at position {d['queue_position']} of {d['queue_length']}"
        if d["run_active"] + d["run_reserved"] >= d["run_limit"]:
            return f"{where}, blocked by the workflow limit ({d['run_active']} active, limit {d['run_limit']})"
        if (
            d["array_limit"] is not None
            and d["array_active"] + d["array_reserved"] >= d["array_limit"]
        ):
            return f"{where}, blocked by its array's limit ({d['array_active']} active, limit {d['array_limit']})"
        return f"{where}: waiting for the next batch to be claimed"
    if s == "E":
        return "ERROR_RECOVERABLE: waiting for the server to retry it"
    if s == "A":
        return "ADJUSTING_RESOURCES: waiting to be queued again with new resources"
    done, nup = d["done"], d["upstreams"]
    if done < nup:
        waiting = [u["task_id"] for u in d["upstream_list"] if u.get("status") != "D"]
        shown = ", ".join(map(str, waiting[:5])) + (" ..." if len(waiting) > 5 else "")
        return f"waiting for upstreams: {done} of {nup} done" + (
            f" (not done: {shown})" if shown else ""
        )
    if done > nup:
        return f"counter drift: {done} upstreams done of {nup}: run `verify`"
    return (
        "all upstreams done but neither queued nor claimed: stalled; `verify` and the "
        "replicas' reconcile() re-queue it"
    )


def task_detail(client: Any, keys: RunKeys, task_id: int) -> TaskDetail | None:
    """A task's record, neighbours, queue and claim state; None when the run has no such task.

    Upstream tasks are found by scanning every record for ``task_id`` among its children (the
    record keeps only downstream ids), so this costs a full HSCAN of the run.
    """
    raw, queue_len, batch, meta = _pipeline(
        client,
        [
            ("HGET", keys.task, task_id),
            ("ZCARD", keys.ready),
            ("HGET", keys.claims, task_id),
            ("HMGET", keys.meta, "status", "limit"),
        ],
    )
    if raw is None:
        return None
    state = _with_kids(client, keys, decode_record(task_id, raw))
    children = list(state.downstream_ids)
    reads: list[tuple[Any, ...]] = [
        ("ZRANK", keys.ready, task_id),
        ("HGET", keys.arrays, state.array_id),
        ("HGET", keys.active, state.array_id),
        ("HGET", keys.reserved, state.array_id),
        ("HGET", keys.reserved, "run"),
        *(("SCARD", keys.status_set(s)) for s in ACTIVE_TASK_STATUSES),
        ("TIME",),
    ]
    if children:
        reads.append(("HMGET", keys.task, *children))
    replies = _pipeline(client, reads)
    pos, a_limit, a_active, a_reserved, r_reserved = replies[:5]
    n_active = len(ACTIVE_TASK_STATUSES)
    active_total = sum(_int(v) for v in replies[5 : 5 + n_active])
    now = _time_ms(replies[5 + n_active])
    child_raws = replies[6 + n_active] if children else []
    downstream = [
        _brief(None if r is None else decode_record(c, r), c) for c, r in zip(children, child_raws)
    ]
    upstream: list[dict[str, Any]] = []
    scanned = 0
    sliced: list[TaskState] = []
    for other in _scan_records(client, keys.task):
        scanned += 1
        if task_id in other.downstream_ids:
            upstream.append(_brief(other, other.task_id))
        elif other.slices:
            sliced.append(other)
    if sliced:  # downstream ids kept in ``kids`` slices: one scan of that hash
        holders = {
            int(text(name).partition("#")[0])
            for name, ids in client.hscan_iter(keys.kids, count=_SCAN_COUNT)
            if str(task_id) in text(ids).split(",")
        }
        upstream += [_brief(o, o.task_id) for o in sliced if o.task_id in holders]
    upstream.sort(key=lambda u: u["task_id"])
    batch_id = None if batch is None else text(batch)
    replica: str | None = None
    alive: bool | None = None
    if batch_id is not None:
        b_raw, replicas_raw = _pipeline(
            client, [("HGET", keys.batches, batch_id), ("HGETALL", keys.replicas)]
        )
        if b_raw is not None:
            replica = parse_batch(text(b_raw)).holder
            lease = str_map(replicas_raw).get(replica)
            if replica == "":
                alive = None
            elif lease is not None:
                deadline = _opt_int(lease.split("|")[1]) if "|" in lease else None
                alive = deadline is not None and deadline > now
            else:
                alive = False
    run_status = "" if meta[0] is None else text(meta[0])
    info: dict[str, Any] = {
        **_record_dict(state),
        "queue_position": None if pos is None else _int(pos),
        "queue_length": _int(queue_len),
        "claim_batch": batch_id,
        "claim_replica": replica,
        "claim_replica_alive": alive,
        "run_active": active_total,
        "run_limit": _int(meta[1]),
        "run_reserved": _int(r_reserved),
        "array_active": _int(a_active),
        "array_limit": _opt_int(a_limit),
        "array_reserved": _int(a_reserved),
        "upstream_list": upstream,
    }
    return TaskDetail(
        task=_record_dict(state),
        downstream=downstream,
        upstream=upstream,
        scanned_records=scanned,
        queue_position=info["queue_position"],
        queue_length=info["queue_length"],
        claim_batch=batch_id,
        claim_replica=replica,
        claim_replica_alive=alive,
        run_status=run_status,
        run_active=active_total,
        run_limit=info["run_limit"],
        run_reserved=info["run_reserved"],
        array_active=info["array_active"],
        array_limit=info["array_limit"],
        array_reserved=info["array_reserved"],
        verdict=_verdict(info),
    )
