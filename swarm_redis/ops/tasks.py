"""A run's tasks as the CLI shows them: filtered lists, and one task with the reason it waits.

Plain read commands only (HSCAN, SSCAN, HMGET ...), like :mod:`swarm_redis.ops.reads`, so a
read-only ACL user can run ``tasks`` and ``task``.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from swarm_redis.constants import (
    ACTIVE_TASK_STATUSES,
    TASK_STATUS_NAMES,
    TERMINAL_RUN_STATUSES,
)
from swarm_redis.engine.commands import (
    TaskState,
    decode_record,
    slice_names,
    text,
    with_slices,
)
from swarm_redis.engine.keys import RunKeys
from swarm_redis.engine.validation import record_problem
from swarm_redis.ops.reads import (
    _SCAN_COUNT,
    CorruptValueError,
    _display,
    _int,
    _opt_int,
    _pipeline,
    _time_ms,
    parse_batch,
    parse_int,
    run_status_name,
    shown,
    str_map,
)

__all__ = ["ANCESTRY_MAX", "TaskDetail", "list_tasks", "task_detail"]

#: Most parent links ``task`` keeps while it scans the run, to find a failed task more than one
#: level up; past it only the direct upstreams are checked (memory stays bounded).
ANCESTRY_MAX = 2_000_000


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


def _decode(key: str, task_id: Any, raw: Any) -> TaskState:
    """A stored task record, checked first (never trust what is stored): a record that does
    not parse raises CorruptValueError naming the task and the value."""
    tid = parse_int(task_id, key, "field (task id)")
    problem = record_problem(raw)
    if problem is not None:
        raise CorruptValueError(key, f"task {tid}", raw, problem)
    return decode_record(tid, raw)


def _scan_records(client: Any, key: str, count: int = _SCAN_COUNT) -> Iterator[TaskState]:
    for field_, raw in client.hscan_iter(key, count=count):
        yield _decode(key, field_, raw)


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
            ids.append(parse_int(member, keys.status_set(status), "a member"))
        ids.sort()
        if array_id is not None:
            total = None
        for start in range(0, len(ids), _SCAN_COUNT):
            batch = ids[start : start + _SCAN_COUNT]
            raws = client.execute_command("HMGET", keys.task, *batch)
            for task_id, raw in zip(batch, raws):
                if raw is None:
                    continue
                state = _decode(keys.task, task_id, raw)
                if array_id is None or state.array_id == array_id:
                    found.append(state)
            if len(found) >= limit:
                break
    else:
        total = _int(client.execute_command("HLEN", keys.task)) if array_id is None else None
        matching = (
            state
            for state in _scan_records(client, keys.task)
            if array_id is None or state.array_id == array_id
        )  # only the ``limit`` lowest ids are kept: memory bounded at any run size
        found = heapq.nsmallest(limit, matching, key=lambda s: s.task_id)
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
    #: The nearest ERROR_FATAL task upstream (None: none found), and the tasks between it and
    #: this one, nearest first.
    blocked_by: int | None = None
    blocked_via: list[int] = field(default_factory=list)

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


@dataclass
class _Ancestry:
    """Parent links among tasks that are not DONE (only those can block), from one scan."""

    parents: dict[int, list[int]] = field(default_factory=dict)
    status: dict[int, str] = field(default_factory=dict)
    links: int = 0
    complete: bool = True

    def add(self, state: TaskState) -> None:
        if state.status == "D" or not self.complete:
            return
        self.status[state.task_id] = state.status
        for child in state.downstream_ids:
            self.parents.setdefault(child, []).append(state.task_id)
        self.links += len(state.downstream_ids)
        if self.links > ANCESTRY_MAX:
            self.complete = False
            self.parents.clear()
            self.status.clear()

    def failed_above(self, task_id: int) -> list[int]:
        """The path up to the nearest ERROR_FATAL ancestor: [parent, ..., failed]; [] if none."""
        came_from: dict[int, int] = {}
        todo = deque([task_id])
        while todo:
            node = todo.popleft()
            for parent in sorted(self.parents.get(node, ())):
                if parent in came_from or parent == task_id:
                    continue
                came_from[parent] = node
                if self.status.get(parent) == "F":
                    path = [parent]
                    while came_from[path[-1]] != task_id:
                        path.append(came_from[path[-1]])
                    return path[::-1]
                todo.append(parent)
        return []


def _blocked_path(
    task_id: int, upstream: Sequence[Mapping[str, Any]], ancestry: _Ancestry
) -> list[int]:
    """[direct upstream, ..., failed task] when an ERROR_FATAL task blocks this one, else []."""
    if ancestry.complete:
        return ancestry.failed_above(task_id)
    failed = [u["task_id"] for u in upstream if u.get("status") == "F"]
    return failed[:1]


def _run_final_note(run_status: str) -> str:
    return f"the run is final ({run_status_name(run_status)})"


def _verdict(d: dict[str, Any]) -> str:
    """One line that answers "why is this task not running?" (and says when it never will)."""
    text = _task_verdict(d)
    final = d["run_status"] in TERMINAL_RUN_STATUSES
    if final and d["status"] not in ("D", "F") and not text.startswith("blocked:"):
        text += f"; {_run_final_note(d['run_status'])}: nothing more runs in it"
    return text


def _task_verdict(d: dict[str, Any]) -> str:
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
    path = d["blocked_path"]
    if done < nup and path:
        failed = path[-1]
        where = f"upstream {failed} failed (ERROR_FATAL)"
        if len(path) > 1:
            shown = ", ".join(map(str, path[:-1][:5])) + (" ..." if len(path) > 6 else "")
            where += f", {len(path)} levels up (via {shown})"
        if d["run_status"] in TERMINAL_RUN_STATUSES:
            return f"blocked: {where}; {_run_final_note(d['run_status'])}, so it never will run"
        return f"blocked: {where}, so it cannot run in this run"
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


def _with_kids(client: Any, keys: RunKeys, state: TaskState) -> TaskState:
    """``state`` with its downstream ids read from its ``kids`` slices, if it has some."""
    if not state.slices:
        return state
    names = slice_names(state.task_id, state.slices)
    raws: list[Any] = []
    for at in range(0, len(names), 50):
        raws += client.execute_command("HMGET", keys.kids, *names[at : at + 50])
    try:
        return with_slices(state, raws)
    except ValueError as e:  # a slice missing, or not integers
        raise CorruptValueError(keys.kids, f"task {state.task_id}", raws, str(e)) from None


def task_detail(client: Any, keys: RunKeys, task_id: int) -> TaskDetail | None:
    """A task's record, neighbours, queue and claim state; None when the run has no such task.

    Upstream tasks are found by scanning every record for ``task_id`` among its children (the
    record keeps only downstream ids), so this costs a full HSCAN of the run. The same scan keeps
    the parent links of tasks not DONE (up to :data:`ANCESTRY_MAX`), so a task below an
    ERROR_FATAL task, however far up, is reported as blocked by it.
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
    state = _with_kids(client, keys, _decode(keys.task, task_id, raw))
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
        _brief(None if r is None else _decode(keys.task, c, r), c)
        for c, r in zip(children, child_raws)
    ]
    upstream: list[dict[str, Any]] = []
    ancestry = _Ancestry()
    scanned = 0
    sliced: list[TaskState] = []
    for other in _scan_records(client, keys.task):
        scanned += 1
        ancestry.add(other)
        if task_id in other.downstream_ids:
            upstream.append(_brief(other, other.task_id))
        elif other.slices:
            sliced.append(other)
    if sliced:  # downstream ids kept in ``kids`` slices: one scan of that hash
        holders = {
            parse_int(_display(name).partition("#")[0], keys.kids, f"field {shown(name)}")
            for name, ids in client.hscan_iter(keys.kids, count=_SCAN_COUNT)
            if str(task_id) in _display(ids).split(",")
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
            replica = parse_batch(b_raw, keys.batches, batch_id).holder
            lease = str_map(replicas_raw).get(replica)
            if replica == "":
                alive = None
            elif lease is not None:
                deadline = _opt_int(lease.split("|")[1]) if "|" in lease else None
                alive = deadline is not None and deadline > now
            else:
                alive = False
    run_status = "" if meta[0] is None else _display(meta[0])
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
        "run_status": run_status,
        "blocked_path": _blocked_path(task_id, upstream, ancestry),
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
        blocked_by=info["blocked_path"][-1] if info["blocked_path"] else None,
        blocked_via=info["blocked_path"][:-1],
    )
