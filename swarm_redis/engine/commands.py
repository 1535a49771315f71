"""Sans-I/O command layer: what to send to Redis and how to read the answer.

This is the only module that knows each script's KEYS/ARGV order (mirroring the header of each
``lua/*.lua`` file). It builds :class:`ScriptCall` and :class:`Command` values and decodes
replies; it never talks to Redis. The sync and async transports execute the values.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from itertools import chain
from typing import Any

from swarm_redis.engine.keys import RunKeys
from swarm_redis.errors import (
    FencedError,
    InvalidInputError,
    LeaseLostError,
    StateLostError,
    SwarmRedisError,
    TransitionError,
    UnknownRunError,
)

Arg = str | int | bytes


@dataclass(frozen=True)
class ScriptCall:
    """One EVALSHA of a script from ``lua/``."""

    script: str
    keys: Sequence[str]
    args: Sequence[Arg]


@dataclass(frozen=True)
class Command:
    """One plain Redis command, e.g. ``Command(("SCARD", key))``."""

    args: tuple[Arg, ...]


Call = ScriptCall | Command


def new_request_id() -> str:
    """A fresh request id: 80 random bits in hex (unique among a run's recent calls)."""
    return secrets.token_hex(10)


@dataclass(frozen=True)
class Caller:
    """Who is calling: the version and run token it saw last, its replica id and epoch.

    ``rid`` is the request id of the call; "" (default) draws a fresh one for every
    :meth:`head`, so each script call (each chunk) has its own.
    """

    seen: int
    actor: str = "-"
    epoch: str = ""
    token: str = ""
    rid: str = ""

    def head(self) -> list[Arg]:
        """The common ARGV 1-3: ``<seen>:<token>:<request id>``, actor, epoch."""
        return [f"{self.seen}:{self.token}:{self.rid or new_request_id()}", self.actor, self.epoch]


def request_id(call: ScriptCall) -> str:
    """The request id a script call carries ("" when none)."""
    parts = text(call.args[0]).split(":", 2)
    return parts[2] if len(parts) == 3 else ""


def with_request_id(call: ScriptCall, rid: str) -> ScriptCall:
    """``call`` carrying request id ``rid`` instead of its own (a caller's retry)."""
    seen, _, rest = text(call.args[0]).partition(":")
    token = rest.partition(":")[0]
    return ScriptCall(call.script, call.keys, [f"{seen}:{token}:{rid}", *call.args[1:]])


def retry_key(call: ScriptCall) -> tuple[Any, ...]:
    """What tells a retry of ``call`` from another call: the script and every ARGV but the first
    (which holds the caller's version, changing from call to call, and the request id)."""
    return (call.script, *call.args[1:])


def text(value: Any) -> str:
    """A reply element as str (clients may or may not decode responses)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    return str(value)


def opt_text(value: Any) -> str | None:
    return None if value is None else text(value)


def error_from_reply(message: str, run_id: int | str) -> Exception | None:
    """Our exception for a script's coded error reply, or None when it is not one of ours."""
    code, _, rest = message.partition(" ")
    if code == "STATELOST":
        seen, _, found = rest.partition(" ")
        words = found.split()
        return StateLostError(run_id, int(seen), int(words[0]), recreated="recreated" in words)
    if code == "INVALID":
        return InvalidInputError(f"workflow run {run_id}: {rest}")
    if code == "NORUN":
        return UnknownRunError(f"workflow run {run_id} not found in Redis ({rest})")
    if code == "LEASELOST":
        return LeaseLostError(f"workflow run {run_id}: {rest}")
    if code == "FENCED":
        return FencedError(f"workflow run {run_id}: leadership fenced: {rest}")
    if code == "TRANSITION":
        return TransitionError(f"workflow run {run_id}: run status transition refused: {rest}")
    if code == "SWARM":
        return SwarmRedisError(f"workflow run {run_id}: {rest}")
    if code == "WRONGTYPE":  # a plain read of a key written by hand (scripts check types first)
        return InvalidInputError(
            f"workflow run {run_id}: a key of the run holds another type than the key table's "
            f"({message}); see swarm-redis verify"
        )
    return None


# --- script calls (ARGV order mirrors the header of each lua file) ------------------------------


def create_run(
    keys: RunKeys,
    caller: Caller,
    workflow_id: int,
    workflow_run_id: int | str,
    dag_id: int,
    limit: int,
    status: str,
    events_maxlen: int,
    detail_max: int,
) -> ScriptCall:
    args = [*caller.head(), workflow_id, workflow_run_id, dag_id, limit, status]
    token = secrets.token_hex(8)
    return ScriptCall("create_run", keys.all, [*args, events_maxlen, detail_max, token])


@dataclass(frozen=True)
class TaskDef:
    """What registration writes for one task."""

    task_id: int
    status: str
    array_id: int
    num_upstreams: int
    num_upstreams_done: int
    downstream_ids: tuple[int, ...]
    resource_key: str = ""


#: Downstream ids a task record holds inline at most, and per slice of the ``kids`` hash: a
#: longer list lives in slices there (one fan-out call credits one slice, lua/register_kids.lua).
KIDS_SLICE = 400
#: Active (Q/I/O/R) tasks that lua/reconcile_counters.lua counts itself in one call; more are
#: counted by the client in pages (reconcile._count_active).
ACTIVE_INLINE = 4000


def kids_slices(downstream_ids: Sequence[int]) -> list[str]:
    """The ``kids`` slices of a list longer than :data:`KIDS_SLICE` ids (else none), of the ids
    in ascending order: replicas registering the same DAG write the same slices, whatever
    order their objects list the downstreams in (the slices of one task may come from several
    replicas' calls)."""
    if len(downstream_ids) <= KIDS_SLICE:
        return []
    ids = sorted(downstream_ids)
    return [",".join(map(str, ids[i : i + KIDS_SLICE])) for i in range(0, len(ids), KIDS_SLICE)]


def children_field(downstream_ids: Sequence[int]) -> str:
    """The children part of a record: the ids joined by ",", or ``*<m>`` for m slices."""
    if len(downstream_ids) > KIDS_SLICE:
        return f"*{-(-len(downstream_ids) // KIDS_SLICE)}"
    return ",".join(map(str, downstream_ids))


def register_kids(
    keys: RunKeys, caller: Caller, mode: str, slices: Sequence[tuple[int, int, str]]
) -> ScriptCall:
    """Store ``(task id, slice number, ids)`` slices; mode "new" (registration) or "redef"."""
    args: list[Arg] = [*caller.head(), mode, len(slices)]
    for task_id, k, ids in slices:
        args += [task_id, k, ids]
    return ScriptCall("register_kids", keys.all, args)


def register(
    keys: RunKeys, caller: Caller, tasks: Sequence[TaskDef], arrays: Sequence[tuple[int, int]]
) -> ScriptCall:
    args: list[Arg] = [*caller.head(), len(tasks)]
    for t in tasks:
        children = children_field(t.downstream_ids)
        args += [t.task_id, t.status, t.array_id, t.num_upstreams, t.num_upstreams_done, children]
        args.append(t.resource_key)
    args.append(len(arrays))
    for array_id, limit in arrays:
        args += [array_id, limit]
    return ScriptCall("register", keys.all, args)


@dataclass(frozen=True)
class UpdateTail:
    """The run-level part of a StateUpdate, written with the last chunk."""

    limit: int | None
    array_limits: tuple[tuple[int, int], ...]
    run_status: str | None
    sync_encoded: str | None
    sync_us: int | None


def apply_update(
    keys: RunKeys,
    caller: Caller,
    *,
    propagate: bool,
    stamp: int | None,
    changes: Sequence[tuple[int, str]],
    tail: UpdateTail | None,
) -> ScriptCall:
    args: list[Arg] = [*caller.head(), int(propagate), "" if stamp is None else stamp, len(changes)]
    args += chain.from_iterable(changes)
    if tail is None:
        args.append(0)
    else:
        args += [1, "" if tail.limit is None else tail.limit, len(tail.array_limits)]
        for array_id, limit in tail.array_limits:
            args += [array_id, limit]
        args += [
            tail.run_status or "",
            tail.sync_encoded or "",
            "" if tail.sync_us is None else tail.sync_us,
        ]
    return ScriptCall("apply_update", keys.all, args)


def propagate(
    keys: RunKeys, caller: Caller, task_ids: Iterable[int], *, enqueue: bool
) -> ScriptCall:
    return ScriptCall("propagate", keys.all, [*caller.head(), int(enqueue), *task_ids])


def enqueue(
    keys: RunKeys, caller: Caller, items: Sequence[tuple[int, str]], *, front: bool
) -> ScriptCall:
    args: list[Arg] = [*caller.head(), int(front)]
    for task_id, resource_key in items:
        args += [task_id, resource_key]
    return ScriptCall("enqueue", keys.all, args)


def dequeue(keys: RunKeys, caller: Caller, n: int) -> ScriptCall:
    return ScriptCall("dequeue", keys.all, [*caller.head(), n])


def cache_resources(keys: RunKeys, caller: Caller, resource_key: str, encoded: bytes) -> ScriptCall:
    return ScriptCall("cache_resources", keys.all, [*caller.head(), resource_key, encoded])


def set_fields(keys: RunKeys, caller: Caller, fields: dict[str, Arg]) -> ScriptCall:
    args: list[Arg] = list(caller.head())
    for name, value in fields.items():
        args += [name, value]
    return ScriptCall("set_fields", keys.all, args)


def read_status(
    keys: RunKeys, caller: Caller, status: str, cursor: str = "0", count: int = 5000
) -> ScriptCall:
    """One page of a status set with its records (the whole set when it has <= count members)."""
    return ScriptCall("read_status", keys.all, [*caller.head(), status, cursor, count])


def decode_status_page(reply: Sequence[Any]) -> tuple[str, list[tuple[str, Any]]]:
    """The next cursor ("0": done) and the page's (task id, raw record) pairs, undecoded: the
    caller decides what to do with a record that does not parse."""
    flat = reply[2]
    return text(reply[1]), [(text(flat[i]), flat[i + 1]) for i in range(0, len(flat), 2)]


def redefine(
    keys: RunKeys, caller: Caller, defs: Sequence[tuple[int, int, tuple[int, ...]]]
) -> ScriptCall:
    """Set registered tasks' DAG part: ``(task id, number of upstreams, downstream ids)``."""
    args: list[Arg] = [*caller.head(), len(defs)]
    for task_id, num_upstreams, downstream_ids in defs:
        args += [task_id, num_upstreams, children_field(downstream_ids)]
    return ScriptCall("redefine", keys.all, args)


def decode_redefine(reply: Sequence[Any]) -> tuple[int, list[int]]:
    """(records changed, ids refused because their completion was already propagated)."""
    return int(reply[1]), [int(text(x)) for x in reply[2]]


def repair(keys: RunKeys, caller: Caller, ops: Sequence[tuple[str, str, str, str]]) -> ScriptCall:
    """Repair ops ``(code, subject, a, b)`` of the consistency checker (see lua/repair.lua)."""
    args: list[Arg] = [*caller.head(), len(ops)]
    for op in ops:
        args += list(op)
    return ScriptCall("repair", keys.all, args)


def decode_repair(reply: Sequence[Any]) -> list[bool]:
    """Per op of :func:`repair`: True when it changed something."""
    return [int(x) == 1 for x in reply[1]]


# --- reply decoding ---------------------------------------------------------------------------


def triples(flat: Sequence[Any]) -> list[tuple[int, str, int]]:
    """``[id, status, done, ...]`` -> ``[(id, status, done), ...]``."""
    return [(int(flat[i]), text(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]


def _fields(raw: Any, width: int, what: str, sep: str = ":") -> list[str]:
    """The fields of space-separated entries of ``width`` fields joined by ``sep``
    (``"a:b:c a:b:c ..."``), in one list: one pass in C rather than a split per task."""
    packed = text(raw)
    parts = packed.replace(sep, " ").split()
    if len(parts) % width or packed.count(sep) != (width - 1) * (len(parts) // width):
        raise ValueError(f"malformed {what}: {packed[:100]!r}")
    return parts


def heads(packed: Any) -> list[tuple[int, str, int]]:
    """``"id|status|done id|status|done ..."`` -> ``[(id, status, done), ...]``.

    A list is the ``[id, status, done, ...]`` form a reply cached by an older build holds.
    """
    if isinstance(packed, list):
        return triples(packed)
    p = _fields(packed, 3, "task heads", "|")
    return list(zip(map(int, p[0::3]), p[1::3], map(int, p[2::3]), strict=True))


@dataclass(frozen=True)
class ApplyReply:
    """Decoded reply of apply_update (also used for propagate, with empty changed)."""

    version: int
    changed: list[tuple[int, str, int, str]]  # id, new status, done, old status
    ready: list[int]
    touched: list[tuple[int, str, int]]  # id, status, done (as mirror takes them)
    run_status: str | None
    limit: int | None
    run_status_applied: bool
    #: DONE tasks whose fan-out is only partly credited: go on with propagate until none is left
    unfinished: list[int] = field(default_factory=list)


def _ids_list(reply: Sequence[Any], index: int) -> list[int]:
    """The list of ids at ``reply[index]`` (empty when a shorter reply has none)."""
    return [int(x) for x in reply[index]] if len(reply) > index else []


def _touched(raw: Any) -> list[tuple[int, str, int]]:
    """``"id:done:status ..."`` -> ``[(id, status, done), ...]``: the order ``mirror`` takes."""
    p = _fields(raw, 3, "credited downstreams")
    return list(zip(map(int, p[0::3]), p[2::3], map(int, p[1::3]), strict=True))


def decode_apply(reply: Sequence[Any], unfinished_at: int = 5) -> ApplyReply:
    """Decode apply_update's reply (ack_batch's with ``unfinished_at=6``)."""
    p = _fields(reply[1], 4, "changes")
    changed = list(zip(map(int, p[0::4]), p[1::4], map(int, p[2::4]), p[3::4], strict=True))
    meta = reply[4]
    limit_text = text(meta[1])
    return ApplyReply(
        version=int(reply[0]),
        changed=changed,
        ready=[int(x) for x in text(reply[2]).split()],
        touched=_touched(reply[3]),
        run_status=text(meta[0]) or None,
        limit=int(limit_text) if limit_text else None,
        run_status_applied=int(meta[2]) == 1,
        unfinished=_ids_list(reply, unfinished_at),
    )


def decode_propagate(reply: Sequence[Any]) -> ApplyReply:
    ready = [int(x) for x in text(reply[1]).split()]
    return ApplyReply(
        int(reply[0]), [], ready, _touched(reply[2]), None, None, False, _ids_list(reply, 3)
    )


@dataclass(frozen=True)
class TaskState:
    """A task record decoded from the ``task`` hash."""

    task_id: int
    status: str
    num_upstreams_done: int
    stamp: int | None
    propagated: bool
    array_id: int
    num_upstreams: int
    start: int
    downstream_ids: tuple[int, ...]
    #: m when the downstream ids live in m slices of ``kids`` (the record holds ``*<m>``):
    #: ``downstream_ids`` is empty until :func:`with_slices` fills it.
    slices: int = 0


def slice_names(task_id: int, slices: int) -> list[str]:
    """The ``kids`` field names of a task's slices, in order."""
    return [f"{task_id}#{k}" for k in range(1, slices + 1)]


def with_slices(state: TaskState, slices: Sequence[Any]) -> TaskState:
    """``state`` with the downstream ids read from its ``kids`` slices (ValueError when one is
    missing or malformed)."""
    ids: list[int] = []
    for raw in slices:
        if raw is None:
            raise ValueError(f"task {state.task_id}: a slice of its downstream ids is missing")
        ids += (int(c) for c in text(raw).split(","))
    return replace(state, downstream_ids=tuple(ids))


def decode_record(task_id: int, raw: Any) -> TaskState:
    """Parse ``S|done|stamp|flags|array|nup|start|children`` (children: ids or ``*<m>``)."""
    parts = text(raw).split("|")
    children = parts[7]
    slices = int(children[1:]) if children.startswith("*") else 0
    return TaskState(
        task_id=task_id,
        status=parts[0],
        num_upstreams_done=int(parts[1]),
        stamp=int(parts[2]) if parts[2] else None,
        propagated="p" in parts[3],
        array_id=int(parts[4]),
        num_upstreams=int(parts[5]),
        start=int(parts[6]),
        downstream_ids=() if slices or not children else tuple(map(int, children.split(","))),
        slices=slices,
    )


# --- replicas, claims, leadership (lua/join.lua ... lua/reconcile_counters.lua) ---------------


def join(
    keys: RunKeys, caller: Caller, replica_id: str, incarnation: str, ttl_ms: int
) -> ScriptCall:
    return ScriptCall("join", keys.all, [*caller.head(), replica_id, incarnation, ttl_ms])


def heartbeat(
    keys: RunKeys, caller: Caller, replica_id: str, incarnation: str, ttl_ms: int
) -> ScriptCall:
    return ScriptCall("heartbeat", keys.all, [*caller.head(), replica_id, incarnation, ttl_ms])


def leave(keys: RunKeys, caller: Caller, replica_id: str, incarnation: str) -> ScriptCall:
    return ScriptCall("leave", keys.all, [*caller.head(), replica_id, incarnation])


def claim_batch(
    keys: RunKeys,
    caller: Caller,
    replica_id: str,
    incarnation: str,
    *,
    max_size: int,
    window: int,
    scan_limit: int,
) -> ScriptCall:
    args: list[Arg] = [*caller.head(), replica_id, incarnation, max_size, window, scan_limit]
    return ScriptCall("claim_batch", keys.all, args)


def ack_batch(
    keys: RunKeys,
    caller: Caller,
    replica_id: str,
    incarnation: str,
    batch_id: str,
    *,
    propagate: bool,
    stamp: int | None,
    changes: Sequence[tuple[int, str]],
) -> ScriptCall:
    args: list[Arg] = [*caller.head(), replica_id, incarnation, batch_id, int(propagate)]
    args += ["" if stamp is None else stamp, len(changes)]
    args += chain.from_iterable(changes)
    return ScriptCall("ack_batch", keys.all, args)


def release_batch(
    keys: RunKeys, caller: Caller, replica_id: str, incarnation: str, batch_id: str
) -> ScriptCall:
    args: list[Arg] = [*caller.head(), replica_id, incarnation, batch_id]
    return ScriptCall("release_batch", keys.all, args)


def reap(keys: RunKeys, caller: Caller, *, lock_ms: int, force: bool, token: str) -> ScriptCall:
    return ScriptCall("reap", keys.all, [*caller.head(), lock_ms, int(force), token])


def leadership(
    keys: RunKeys,
    caller: Caller,
    op: str,
    replica_id: str,
    incarnation: str,
    ttl_ms: int,
    epoch: int | None,
) -> ScriptCall:
    """``op`` is acquire, renew or resign (see lua/leadership.lua)."""
    args: list[Arg] = [*caller.head(), op, replica_id, incarnation, ttl_ms]
    args.append("" if epoch is None else epoch)
    return ScriptCall("leadership", keys.all, args)


def set_run_status(keys: RunKeys, caller: Caller, new: str, expected: str | None) -> ScriptCall:
    return ScriptCall("set_run_status", keys.all, [*caller.head(), new, expected or ""])


def finalize(keys: RunKeys, caller: Caller, final_status: str) -> ScriptCall:
    return ScriptCall("finalize", keys.all, [*caller.head(), final_status])


def enqueue_fringe(
    keys: RunKeys,
    caller: Caller,
    items: Sequence[tuple[int, str]],
    *,
    take_flag: bool,
    front: bool,
) -> ScriptCall:
    args: list[Arg] = [*caller.head(), int(take_flag), int(front)]
    for task_id, resource_key in items:
        args += [task_id, resource_key]
    return ScriptCall("enqueue_fringe", keys.all, args)


def reconcile_tasks(keys: RunKeys, caller: Caller, task_ids: Iterable[int]) -> ScriptCall:
    return ScriptCall("reconcile_tasks", keys.all, [*caller.head(), *task_ids])


def reconcile_credits(
    keys: RunKeys, caller: Caller, groups: Sequence[tuple[int, Sequence[int | str]]]
) -> ScriptCall:
    """Heal the done counts of tasks from the upstreams named for each (see the script; an
    upstream with ``kids`` slices is named "<id>#<slice>")."""
    args: list[Arg] = [*caller.head(), len(groups)]
    for task_id, ups in groups:
        args += [task_id, len(ups), *ups]
    return ScriptCall("reconcile_credits", keys.all, args)


@dataclass(frozen=True)
class ReconcileCreditsReply:
    """Decoded reply of reconcile_credits."""

    fixed: list[tuple[int, int, int]]  # id, old done, new done
    skipped: list[int]  # an upstream's fan-out is in progress
    queued: list[int]
    pending_fixed: list[int]


def decode_reconcile_credits(reply: Sequence[Any]) -> ReconcileCreditsReply:
    flat = reply[1]
    fixed = [(int(flat[i]), int(flat[i + 1]), int(flat[i + 2])) for i in range(0, len(flat), 3)]
    pend = reply[4]
    return ReconcileCreditsReply(
        fixed=fixed,
        skipped=[int(x) for x in reply[2]],
        queued=[int(x) for x in reply[3]],
        pending_fixed=[int(pend[i]) for i in range(0, len(pend), 3)],
    )


def reconcile_counters(
    keys: RunKeys, caller: Caller, counted: tuple[int, dict[int, int]] | None = None
) -> ScriptCall:
    """``counted``: the active tasks per array, read in pages at that write version (the
    script counts them itself when there are few)."""
    args = list(caller.head())
    if counted is not None:
        version, per_array = counted
        args.append(version)
        for array_id, n in sorted(per_array.items()):
            args += [array_id, n]
    return ScriptCall("reconcile_counters", keys.all, args)


@dataclass(frozen=True)
class ClaimReply:
    """Decoded reply of claim_batch; ``batch_id`` is "" when nothing could be claimed."""

    version: int
    batch_id: str
    array_id: int
    resource_key: str
    redriven: bool
    tasks: list[tuple[int, str, int]]  # id, status, done


def decode_claim(reply: Sequence[Any]) -> ClaimReply:
    batch_id = text(reply[1])
    return ClaimReply(
        version=int(reply[0]),
        batch_id=batch_id,
        array_id=int(text(reply[2])) if batch_id else 0,
        resource_key=text(reply[3]),
        redriven=int(reply[4]) == 1,
        tasks=heads(reply[5]),
    )


@dataclass(frozen=True)
class ReapReply:
    """Decoded reply of reap."""

    skipped: bool
    dead_replicas: tuple[str, ...]
    batches: int
    tasks: int
    leader_cleared: bool


def decode_reap(reply: Sequence[Any]) -> ReapReply:
    return ReapReply(
        skipped=int(reply[1]) == 1,
        dead_replicas=tuple(text(x) for x in reply[2]),
        batches=int(reply[3]),
        tasks=int(reply[4]),
        leader_cleared=int(reply[5]) == 1,
    )


@dataclass(frozen=True)
class ReconcileTasksReply:
    """Decoded reply of reconcile_tasks (ids as ints)."""

    propagated: list[int]
    back: list[int]
    front: list[int]
    ready: list[int]
    touched: list[tuple[int, str, int]]  # id, status, done (as mirror takes them)
    unfinished: list[int] = field(default_factory=list)  # fan-outs to go on with


def decode_reconcile_tasks(reply: Sequence[Any]) -> ReconcileTasksReply:
    return ReconcileTasksReply(
        propagated=[int(x) for x in reply[1]],
        back=[int(x) for x in reply[2]],
        front=[int(x) for x in reply[3]],
        ready=[int(x) for x in text(reply[4]).split()],
        touched=_touched(reply[5]),
        unfinished=_ids_list(reply, 6),
    )
