"""Validate before any write (issue 10, finding 6): every invalid value through every entry point.

Each case runs on both fronts (RedisSwarmState, AsyncRedisSwarmState) and both backends against
a run with something in every kind of key (tasks in many statuses, arrays, a queue, cached
resources, last_sync, a replica, a claimed batch, a leader), snapshots EVERY key of the run as
DUMP + PTTL, feeds one invalid value, and checks: InvalidInputError / InvalidTypeError naming
the culprit, and the snapshot afterwards identical. A second part sends poison ARGV straight to
each Lua script (a client that bypasses the Python layer) and checks the same; a third plants
unparseable records and checks that scripts refuse before writing, ``attach`` skips them with a
warning, and ``verify`` reports them.
"""

from __future__ import annotations

import datetime
import logging
import math
import time
from collections.abc import Callable
from typing import Any, Protocol

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from swarm_redis import (
    ArrayRecord,
    InvalidInputError,
    InvalidTypeError,
    RedisSwarmState,
    StateUpdate,
    SwarmRedisError,
    TaskRecord,
)
from swarm_redis.engine import commands as cmd
from swarm_redis.engine.coordination import MAX_CLAIM_SIZE, Batch, Replica
from swarm_redis.engine.keys import RunKeys
from swarm_redis.engine.scripts import load
from swarm_redis.engine.validation import MAX_SAFE_INT, record_problem
from swarm_redis.ops.verify import find_drift

BIG = 2**53  # one past the largest exact Lua integer
NAN = float("nan")
INF = float("inf")


def snapshot(client: Any, keys: RunKeys) -> dict[bytes, tuple[Any, bool]]:
    """Every key of the run: its content and whether it has a TTL (PTTL only ever shrinks).

    Hashes and sets are compared by their sorted members, everything else by DUMP: the DUMP of
    a hash or set in a hash table follows the table's order, which an incremental rehash moves
    on reads alone.
    """
    names = sorted(client.scan_iter(match=keys.match_all, count=1000))
    pipe = client.pipeline(transaction=False)
    for key in names:
        pipe.type(key).pttl(key)
    meta = pipe.execute()
    for i, key in enumerate(names):
        kind = meta[2 * i].decode() if isinstance(meta[2 * i], bytes) else meta[2 * i]
        if kind == "hash":
            pipe.hgetall(key)
        elif kind == "set":
            pipe.smembers(key)
        else:
            pipe.dump(key)
    contents = pipe.execute()
    out: dict[bytes, tuple[Any, bool]] = {}
    for i, key in enumerate(names):
        value = contents[i]
        if isinstance(value, dict):
            value = sorted(value.items())
        elif isinstance(value, set):
            value = sorted(value)
        out[key] = (value, meta[2 * i + 1] >= 0)
    return out


def assert_same(before: dict[bytes, Any], after: dict[bytes, Any]) -> None:
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"keys written by a refused call: {changed}"


class Ctx:
    """A populated run on one front, with a replica, its claimed batch and the leadership."""

    def __init__(self, front: Any, st: Any, r: redis.Redis) -> None:
        self.front = front
        self.st = st
        self.r = r
        self.replica: Replica = st.join_replica(30.0, replica_id="rep-a")
        self.epoch = st.acquire_leadership(self.replica)
        batch = st.claim_batch(self.replica, 2)
        assert batch is not None
        self.batch: Batch = batch

    @property
    def keys(self) -> RunKeys:
        keys: RunKeys = self.st.keys
        return keys


@pytest.fixture
def ctx(front: Any, r: redis.Redis, run_id: int, prefix: str) -> Ctx:
    st = front.state(run_id, prefix=prefix, max_concurrently_running=20)
    st.add_arrays([ArrayRecord(7, 3), ArrayRecord(8, 4)])
    tasks = [TaskRecord(i, array_id=7 if i % 2 else 8) for i in range(1, 13)]
    for up, down in ((0, 4), (0, 5), (1, 5), (5, 6)):
        tasks[up].downstream_swarm_tasks.add(tasks[down])
        tasks[down].num_upstreams += 1
    st.add_tasks(tasks)
    st.apply_update(
        StateUpdate(
            task_statuses={1: "D", 2: "Q", 3: "I", 4: "O", 8: "R", 9: "E", 10: "A", 11: "F"},
            sync_time=datetime.datetime(2024, 5, 1, 12, 0, 0),
            workflow_run_status="R",
        )
    )
    st.enqueue_tasks([tasks[11], tasks[6]])
    st.cache_resources(99, {"num_cores": 2})
    st.set_num_previously_complete(3)
    return Ctx(front, st, r)


