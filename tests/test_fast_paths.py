"""The shortcuts of the hot scripts give what the general paths give, on both backends.

* a back push writes its `ready` scores as text (no float formatting per task) while they are
  small non-negative integers, and as numbers beyond: either way consecutive and exact;
* ack_batch skips the batch-membership lookup when the answer names the batch's tasks in batch
  order; an answer in another order, or about part of the batch, takes the general path;
* apply_update checks the pattern of an id only when no record answers to it;
* the client checks the usual (int, letter) change with one type test and one lookup, and
  decodes a reply's entries with one split.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from test_coordination import snapshot

from swarm_redis import Batch, Replica
from swarm_redis.engine import commands as cmd
from swarm_redis.engine.scripts import load
from swarm_redis.engine.validation import checked_changes
from swarm_redis.errors import InvalidInputError, InvalidTypeError
from swarm_redis.ops import verify
from swarm_redis.records import ArrayRecord, TaskRecord
from swarm_redis.state import RedisSwarmState

MakeClient = Callable[..., redis.Redis]


def _run(
    make_client: MakeClient, run_id: int, prefix: str, n: int, queued: int
) -> tuple[redis.Redis, RedisSwarmState]:
    """A client, and tasks 1..n of array 1, the first ``queued`` of them queued in id order."""
    client = make_client()
    s = RedisSwarmState(1, run_id, 1, redis=client, prefix=prefix, max_concurrently_running=500)
    s.add_array(ArrayRecord(1, 500))
    tasks = [TaskRecord(i, 1, "G", 0, 0) for i in range(1, n + 1)]
    s.add_tasks(tasks)
    s.enqueue_tasks(tasks[:queued])
    return client, s


def _scores(client: redis.Redis, s: RedisSwarmState) -> list[tuple[int, float]]:
    got: list[tuple[bytes, float]] = client.zrange(s.keys.ready, 0, -1, withscores=True)  # type: ignore[assignment]
    return [(int(m), score) for m, score in got]


def test_back_push_scores_are_consecutive_across_hundreds(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client, s = _run(make_client, run_id, prefix, 400, 95)
    s.enqueue_tasks([s.tasks[i] for i in range(96, 401)])  # positions 96..400: 4 hundreds
    assert _scores(client, s) == [(i, float(i)) for i in range(1, 401)]
    assert [t.task_id for t in s.ready_to_run_list()] == list(range(1, 401))
    assert verify.find_drift(client, s.keys).clean


def test_back_push_beyond_the_text_range_stays_exact(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client, s = _run(make_client, run_id, prefix, 6, 1)
    # a stored score near 10^15 (hand-set: where the text path ends) and one near 2^53
    for top in (10**15 - 2, 2**53 - 20):
        client.zadd(s.keys.ready, {b"1": top})
        s.enqueue_tasks([s.tasks[2], s.tasks[3]])
        assert _scores(client, s)[-2:] == [(2, float(top + 1)), (3, float(top + 2))]
        s.dequeue_tasks(3)
        s.enqueue_tasks([s.tasks[1]])
    # beyond 2^53 (only a hand-set score): no longer exact, but queued after it, and no error
    client.zadd(s.keys.ready, {b"1": 10**17})
    s.enqueue_tasks([s.tasks[2], s.tasks[3]])
    assert [t.task_id for t in s.ready_to_run_list()] == [1, 2, 3]


def _claim_three(
    make_client: MakeClient, run_id: int, prefix: str
) -> tuple[redis.Redis, RedisSwarmState, Replica, Batch]:
    client, s = _run(make_client, run_id, prefix, 4, 4)
    rep = s.join_replica(5.0)
    batch = s.claim_batch(rep, 3)
    assert batch is not None and [t.task_id for t in batch.tasks] == [1, 2, 3]
    return client, s, rep, batch


@pytest.mark.parametrize(
    "answer",
    [{1: "Q", 2: "Q", 3: "Q"}, {3: "Q", 2: "Q", 1: "Q"}, {3: "Q", 1: "Q"}, {2: "D"}, {}],
    ids=["batch order", "reversed", "part, reversed", "one", "none"],
)
def test_ack_in_any_order_or_part(
    make_client: MakeClient, run_id: int, prefix: str, answer: dict[int, str]
) -> None:
    client, s, rep, batch = _claim_three(make_client, run_id, prefix)
    changed = s.ack_batch(rep, batch, answer)
    assert {t.task_id for t in changed} == set(answer)
    for tid in (1, 2, 3):
        assert s.tasks[tid].status == answer.get(tid, "G")
    # the unanswered go back to the front in batch order, before task 4
    unanswered = [tid for tid in (1, 2, 3) if tid not in answer]
    assert [t.task_id for t in s.ready_to_run_list()] == [*unanswered, 4]
    assert client.hlen(s.keys.claims) == 0 and client.hlen(s.keys.reserved) == 0
    assert verify.find_drift(client, s.keys).clean


def test_apply_checks_ids_without_a_record(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client, s = _run(make_client, run_id, prefix, 2, 2)
    changes = [(1, "R"), (7, "R")]
    call = cmd.apply_update(
        s.keys, s._core.caller(), propagate=True, stamp=None, changes=changes, tail=None
    )
    sha = client.script_load(load("apply_update").source)
    # a well-formed id without a record is skipped
    client.evalsha(sha, len(call.keys), *call.keys, *call.args)
    assert client.hget(s.keys.task, "7") is None
    assert client.smembers(s.keys.status_set("R")) == {b"1"}
    before = snapshot(client, s)
    for bad in ("x", "1.5", "", "1-2", "9" * 21):
        call = cmd.apply_update(
            s.keys, s._core.caller(), propagate=True, stamp=None, changes=changes, tail=None
        )  # a new request id: the reply cache would answer the first call's reply again
        args = [str(a) if not isinstance(a, (bytes, str)) else a for a in call.args]
        args[args.index("7")] = bad
        with pytest.raises(redis.ResponseError, match="INVALID task id must be an integer id"):
            client.evalsha(sha, len(call.keys), *call.keys, *args)
        assert snapshot(client, s) == before
    with pytest.raises(InvalidTypeError, match="task id"):
        s.update_task_status("x", "R")  # type: ignore[arg-type]


def test_claim_reads_hand_edited_index_members(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    """A qidx member whose position is not 16 digits is read by the general match: here task
    2's member, given a leading zero, sorts first in its array, so task 2 heads the batch."""
    client, s = _run(make_client, run_id, prefix, 3, 3)
    members: list[bytes] = client.zrange(s.keys.qidx, 0, -1)  # type: ignore[assignment]
    arr, pos, tid = members[1].split(b"|")
    assert tid == b"2" and len(pos) == 16
    client.zrem(s.keys.qidx, members[1])
    client.zadd(s.keys.qidx, {b"|".join([arr, b"0" + pos, tid]): 0})
    batch = s.claim_batch(s.join_replica(5.0), 10)
    assert batch is not None and list(batch.task_ids) == [2, 1, 3]
    assert [t.status for t in batch.tasks] == ["G", "G", "G"]


