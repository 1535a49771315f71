"""The consistency checker: recompute a run's sets and counters from its task records.

The task records (``K.task``) are the truth: each holds the task's status, its done count, its
"propagated" flag and its immutable definition (array, number of upstreams, starting count,
downstream ids). Everything else is derived and can drift after a bug or a hand edit:

* status sets: each task in exactly the set of its record's status;
* per-array active counters: records in Q/I/O/R per array;
* done counts: start + number of upstreams whose record carries the propagated flag (plus the
  children already credited by a fan-out in progress, ``fanout``);
* pending credits (``pcredit``): only for ids without a record, each equal to the credits of
  its propagated upstreams (none expected once the run is finalized: finalize drops them);
  fan-out progress only for flagged DONE tasks;
* downstream ids kept in ``kids`` slices: a record with the marker ``*<m>`` whose slice is
  missing is a ``bad_record``; slices no record points at (a registration under way, or left
  by a replica that died before writing the record) are counted, not drift (``kids_unused``);
* the ready queue and the queued set: same ids, none final, none claimed, none without a
  record; resource keys (``qres``) only for queued or claimed tasks; the per-array queue index
  (``qidx``) holds exactly one ``array|position|id`` member per queue entry;
* claims, batches, reservations: every claim points to a batch that lists the task and every
  batch task is claimed; reserved capacity ("run" and per array) = tasks in claimed batches;
  the orphans list holds exactly the batches without a holder.

:func:`find_drift` reads the run (as one MULTI/EXEC snapshot up to ``atomic_max`` tasks, else
with SCANs, which a live run can make look inconsistent) and reports drift per kind;
:func:`repair` fixes it through ``lua/repair.lua`` in bounded chunks. Each repair either
re-derives the truth from the record inside the script (sets, queue) or is a compare-and-set
on the value that was read (counters), so a repair never clobbers a change made meanwhile:
such items are skipped, and a second ``verify`` tells. Monotonic counters (``K.counters``)
count events, not state, and are not checked.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarm_redis.constants import ACTIVE_TASK_STATUSES, FINAL_TASK_STATUSES, TASK_STATUSES
from swarm_redis.engine import commands as cmd
from swarm_redis.engine.commands import (
    TaskState,
    decode_record,
    slice_names,
    text,
    with_slices,
)
from swarm_redis.engine.keys import RunKeys
from swarm_redis.engine.transport import SyncTransport
from swarm_redis.engine.validation import record_problem
from swarm_redis.errors import InvalidInputError, UnknownRunError
from swarm_redis.ops.reads import BatchRecord, _display, parse_batch, parse_int, shown

__all__ = [
    "ATOMIC_MAX",
    "DRIFT_KINDS",
    "REPAIR_CHUNK_MAX",
    "Drift",
    "DriftReport",
    "RunData",
    "check",
    "expected_active",
    "expected_credits",
    "expected_done",
    "expected_reserved",
    "find_drift",
    "read_run",
    "repair",
]

#: Runs with at most this many tasks are read in one MULTI/EXEC (a point-in-time snapshot).
ATOMIC_MAX = 50_000
#: Most repairs in one script call (``verify --chunk``): a few thousand, so a repair of a big
#: drift never blocks Redis for long (DESIGN: bounded work per call).
REPAIR_CHUNK_MAX = 5000
_SCAN = 2000

#: Drift kinds, what each means, and the repair op that fixes it (None: reported only).
DRIFT_KINDS: dict[str, tuple[str, str | None]] = {
    "bad_record": ("task record that does not parse", None),
    "multi_status": ("task in more than one status set", "sets"),
    "wrong_set": ("task in a status set other than its record's", "sets"),
    "missing_from_set": ("task in no status set", "sets"),
    "no_record": ("status set member without a task record", "sets"),
    "done_count": ("done count differs from start + propagated upstreams", "done"),
    "pending_credit": ("pending credit of an unregistered id differs from its upstreams", None),
    "pending_registered": ("pending credit left for a task that has a record", None),
    "fanout_stale": ("fan-out progress for a task that is not a flagged DONE task", None),
    "active_counter": ("per-array active counter differs from the records", "active"),
    "ready_unknown": ("ready/queued entry without a task record", "queue"),
    "ready_final": ("ready/queued entry of a DONE or ERROR_FATAL task", "queue"),
    "ready_claimed": ("task queued and claimed at once", "queue"),
    "ready_duplicate": ("task more than once in the ready queue", "queue"),
    "queued_not_ready": ("in the queued set but not in the ready queue", "queue"),
    "ready_not_queued": ("in the ready queue but not in the queued set", "queue"),
    "qidx_missing": ("ready entry without its per-array index (qidx) member", "qidx"),
    "qidx_stale": ("qidx member that is not the index member of a ready entry", "qidx"),
    "stale_qres": ("resource key kept for a task neither queued nor claimed", "qres"),
    "claim_no_batch": ("claim names a batch that is missing or does not list the task", "claim"),
    "batch_unclaimed": ("batch lists a task that has no claim", "bclaim"),
    "multi_batch": ("task listed by two batches", None),
    "reserved": ("reserved capacity differs from the claimed batches", "reserved"),
    "orphan_stale": ("orphans list names a missing or re-driven batch", "orphan"),
    "orphan_unlisted": ("orphaned batch missing from the orphans list", "unlisted"),
}


@dataclass(frozen=True)
class Drift:
    """One inconsistency: its kind, the id it concerns, and what was read vs expected."""

    kind: str
    subject: str
    observed: str = ""
    expected: str = ""

    def to_json(self) -> dict[str, str]:
        return {"subject": self.subject, "observed": self.observed, "expected": self.expected}


@dataclass
class RunData:
    """Everything the checker reads from one run, decoded."""

    records: dict[int, TaskState]
    sets: dict[str, set[int]]
    ready: list[int]
    queued: set[int]
    qres: set[int]
    active: dict[str, int]
    claims: dict[int, str]
    batches: dict[str, BatchRecord]
    reserved: dict[str, int]
    orphans: list[str]
    consistent: bool
    bad: dict[int | str, str] = field(default_factory=dict)  # unparseable records: id -> raw
    #: ready entry -> its position (score); qidx members as read
    ready_pos: dict[int, int] = field(default_factory=dict)
    qidx: list[str] = field(default_factory=list)
    #: pending credits of ids without a record (``pcredit``): id -> count
    pcredit: dict[int, int] = field(default_factory=dict)
    #: fan-outs in progress (``fanout``): id -> children credited so far (-1: unparseable)
    fanout: dict[int, int] = field(default_factory=dict)
    #: the run was finalized: its pending credits were dropped (ids never registered)
    finalized: bool = False
    #: ``kids`` slices that no record's marker points at
    kids_unused: int = 0


@dataclass
class DriftReport:
    """What :func:`find_drift` found (and, after :func:`repair`, what was fixed)."""

    run_id: str
    tasks: int
    consistent: bool
    items: dict[str, list[Drift]] = field(default_factory=dict)
    info: dict[str, int] = field(default_factory=dict)
    repaired: dict[str, int] = field(default_factory=dict)
    skipped: int = 0

    @property
    def counts(self) -> dict[str, int]:
        """Drift per kind (kinds with none left out)."""
        return {k: len(v) for k, v in self.items.items() if v}

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def clean(self) -> bool:
        return self.total == 0

    def examples(self, n: int = 5) -> dict[str, list[Drift]]:
        return {k: v[:n] for k, v in self.items.items() if v}

    def to_json(self, examples: int = 5) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "tasks": self.tasks,
            "consistent_read": self.consistent,
            "clean": self.clean,
            "drift": self.counts,
            "examples": {k: [d.to_json() for d in v] for k, v in self.examples(examples).items()},
            "info": self.info,
            "repaired": self.repaired,
            "skipped": self.skipped,
        }


# --- recomputation (pure; also used by the replicas' reconcile) ------------------------------


def expected_credits(
    records: Mapping[int, TaskState], fanout: Mapping[int, int] | None = None
) -> Counter[int]:
    """Credits per id: one per occurrence in the list of a propagated upstream; only the first
    n children of one whose fan-out is still being credited in slices (``fanout``: id -> n)."""
    credit: Counter[int] = Counter()
    for tid, rec in records.items():
        if rec.propagated and fanout and tid in fanout:
            credit.update(rec.downstream_ids[: max(0, fanout[tid])])
        elif rec.propagated:
            credit.update(rec.downstream_ids)
    return credit


def expected_done(
    records: Mapping[int, TaskState], fanout: Mapping[int, int] | None = None
) -> dict[int, int]:
    """Each task's done count: its starting count plus its propagated upstreams."""
    credit = expected_credits(records, fanout)
    return {tid: rec.start + credit[tid] for tid, rec in records.items()}