class CaseCall(Protocol):
    """One call of a case against the populated run (lambdas bind their value as a default)."""

    def __call__(self, c: Ctx, /) -> Any: ...


Case = tuple[str, CaseCall, type[Exception] | tuple[type[Exception], ...], str]


def _task(**kw: Any) -> TaskRecord:
    t = TaskRecord(500, array_id=7)
    for k, v in kw.items():
        setattr(t, k, v)
    return t


def _far(days: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=days)


def _replica(c: Ctx, **kw: Any) -> Replica:
    fields: dict[str, Any] = {
        "id": c.replica.id,
        "incarnation": c.replica.incarnation,
        "ttl_ms": 30000,
    }
    fields.update(kw)
    return Replica(**fields)


BAD_INTS: list[tuple[Any, type[Exception]]] = [
    (-1, InvalidInputError),
    (BIG, InvalidInputError),
    (2**64, InvalidInputError),
    (1.5, InvalidTypeError),
    (1.0, InvalidTypeError),
    (NAN, InvalidTypeError),
    (INF, InvalidTypeError),
    (True, InvalidTypeError),
    ("3", InvalidTypeError),
    (None, InvalidTypeError),
]
BAD_TTLS: list[tuple[Any, type[Exception]]] = [
    (0, InvalidInputError),
    (-1, InvalidInputError),
    (NAN, InvalidInputError),
    (INF, InvalidInputError),
    (1e15, InvalidInputError),
    (86_401, InvalidInputError),
    (True, InvalidTypeError),
    ("10", InvalidTypeError),
    (None, InvalidTypeError),
]


