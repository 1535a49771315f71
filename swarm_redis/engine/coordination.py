"""Several replicas on one run: membership, batch claims, reaping, leadership and fencing.

Each function is an operation on a :class:`~swarm_redis.engine.core.StateCore` (a generator, driven by
the sync or the async front). Every lease deadline is computed from Redis ``TIME`` inside the
scripts, never from the client's clock. See docs/replicas.md for the walkthrough.
"""

from __future__ import annotations

import os
import re
import secrets
import socket
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from swarm_redis.engine import commands as cmd
from swarm_redis.engine.commands import Call, Caller, text
from swarm_redis.engine.core import IN_DOUBT_ERRORS, Op, StateCore
from swarm_redis.engine.replies import hash_items
from swarm_redis.engine.validation import (
    MAX_REAP_LOCK_MS,
    MAX_SAFE_INT,
    MAX_TTL_MS,
    check_int,
    check_run_status,
    check_task_status,
    coerce_task_id,
    record_problem,
    seconds_to_ms,
    stored_int,
)
from swarm_redis.errors import InvalidInputError, InvalidTypeError

#: Formerly the number of queue entries searched for a batch head; ignored since claim_batch
#: finds each array's next task through the per-array queue index (kept for compatibility).
DEFAULT_SCAN_LIMIT = 50_000
#: Tasks per script call of the initial fringe and of reconcile.
_CHUNK = 1000


@dataclass(frozen=True)
class Replica:
    """A member of the run: pass it to every replica call.

    Attributes:
        id: Unique name of the replica (default ``host-pid-random``).
        incarnation: Random token of this join; a re-join under the same id gets a new one.
        ttl_ms: Length of the membership lease.
    """

    id: str
    incarnation: str
    ttl_ms: int


@dataclass(frozen=True)
class Batch:
    """Tasks claimed together: one array, one resource key, queued on the server in one call.

    Attributes:
        batch_id: The batch's id in the run's ``batches`` hash.
        array_id: The array every task belongs to.
        resource_key: The resource key every task was queued with ("" when none).
        task_ids: The ids in queue order.
        tasks: The registry objects of ``task_ids``, mirrors refreshed.
        redriven: True when taken over from a dead replica (it may have reached the server).
    """

    batch_id: str
    array_id: int
    resource_key: str
    task_ids: tuple[int, ...]
    tasks: list[Any]
    redriven: bool


@dataclass(frozen=True)
class ReapReport:
    """What one ``reap`` did.

    Attributes:
        dead_replicas: Replicas removed because their lease expired.
        batches: Batches moved to the orphans list (re-driven first by ``claim_batch``).
        tasks: Tasks in those batches.
        skipped: True when another reap ran less than the mutex interval ago.
        leader_cleared: True when a dead replica's leadership lease was cleared.
    """

    dead_replicas: tuple[str, ...] = ()
    batches: int = 0
    tasks: int = 0
    skipped: bool = False
    leader_cleared: bool = False


@dataclass(frozen=True)
class LeaderInfo:
    """The leadership lease as Redis holds it.

    Attributes:
        replica_id: The leading replica ("" once the lease was cleared; the epoch stays).
        incarnation: Its incarnation.
        epoch: The fencing epoch; grows on every takeover (0: nobody ever led).
        deadline_ms: End of the lease, Redis time in ms (0 when none is stored).
        remaining_ms: ``deadline_ms`` minus Redis now (negative: expired, anyone may take over).
        alive: True while a replica holds the lease and it has not expired.
        lease_left_ms: ``remaining_ms`` while a replica holds a lease with a deadline, else None.
    """

    replica_id: str
    incarnation: str
    epoch: int
    deadline_ms: int
    remaining_ms: int
    alive: bool = field(init=False)
    lease_left_ms: int | None = field(init=False)

    def __post_init__(self) -> None:
        held = bool(self.replica_id) and self.deadline_ms > 0
        object.__setattr__(self, "alive", held and self.remaining_ms > 0)
        object.__setattr__(self, "lease_left_ms", self.remaining_ms if held else None)

    @classmethod
    def from_hash(cls, raw: Mapping[str, Any], now_ms: int) -> LeaderInfo:
        """The lease from the fields of the run's ``leader`` hash, at Redis time ``now_ms``
        (never trust what is stored: a field that does not parse reads as 0 or "")."""
        deadline = stored_int(raw.get("deadline_ms"))
        return cls(
            text(raw.get("id") or ""),
            text(raw.get("incarnation") or ""),
            stored_int(raw.get("epoch")),
            deadline,
            deadline - now_ms,
        )