def expected_active(records: Iterable[TaskState]) -> dict[str, int]:
    """Tasks in Q/I/O/R per array id (as the ``active`` hash spells it)."""
    out: Counter[str] = Counter()
    for rec in records:
        if rec.status in ACTIVE_TASK_STATUSES:
            out[str(rec.array_id)] += 1
    return dict(out)


def expected_reserved(batches: Iterable[BatchRecord]) -> dict[str, int]:
    """Capacity held by claimed batches: ``run`` and per array id."""
    out: Counter[str] = Counter()
    for b in batches:
        out["run"] += len(b.task_ids)
        out[b.array_id] += len(b.task_ids)
    return {k: v for k, v in out.items() if v}


def _counter_drift(
    kind: str, observed: Mapping[str, int], expected: Mapping[str, int]
) -> list[Drift]:
    out = []
    for name in sorted(set(observed) | set(expected), key=lambda a: (len(a), a)):
        have, want = observed.get(name, 0), expected.get(name, 0)
        if have != want:
            out.append(Drift(kind, name, str(have), str(want)))
    return out


def check(data: RunData, run_id: str = "") -> DriftReport:
    """Compare a run's derived state with what its records say (no I/O)."""
    recs = data.records
    items: dict[str, list[Drift]] = {k: [] for k in DRIFT_KINDS}

    member_of: dict[int, list[str]] = {}
    for status in TASK_STATUSES:
        for tid in data.sets.get(status, ()):
            member_of.setdefault(tid, []).append(status)
    for bad_id, raw in sorted(data.bad.items(), key=lambda kv: str(kv[0])):
        items["bad_record"].append(Drift("bad_record", str(bad_id), raw))
    for tid in sorted((set(member_of) | set(recs)) - set(data.bad)):
        sets = member_of.get(tid, [])
        rec = recs.get(tid)
        where = ",".join(sets)
        if rec is None:
            items["no_record"].append(Drift("no_record", str(tid), where, ""))
        elif len(sets) > 1:
            items["multi_status"].append(Drift("multi_status", str(tid), where, rec.status))
        elif not sets:
            items["missing_from_set"].append(Drift("missing_from_set", str(tid), "", rec.status))
        elif sets[0] != rec.status:
            items["wrong_set"].append(Drift("wrong_set", str(tid), where, rec.status))

    credit = expected_credits(recs, data.fanout)
    done = {tid: rec.start + credit[tid] for tid, rec in recs.items()}
    for tid in sorted(recs):
        if recs[tid].num_upstreams_done != done[tid]:
            have = str(recs[tid].num_upstreams_done)
            items["done_count"].append(Drift("done_count", str(tid), have, str(done[tid])))
    for tid in sorted(set(data.pcredit) | {c for c in credit if c not in recs}):
        if tid in data.bad:
            continue
        pend = data.pcredit.get(tid, 0)
        if tid in recs:
            items["pending_registered"].append(Drift("pending_registered", str(tid), str(pend)))
        elif pend != credit[tid] and not (data.finalized and pend == 0):
            want = str(credit[tid])
            items["pending_credit"].append(Drift("pending_credit", str(tid), str(pend), want))
    for tid, n in sorted(data.fanout.items()):
        rec = recs.get(tid)
        if n < 0 or rec is None or rec.status != "D" or not rec.propagated:
            seen = rec.status + ("p" if rec.propagated else "") if rec else "no record"
            items["fanout_stale"].append(Drift("fanout_stale", str(tid), seen, "Dp"))
    items["active_counter"] = _counter_drift(
        "active_counter", data.active, expected_active(recs.values())
    )

    in_ready = Counter(data.ready)
    for tid in sorted((set(in_ready) | data.queued) - set(data.bad)):
        rec = recs.get(tid)
        n = in_ready.get(tid, 0)
        seen = f"ready x{n}, {'queued' if tid in data.queued else 'not queued'}"
        if rec is None:
            kind = "ready_unknown"
        elif rec.status in FINAL_TASK_STATUSES:
            kind = "ready_final"
        elif tid in data.claims:
            kind = "ready_claimed"
        elif n > 1:
            kind = "ready_duplicate"
        elif n == 0:
            kind = "queued_not_ready"
        elif tid not in data.queued:
            kind = "ready_not_queued"
        else:
            continue
        items[kind].append(Drift(kind, str(tid), seen, rec.status if rec else ""))
    for tid in sorted(data.qres - data.queued - set(data.claims)):
        items["stale_qres"].append(Drift("stale_qres", str(tid), "qres", ""))
    # the queue index: entries with other queue drift are left to the "queue" repair
    other = {int(d.subject) for k in _QUEUE_KINDS for d in items[k]}
    members = {
        qidx_member(recs[tid].array_id, pos, tid): tid
        for tid, pos in data.ready_pos.items()
        if tid in recs and tid not in other
    }
    indexed = set(data.qidx)
    for member, tid in sorted(members.items(), key=lambda kv: kv[1]):
        if member not in indexed:
            items["qidx_missing"].append(Drift("qidx_missing", str(tid), "", member))
    for member in sorted(indexed - set(members)):
        owner = member.rsplit("|", 1)[-1]
        if not owner.isdigit() or int(owner) not in other:
            items["qidx_stale"].append(Drift("qidx_stale", owner, member, ""))

    holders: dict[int, list[str]] = {}
    for bid, batch in data.batches.items():
        for tid in batch.task_ids:
            holders.setdefault(tid, []).append(bid)
    for tid, bid in sorted(data.claims.items()):
        if bid not in holders.get(tid, []):
            items["claim_no_batch"].append(Drift("claim_no_batch", str(tid), bid, ""))
    for tid, bids in sorted(holders.items()):
        if len(bids) > 1:
            items["multi_batch"].append(Drift("multi_batch", str(tid), ",".join(sorted(bids))))
        elif tid not in data.claims:
            items["batch_unclaimed"].append(Drift("batch_unclaimed", str(tid), "", bids[0]))
    items["reserved"] = _counter_drift(
        "reserved", data.reserved, expected_reserved(data.batches.values())
    )
    listed = dict.fromkeys(data.orphans)
    for bid in listed:
        found = data.batches.get(bid)
        if found is None or found.holder:
            held = "missing" if found is None else f"held by {found.holder}"
            items["orphan_stale"].append(Drift("orphan_stale", bid, held))
    for bid, batch in sorted(data.batches.items()):
        if not batch.holder and bid not in listed:
            items["orphan_unlisted"].append(Drift("orphan_unlisted", bid))

    stalled = sum(
        1
        for tid, rec in recs.items()
        if rec.status == "G"
        and done[tid] == rec.num_upstreams
        and tid not in data.queued
        and tid not in data.claims
    )
    info = {
        "unpropagated_done": sum(1 for r in recs.values() if r.status == "D" and not r.propagated),
        "stalled_ready": stalled,
        "fanout_in_progress": len(data.fanout),
        "pending_credits": len(data.pcredit),
        "kids_unused": data.kids_unused,
    }
    return DriftReport(run_id, len(recs), data.consistent, items, info)