def _cases() -> list[Case]:
    cases: list[Case] = []
    for bad, exc in BAD_INTS:
        b = repr(bad)
        cases += [
            (
                f"nup={b}",
                lambda c, v=bad: c.st.add_task(_task(num_upstreams=v)),
                exc,
                "num_upstreams",
            ),
            (
                f"done={b}",
                lambda c, v=bad: c.st.add_tasks([_task(num_upstreams=2, num_upstreams_done=v)]),
                exc,
                "num_upstreams_done",
            ),
            (f"array_id={b}", lambda c, v=bad: c.st.add_task(_task(array_id=v)), exc, "array"),
            (
                f"enqueue new nup={b}",
                lambda c, v=bad: c.st.enqueue_task(_task(num_upstreams=v)),
                exc,
                "num_upstreams",
            ),
            (
                f"add_array id={b}",
                lambda c, v=bad: c.st.add_array(ArrayRecord(v, 3)),
                exc,
                "array id",
            ),
            (
                f"add_arrays limit={b}",
                lambda c, v=bad: c.st.add_arrays([ArrayRecord(9, v)]),
                exc,
                "max_concurrently_running",
            ),
            (
                f"update limit={b}",
                lambda c, v=bad: c.st.apply_update(StateUpdate(max_concurrently_running=v)),
                exc,
                "max_concurrently_running",
            ),
            (
                f"set limit={b}",
                lambda c, v=bad: c.st.set_max_concurrently_running(v),
                exc,
                "max_concurrently_running",
            ),
            (
                f"update array limit={b}",
                lambda c, v=bad: c.st.apply_update(StateUpdate(array_limits={7: v})),
                exc,
                "array",
            ),
            (
                f"update array id={b}",
                lambda c, v=bad: c.st.apply_update(StateUpdate(array_limits={v: 1})),
                exc,
                "array id",
            ),
            (
                f"npc={b}",
                lambda c, v=bad: c.st.set_num_previously_complete(v),
                exc,
                "num_previously_complete",
            ),
            (
                f"renew epoch={b}",
                lambda c, v=bad: c.st.renew_leadership(c.replica, v),
                InvalidTypeError
                if exc is InvalidTypeError
                else (InvalidInputError, InvalidTypeError),
                "epoch",
            ),
            (
                f"finalize epoch={b}",
                lambda c, v=bad: c.st.finalize("D", epoch=v),
                InvalidTypeError
                if exc is InvalidTypeError
                else (InvalidInputError, InvalidTypeError),
                "epoch",
            ),
        ]
        if bad is not None:
            cases.append(
                (
                    f"claim max_size={b}",
                    lambda c, v=bad: c.st.claim_batch(c.replica, v),
                    (InvalidInputError, InvalidTypeError),
                    "max_size",
                )
            )
            cases.append(
                (
                    f"dequeue n={b}",
                    lambda c, v=bad: c.st.dequeue_tasks(v),
                    (InvalidInputError, InvalidTypeError),
                    "dequeue count",
                )
            )
    cases.append(
        (
            "done > nup",
            lambda c: c.st.add_task(_task(num_upstreams=1, num_upstreams_done=2)),
            InvalidInputError,
            "exceeds",
        )
    )
    for bad, exc in BAD_TTLS:
        b = repr(bad)
        cases += [
            (f"join ttl={b}", lambda c, v=bad: c.st.join_replica(v), exc, "ttl_s"),
            (
                f"acquire ttl={b}",
                lambda c, v=bad: c.st.acquire_leadership(c.replica, v),
                exc,
                "ttl_s",
            ),
            (f"reap interval={b}", lambda c, v=bad: c.st.reap(interval_s=v), exc, "interval_s"),
        ]
    for bad_ms in (0, -5, 10**15, 1.5, True):
        cases += [
            (
                f"heartbeat forged ttl_ms={bad_ms!r}",
                lambda c, v=bad_ms: c.st.heartbeat(_replica(c, ttl_ms=v)),
                (InvalidInputError, InvalidTypeError),
                "ttl_ms",
            ),
            (
                f"acquire forged ttl_ms={bad_ms!r}",
                lambda c, v=bad_ms: c.st.acquire_leadership(_replica(c, ttl_ms=v)),
                (InvalidInputError, InvalidTypeError),
                "ttl_ms",
            ),
        ]
    for rid in ("", "a|b", " pad", "x" * 300, 5):
        cases.append(
            (
                f"join replica_id={rid!r}"[:40],
                lambda c, v=rid: c.st.join_replica(10.0, replica_id=v),
                InvalidInputError,
                "replica id",
            )
        )
        cases.append(
            (
                f"leave forged id={rid!r}"[:40],
                lambda c, v=rid: c.st.leave(_replica(c, id=v)),
                InvalidInputError,
                "replica id",
            )
        )
    for when, culprit in (
        (datetime.datetime(9999, 12, 31), "in the future"),
        (_far(2), "in the future"),
        ("9999-12-31 00:00:00", "in the future"),
        (datetime.datetime(1969, 12, 31), "before 1970"),
        ("not a date", "ISO"),
        (1700000000, "sync_time"),
    ):
        exc = InvalidTypeError if isinstance(when, int) else InvalidInputError
        cases += [
            (
                f"sync_time={when!r}"[:40],
                lambda c, v=when: c.st.apply_update(StateUpdate({12: "Q"}, sync_time=v)),
                exc,
                culprit,
            ),
            (
                f"set_last_sync={when!r}"[:40],
                lambda c, v=when: c.st.set_last_sync(v),
                exc,
                culprit,
            ),
            (
                f"ack sync_time={when!r}"[:40],
                lambda c, v=when: c.st.ack_batch(c.replica, c.batch, {}, sync_time=v),
                exc,
                culprit,
            ),
        ]
    cases += [
        (
            "cache empty hash",
            lambda c: c.st.cache_resources("", {"a": 1}),
            InvalidInputError,
            "resource hash",
        ),
        (
            "cache huge hash",
            lambda c: c.st.cache_resources("h" * 2000, {"a": 1}),
            InvalidInputError,
            "resource hash",
        ),
        ("cache float hash", lambda c: c.st.cache_resources(1.5, {}), InvalidTypeError, "hash"),
        ("cache nan hash", lambda c: c.st.cache_resources(NAN, {}), InvalidTypeError, "hash"),
        ("finalize Z", lambda c: c.st.finalize("Z"), InvalidInputError, "'Z'"),
        ("set_run_status Z", lambda c: c.st.set_run_status("Z"), InvalidInputError, "'Z'"),
        (
            "set_run_status expected Y",
            lambda c: c.st.set_run_status("R", expected="Y"),
            InvalidInputError,
            "'Y'",
        ),
        (
            "ack bad status",
            lambda c: c.st.ack_batch(c.replica, c.batch, {c.batch.task_ids[0]: "Z"}),
            InvalidInputError,
            "'Z'",
        ),
        (
            "claim window -1",
            lambda c: c.st.claim_batch(c.replica, 5, window=-1),
            InvalidTypeError,
            "window",
        ),
        (
            "claim window 2^53",
            lambda c: c.st.claim_batch(c.replica, 5, window=BIG),
            InvalidInputError,
            "window",
        ),
        (
            "claim scan_limit 0",
            lambda c: c.st.claim_batch(c.replica, 5, scan_limit=0),
            InvalidTypeError,
            "scan_limit",
        ),
        ("array capacity -1", lambda c: c.st.get_array_capacity(-1), InvalidInputError, "array"),
        (
            "claim max_size=MAX+1",
            lambda c: c.st.claim_batch(c.replica, MAX_CLAIM_SIZE + 1),
            InvalidInputError,
            "max_size",
        ),
        (
            "ack batch=None",
            lambda c: c.st.ack_batch(c.replica, None, {}),
            InvalidTypeError,
            "Batch",
        ),
        (
            "release batch=None",
            lambda c: c.st.release_batch(c.replica, None),
            InvalidTypeError,
            "Batch",
        ),
    ]
    # flags: a bool; never their truth value ("0" is true) nor int() of them (nan, None)
    for bad in (NAN, INF, None, "1", "0", 1.5, 2, (1,)):
        cases += [
            (
                f"enqueue front={bad!r}",
                lambda c, v=bad: c.st.enqueue_tasks([c.st.get_task(12)], front=v),
                InvalidTypeError,
                "front",
            ),
            (
                f"apply propagate={bad!r}",
                lambda c, v=bad: c.st.apply(StateUpdate({12: "Q"}), propagate=v),
                InvalidTypeError,
                "propagate",
            ),
            (
                f"queue start={bad!r}",
                lambda c, v=bad: c.st.ready_to_run_list(v),
                InvalidTypeError,
                "start",
            ),
        ]
    # None means "no change" for the limit of a StateUpdate (and so for the setter): legal
    legal = (
        "update limit=None",
        "set limit=None",
        "acquire ttl=None",
        "finalize epoch=None",
        "apply propagate=None",  # the state's default
        "queue start=2",
    )
    return [c for c in cases if c[0] not in legal]


