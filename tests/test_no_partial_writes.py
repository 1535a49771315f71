"""Calls that used to write and then fail, or leave state behind, on both backends:

* enqueue_initial_fringe checks every record it will queue before its first call takes the
  run's ``fringe_done`` flag: a corrupt record in a later chunk writes nothing;
* claim_batch leaves a queued task whose record does not parse where it is (the next task is
  claimed), and refuses to re-drive an orphaned batch with such a record, writing nothing;
* dequeue refuses a corrupt record among the tasks it would take, writing nothing;
* finalize("D") is refused while a fan-out is still being credited, with nothing written;
  finalize drops the pending credits of ids never registered, and verify stays clean.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from test_validation import assert_same, snapshot

from swarm_redis.engine.core import run_sync
from swarm_redis.errors import InvalidInputError, TransitionError
from swarm_redis.ops import verify
from swarm_redis.records import ArrayRecord, TaskRecord
from swarm_redis.state import RedisSwarmState
from swarm_redis.update import StateUpdate

MakeClient = Callable[..., redis.Redis]
CORRUPT = b"G|1e5|||0|0|0|"  # a done count Lua would print as a float


def _run(client: redis.Redis, run_id: int, prefix: str, n: int) -> RedisSwarmState:
    s = RedisSwarmState(1, run_id, 1, redis=client, prefix=prefix, max_concurrently_running=100)
    s.add_array(ArrayRecord(0, 100))
    s.add_tasks([TaskRecord(i, 0, "G", 0, 0) for i in range(1, n + 1)])
    return s


def test_fringe_checks_every_record_before_taking_the_flag(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s = _run(client, run_id, prefix, 1500)
    client.hset(s.keys.task, "1400", CORRUPT)  # in the second chunk of 1,000
    before = snapshot(client, s.keys)
    with pytest.raises(InvalidInputError, match="task 1400"):
        s.enqueue_initial_fringe()
    assert_same(before, snapshot(client, s.keys))
    assert client.hget(s.keys.meta, "fringe_done") is None
    client.hset(s.keys.task, "1400", b"G|0|||0|0|0|")
    assert s.enqueue_initial_fringe() == 1500


def test_claim_skips_a_corrupt_queued_record_and_refuses_a_corrupt_orphan(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s = _run(client, run_id, prefix, 4)
    s.enqueue_initial_fringe()
    client.hset(s.keys.task, "1", CORRUPT)
    replica = s.join_replica(30.0, replica_id="rep-a")
    batch = s.claim_batch(replica, 2)
    assert batch is not None
    assert [t.task_id for t in batch.tasks] == [2, 3]
    assert client.zscore(s.keys.ready, "1") is not None  # left in place, not dropped
    # an orphaned batch holding a corrupt record: refused, nothing written
    client.hset(s.keys.batches, "orph", "||0||4,1")
    client.rpush(s.keys.orphans, "gone", "orph")
    before = snapshot(client, s.keys)
    with pytest.raises(InvalidInputError, match="task 1 has a corrupt record"):
        s.claim_batch(replica, 2)
    assert_same(before, snapshot(client, s.keys))


def test_dequeue_refuses_a_corrupt_record_in_what_it_would_take(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s = _run(client, run_id, prefix, 600)
    s.enqueue_initial_fringe()
    client.hset(s.keys.task, "300", CORRUPT)  # in the second call of 250 of a dequeue of 600
    assert [t.task_id for t in s.dequeue_tasks(250)] == list(range(1, 251))
    before = snapshot(client, s.keys)
    with pytest.raises(InvalidInputError, match="task 300 has a corrupt record"):
        s.dequeue_tasks(100)
    assert_same(before, snapshot(client, s.keys))
    client.hset(s.keys.task, "300", b"G|0|||0|0|0|")
    assert [t.task_id for t in s.dequeue_tasks(350)] == list(range(251, 601))


def test_finalize_waits_for_fanouts_and_drops_pending_credits(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s = RedisSwarmState(1, run_id, 1, redis=client, prefix=prefix, propagate_on_apply=False)
    s.add_array(ArrayRecord(0, 10**6))
    parent = TaskRecord(1, 0, "G", 0, 0)
    kids = [TaskRecord(i, 0, "G", 1, 0) for i in range(2, 2002)]
    parent.downstream_swarm_tasks = set(kids)
    s.add_tasks([parent, *kids[:-1]])  # the last child is never registered
    s.apply(StateUpdate(task_statuses=dict.fromkeys(range(1, 2001), "D")))
    assert client.hlen(s.keys.task) == 2000 and client.scard(s.keys.status_set("D")) == 2000
    op = s._core.finish_fanouts([1], enqueue=False)
    batch = next(op)
    op.send(s._transport.execute(batch))  # one call: the fan-out is started, then abandoned
    op.close()
    assert client.hlen(s.keys.fanout) > 0
    before = snapshot(client, s.keys)
    with pytest.raises(TransitionError, match="fan-outs still being credited"):
        s.finalize("D")
    # only the reply cache changed: it remembers the refusal, so a retried call gets it again
    cache = {s.keys.replies.encode(), s.keys.reply_at.encode()}
    after = snapshot(client, s.keys)
    assert_same(
        {k: v for k, v in before.items() if k not in cache},
        {k: v for k, v in after.items() if k not in cache},
    )
    run_sync(s._transport.execute, s._core.finish_fanouts([1], enqueue=False))
    assert client.hget(s.keys.pcredit, "2001") == b"1"
    assert s.finalize("D") is True
    assert not client.exists(s.keys.pcredit)
    drift = verify.find_drift(client, s.keys)
    assert drift.clean, drift.counts