# --- reading ------------------------------------------------------------------------------------


_INT = re.compile(r"-?[0-9]+")


def _ids(raw: Iterable[Any]) -> list[int]:
    return [int(x) for x in map(_display, raw) if _INT.fullmatch(x)]


def _int_map(raw: Any, key: str) -> dict[str, int]:
    items = raw.items() if isinstance(raw, Mapping) else []
    return {_display(k): parse_int(v, key, f"field {shown(k)}") for k, v in items}


_QUEUE_KINDS = (
    "ready_unknown",
    "ready_final",
    "ready_claimed",
    "ready_duplicate",
    "queued_not_ready",
    "ready_not_queued",
)

#: Offset of queue positions in qidx members (see keys.py and lua/includes/prelude.lua).
QIDX_OFFSET = 2**52


def qidx_member(array_id: int | str, position: int, task_id: int) -> str:
    """The ``qidx`` member of a queue entry: ``array|position + 2^52 (16 digits)|id``."""
    return f"{array_id}|{position + QIDX_OFFSET:016d}|{task_id}"


def _ready_pairs(raw: Sequence[Any], key: str) -> list[tuple[int, int]]:
    """(id, position) in queue order from a ZRANGE WITHSCORES reply (any protocol)."""
    if raw and not isinstance(raw[0], (list, tuple)):
        raw = [(raw[i], raw[i + 1]) for i in range(0, len(raw), 2)]
    return [
        (parse_int(m, key, "a member"), int(float(sc if isinstance(sc, float) else text(sc))))
        for m, sc in raw
    ]