CASES = _cases()
GROUPS: dict[str, list[Case]] = {}
for _case in CASES:
    GROUPS.setdefault(_case[0].split("=")[0], []).append(_case)


@pytest.mark.parametrize("group", sorted(GROUPS))
def test_invalid_value_writes_nothing(ctx: Ctx, group: str) -> None:
    """Every invalid value of one entry point: refused, named, nothing written (the run is the
    same after each, so one populated run serves the whole group)."""
    before = snapshot(ctx.r, ctx.keys)
    assert len(before) >= 14  # the run really is populated
    for name, call, expected, culprit in GROUPS[group]:
        with pytest.raises(expected, match=culprit) as info:
            call(ctx)
        assert isinstance(info.value, SwarmRedisError), name
        assert isinstance(info.value, (ValueError, TypeError)), name
        assert_same(before, snapshot(ctx.r, ctx.keys))
    # the run still works afterwards
    ctx.st.apply_update(StateUpdate({12: "Q"}))
    assert ctx.st.get_task(12).status == "Q"


# --- constructors ----------------------------------------------------------------------------


CTOR_CASES: list[tuple[str, dict[str, Any], type[Exception], str]] = []
for _bad, _exc in BAD_INTS:
    for _name in ("workflow_id", "dag_id", "max_concurrently_running"):
        CTOR_CASES.append((f"{_name}={_bad!r}", {_name: _bad}, _exc, _name))
for _bad, _exc in (
    (1.5, InvalidTypeError),
    (-1, InvalidInputError),
    (10**8, InvalidInputError),
    (True, InvalidTypeError),
    ("10", InvalidTypeError),
    (NAN, InvalidTypeError),
):
    CTOR_CASES.append((f"events_maxlen={_bad!r}", {"events_maxlen": _bad}, _exc, "events_maxlen"))
for _bad, _exc in (
    (-1, InvalidInputError),
    (NAN, InvalidInputError),
    (INF, InvalidInputError),
    (10**10, InvalidInputError),
    ("1d", InvalidTypeError),
    (True, InvalidTypeError),
    (datetime.timedelta(days=-1), InvalidInputError),
):
    CTOR_CASES.append(
        (f"max_clock_skew={_bad!r}", {"max_clock_skew": _bad}, _exc, "max_clock_skew")
    )
for _bad, _exc in ((0, InvalidInputError), (1.5, InvalidTypeError), (True, InvalidTypeError)):
    CTOR_CASES.append((f"chunk_budget={_bad!r}", {"chunk_budget": _bad}, _exc, "chunk_budget"))
