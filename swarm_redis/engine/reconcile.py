"""Sweeps that set a run right: the initial fringe, and ``reconcile`` (lost completions and
credits, stray queue entries, counters, expired replicas).

Each function is an operation on a :class:`~swarm_redis.engine.core.StateCore`, like those of
:mod:`swarm_redis.engine.coordination`; every call stays bounded (chunks, SSCAN/HSCAN pages).
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields
from typing import Any

from swarm_redis.constants import ACTIVE_TASK_STATUSES
from swarm_redis.engine import commands as cmd
from swarm_redis.engine.commands import ACTIVE_INLINE, Call, text
from swarm_redis.engine.coordination import reap
from swarm_redis.engine.core import Op, StateCore
from swarm_redis.engine.replies import hash_items
from swarm_redis.engine.validation import (
    record_problem,
)
from swarm_redis.errors import InvalidInputError

_CHUNK = 1000
#: Tries of a paged count before the active counters are left for the next sweep.
_COUNT_TRIES = 3


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
        active_unchecked: 1 when the active counters were left for the next sweep: over
            :data:`ACTIVE_INLINE` active tasks are counted in pages, and writes kept landing
            while they were read (or a record of one did not parse).
    """

    propagated: int = 0
    enqueued: int = 0
    requeued_front: int = 0
    reaped: int = 0
    active_fixed: int = 0
    reserved_fixed: int = 0
    stale_claims: int = 0
    credits_fixed: int = 0
    active_unchecked: int = 0

    @property
    def clean(self) -> bool:
        """True when the sweep found nothing to fix."""
        return all(getattr(self, f.name) == 0 for f in fields(self) if f.name != "active_unchecked")


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
    adjusting = sorted((yield from core.scan_ids(core.keys.status_set("A"), _CHUNK)))
    registering = sorted((yield from core.scan_ids(core.keys.status_set("G"), _CHUNK)))
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
    return (yield from core.scan("HSCAN", key, hash_items, _CHUNK))


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


def _count_active(core: StateCore) -> Op[tuple[int, dict[int, int]] | None]:
    """The active tasks per array and the write version they were read at, for
    reconcile_counters; None when the script counts them itself (at most ACTIVE_INLINE).

    Read in bounded pages (SSCAN, HMGET), so other writes may land in between: a count is
    kept only when the version did not move from its first read to its last, and
    reconcile_counters uses it only if the version has still not moved. After
    ``_COUNT_TRIES`` moving counts the last one is sent anyway and refused by the script.
    """
    sets = [core.keys.status_set(s) for s in ACTIVE_TASK_STATUSES]
    sizes = yield from core.read(*[("SCARD", key) for key in sets])
    if sum(int(n) for n in sizes) <= ACTIVE_INLINE:
        return None
    per_array: Counter[int] = Counter()
    for _ in range(_COUNT_TRIES):
        yield from core.read()
        start = core.seen
        per_array = Counter()
        for key in sets:
            ids = yield from core.scan_ids(key, _CHUNK)
            for at in range(0, len(ids), _CHUNK * 4):
                part = ids[at : at + _CHUNK * 4]
                (raws,) = yield from core.read(("HMGET", core.keys.task, *part))
                for tid, raw in zip(part, raws):
                    if raw is None:
                        continue
                    if record_problem(raw) is not None:
                        return None  # its array is unknown: the script leaves the counters
                    per_array[cmd.decode_record(tid, raw).array_id] += 1
        yield from core.read()
        if core.seen == start:
            break
    return start, dict(per_array)


def reconcile(core: StateCore) -> Op[ReconcileReport]:
    """Idempotent sweep that heals every crash window; reports what it fixed.

    Reaps expired replicas, recomputes the active and reserved counters, then walks all tasks
    (HSCAN in chunks, one script per chunk).
    """
    reaped = yield from reap(core, force=True)
    counted = yield from _count_active(core)
    (counters,) = yield from core.scripts(
        [cmd.reconcile_counters(core.keys, core.caller(), counted)]
    )
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
            core.mirror(d.touched)
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
        active_fixed=max(int(counters[1]), 0),
        active_unchecked=int(int(counters[1]) < 0),
        reserved_fixed=int(counters[2]),
        stale_claims=int(counters[3]),
        credits_fixed=credits_fixed,
    )