def _decode(keys: RunKeys, replies: Sequence[Any], consistent: bool, finalized: bool) -> RunData:
    records_raw, *set_raws = replies[: 1 + len(TASK_STATUSES)]
    ready_raw, queued, qres, active, claims, batches, reserved, orphans, qidx = replies[
        1 + len(TASK_STATUSES) : 10 + len(TASK_STATUSES)
    ]
    pcredit_raw, fanout_raw, kids_raw = replies[10 + len(TASK_STATUSES) :]
    kids = {_display(k): v for k, v in dict(kids_raw).items()}
    ready = _ready_pairs(ready_raw, keys.ready)
    records: dict[int, TaskState] = {}
    bad: dict[int | str, str] = {}
    for k, v in dict(records_raw).items():
        # never trust what is stored: a record the scripts could not parse back (a number past
        # 2^53, an exponent, a wrong field count) or a non-integer field name is reported
        key = _display(k)
        tid = int(key) if _INT.fullmatch(key) else None
        if tid is None or record_problem(v) is not None:
            bad[tid if tid is not None else key] = _display(v)
            continue
        rec = decode_record(tid, v)
        if rec.slices:
            try:
                rec = with_slices(rec, [kids.get(n) for n in slice_names(tid, rec.slices)])
            except ValueError:
                bad[tid] = f"{_display(v)} (a slice of its downstream ids in kids is missing)"
                continue
        records[tid] = rec
    return RunData(
        records=records,
        sets={s: set(_ids(raw)) for s, raw in zip(TASK_STATUSES, set_raws)},
        ready=[tid for tid, _ in ready],
        queued=set(_ids(queued)),
        qres=set(_ids(qres)),
        active=_int_map(active, keys.active),
        claims={parse_int(k, keys.claims, "a field"): _display(v) for k, v in dict(claims).items()},
        batches={_display(k): parse_batch(v, keys.batches, k) for k, v in dict(batches).items()},
        reserved=_int_map(reserved, keys.reserved),
        orphans=[_display(b) for b in orphans],
        consistent=consistent,
        finalized=finalized,
        kids_unused=len(kids) - sum(r.slices for r in records.values()),
        bad=bad,
        ready_pos=dict(ready),
        qidx=[_display(m) for m in qidx],
        pcredit=_pending(pcredit_raw, keys.pcredit),
        fanout=_progress(fanout_raw, keys.fanout),
    )