CTOR_CASES.append(("status Z", {"status": "Z"}, InvalidInputError, "'Z'"))


CTOR_GROUPS: dict[str, list[Any]] = {}
for _ctor_case in CTOR_CASES:
    CTOR_GROUPS.setdefault(_ctor_case[0].split("=")[0], []).append(_ctor_case)


@pytest.mark.parametrize("group", sorted(CTOR_GROUPS))
def test_constructor_refuses_before_writing(
    front: Any, ctx: Ctx, run_id: int, prefix: str, group: str
) -> None:
    before = snapshot(ctx.r, ctx.keys)
    fresh = prefix + "n"
    for _, kw, expected, culprit in CTOR_GROUPS[group]:
        with pytest.raises(expected, match=culprit):  # an existing run: left exactly as it was
            front.state(run_id, prefix=prefix, **kw)
        assert_same(before, snapshot(ctx.r, ctx.keys))
        with pytest.raises(expected, match=culprit):  # a new run: nothing created at all
            front.state(run_id, prefix=fresh, **kw)
        assert list(ctx.r.scan_iter(match=fresh + ":*")) == []


@pytest.mark.parametrize("bad", [-1, BIG, 1.5, NAN, True, "5", None], ids=repr)
def test_bad_workflow_run_id_creates_nothing(
    front: Any, r: redis.Redis, prefix: str, bad: Any
) -> None:
    with pytest.raises((InvalidInputError, InvalidTypeError), match="workflow_run_id"):
        front.state(bad, prefix=prefix)
    assert list(r.scan_iter(match=prefix + "*")) == []


def test_sync_time_within_the_skew_is_accepted(front: Any, run_id: int, prefix: str) -> None:
    st = front.state(run_id, prefix=prefix, max_clock_skew=datetime.timedelta(hours=2))
    st.add_task(TaskRecord(1))
    soon = _far(1 / 24)  # one hour ahead: inside two hours of skew
    st.apply_update(StateUpdate({1: "Q"}, sync_time=soon))
    assert st.get_last_sync() == soon
    with pytest.raises(InvalidInputError, match="max_clock_skew=7200"):
        st.apply_update(StateUpdate({1: "I"}, sync_time=_far(3 / 24)))
    assert st.get_task(1).status == "Q"
    naive_local = datetime.datetime.now() + datetime.timedelta(hours=14)  # UTC+14 server time
    default = front.state(run_id + 1, prefix=prefix)
    default.apply_update(StateUpdate(sync_time=naive_local))  # default skew: one day
    assert default.get_last_sync() == naive_local


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    nup=hs.one_of(hs.integers(-(2**70), 2**70), hs.floats(allow_nan=True), hs.booleans()),
    done=hs.one_of(hs.integers(-(2**70), 2**70), hs.floats(allow_nan=True), hs.booleans()),
)
def test_any_definition_is_stored_parseable_or_refused(
    r: redis.Redis, run_id: int, prefix: str, nup: Any, done: Any
) -> None:
    """Whatever the numbers, the record is either stored so that every parser reads it back, or
    refused with nothing written."""
    st = RedisSwarmState(1, run_id, 1, redis=r, prefix=prefix)
    tid = 1 + int(time.monotonic_ns() % 10**9)
    before = snapshot(r, st.keys)
    task = TaskRecord(tid, num_upstreams=nup, num_upstreams_done=done)
    ok = (
        all(isinstance(x, int) and not isinstance(x, bool) for x in (nup, done))
        and 0 <= done <= nup <= MAX_SAFE_INT
    )
    if ok:
        st.add_task(task)
        raw = r.hget(st.keys.task, tid)
        assert record_problem(raw) is None
        assert find_drift(r, st.keys).counts.get("bad_record", 0) == 0
    else:
        with pytest.raises((InvalidInputError, InvalidTypeError)):
            st.add_task(task)
        assert_same(before, snapshot(r, st.keys))


# --- poison ARGV straight to the scripts -----------------------------------------------------

POISON_NUMS = ["-1", "1.5", "1e3", "9007199254740992", "18446744073709551616", "nan", "", "x", " 1"]


