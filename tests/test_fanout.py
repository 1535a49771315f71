"""Downstream lists too long for a record: kept in ``kids`` slices, registered and credited in
bounded, resumable calls.

* a task with more than 400 downstreams is registered as slices (register_kids) followed by its
  record with the marker ``*<m>``; a caller killed in the middle leaves nothing the next
  registration does not finish; every chunk sent twice changes nothing;
* a record pointing at slices that are missing, or a malformed slice, is refused with every key
  of the run unchanged;
* its completion credits one slice per call with no first cut; attach, verify, reconcile,
  redefine and snapshot export/import read the slices (both backends);
* at 500k downstreams on a private redis-server: every script call of the registration, the
  completion and a reconcile after a caller died in the middle stays under :data:`BOUND_MS` of
  Redis CPU, each child credited exactly once.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from replies import as_bytes
from test_bounded import Timed, private  # noqa: F401  (the private server fixture)
from test_validation import assert_same, snapshot

from swarm_redis.engine import commands as cmd
from swarm_redis.engine.core import run_sync
from swarm_redis.errors import InvalidInputError
from swarm_redis.ops import snapshot as snapshot_mod
from swarm_redis.ops import verify
from swarm_redis.records import ArrayRecord, TaskRecord
from swarm_redis.state import RedisSwarmState
from swarm_redis.update import StateUpdate

MakeClient = Callable[..., redis.Redis]
#: The most Redis CPU one script call may take here (ms).
BOUND_MS = 25.0
N = 3_500  # nine slices of 400 (three per register_kids call)
M = -(-N // cmd.KIDS_SLICE)


def _run(
    client: redis.Redis, run_id: int, prefix: str, n: int
) -> tuple[RedisSwarmState, list[Any]]:
    """A run with an array; task 1 with `n` downstreams 2..n+1 (not registered yet)."""
    s = RedisSwarmState(1, run_id, 1, redis=client, prefix=prefix, events_maxlen=0)
    s.add_array(ArrayRecord(0, 10**7))
    parent = TaskRecord(1, 0, "G", 0, 0)
    kids = [TaskRecord(i, 0, "G", 1, 0) for i in range(2, n + 2)]
    parent.downstream_swarm_tasks = set(kids)
    return s, [parent, *kids]


def _record(client: redis.Redis, s: RedisSwarmState, tid: int) -> cmd.TaskState:
    return cmd.decode_record(tid, client.hget(s.keys.task, str(tid)))


class Recorder:
    """Sends the script calls of an operation and keeps them; dies after `stop_after` calls."""

    def __init__(self, s: RedisSwarmState, stop_after: int | None = None) -> None:
        self.s = s
        self.stop_after = stop_after
        self.sent: list[list[Any]] = []

    def __call__(self, batch: list[Any]) -> list[Any]:
        if any(isinstance(c, cmd.ScriptCall) for c in batch):
            if self.stop_after is not None and len(self.sent) >= self.stop_after:
                raise KeyboardInterrupt("killed")
            self.sent.append(batch)
        return self.s._transport.execute(batch)  # type: ignore[no-any-return]


def _scripts(rec: Recorder) -> list[str]:
    return [c.script for b in rec.sent for c in b if isinstance(c, cmd.ScriptCall)]


def test_slice_size_is_one_number() -> None:
    """The scripts get KIDS_SLICE (and ACTIVE_INLINE) from the client's constants, in their
    generated header; no Lua file defines its own."""
    from swarm_redis.engine import scripts

    header = f"local KIDS_SLICE, ACTIVE_INLINE = {cmd.KIDS_SLICE}, {cmd.ACTIVE_INLINE}\n"
    assert all(header in s.source for s in scripts.all_scripts())
    for path in (Path(__file__).parent.parent / "lua").rglob("*.lua"):
        assert not re.search(r"local (KIDS_SLICE|ACTIVE_INLINE)\b", path.read_text()), path


def test_registration_is_resumable_and_idempotent(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s, objs = _run(client, run_id, prefix, N)
    dead = Recorder(s, stop_after=2)
    with pytest.raises(KeyboardInterrupt):
        run_sync(dead, s._core.add_tasks(objs))
    assert _scripts(dead) == ["register_kids", "register_kids"]
    assert not client.hexists(s.keys.task, "1")  # the record comes after every slice
    written = client.hlen(s.keys.kids)
    assert 2 <= written < M
    assert verify.find_drift(client, s.keys).info["kids_unused"] == written
    other = RedisSwarmState.attach(client, run_id, prefix=prefix, events_maxlen=0)
    rec = Recorder(other)
    run_sync(rec, other._core.add_tasks(objs))  # a retry by another replica finishes it
    assert _scripts(rec)[0] == "register_kids"
    assert client.hget(s.keys.task, "1") == f"G|0|||0|0|0|*{M}".encode()
    assert client.hlen(s.keys.kids) == M
    assert client.hlen(s.keys.task) == N + 1
    before = snapshot(client, s.keys)
    for batch in rec.sent:  # every chunk sent again: nothing changes
        s._transport.execute(batch)
    assert_same(before, snapshot(client, s.keys))
    assert verify.find_drift(client, s.keys).info["kids_unused"] == 0
    # the registry rebuilt from Redis links the 3,500 downstreams
    fresh = RedisSwarmState.attach(client, run_id, prefix=prefix)
    assert {t.task_id for t in fresh.tasks[1].downstream_swarm_tasks} == set(range(2, N + 2))
    assert verify.find_drift(client, s.keys).clean


def test_completion_credits_each_slice_once(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s, objs = _run(client, run_id, prefix, N)
    s.add_tasks(objs)
    dead = Recorder(s, stop_after=2)  # dies after the completion and one slice
    with pytest.raises(KeyboardInterrupt):
        run_sync(dead, s._core.apply(StateUpdate(task_statuses={1: "D"})))
    assert client.hget(s.keys.fanout, "1") == f"{cmd.KIDS_SLICE}:2:{M}".encode()
    mid = verify.find_drift(client, s.keys)
    assert mid.clean, mid.counts
    assert mid.info["fanout_in_progress"] == 1
    other = RedisSwarmState.attach(client, run_id, prefix=prefix, events_maxlen=0)
    other.reconcile()
    assert client.hlen(s.keys.fanout) == 0
    assert client.hlen(s.keys.kids) == M  # the definition stays
    assert all(_record(client, s, i).num_upstreams_done == 1 for i in range(2, N + 2))
    assert client.zcard(s.keys.ready) == N
    other.propagate_completions([1])  # a replay changes nothing
    assert sum(_record(client, s, i).num_upstreams_done for i in range(2, N + 2)) == N
    # a lost credit below a sliced upstream: verify sees it, reconcile heals it
    raw = as_bytes(client.hget(s.keys.task, "77"))
    assert raw.startswith(b"G|1|")
    client.hset(s.keys.task, "77", b"G|0|" + raw[4:])
    assert verify.find_drift(client, s.keys).counts.get("done_count") == 1
    assert other.reconcile().credits_fixed == 1
    assert verify.find_drift(client, s.keys).clean


def test_missing_or_malformed_slices_write_nothing(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s, objs = _run(client, run_id, prefix, N)
    s.add_tasks(objs[1:])
    defs = [cmd.TaskDef(1, "G", 0, 0, 0, tuple(range(2, N + 2)))]
    calls = [
        cmd.register(s.keys, s._core.caller(), defs, ()),
        cmd.register_kids(s.keys, s._core.caller(), "new", [(1, 1, "2,,3")]),
        cmd.register_kids(
            s.keys, s._core.caller(), "new", [(1, 1, ",".join(["5"] * (cmd.KIDS_SLICE + 1)))]
        ),
        cmd.register_kids(s.keys, s._core.caller(), "new", [(1, 0, "2")]),
        cmd.redefine(s.keys, s._core.caller(), [(2, 1, tuple(range(10, 1200)))]),
    ]
    before = snapshot(client, s.keys)
    for call in calls:
        with pytest.raises(InvalidInputError):
            run_sync(s._transport.execute, s._core.scripts([call]))
        assert_same(before, snapshot(client, s.keys))


def test_redefine_moves_a_list_in_and_out_of_slices(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s, objs = _run(client, run_id, prefix, N)
    parent, kids = objs[0], objs[1:]
    wired = parent.downstream_swarm_tasks
    parent.downstream_swarm_tasks = set()
    s.add_tasks(objs)  # registered first, wired after (jobmon's resume path)
    assert client.hget(s.keys.task, "1") == b"G|0|||0|0|0|"
    parent.downstream_swarm_tasks = wired
    assert run_sync(s._transport.execute, s._core.seal()) == 1
    assert client.hget(s.keys.task, "1") == f"G|0|||0|0|0|*{M}".encode()
    parent.downstream_swarm_tasks = set(kids[:5])
    s._core.unsealed[1] = (0, tuple(k.task_id for k in kids))
    assert run_sync(s._transport.execute, s._core.seal()) == 1
    assert client.hlen(s.keys.kids) == 0  # the old slices went with the old list
    inline = cmd.decode_record(1, client.hget(s.keys.task, "1"))
    assert inline.slices == 0
    assert set(inline.downstream_ids) == {k.task_id for k in kids[:5]}


def test_snapshot_round_trip_keeps_the_slices(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s, objs = _run(client, run_id, prefix, N)
    s.add_tasks(objs)
    s.apply(StateUpdate(task_statuses={1: "D"}))
    snap = snapshot_mod.export_run(client, s.keys)
    plan = snapshot_mod.validate_snapshot(snap, prefix=f"{prefix}:copy", run_id=run_id)
    keys = snapshot_mod.import_run(client, plan)
    assert client.hgetall(keys.kids) == client.hgetall(s.keys.kids)
    assert verify.find_drift(client, keys).clean
    snap["keys"]["kids"]["value"][0][1] = "1,x"
    with pytest.raises(snapshot_mod.SnapshotError, match=r"keys\.kids"):
        snapshot_mod.validate_snapshot(snap, prefix=f"{prefix}:copy2", run_id=run_id)


def _half_million(client: redis.Redis, run_id: int) -> dict[str, list[tuple[str, float]]]:
    """Register a task with 500k downstreams, complete it with a caller that dies after 99
    slices and reconcile: the Redis CPU of every script call, by phase. The run's keys are
    deleted afterwards."""
    s, objs = _run(client, run_id, "fan", 500_000)
    try:
        timed = Timed(s)
        s.add_tasks(objs)
        reg = timed.take()
        assert (
            client.hlen(s.keys.kids) == 500_000 // cmd.KIDS_SLICE
            and client.hlen(s.keys.task) == 500_001
        )
        dead = Recorder(s, stop_after=100)  # the completion's caller dies after 99 slices
        with pytest.raises(KeyboardInterrupt):
            run_sync(dead, s._core.apply(StateUpdate(task_statuses={1: "D"})))
        s.reconcile()  # finishes the fan-out
        done = timed.take()
        assert client.hlen(s.keys.fanout) == 0
        assert client.zcard(s.keys.ready) == 500_000
        drift = verify.find_drift(client, s.keys)
        assert drift.clean, drift.counts
        assert drift.info["fanout_in_progress"] == 0
        return {"registration": reg, "completion and reconcile": done}
    finally:
        for key in s.keys.all:
            client.unlink(key)


def _worst(phases: dict[str, list[tuple[str, float]]]) -> tuple[str, float]:
    for what, calls in phases.items():
        worst = max(calls, key=lambda c: c[1])
        print(f"500k downstreams, {what}: {len(calls)} calls, worst {worst[1]:.1f} ms ({worst[0]})")
    return max((c for calls in phases.values() for c in calls), key=lambda c: c[1])


def test_500k_downstreams_stay_bounded(private: redis.Redis) -> None:  # noqa: F811
    """Every call under BOUND_MS. A call that grows with the fan-out is over the bound in every
    run; this VM's CPU time also jumps now and then (steal time), so a run with a call over
    the bound is followed by a second, whose every call must be under it."""
    worst = _worst(_half_million(private, 77))
    if worst[1] >= BOUND_MS:
        print(f"over the bound once ({worst}): measured again on a fresh run")
        worst = _worst(_half_million(private, 78))
    assert worst[1] < BOUND_MS, worst


def test_a_marker_of_zero_slices_is_a_corrupt_record(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s, objs = _run(client, run_id, prefix, 3)
    s.add_tasks(objs)
    client.hset(s.keys.task, "1", b"G|0|||0|0|0|*0")  # would never finish its fan-out
    assert verify.find_drift(client, s.keys).counts.get("bad_record") == 1
    before = snapshot(client, s.keys)
    with pytest.raises(InvalidInputError, match="task 1 has a corrupt record"):
        s.apply(StateUpdate(task_statuses={1: "D"}))
    assert_same(before, snapshot(client, s.keys))
