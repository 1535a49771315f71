"""Hostile stored values outside the task records (a hand edit, an old client, a bad restore):
each call either works or refuses with our error, and a refused call writes nothing.

* the reply cache's ``#count`` / ``#bytes`` totals: every mutating script stores its reply
  after its body wrote; a total that does not parse failed the script there (a Lua error, the
  writes kept, no reply cached for a retry);
* a 20-digit write version passed the prelude's check and failed ``HINCRBY`` after the writes;
  a non-integer version made every Python read raise a bare ValueError;
* a counter that is not an integer: ack_batch failed at ``HINCRBY counters`` after moving the
  tasks, leaking the claim;
* a batch record that does not parse: reconcile failed in Lua;
* a limit that is not an integer: apply_update committed, then its reply failed to decode;
  capacity reads and attach raised a bare ValueError.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable
from typing import Any

import pytest
import redis
from test_validation import assert_same, snapshot

from swarm_redis import ArrayRecord, RedisSwarmState, StateUpdate, TaskRecord
from swarm_redis.engine.keys import RUN_KEY_TYPES
from swarm_redis.errors import InvalidInputError, SwarmRedisError

MakeClient = Callable[..., redis.Redis]


def _run(client: redis.Redis, run_id: int, prefix: str) -> tuple[RedisSwarmState, Any, Any]:
    st = RedisSwarmState(1, run_id, 1, redis=client, prefix=prefix, max_concurrently_running=20)
    st.add_arrays([ArrayRecord(7, 3), ArrayRecord(8, 4)])
    st.add_tasks([TaskRecord(i, array_id=7 if i % 2 else 8) for i in range(1, 9)])
    st.apply_update(
        StateUpdate({1: "Q", 2: "R"}, sync_time=datetime.datetime(2024, 5, 1, 12, 0, 0))
    )
    st.enqueue_tasks([st.get_task(5), st.get_task(6)])
    replica = st.join_replica(30.0, replica_id="rep-a")
    batch = st.claim_batch(replica, 1)
    assert batch is not None
    return st, replica, batch


def _refused_or_done(client: redis.Redis, st: RedisSwarmState, call: Callable[[], Any]) -> bool:
    """True when the call worked; else its error is ours and nothing was written."""
    before = snapshot(client, st.keys)
    try:
        call()
    except SwarmRedisError as exc:
        assert "user_script" not in str(exc)
        assert_same(before, snapshot(client, st.keys))
        return False
    return True


@pytest.mark.parametrize("field", ["#count", "#bytes"])
def test_unparseable_reply_cache_totals_do_not_fail_a_write(
    make_client: MakeClient, run_id: int, prefix: str, field: str
) -> None:
    client = make_client()
    st, replica, batch = _run(client, run_id, prefix)
    client.hset(st.keys.replies, field, "x")
    st.apply_update(StateUpdate({3: "Q"}))  # was: Lua error after the write
    assert st.get_task(3).status == "Q"
    st.ack_batch(replica, batch, {batch.task_ids[0]: "Q"})
    assert client.hlen(st.keys.claims) == 0
    assert int(client.hget(st.keys.replies, "#count") or 0) >= 1  # the totals start again


@pytest.mark.parametrize("version", ["99999999999999999999", "9007199254740993", "1.5", "x"])
def test_unparseable_write_version_is_refused_by_scripts_and_reads(
    make_client: MakeClient, run_id: int, prefix: str, version: str
) -> None:
    client = make_client()
    st, replica, batch = _run(client, run_id, prefix)
    client.hset(st.keys.meta, "version", version)
    before = snapshot(client, st.keys)
    calls: list[Callable[[], Any]] = [
        lambda: st.apply_update(StateUpdate({3: "Q"})),
        lambda: st.ack_batch(replica, batch, {batch.task_ids[0]: "Q"}),
        lambda: st.heartbeat(replica),
        lambda: st.add_task(TaskRecord(50, array_id=7)),
        st.has_pending_work,
        st.get_available_capacity,
        lambda: st.get_task(3),
    ]
    for call in calls:
        with pytest.raises(InvalidInputError, match="write version"):
            call()
        assert_same(before, snapshot(client, st.keys))


@pytest.mark.parametrize("counter", ["acks", "to:Q"])
def test_unparseable_counter_refuses_an_ack_before_it_writes(
    make_client: MakeClient, run_id: int, prefix: str, counter: str
) -> None:
    client = make_client()
    st, replica, batch = _run(client, run_id, prefix)
    client.hset(st.keys.counters, counter, "1.5")
    before = snapshot(client, st.keys)
    with pytest.raises(InvalidInputError, match="counter"):
        st.ack_batch(replica, batch, {batch.task_ids[0]: "Q"})
    assert_same(before, snapshot(client, st.keys))  # the claim is still whole


@pytest.mark.parametrize("record", ["x", "rep-a|inc", "|||"])
def test_reconcile_leaves_an_unparseable_batch_record_alone(
    make_client: MakeClient, run_id: int, prefix: str, record: str
) -> None:
    client = make_client()
    st, _, batch = _run(client, run_id, prefix)
    client.hset(st.keys.batches, batch.batch_id, record)
    st.reconcile()  # was: a Lua error (gmatch on nil) in reconcile_counters
    assert client.hget(st.keys.batches, batch.batch_id) == record.encode()


@pytest.mark.parametrize("limit", ["x", "1.5", "1e400"])
def test_unparseable_limits_are_refused_or_read_safely(
    make_client: MakeClient, run_id: int, prefix: str, limit: str
) -> None:
    client = make_client()
    st, _, _ = _run(client, run_id, prefix)
    client.hset(st.keys.meta, "limit", limit)
    before = snapshot(client, st.keys)
    with pytest.raises(InvalidInputError, match="meta limit"):
        st.apply_update(StateUpdate({3: "Q"}))  # was: committed, then a ValueError
    assert_same(before, snapshot(client, st.keys))
    assert st.get_available_capacity() == 0  # read as no limit: no capacity
    client.hset(st.keys.arrays, "7", limit)
    client.hset(st.keys.active, "8", limit)
    assert st.get_array_capacity(7) == 0
    assert st.get_array_capacity(8) == 4 - 0 - 0  # an unparseable active count reads as 0
    other = RedisSwarmState.attach(client, run_id, prefix=prefix)  # skips array 7
    assert set(other.get_arrays()) == {8}
    # an update that sets the limit replaces the bad value
    client.hset(st.keys.active, "8", "1")
    st.apply_update(StateUpdate({3: "Q"}, max_concurrently_running=9))
    assert st.get_task(3).status == "Q"
    assert st.get_available_capacity() > 0


def test_members_that_are_not_ids_are_skipped_by_reads(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    """A status set or the queue holding a member that is not a task id: reads skip it (they
    raised a bare ValueError: the fringe, reconcile, ready_to_run_list)."""
    client = make_client()
    st, _, _ = _run(client, run_id, prefix)
    client.sadd(st.keys.status_set("G"), "x")
    client.zadd(st.keys.ready, {"y": 0.5})  # at the head
    assert st.ready_to_run_list() == [st.get_task(6)]  # (5 is claimed)
    assert st.ready_to_run_list(0, 0) == []  # rank 0 is the member that is not an id
    assert st.enqueue_initial_fringe() >= 1
    st.reconcile()


# every key of the run but the task records themselves: a key of another type than the key
# table's made commands fail with WRONGTYPE after a script's first write
_WRONG_TYPED = ["meta", "s:R", "ready", "queued", "active", "claims", "orphans", "events",
                "counters", "replies", "reply_at", "qidx", "kids", "reap_lock"]  # fmt: skip


@pytest.mark.parametrize("name", _WRONG_TYPED)
def test_a_key_of_another_type_is_refused_before_any_write(
    make_client: MakeClient, run_id: int, prefix: str, name: str
) -> None:
    client = make_client()
    st, replica, batch = _run(client, run_id, prefix)
    key = st.keys.key(name)
    client.delete(key)
    if RUN_KEY_TYPES[name] == "string":
        client.rpush(key, "x")  # a list where a string belongs
    else:
        client.set(key, "x")
    seven = TaskRecord(7, array_id=7)
    calls: list[Callable[[], Any]] = [
        lambda: st.apply_update(StateUpdate({3: "Q", 2: "D"})),
        lambda: st.ack_batch(replica, batch, {t: "Q" for t in batch.task_ids}),
        lambda: st.claim_batch(replica, 2),
        lambda: st.dequeue_tasks(1),
        lambda: st.enqueue_tasks([seven]),
        lambda: st.get_tasks_by_status("R"),
    ]
    for call in calls:
        before = snapshot(client, st.keys)
        with pytest.raises(InvalidInputError) as info:
            call()
        message = str(info.value)
        assert f"key {key} holds a" in message or "holds another type" in message, message
        assert_same(before, snapshot(client, st.keys))