def _base_calls(c: Ctx) -> dict[str, cmd.ScriptCall]:
    """One valid call per script (the run and caller of ``c``), to be poisoned position by position."""
    k, core = c.keys, c.st.raw._core
    who = core.caller()
    rep, bid = c.replica, c.batch.batch_id
    tail = cmd.UpdateTail(
        limit=20, array_limits=((7, 3),), run_status="R", sync_encoded="s:x", sync_us=5
    )
    defs = [cmd.TaskDef(600, "G", 7, 2, 1, (601,), "rk")]
    return {
        "create_run": cmd.create_run(k, who, 1, k.run_id, 5, 20, "B", 100, 16),
        "register": cmd.register(k, who, defs, [(7, 3)]),
        "apply_update": cmd.apply_update(
            k, who, propagate=True, stamp=5, changes=[(12, "Q")], tail=tail
        ),
        "propagate": cmd.propagate(k, who, [1], enqueue=True),
        "enqueue": cmd.enqueue(k, who, [(12, "rk")], front=False),
        "enqueue_fringe": cmd.enqueue_fringe(k, who, [(12, "")], take_flag=True, front=False),
        "dequeue": cmd.dequeue(k, who, 1),
        "cache_resources": cmd.cache_resources(k, who, "77", b"v"),
        "set_fields": cmd.set_fields(k, who, {"npc": 4}),
        "join": cmd.join(k, who, "rep-b", "inc", 1000),
        "heartbeat": cmd.heartbeat(k, who, rep.id, rep.incarnation, 1000),
        "leave": cmd.leave(k, who, rep.id, rep.incarnation),
        "leadership": cmd.leadership(k, who, "renew", rep.id, rep.incarnation, 1000, c.epoch),
        "reap": cmd.reap(k, who, lock_ms=500, force=True, token="tok"),
        "set_run_status": cmd.set_run_status(k, who, "R", None),
        "finalize": cmd.finalize(k, who, "S"),
        "claim_batch": cmd.claim_batch(
            k, who, rep.id, rep.incarnation, max_size=5, window=10, scan_limit=100
        ),
        "ack_batch": cmd.ack_batch(
            k,
            who,
            rep.id,
            rep.incarnation,
            bid,
            propagate=True,
            stamp=None,
            changes=[(c.batch.task_ids[0], "Q")],
        ),
        "release_batch": cmd.release_batch(k, who, rep.id, rep.incarnation, bid),
        "reconcile_tasks": cmd.reconcile_tasks(k, who, [1, 12]),
        "repair": cmd.repair(k, who, [("done", "5", "1", "1")]),
    }


#: Per script: the ARGV positions (0-based; 0-2 are seen, actor, epoch) that take numbers,
#: task ids, flags, names or letters, and what to poison them with.
_NUM, _ID, _FLAG, _NAME, _LETTER, _SEEN = "num", "id", "flag", "name", "letter", "seen"
POSITIONS: dict[str, list[tuple[int, str]]] = {
    "create_run": [
        (3, _NUM),
        (4, _NUM),
        (5, _NUM),
        (6, _NUM),
        (7, _LETTER),
        (8, _NUM),
        (9, _NUM),
        (10, _NAME),
    ],
    "register": [
        (3, _NUM),
        (4, _ID),
        (5, _LETTER),
        (6, _NUM),
        (7, _NUM),
        (8, _NUM),
        (10, _NAME),
        (11, _NUM),
        (12, _NUM),
        (13, _NUM),
    ],
    "apply_update": [
        (3, _FLAG),
        (4, _NUM),
        (5, _NUM),
        (6, _ID),
        (7, _LETTER),
        (8, _FLAG),
        (9, _NUM),
        (10, _NUM),
        (11, _NUM),
        (12, _NUM),
        (13, _LETTER),
        (15, _NUM),
    ],
    "propagate": [(3, _FLAG), (4, _ID)],
    "enqueue": [(3, _FLAG), (4, _ID), (5, _NAME)],
    "enqueue_fringe": [(3, _FLAG), (4, _FLAG), (5, _ID)],
    "dequeue": [(3, _NUM)],
    "cache_resources": [(3, _NAME), (4, _NAME)],
    "set_fields": [(3, _NAME), (4, _NUM)],
    "join": [(3, _NAME), (4, _NAME), (5, _NUM)],
    "heartbeat": [(3, _NAME), (4, _NAME), (5, _NUM)],
    "leave": [(3, _NAME), (4, _NAME)],
    "leadership": [(3, _NAME), (4, _NAME), (5, _NAME), (6, _NUM), (7, _NUM)],
    "reap": [(3, _NUM), (4, _FLAG), (5, _NAME)],
    "set_run_status": [(2, _NUM), (3, _LETTER), (4, _LETTER)],
    "finalize": [(2, _NUM), (3, _LETTER)],
    "claim_batch": [(3, _NAME), (4, _NAME), (5, _NUM), (6, _NUM), (7, _NUM)],
    "ack_batch": [
        (3, _NAME),
        (4, _NAME),
        (5, _NAME),
        (6, _FLAG),
        (7, _NUM),
        (8, _NUM),
        (9, _ID),
        (10, _LETTER),
    ],
    "release_batch": [(3, _NAME), (4, _NAME), (5, _NAME)],
    "reconcile_tasks": [(3, _ID)],
    "repair": [(3, _NUM), (7, _NUM)],
}
POISON = {
    _NUM: POISON_NUMS,
    _ID: ["1.5", "1e3", "x", "", " 1", "nan", "1-2"],
    _FLAG: ["2", "", "true", "-1"],
    _NAME: ["", "a|b", "x" * 2000],
    _LETTER: ["Z", "", "DD", "1"],
    _SEEN: ["x", "", "-1:"],
}
#: positions where "" is a legal value (an optional number or letter)
OPTIONAL = {
    ("apply_update", 4),
    ("apply_update", 9),
    ("apply_update", 13),
    ("ack_batch", 7),
    ("enqueue", 5),
    ("leadership", 7),
    ("set_run_status", 2),
    ("register", 10),
    ("set_run_status", 4),
    ("finalize", 2),
}
#: positions that take any text except these (resource hash field, encoded resources)
ONLY = {("cache_resources", 3): ["", "x" * 2000], ("cache_resources", 4): [""]}


