"""dequeue on both backends: the head leaves `ready`, `queued` and `qidx` together.

The dequeue script takes each array's share of the head out of the per-array index (qidx) as
one rank range, after checking the range's first and last members; a qidx that does not match
(hand-edited) goes member by member instead. Either way the run stays consistent (verify finds
no drift) and claim_batch finds the right next task. The script reads only the record fields it
uses (status, done count, array) and refuses a record whose fields do not parse.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import redis
from test_validation import assert_same, snapshot

from swarm_redis.errors import InvalidInputError
from swarm_redis.ops import verify
from swarm_redis.records import ArrayRecord, TaskRecord
from swarm_redis.state import RedisSwarmState

MakeClient = Callable[..., redis.Redis]


def _run(client: redis.Redis, run_id: int, prefix: str, arrays: list[int]) -> RedisSwarmState:
    """Tasks 1..len(arrays), task i in array arrays[i-1], queued in id order."""
    s = RedisSwarmState(1, run_id, 1, redis=client, prefix=prefix, max_concurrently_running=500)
    for a in sorted(set(arrays)):
        s.add_array(ArrayRecord(a, 500))
    tasks = [TaskRecord(i, a, "G", 0, 0) for i, a in enumerate(arrays, start=1)]
    s.add_tasks(tasks)
    s.enqueue_tasks(tasks)
    return s


def _qidx_ids(client: redis.Redis, s: RedisSwarmState) -> dict[str, list[int]]:
    """qidx per array, in its order: array -> task ids."""
    out: dict[str, list[int]] = {}
    members: list[bytes] = client.zrange(s.keys.qidx, 0, -1)  # type: ignore[assignment]
    for m in members:
        arr, _, tid = m.decode().split("|")
        out.setdefault(arr, []).append(int(tid))
    return out


def _ready_by_array(s: RedisSwarmState, arrays: list[int]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for t in s.ready_to_run_list():
        out.setdefault(str(arrays[t.task_id - 1]), []).append(t.task_id)
    return out


def test_interleaved_arrays_leave_the_index_in_step(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    arrays = [(i * 7) % 3 + 1 for i in range(60)]  # three arrays, interleaved
    arrays[10:14] = [12, 12, 12, 12]  # an array whose id shares a first digit with array 1
    s = _run(client, run_id, prefix, arrays)
    taken: list[int] = []
    for n in (1, 7, 13, 25):
        taken += [t.task_id for t in s.dequeue_tasks(n)]
        assert _qidx_ids(client, s) == _ready_by_array(s, arrays)
        assert client.scard(s.keys.queued) == len(s.ready_to_run_list())
    assert taken == list(range(1, 47))
    assert verify.find_drift(client, s.keys).clean
    # claim_batch finds each array's next task through the index
    replica = s.join_replica(30.0, replica_id="rep-a")
    batch = s.claim_batch(replica, 5)
    assert batch is not None
    assert batch.task_ids[0] == 47
    assert verify.find_drift(client, s.keys).clean


def test_a_hand_edited_index_is_dropped_member_by_member(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    arrays = [1] * 10 + [2] * 10
    s = _run(client, run_id, prefix, arrays)
    first: bytes = client.zrange(s.keys.qidx, 0, 0)[0]  # type: ignore[assignment]
    assert first.endswith(b"|1")
    client.zrem(s.keys.qidx, first)  # task 1's entry gone: array 1's range starts at task 2
    assert [t.task_id for t in s.dequeue_tasks(3)] == [1, 2, 3]
    # the entries of the tasks taken are gone, every other entry is where it was
    assert _qidx_ids(client, s) == {"1": list(range(4, 11)), "2": list(range(11, 21))}
    assert verify.find_drift(client, s.keys).clean


def test_a_range_whose_last_member_is_not_the_last_task_taken_is_not_trusted(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    s = _run(client, run_id, prefix, [1] * 6)
    members: list[bytes] = client.zrange(s.keys.qidx, 0, -1)  # type: ignore[assignment]
    client.zrem(s.keys.qidx, members[2])  # task 3: the rank range of 1..4 would reach task 5
    assert [t.task_id for t in s.dequeue_tasks(4)] == [1, 2, 3, 4]
    assert _qidx_ids(client, s) == {"1": [5, 6]}


@pytest.mark.parametrize(
    ("record", "why"),
    [
        (b"X|0|||1|0|0|", "unknown status X"),
        (b"G|1e5|||1|0|0|", "does not match"),
        (b"G|0|||99999999999999999|0|0|", "exceeds 2\\^53-1"),
        (b"G|0|||1", "does not match"),
    ],
)
def test_dequeue_refuses_a_record_whose_fields_it_reads_do_not_parse(
    make_client: MakeClient, run_id: int, prefix: str, record: bytes, why: str
) -> None:
    client = make_client()
    s = _run(client, run_id, prefix, [1] * 4)
    client.hset(s.keys.task, "3", record)
    before = snapshot(client, s.keys)
    with pytest.raises(InvalidInputError, match=f"task 3 has a corrupt record.*{why}"):
        s.dequeue_tasks(4)
    after = snapshot(client, s.keys)
    cache = {s.keys.replies.encode(), s.keys.reply_at.encode()}
    assert_same(
        {k: v for k, v in before.items() if k not in cache},
        {k: v for k, v in after.items() if k not in cache},
    )


@pytest.mark.parametrize("member", ["x|y z", "12 13", "4|G|0"])
def test_dequeue_refuses_a_queue_member_that_is_not_an_id(
    make_client: MakeClient, run_id: int, prefix: str, member: str
) -> None:
    """Written by hand at the head: refused before the first write (it would have broken the
    reply after the tasks behind it were taken off the queue)."""
    client = make_client()
    s = _run(client, run_id, prefix, [1] * 3)
    client.zadd(s.keys.ready, {member: -100})
    before = snapshot(client, s.keys)
    with pytest.raises(InvalidInputError, match="is not a task id; nothing was written"):
        s.dequeue_tasks(3)
    assert_same(before, snapshot(client, s.keys))


def test_the_packed_reply_is_decoded_or_refused() -> None:
    from swarm_redis.engine.commands import heads

    assert heads(b"1|G|0 22|Q|3") == [(1, "G", 0), (22, "Q", 3)]
    assert heads(b"") == []
    assert heads([b"5", b"R", b"1"]) == [(5, "R", 1)]  # a list cached by an older build
    for bad in (b"1|G", b"1|G|0|3", b"1|G|x", b"1 G 0"):
        with pytest.raises(ValueError):
            heads(bad)
