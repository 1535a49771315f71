"""Several replicas on one run: membership, batch claims, reaping, leadership and fencing.

Each function is an operation on a :class:`~swarm_redis.engine.core.StateCore` (a generator, driven by
the sync or the async front). Every lease deadline is computed from Redis ``TIME`` inside the
scripts, never from the client's clock. See docs/replicas.md for the walkthrough.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from swarm_redis.engine import commands as cmd
from swarm_redis.engine.commands import Caller, text
from swarm_redis.engine.core import IN_DOUBT_ERRORS, Op, StateCore
from swarm_redis.engine.validation import (
    MAX_REAP_LOCK_MS,
    MAX_SAFE_INT,
    MAX_TTL_MS,
    check_int,
    check_run_status,
    checked_changes,
    seconds_to_ms,
    stored_int,
)
from swarm_redis.errors import InvalidInputError, InvalidTypeError

#: Formerly the number of queue entries searched for a batch head; ignored since claim_batch
#: finds each array's next task through the per-array queue index (kept for compatibility).
DEFAULT_SCAN_LIMIT = 50_000
#: Most tasks per claimed batch: an ack costs 6-12 µs of Redis time per task (measured on a
#: 2-core machine, quiet and loaded), so one claim or ack stays near 10 ms and under the 25 ms
#: bound; a larger max_size is refused, not silently cut.
MAX_CLAIM_SIZE = 1000
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


def _check_batch(batch: Any) -> Batch:
    if not isinstance(batch, Batch):
        raise InvalidTypeError(f"expected a Batch from claim_batch(), got {batch!r}")
    return batch


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
        check_int(value, name, lo=1, hi=MAX_CLAIM_SIZE if name == "max_size" else MAX_SAFE_INT)
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
    return checked_changes(task_statuses.items(), allow_str=True)


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
    batch = _check_batch(batch)
    # only the batch's tasks take the answer (the script skips the rest): sending only those
    # keeps the call bounded by the batch size, whatever the mapping holds
    of_batch = set(batch.task_ids)
    changes = [c for c in _answer(task_statuses) if c[0] in of_batch]  # validated first
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
    batch = _check_batch(batch)
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