def _poison_cases() -> list[tuple[str, int, str]]:
    out = []
    for script, positions in POSITIONS.items():
        for pos, kind in [(0, _SEEN), *positions]:
            for value in ONLY.get((script, pos), POISON[kind]):
                if value == "" and (script, pos) in OPTIONAL:
                    continue
                out.append((script, pos, value))
    return out


POISON_CASES = _poison_cases()


@pytest.mark.parametrize("backend", ["fake", "real"], indirect=True)
@pytest.mark.parametrize("front", ["sync"], indirect=True)
def test_poison_argv_is_refused_by_every_script(ctx: Ctx, backend: str) -> None:
    """A client that bypasses Python (or an older one) cannot store what Lua cannot parse."""
    base = _base_calls(ctx)
    assert set(base) >= set(POSITIONS)
    failures = []
    shas = {name: ctx.r.script_load(load(name).source) for name in base}
    # fakeredis runs Lua slowly: a third of the cases there (every script), all on real Redis
    cases = POISON_CASES if backend == "real" else POISON_CASES[::3]
    for script, pos, value in cases:
        call = base[script]
        args = [a if isinstance(a, (bytes, str)) else str(a) for a in call.args]
        assert pos < len(args), (script, pos, args)
        args[pos] = value
        before = snapshot(ctx.r, ctx.keys)
        try:
            ctx.r.evalsha(shas[script], len(call.keys), *call.keys, *args)
        except redis.ResponseError as e:
            if not str(e).startswith(("INVALID", "LEASELOST", "FENCED")):
                failures.append(f"{script}[{pos}]={value!r}: uncoded error {e}")
        else:
            failures.append(f"{script}[{pos}]={value!r}: accepted")
        after = snapshot(ctx.r, ctx.keys)
        if after != before:
            changed = [k for k in set(before) | set(after) if before.get(k) != after.get(k)]
            failures.append(f"{script}[{pos}]={value!r}: wrote {changed}")
    assert not failures, "\n".join(failures)


def test_base_calls_are_valid(ctx: Ctx) -> None:
    """The unpoisoned calls pass the checks (so each poison case tests exactly one value)."""
    if ctx.front.is_async:
        pytest.skip("script-level test: the sync front is enough")
    for script, call in _base_calls(ctx).items():
        try:
            ctx.r.eval(load(script).source, len(call.keys), *call.keys, *call.args)
        except redis.ResponseError as e:
            assert not str(e).startswith("INVALID"), f"{script}: {e}"


# --- unparseable records planted in Redis ------------------------------------------------------


POISONED_RECORDS = [
    "G|1.1529215046068e+18|||7|1|0|",
    "G|0|||7|1152921504606846976|0|",
    "G|-1|||7|1|0|",
    "Z|0|||7|0|0|",
    "G|0|",
    "garbage",
]