@dataclass(frozen=True)
class ReconcileReport:
    """What one ``reconcile`` fixed, per kind.

    Attributes:
        propagated: DONE tasks whose completion had not been counted.
        enqueued: Ready REGISTERING tasks neither queued, claimed nor active, queued at the back.
        requeued_front: ADJUSTING_RESOURCES tasks neither queued nor claimed, queued at the front.
        reaped: Expired replicas reaped.
        active_fixed: Per-array active counters that disagreed with the status sets.
        reserved_fixed: Reservation counters that disagreed with the claimed batches.
        stale_claims: Claims of batches that no longer exist (dropped).
        credits_fixed: Done counts and pending credits that disagreed with the propagated
            upstreams (lost or doubled credits), set right.
    """

    propagated: int = 0
    enqueued: int = 0
    requeued_front: int = 0
    reaped: int = 0
    active_fixed: int = 0
    reserved_fixed: int = 0
    stale_claims: int = 0
    credits_fixed: int = 0

    @property
    def clean(self) -> bool:
        """True when the sweep found nothing to fix."""
        return all(getattr(self, f.name) == 0 for f in fields(self))


# --- helpers ----------------------------------------------------------------------------------


def _ttl_ms(ttl_s: Any, what: str = "ttl_s") -> int:
    """A lease length: seconds in 0.001..86400 (1 ms .. 1 day) as ms."""
    return seconds_to_ms(ttl_s, what, hi_ms=MAX_TTL_MS)


def _check_name(value: Any, what: str) -> str:
    if not isinstance(value, str) or not value or "|" in value or value != value.strip():
        raise InvalidInputError(f"{what} must be a non-empty string without '|', got {value!r}")
    if len(value.encode("utf-8", "surrogatepass")) > 200:
        raise InvalidInputError(f"{what} must be at most 200 bytes, got {len(value)} characters")
    return value


def _check_replica(replica: Any) -> Replica:
    if not isinstance(replica, Replica):
        raise InvalidTypeError(f"expected a Replica from join_replica(), got {replica!r}")
    _check_name(replica.id, "replica id")
    _check_name(replica.incarnation, "replica incarnation")
    check_int(replica.ttl_ms, "replica ttl_ms", lo=1, hi=MAX_TTL_MS, unit=" ms")
    return replica


def _check_epoch(epoch: Any) -> int:
    if isinstance(epoch, bool) or not isinstance(epoch, int):
        raise InvalidTypeError(f"epoch must be an int >= 1, got {epoch!r}")
    return check_int(epoch, "epoch", lo=1)


def _caller(core: StateCore, epoch: int | None) -> Caller:
    if epoch is None:
        return core.caller()
    return Caller(core.seen, core.actor, str(_check_epoch(epoch)), core.token)


def default_replica_id() -> str:
    """``host-pid-random``: unique enough for a fleet, readable in events."""
    host = socket.gethostname().replace("|", "_") or "host"
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


# --- membership -------------------------------------------------------------------------------


def join_replica(
    core: StateCore, ttl_s: float = 10.0, replica_id: str | None = None
) -> Op[Replica]:
    """Register a replica with a lease; the core's events then carry its id.

    ``ttl_s`` is 0.001..86,400 s (1 ms .. 1 day); the replica id a non-empty string of at most
    200 bytes without ``|`` (see docs/validation.md). Anything else: InvalidInputError /
    InvalidTypeError, nothing written.
    """
    ttl_ms = _ttl_ms(ttl_s)
    rid = _check_name(default_replica_id() if replica_id is None else replica_id, "replica id")
    replica = Replica(rid, secrets.token_hex(8), ttl_ms)
    # a retry of a join that failed in doubt joins as the same member (same call: replayed)
    retried = core.join_in_doubt
    if retried is not None and retried[0] == (replica_id, ttl_ms):
        replica = retried[1]
    call = cmd.join(core.keys, core.caller(), replica.id, replica.incarnation, ttl_ms)
    try:
        yield from core.scripts([call])
    except IN_DOUBT_ERRORS:
        core.join_in_doubt = ((replica_id, ttl_ms), replica)
        raise
    core.join_in_doubt = None
    core.actor = replica.id
    return replica