def _pending(raw: Any, key: str) -> dict[int, int]:
    out = {}
    for k, v in dict(raw).items():
        count = _display(v).rstrip("q")
        out[parse_int(k, key, "a field")] = int(count) if count.isdigit() else -1
    return out


def _progress(raw: Any, key: str) -> dict[int, int]:
    out = {}
    for k, v in dict(raw).items():
        name = _display(k)
        if "#" in name:  # a slice of children, not a progress
            continue
        n = _display(v).split(":")[0]
        out[parse_int(name, key, "a field")] = int(n) if n.isdigit() else -1
    return out


def read_run(client: Any, keys: RunKeys, *, atomic_max: int = ATOMIC_MAX) -> RunData:
    """Read everything the checker needs, with plain read commands only.

    Up to ``atomic_max`` tasks the reads run in one MULTI/EXEC (a point-in-time snapshot);
    beyond, with HSCAN/SSCAN and ranged reads that do not block Redis for long.

    Raises:
        UnknownRunError: The run has no meta key.
    """
    pipe = client.pipeline(transaction=False)
    exists, n_tasks, fin = (
        pipe.exists(keys.meta).hlen(keys.task).hget(keys.meta, "finalized").execute()
    )
    if int(exists) == 0:
        raise UnknownRunError(f"workflow run {keys.run_id} not found under prefix {keys.prefix!r}")
    if int(n_tasks) <= atomic_max:
        pipe = client.pipeline(transaction=True)
        pipe.hgetall(keys.task)
        for s in TASK_STATUSES:
            pipe.smembers(keys.status_set(s))
        pipe.zrange(keys.ready, 0, -1, withscores=True).smembers(keys.queued).hkeys(keys.qres)
        pipe.hgetall(keys.active).hgetall(keys.claims).hgetall(keys.batches)
        pipe.hgetall(keys.reserved).lrange(keys.orphans, 0, -1).zrange(keys.qidx, 0, -1)
        pipe.hgetall(keys.pcredit).hgetall(keys.fanout).hgetall(keys.kids)
        return _decode(keys, pipe.execute(), consistent=True, finalized=fin is not None)
    replies: list[Any] = [dict(client.hscan_iter(keys.task, count=_SCAN))]
    replies += [list(client.sscan_iter(keys.status_set(s), count=_SCAN)) for s in TASK_STATUSES]
    ready: list[tuple[Any, float]] = []
    while True:  # pages keyed by position: stable while the queue changes
        low = f"({int(ready[-1][1])}" if ready else "-inf"
        page = client.zrange(
            keys.ready, low, "+inf", byscore=True, offset=0, num=_SCAN, withscores=True
        )
        ready += page
        if len(page) < _SCAN:
            break
    qidx: list[Any] = []
    while True:
        low = f"({text(qidx[-1])}" if qidx else "-"
        page = client.zrange(keys.qidx, low, "+", bylex=True, offset=0, num=_SCAN)
        qidx += page
        if len(page) < _SCAN:
            break
    replies += [
        ready,
        list(client.sscan_iter(keys.queued, count=_SCAN)),
        [k for k, _ in client.hscan_iter(keys.qres, count=_SCAN)],
        dict(client.hscan_iter(keys.active, count=_SCAN)),
        dict(client.hscan_iter(keys.claims, count=_SCAN)),
        dict(client.hscan_iter(keys.batches, count=_SCAN)),
        dict(client.hscan_iter(keys.reserved, count=_SCAN)),
        client.lrange(keys.orphans, 0, -1),
        qidx,
        dict(client.hscan_iter(keys.pcredit, count=_SCAN)),
        dict(client.hscan_iter(keys.fanout, count=_SCAN)),
        dict(client.hscan_iter(keys.kids, count=_SCAN)),
    ]
    return _decode(keys, replies, consistent=False, finalized=fin is not None)