@pytest.mark.parametrize("raw", POISONED_RECORDS)
def test_corrupt_record_is_refused_reported_and_skipped(
    front: Any, r: redis.Redis, ctx: Ctx, run_id: int, prefix: str, raw: str, caplog: Any
) -> None:
    r.hset(ctx.keys.task, "6", raw)  # task 6: REGISTERING, child of 1 (DONE) and 2 (QUEUED)
    r.hdel(ctx.keys.meta, "fringe_done")  # the fringe has not run yet
    before = snapshot(r, ctx.keys)
    calls: list[tuple[str, Callable[[], Any]]] = [
        ("apply_update", lambda: ctx.st.apply_update(StateUpdate({6: "Q", 12: "Q"}))),
        ("update_task_status", lambda: ctx.st.update_task_status(6, "Q")),
        ("enqueue", lambda: ctx.st.enqueue_task(TaskRecord(6))),
        ("get_task", lambda: ctx.st.get_task(6)),
    ]
    for name, call in calls:
        with pytest.raises(InvalidInputError, match="task 6") as info:
            call()
        assert "corrupt record" in str(info.value), name
        assert_same(before, snapshot(r, ctx.keys))  # (per call)
    # a completion of task 2 (an upstream of 6) must refuse before crediting 6
    with pytest.raises(InvalidInputError, match="task 6"):
        ctx.st.apply_update(StateUpdate({2: "D"}))
    assert_same(before, snapshot(r, ctx.keys))
    # the initial fringe goes in chunks: the chunk holding task 5 is refused whole, with the
    # task named (an earlier chunk may have landed: reconcile queues the rest, skipping task 6)
    with pytest.raises(InvalidInputError, match="task 6"):
        ctx.st.enqueue_initial_fringe()
    assert 6 not in ctx.st.ready_to_run_list()
    # a replica attaching skips it with a warning (never a bare exception)
    with caplog.at_level(logging.WARNING, logger="swarm_redis.engine.core"):
        other = front.attach(run_id, prefix=prefix)
    assert 6 not in other.get_all_tasks()
    assert 12 in other.get_all_tasks()
    assert any("task 6" in m and "corrupt" in m for m in caplog.messages)
    # verify reports it as bad_record, with the raw value
    drift = find_drift(r, ctx.keys)
    bad = drift.items["bad_record"]
    assert [(d.subject, d.observed) for d in bad] == [("6", raw)]
    # reconcile skips it and still works; other tasks still move
    ctx.st.apply_update(StateUpdate({12: "Q"}))
    assert ctx.st.get_task(12).status == "Q"


def test_corrupt_meta_and_leases_do_not_break_later_writes(
    front: Any, r: redis.Redis, ctx: Ctx, run_id: int, prefix: str
) -> None:
    """events_maxlen 1.5, a lease deadline in exponent form, workflow_id nan: reads and writes
    go on (stored values fall back to defaults or count as expired)."""
    r.hset(
        ctx.keys.meta,
        mapping={"events_maxlen": "1.5", "detail_max": "-3", "workflow_id": "nan", "npc": "1e3"},
    )
    r.hset(ctx.keys.replicas, "ghost", "inc|1.0017e+15|0")
    r.hset(ctx.keys.leader, "deadline_ms", "1.0017e+15")
    ctx.st.apply_update(StateUpdate({12: "Q"}))
    assert ctx.st.get_task(12).status == "Q"
    other = front.attach(run_id, prefix=prefix)
    assert other.workflow_id == 0
    assert other.get_num_previously_complete() == 0  # unparseable: read as 0, no exception
    report = ctx.st.reap(force=True)
    assert "ghost" in report.dead_replicas
    assert ctx.st.leader() is not None
    assert ctx.st.reconcile() is not None


def test_far_future_sync_time_cannot_freeze_last_sync(ctx: Ctx) -> None:
    """The year-9999 scenario of the issue: refused, and last_sync keeps moving."""
    with pytest.raises(InvalidInputError, match="future"):
        ctx.st.apply_update(StateUpdate({12: "Q"}, sync_time=datetime.datetime(9999, 1, 1)))
    now = datetime.datetime.now(datetime.timezone.utc)
    ctx.st.apply_update(StateUpdate({12: "Q"}, sync_time=now))
    assert ctx.st.get_last_sync() == now


def test_nan_and_inf_never_reach_redis(ctx: Ctx) -> None:
    for bad in (NAN, INF, -INF):
        with pytest.raises((InvalidInputError, InvalidTypeError)):
            ctx.st.add_task(_task(num_upstreams=bad))
        assert math.isnan(bad) or math.isinf(bad)
    raw = ctx.r.hgetall(ctx.keys.task)
    assert all(record_problem(v) is None for v in raw.values())