def heartbeat(core: StateCore, replica: Replica) -> Op[None]:
    """Extend the lease; LeaseLostError when it expired or the replica was reaped."""
    r = _check_replica(replica)
    yield from core.scripts(
        [cmd.heartbeat(core.keys, core.caller(), r.id, r.incarnation, r.ttl_ms)]
    )


def leave(core: StateCore, replica: Replica) -> Op[None]:
    """Clean shutdown: held batches back to the queue front, leadership resigned, member gone."""
    r = _check_replica(replica)
    yield from core.scripts([cmd.leave(core.keys, core.caller(), r.id, r.incarnation)])


# --- claims -----------------------------------------------------------------------------------


def claim_batch(
    core: StateCore,
    replica: Replica,
    max_size: int = 500,
    *,
    window: int | None = None,
    scan_limit: int = DEFAULT_SCAN_LIMIT,
) -> Op[Batch | None]:
    """The next batch for this replica (an orphan first), or None when nothing is claimable."""
    r = _check_replica(replica)
    for name, value in (("max_size", max_size), ("scan_limit", scan_limit)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise InvalidTypeError(f"{name} must be an int >= 1, got {value!r}")
        check_int(value, name, lo=1)
    win = max(4 * max_size, 2000) if window is None else window
    if isinstance(win, bool) or not isinstance(win, int) or win < 0:
        raise InvalidTypeError(f"window must be an int >= 0, got {win!r}")
    check_int(win, "window", hi=MAX_SAFE_INT)
    call = cmd.claim_batch(
        core.keys,
        core.caller(),
        r.id,
        r.incarnation,
        max_size=max_size,
        window=win,
        scan_limit=scan_limit,
    )
    (reply,) = yield from core.scripts([call])
    claim = cmd.decode_claim(reply)
    if not claim.batch_id:
        return None
    ids = tuple(t[0] for t in claim.tasks)
    objs = yield from core.objects(list(ids))
    core.mirror(claim.tasks)
    return Batch(claim.batch_id, claim.array_id, claim.resource_key, ids, objs, claim.redriven)


def _answer(task_statuses: Mapping[Any, Any]) -> list[tuple[int, str]]:
    if not isinstance(task_statuses, Mapping):
        raise InvalidTypeError(
            f"task_statuses must be a mapping, got {type(task_statuses).__name__}"
        )
    out = []
    for task_id, status in task_statuses.items():
        tid = coerce_task_id(task_id, allow_str=True)
        out.append((tid, check_task_status(status, task_id=tid)))
    return out


def ack_batch(
    core: StateCore,
    replica: Replica,
    batch: Batch,
    task_statuses: Mapping[int, str],
    *,
    sync_time: Any = None,
) -> Op[set[Any]]:
    """Apply the server's answer to the batch's queue call and close the batch, atomically.

    Returns the changed task objects; tasks that new completions made ready and queued are
    in the core's ``last_ready``. LeaseLostError (nothing changed) if the batch is not held.
    """
    r = _check_replica(replica)
    changes = _answer(task_statuses)  # validate before any write
    stamp = core.sync_us(sync_time) if sync_time is not None else None
    yield from core.seal()  # the final DAG of tasks registered here before it propagates
    call = cmd.ack_batch(
        core.keys,
        core.caller(),
        r.id,
        r.incarnation,
        batch.batch_id,
        propagate=core.propagate_on_apply,
        stamp=stamp,
        changes=changes,
    )
    (reply,) = yield from core.scripts([call])
    decoded = cmd.decode_apply(reply, unfinished_at=6)
    rest = yield from core.finish_fanouts(decoded.unfinished, enqueue=True)
    result = yield from core.absorb([decoded, *rest])
    core.note_ready(result.ready)
    return result.changed


def release_batch(core: StateCore, replica: Replica, batch: Batch) -> Op[None]:
    """Give back an unqueued batch: its G/A tasks return to the queue front in order."""
    r = _check_replica(replica)
    call = cmd.release_batch(core.keys, core.caller(), r.id, r.incarnation, batch.batch_id)
    yield from core.scripts([call])


def reap(core: StateCore, *, interval_s: float = 0.5, force: bool = False) -> Op[ReapReport]:
    """Remove expired replicas; their batches become orphans, re-driven first by claims.

    ``interval_s`` (the mutex between sweeps) is 0.001..3,600 s.
    """
    lock_ms = seconds_to_ms(interval_s, "interval_s", hi_ms=MAX_REAP_LOCK_MS)
    call = cmd.reap(
        core.keys, core.caller(), lock_ms=lock_ms, force=force, token=secrets.token_hex(8)
    )
    (reply,) = yield from core.scripts([call])
    d = cmd.decode_reap(reply)
    return ReapReport(d.dead_replicas, d.batches, d.tasks, d.skipped, d.leader_cleared)


# --- leadership -------------------------------------------------------------------------------


def _leadership(
    core: StateCore, op: str, replica: Replica, ttl_ms: int, epoch: int | None
) -> Op[tuple[str, int]]:
    r = _check_replica(replica)
    call = cmd.leadership(core.keys, core.caller(), op, r.id, r.incarnation, ttl_ms, epoch)
    (reply,) = yield from core.scripts([call])
    return text(reply[1]), int(reply[2])


def acquire_leadership(
    core: StateCore, replica: Replica, ttl_s: float | None = None
) -> Op[int | None]:
    """The epoch if this replica leads now (took over or already led), else None.

    ``ttl_s`` (default: the replica's lease) is 0.001..86,400 s.
    """
    r = _check_replica(replica)
    ttl_ms = r.ttl_ms if ttl_s is None else _ttl_ms(ttl_s)
    epoch, _ = yield from _leadership(core, "acquire", r, ttl_ms, None)
    return int(epoch) if epoch else None


def renew_leadership(core: StateCore, replica: Replica, epoch: int) -> Op[None]:
    """Extend the leadership lease; FencedError if ``epoch`` no longer leads."""
    r = _check_replica(replica)
    yield from _leadership(core, "renew", r, r.ttl_ms, _check_epoch(epoch))


def resign_leadership(core: StateCore, replica: Replica, epoch: int) -> Op[None]:
    """Give up the lease if this replica still holds it under ``epoch`` (the epoch stays)."""
    r = _check_replica(replica)
    yield from _leadership(core, "resign", r, r.ttl_ms, _check_epoch(epoch))


def leader(core: StateCore) -> Op[LeaderInfo | None]:
    """The current leadership lease, or None when nobody holds it."""
    names = ("id", "incarnation", "epoch", "deadline_ms")
    raw, now = yield from core.read(("HMGET", core.keys.leader, *names), ("TIME",))
    if not cmd.opt_text(raw[0]):
        return None
    now_ms = int(text(now[0])) * 1000 + int(text(now[1])) // 1000
    return LeaderInfo.from_hash(dict(zip(names, raw)), now_ms)


# --- run status -------------------------------------------------------------------------------


def set_run_status(
    core: StateCore, new: str, *, expected: str | None = None, epoch: int | None = None
) -> Op[str]:
    """Compare-and-set on the run state machine; the status now. TransitionError if refused."""
    check_run_status(new)
    if expected is not None:
        check_run_status(expected)
    call = cmd.set_run_status(core.keys, _caller(core, epoch), new, expected)
    (reply,) = yield from core.scripts([call])
    return text(reply[1])


def finalize(core: StateCore, final_status: str, *, epoch: int | None = None) -> Op[bool]:
    """End the run once; True only for the call that did it."""
    check_run_status(final_status)
    (reply,) = yield from core.scripts(
        [cmd.finalize(core.keys, _caller(core, epoch), final_status)]
    )
    return int(reply[1]) == 1


# --- fringe and reconcile ----------------------------------------------------------------------


def _scan_set(core: StateCore, key: str) -> Op[list[int]]:
    ids: list[int] = []
    cursor: Any = 0
    while True:
        (page,) = yield from core.read(("SSCAN", key, cursor, "COUNT", _CHUNK))
        cursor, members = page
        ids += [int(text(m)) for m in members]
        if int(cursor) == 0:
            return ids


def _check_records(core: StateCore, ids: list[int]) -> Op[None]:
    """InvalidInputError naming the first of ``ids`` whose record does not parse (bounded
    HMGET reads); records that are gone are fine (the scripts skip them)."""
    for at in range(0, len(ids), _CHUNK * 4):
        part = ids[at : at + _CHUNK * 4]
        (raws,) = yield from core.read(("HMGET", core.keys.task, *part))
        for tid, raw in zip(part, raws):
            if raw is not None and (problem := record_problem(raw)) is not None:
                raise InvalidInputError(
                    f"task {tid} has a corrupt record ({problem}): {text(raw)[:200]!r}; "
                    "nothing was written (see swarm-redis verify)"
                )


def enqueue_initial_fringe(core: StateCore) -> Op[int]:
    """Once per run: ADJUSTING_RESOURCES tasks to the front, ready REGISTERING tasks to the back.

    Returns how many tasks this call queued (0 when another replica did the fringe). If the
    caller dies half-way, ``reconcile`` queues the rest. Every record it will queue is read and
    checked before the first call takes the run's ``fringe_done`` flag: a record that does not
    parse raises InvalidInputError with nothing written (each chunk checks its records again,
    atomically, before its first write).
    """
    yield from core.seal()  # readiness reads the final DAG of tasks registered here
    done = yield from core.meta_field("fringe_done")
    if done:
        return 0
    adjusting = sorted((yield from _scan_set(core, core.keys.status_set("A"))))
    registering = sorted((yield from _scan_set(core, core.keys.status_set("G"))))
    yield from _check_records(core, adjusting + registering)

    def items(ids: list[int]) -> list[tuple[int, str]]:
        return [(i, core.resource_key(core.tasks[i]) if i in core.tasks else "") for i in ids]

    def chunks(ids: list[int]) -> list[list[int]]:
        return [ids[i : i + _CHUNK] for i in range(0, len(ids), _CHUNK)]

    # the front chunks go last-first so that the A tasks keep their order at the front
    plan = [(c, True) for c in reversed(chunks(adjusting))] + [
        (c, False) for c in chunks(registering)
    ]
    if not plan:
        plan = [([], False)]
    queued = 0
    for n, (ids, front) in enumerate(plan):
        call = cmd.enqueue_fringe(
            core.keys, core.caller(), items(ids), take_flag=n == 0, front=front
        )
        (reply,) = yield from core.scripts([call])
        if int(reply[1]) == 0:
            return 0
        found = cmd.triples(reply[2])
        core.mirror(found)
        queued += len(found)
    return queued


_INT = re.compile(r"-?[0-9]+")


def _candidate(core: StateCore, key: Any, raw: Any) -> bool:
    """A record reconcile_tasks may have to heal (the script checks again, atomically).

    A record that does not parse is skipped (logged once, kept in ``core.bad_records``):
    reconcile cannot heal it, ``swarm-redis verify`` reports it.
    """
    parts = text(raw).split("|")
    if len(parts) != 8:
        wanted = True  # let the strict check below log it
    elif parts[0] == "D":
        wanted = "p" not in parts[3]
    elif parts[0] == "G":
        wanted = parts[1] == parts[5]
    else:
        wanted = parts[0] == "A"
    if wanted and (record_problem(raw) is not None or not _INT.fullmatch(text(key))):
        core.decode(text(key), raw)  # logs and remembers it
        return False
    return wanted


#: Upstream-list entries one reconcile_credits call may scan (bounds its Redis time).
_CREDIT_COST = 20_000


def _scan_hash(core: StateCore, key: str) -> Op[list[tuple[Any, Any]]]:
    out: list[tuple[Any, Any]] = []
    cursor: Any = 0
    while True:
        (page,) = yield from core.read(("HSCAN", key, cursor, "COUNT", _CHUNK))
        cursor, entries = page
        out += hash_items(entries)
        if int(cursor) == 0:
            return out


def _fanouts(core: StateCore) -> Op[set[int]]:
    """Ids whose fan-out is being credited in slices (the progress fields of ``fanout``)."""
    entries = yield from _scan_hash(core, core.keys.fanout)
    return {int(name) for name in (text(k) for k, _ in entries) if "#" not in name}


def _record_parts(raw: Any) -> list[str] | None:
    parts = text(raw).split("|")
    if len(parts) < 8 or not parts[1].isdigit() or not parts[6].isdigit():
        return None
    return parts


def _children(parts: list[str]) -> list[int]:
    if parts[7].startswith("*"):  # in ``kids`` slices, see _slices
        return []
    return [int(c) for c in parts[7].split(",") if c]


def _slices(core: StateCore) -> Op[dict[str, list[tuple[str, list[str]]]]]:
    """The ``kids`` slices by task id (as text): [("<id>#<k>", ids), ...]."""
    out: dict[str, list[tuple[str, list[str]]]] = {}
    for k, v in (yield from _scan_hash(core, core.keys.kids)):
        name = text(k)
        tid, _, _ = name.partition("#")
        out.setdefault(tid, []).append((name, text(v).split(",")))
    return out


class _CreditScan:
    """What each task should count, accumulated over one HSCAN of the records (ids as text:
    the counting runs in C through Counter.update, this pass is on every reconcile)."""

    def __init__(self, progress: set[int]) -> None:
        self.progress = {str(i) for i in progress}
        self.credit: Counter[str] = Counter()
        self.have: dict[str, int] = {}
        self.below_progress: set[str] = set()
        self.marked = False  # a record keeps its downstream ids in ``kids`` slices
        self.sliced: set[str] = set()  # ... and its completion was propagated

    def feed(self, items: Iterable[tuple[Any, Any]]) -> None:
        for k, v in items:
            parts = text(v).split("|")
            if len(parts) < 8 or not parts[1].isdigit() or not parts[6].isdigit():
                continue
            tid = text(k)
            self.have[tid] = int(parts[1]) - int(parts[6])
            if parts[7].startswith("*"):
                self.marked = True
                if "p" in parts[3]:
                    self.sliced.add(tid)
            elif parts[7] and "p" in parts[3]:
                kids = parts[7].split(",")
                if tid in self.progress:
                    self.below_progress.update(kids)
                else:
                    self.credit.update(kids)

    def feed_slices(self, slices: Mapping[str, list[tuple[str, list[str]]]]) -> None:
        """Credits of the propagated tasks whose downstream ids are in ``kids`` slices."""
        for tid in self.sliced:
            for _, kids in slices.get(tid, ()):
                if tid in self.progress:
                    self.below_progress.update(kids)
                else:
                    self.credit.update(kids)

    def suspects(self, pending: Mapping[int, int]) -> set[int]:
        have, credit = self.have, self.credit
        out = {t for t, h in have.items() if credit.get(t, 0) != h}
        out |= {str(t) for t in pending if str(t) in have}
        out |= {t for t, c in credit.items() if t and t not in have and c > pending.get(int(t), 0)}
        return {int(t) for t in out - self.below_progress}


def heal_credits(core: StateCore, scan: _CreditScan | None = None) -> Op[int]:
    """Recompute every done count and pending credit from the propagated upstreams and let
    ``reconcile_credits`` recheck and fix the suspects atomically, in bounded calls.

    HSCAN passes over the records (``scan``: the first one, done by the caller): not a
    snapshot, the script decides on what Redis holds when it runs. Tasks below a fan-out in
    progress are left to the sweep after it finished. Returns how many counts were fixed.
    """
    if scan is None:
        scan = _CreditScan((yield from _fanouts(core)))
        cursor: Any = 0
        while True:  # pass 1: what each task should count
            (page,) = yield from core.read(("HSCAN", core.keys.task, cursor, "COUNT", _CHUNK))
            cursor, entries = page
            scan.feed(hash_items(entries))
            if int(cursor) == 0:
                break
    slices = (yield from _slices(core)) if scan.marked else {}
    scan.feed_slices(slices)
    pending: dict[int, int] = {}
    for k, v in (yield from _scan_hash(core, core.keys.pcredit)):
        count = text(v).rstrip("q")
        pending[int(text(k))] = int(count) if count.isdigit() else -1
    suspects = scan.suspects(pending)
    if not suspects:
        return 0
    parents, sizes = yield from _upstreams(core, suspects, slices)
    return (yield from _fix_credits(core, parents, sizes))


def _upstreams(
    core: StateCore, suspects: set[int], slices: Mapping[str, list[tuple[str, list[str]]]]
) -> Op[tuple[dict[int, list[int | str]], dict[int | str, int]]]:
    """Pass 2 over the records: the upstreams of each suspect, and their list sizes (an
    upstream with ``kids`` slices is named once per slice holding the suspect, "<id>#<k>")."""
    parents: dict[int, list[int | str]] = {t: [] for t in suspects}
    sizes: dict[int | str, int] = {}
    wanted = {str(t) for t in suspects}
    cursor: Any = 0
    while True:
        (page,) = yield from core.read(("HSCAN", core.keys.task, cursor, "COUNT", _CHUNK))
        cursor, entries = page
        for k, v in hash_items(entries):
            parts = _record_parts(v)
            if parts is None:
                continue
            kids = _children(parts)
            tid = int(text(k))
            for c in set(kids) & suspects:
                parents[c].append(tid)
                sizes[tid] = len(kids)
            for name, members in slices.get(text(k), ()) if parts[7].startswith("*") else ():
                for m in set(members) & wanted:
                    parents[int(m)].append(name)
                    sizes[name] = len(members)
        if int(cursor) == 0:
            break
    return parents, sizes


def _fix_credits(
    core: StateCore, parents: dict[int, list[int | str]], sizes: dict[int | str, int]
) -> Op[int]:
    """reconcile_credits on each suspect with its upstreams, in calls of bounded cost."""
    fixed = 0
    group: list[tuple[int, list[int | str]]] = []
    cost = 0
    todo = sorted(parents.items())
    for n, (tid, ups) in enumerate(todo):
        group.append((tid, ups))
        cost += 1 + sum(sizes.get(u, 0) for u in ups)
        if cost >= _CREDIT_COST or len(group) >= _CHUNK or n == len(todo) - 1:
            call = cmd.reconcile_credits(core.keys, core.caller(), group)
            (reply,) = yield from core.scripts([call])
            d = cmd.decode_reconcile_credits(reply)
            fixed += len(d.fixed) + len(d.pending_fixed)
            core.mirror((f[0], None, f[2]) for f in d.fixed)
            group, cost = [], 0
    return fixed


def reconcile(core: StateCore) -> Op[ReconcileReport]:
    """Idempotent sweep that heals every crash window; reports what it fixed.

    Reaps expired replicas, recomputes the active and reserved counters, then walks all tasks
    (HSCAN in chunks, one script per chunk).
    """
    reaped = yield from reap(core, force=True)
    (counters,) = yield from core.scripts([cmd.reconcile_counters(core.keys, core.caller())])
    scan = _CreditScan((yield from _fanouts(core)))
    propagated = enqueued = front = 0
    cursor: Any = 0
    while True:
        (page,) = yield from core.read(("HSCAN", core.keys.task, cursor, "COUNT", _CHUNK))
        cursor, entries = page
        items = hash_items(entries)
        scan.feed(items)  # the same pass finds the credit suspects
        ids = [int(text(k)) for k, v in items if _candidate(core, k, v)]
        if ids:
            calls: list[Call] = [cmd.reconcile_tasks(core.keys, core.caller(), ids)]
            (reply,) = yield from core.scripts(calls)
            d = cmd.decode_reconcile_tasks(reply)
            propagated += len(d.propagated)
            enqueued += len(d.back)
            front += len(d.front)
            core.mirror((task_id, status, done) for task_id, done, status in d.touched)
        if int(cursor) == 0:
            break
    # fan-outs left half credited (by a caller that died, or started by this sweep)
    going = yield from _fanouts(core)
    rest = yield from core.finish_fanouts(sorted(going), enqueue=True)
    yield from core.absorb(rest)
    credits_fixed = yield from heal_credits(core, scan)
    return ReconcileReport(
        propagated=propagated,
        enqueued=enqueued,
        requeued_front=front,
        reaped=len(reaped.dead_replicas),
        active_fixed=int(counters[1]),
        reserved_fixed=int(counters[2]),
        stale_claims=int(counters[3]),
        credits_fixed=credits_fixed,
    )