class _Id(int):
    """An int subclass (as numpy or an IntEnum would hand over)."""


def test_checked_changes_takes_what_the_checks_take() -> None:
    assert checked_changes([(1, "Q"), (_Id(2), "R")]) == [(1, "Q"), (2, "R")]
    assert type(checked_changes([(_Id(2), "R")])[0][0]) is int
    assert checked_changes([("3", "D")], allow_str=True) == [(3, "D")]
    for bad_id in (True, "3", 1.0, None):
        with pytest.raises(InvalidTypeError, match="task id"):
            checked_changes([(bad_id, "Q")])
    for bad_status in ("X", "", "QR", None, b"Q"):
        with pytest.raises(InvalidInputError, match="unknown task status"):
            checked_changes([(1, bad_status)])


def test_decode_apply_reads_entries_and_refuses_malformed_ones() -> None:
    reply = [7, b"1:Q:0:G 22:D:3:R", b"5", b"9:2:G 10:1:G", [b"R", b"", 0], []]
    d = cmd.decode_apply(reply)
    assert d.changed == [(1, "Q", 0, "G"), (22, "D", 3, "R")]
    assert d.touched == [(9, "G", 2), (10, "G", 1)] and d.ready == [5]
    empty = cmd.decode_apply([7, b"", b"", b"", [b"", b"", 0], []])
    assert empty.changed == [] and empty.touched == []
    for changed, touched in [
        (b"1:Q:0", b""),
        (b"1:Q:0:G:x", b""),
        (b"1:Q::0:G", b""),
        (b"1:Q:0:G", b"9:2"),
        (b"x:Q:0:G", b""),
    ]:
        with pytest.raises(ValueError):
            cmd.decode_apply([7, changed, b"", touched, [b"", b"", 0], []])


def test_claim_heads_decode_through_the_same_splitter() -> None:
    assert cmd.heads(b"1|G|0 22|A|3") == [(1, "G", 0), (22, "A", 3)]
    assert cmd.heads(b"") == []
    for bad in (b"1|G", b"1|G|0|x", b"1|G||0", b"x|G|0"):
        with pytest.raises(ValueError):
            cmd.heads(bad)