def find_drift(client: Any, keys: RunKeys, *, atomic_max: int = ATOMIC_MAX) -> DriftReport:
    """Read the run and report its drift per kind (see :data:`DRIFT_KINDS`).

    Raises:
        UnknownRunError: The run has no meta key.
    """
    return check(read_run(client, keys, atomic_max=atomic_max), str(keys.run_id))


# --- repairing ---------------------------------------------------------------------------------


def _op(d: Drift) -> tuple[str, str, str, str] | None:
    code = DRIFT_KINDS[d.kind][1]
    if code is None:
        return None
    if code in ("claim", "bclaim"):
        batch = d.observed if code == "claim" else d.expected
        return (code, d.subject, batch, "")
    return (code, d.subject, d.observed, d.expected)


def repair(
    client: Any,
    keys: RunKeys,
    report: DriftReport,
    *,
    chunk: int = 500,
    atomic_max: int = ATOMIC_MAX,
) -> DriftReport:
    """Fix the drift of ``report`` in script calls of at most ``chunk`` items each.

    Returns:
        A fresh report of the run after the repair, with ``repaired`` (fixed per kind) and
        ``skipped`` (items whose value changed since they were read, left alone) filled in.
    """
    if not 1 <= chunk <= REPAIR_CHUNK_MAX:
        raise InvalidInputError(f"chunk must be 1 to {REPAIR_CHUNK_MAX} repairs, got {chunk}")
    work: list[tuple[str, tuple[str, str, str, str]]] = []
    seen: set[tuple[str, str]] = set()
    for kind, drifts in report.items.items():
        for d in drifts:
            op = _op(d)
            if op is None:
                continue
            # a task with several kinds of queue drift needs one fix (qidx: one per member)
            once = (op[0], op[1] + ("|" + op[2] if op[0] == "qidx" else ""))
            if once not in seen:
                seen.add(once)
                work.append((kind, op))
    transport = SyncTransport(client, keys.run_id)
    caller = cmd.Caller(0, "verify")
    repaired: Counter[str] = Counter()
    skipped = 0
    for start in range(0, len(work), chunk):
        part = work[start : start + chunk]
        (reply,) = transport.execute([cmd.repair(keys, caller, [op for _, op in part])])
        for (kind, _), fixed in zip(part, cmd.decode_repair(reply)):
            if fixed:
                repaired[kind] += 1
            else:
                skipped += 1
    after = find_drift(client, keys, atomic_max=atomic_max)
    after.repaired = dict(repaired)
    after.skipped = skipped
    return after
