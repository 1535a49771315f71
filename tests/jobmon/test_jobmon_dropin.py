"""JobmonSwarmState under jobmon's own Scheduler: the same batches as jobmon's in-memory state,
in a handful of round trips (the read-ahead queue), on fakeredis and a real Redis."""

from __future__ import annotations

import asyncio
import math
import random
from typing import Any, cast

import pytest
from jobmon_env import require_jobmon

require_jobmon()

from jobmon.client.swarm.array import SwarmArray  # noqa: E402
from jobmon.client.swarm.gateway import QueueResponse  # noqa: E402
from jobmon.client.swarm.services.scheduler import Scheduler  # noqa: E402
from jobmon.client.swarm.state import StateUpdate as JobmonUpdate  # noqa: E402
from jobmon.client.swarm.state import SwarmState as MemoryState  # noqa: E402
from jobmon.client.swarm.task import SwarmTask  # noqa: E402
from jobmon.client.task_resources import TaskResources  # noqa: E402
from jobmon.core.requester import Requester  # noqa: E402
from jobmon.plugins.sequential.seq_queue import SequentialQueue  # noqa: E402

from swarm_redis.engine.core import DEQUEUE_CHUNK  # noqa: E402
from swarm_redis.jobmon import JobmonSwarmState, task_resources_digest  # noqa: E402


class Gateway:
    """queue_task_batch answers QUEUED for every task; the batches are recorded."""

    def __init__(self) -> None:
        self.batches: list[tuple[int, list[int]]] = []

    async def queue_task_batch(
        self, array_id: int, task_ids: list[int], task_resources_id: int, cluster_id: int
    ) -> Any:
        self.batches.append((array_id, list(task_ids)))
        return QueueResponse(tasks_by_status={"Q": list(task_ids)})


class Cluster:
    id = 1


QUEUE = SequentialQueue(1, "null.q", {})


def resources(cores: int) -> Any:
    tr = TaskResources(
        {"cores": cores, "memory": 1, "runtime": 60}, QUEUE, cast(Requester, object())
    )
    tr._id = cores
    return tr


def workflow(seed: int, n: int) -> tuple[list[Any], list[Any], int]:
    """Tasks over 3 arrays with their own limits and 2 kinds of resources, in a random order."""
    rng = random.Random(seed)
    kinds = [resources(1), resources(2)]
    arrays = [SwarmArray(a, max_concurrently_running=rng.randint(3, n)) for a in (1, 2, 3)]
    tasks = [
        SwarmTask(
            task_id=i,
            array_id=rng.choice((1, 2, 3)),
            status="G",
            max_attempts=3,
            task_resources=rng.choice(kinds),
            cluster=Cluster(),  # type: ignore[arg-type]
        )
        for i in range(1, n + 1)
    ]
    rng.shuffle(tasks)
    return tasks, arrays, rng.randint(n // 3, n)


def schedule(state: Any, tasks: list[Any], arrays: list[Any], ticks: int) -> list[Any]:
    """Register, queue, then run jobmon's Scheduler: tick, apply Q, finish some tasks; repeat."""
    for a in arrays:
        state.add_array(a)
    for t in tasks:
        state.add_task(t)
        state.enqueue_task(t)
    gateway = Gateway()
    scheduler = Scheduler(gateway=gateway, state=state)  # type: ignore[arg-type]
    loop = asyncio.new_event_loop()
    trace: list[Any] = []
    try:
        for k in range(ticks):
            before = len(gateway.batches)
            update = loop.run_until_complete(scheduler.tick(timeout=-1))
            state.apply_update(update)
            trace.append(gateway.batches[before:])
            trace.append(("ready", [t.task_id for t in state.ready_to_run]))
            # every other queued task finishes, which frees capacity for the next tick
            done = sorted(update.task_statuses)[:: 2 if k % 2 else 3]
            state.apply_update(JobmonUpdate(task_statuses=dict.fromkeys(done, "D")))
    finally:
        loop.close()
    return trace


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("read_ahead", [2000, 7])
def test_same_batches_as_jobmons_memory_state(
    make_client: Any, run_id: int, prefix: str, seed: int, read_ahead: int
) -> None:
    tasks, arrays, limit = workflow(seed, 60)
    expected = schedule(MemoryState(1, run_id, 1, max_concurrently_running=limit), tasks, arrays, 4)
    tasks, arrays, limit = workflow(seed, 60)
    st = JobmonSwarmState(
        1, run_id, 1, limit, redis=make_client(), prefix=prefix, read_ahead=read_ahead
    )
    got = schedule(st, tasks, arrays, 4)
    assert got == expected
    assert any(batch for batch in expected[0])  # the workflow really scheduled something


def queued_state(
    client: Any, run_id: int, prefix: str, n: int, limit: int, array_limit: int
) -> tuple[JobmonSwarmState, list[Any]]:
    """A drop-in state with ``n`` tasks of array 1 (equal resources) queued in id order."""
    st = JobmonSwarmState(1, run_id, 1, limit, redis=client, prefix=prefix)
    st.add_array(SwarmArray(1, array_limit))
    tasks = [SwarmTask(i, 1, "G", 3, resources(1), Cluster()) for i in range(1, n + 1)]  # type: ignore[arg-type]
    st.add_tasks(tasks)
    st.enqueue_tasks(tasks)
    return st, tasks


def tick(state: Any) -> tuple[Gateway, Any]:
    """One tick of jobmon's Scheduler on ``state``: the gateway (its batches) and the update."""
    gateway = Gateway()
    loop = asyncio.new_event_loop()
    try:
        update = loop.run_until_complete(Scheduler(gateway, state).tick(timeout=-1))  # type: ignore[arg-type]
    finally:
        loop.close()
    return gateway, update


def _trips(state: Any) -> list[int]:
    """Counts round trips: the transport's executions and the dequeues sent ahead."""
    count = [0]
    inner = state._transport.execute
    send = state._ahead.send

    def counted(calls: Any) -> Any:
        count[0] += 1
        return inner(calls)

    def counted_send(calls: Any) -> Any:
        count[0] += 1
        return send(calls)

    state._transport.execute = counted
    state._ahead.send = counted_send
    return count


def test_a_tick_takes_a_few_round_trips_not_one_per_task(
    make_client: Any, run_id: int, prefix: str
) -> None:
    st = JobmonSwarmState(1, run_id, 1, 10_000, redis=make_client(), prefix=prefix)
    st.add_array(SwarmArray(1, 10_000))
    kinds = [resources(1), resources(2)]
    tasks = [
        SwarmTask(i, 1, "G", 3, kinds[i % 2], Cluster())  # type: ignore[arg-type]
        for i in range(1, 1201)
    ]
    st.add_tasks(tasks)
    st.enqueue_tasks(tasks)
    trips = _trips(st)
    gateway, update = tick(st)
    assert len(update.task_statuses) == 1200
    assert sum(len(ids) for _, ids in gateway.batches) == 1200
    # dequeues go in bounded chunks (each script call stays short): a few trips per chunk of
    # DEQUEUE_CHUNK tasks, never one per task
    assert trips[0] <= 4 + math.ceil(1200 / DEQUEUE_CHUNK), trips[0]
    st.apply_update(update)  # type: ignore[arg-type]  # jobmon's own StateUpdate, read by field
    assert st.get_ready_to_run_count() == 0 and st.counts()["Q"] == 1200


def test_buffer_is_written_back_before_any_other_operation(
    make_client: Any, run_id: int, prefix: str
) -> None:
    st = JobmonSwarmState(1, run_id, 1, 100, redis=make_client(), prefix=prefix, read_ahead=3)
    st.add_array(SwarmArray(1, 100))
    tasks = [SwarmTask(i, 1, "G", 3, resources(1), Cluster()) for i in range(1, 7)]  # type: ignore[arg-type]
    st.add_tasks(tasks)
    st.enqueue_tasks(tasks)
    a = st.dequeue_task()
    b = st.dequeue_task()
    assert (a.task_id, b.task_id) == (1, 2)
    st.enqueue_task(a)  # back to the tail: buffered
    st.enqueue_task(b, front=True)  # back to the head: buffered
    assert st.get_ready_to_run_count() == 6
    # another replica sees the buffer's effect only after the flush that any other call does
    other = JobmonSwarmState.attach(make_client(), run_id, prefix=prefix)
    assert [t.task_id for t in other.ready_to_run] == [4, 5, 6]
    assert st.has_pending_work()  # not a queue call: flushes first
    assert [t.task_id for t in other.ready_to_run] == [2, 3, 4, 5, 6, 1]
    # a task this buffer did not hand out goes straight to Redis (queued at most once)
    st.enqueue_task(tasks[3])
    assert [t.task_id for t in st.ready_to_run] == [2, 3, 4, 5, 6, 1]


def test_resources_cached_under_the_stable_digest(
    make_client: Any, run_id: int, prefix: str
) -> None:
    st = JobmonSwarmState(1, run_id, 1, redis=make_client(), prefix=prefix)
    tr = resources(3)
    got = st.cache_resources(hash(tr), tr)  # what jobmon's orchestrator passes
    assert got is tr
    key = task_resources_digest(tr)
    other = JobmonSwarmState.attach(make_client(), run_id, prefix=prefix)
    assert other.get_cached_resources(key) == tr
    assert other.cache_resources(hash(resources(3)) ^ 1, resources(3)) == tr


def test_a_pass_started_by_the_capacity_read_gives_everything_back_in_order(
    make_client: Any, run_id: int, prefix: str
) -> None:
    """get_available_capacity reads the pass's figures in one round trip and sends the first
    dequeues ahead; the count is exact while they are on their way, and the next operation
    that is not a queue call puts every task back where it was."""
    st, tasks = queued_state(make_client(), run_id, prefix, 900, 1000, 700)
    trips = _trips(st)
    assert st.get_available_capacity() == 1000
    assert trips[0] == 3  # the reads, and two dequeues sent ahead
    assert st._ra.pending and st._ra.asked > 0
    assert st.get_array_capacity(1) == 700
    assert st.get_ready_to_run_count() == 900  # without waiting for the dequeues
    assert trips[0] == 3
    first = [st.dequeue_task().task_id for _ in range(60)]
    assert first == list(range(1, 61))
    st.enqueue_task(tasks[0])  # the first task handed out goes back to the tail
    assert st.get_ready_to_run_count() == 900 - 59
    other = JobmonSwarmState.attach(make_client(), run_id, prefix=prefix)
    assert other.get_ready_to_run_count() < 900  # the buffer holds tasks until the flush
    assert st.has_pending_work()  # not a queue call: flushes first
    expected = [*range(61, 901), 1]
    assert [t.task_id for t in other.ready_to_run] == expected
    assert st.get_ready_to_run_count() == len(expected)
    # the pass is over: the figures are read again
    st.apply_update(JobmonUpdate(task_statuses={t: "Q" for t in range(2, 61)}))  # type: ignore[arg-type]
    assert st.get_array_capacity(1) == 700 - 59


def test_every_capacity_read_starts_a_new_pass(make_client: Any, run_id: int, prefix: str) -> None:
    """A second pass gives the first one's buffer back before it reads: nothing read at the
    start of a pass outlives it."""
    st, _tasks = queued_state(make_client(), run_id, prefix, 300, 1000, 700)
    assert st.get_available_capacity() == 1000
    assert [st.dequeue_task().task_id for _ in range(3)] == [1, 2, 3]  # handed out, not applied
    other = JobmonSwarmState.attach(make_client(), run_id, prefix=prefix)
    other.max_concurrently_running = 500
    assert st.get_available_capacity() == 500  # read again, not the first pass's figure
    assert st.get_ready_to_run_count() == 297
    assert st.dequeue_task().task_id == 4


def test_a_pass_that_dequeues_nothing_leaves_the_queue_as_it_was(
    make_client: Any, run_id: int, prefix: str
) -> None:
    st, _tasks = queued_state(make_client(), run_id, prefix, 400, 1000, 10)
    assert st.get_available_capacity() == 1000
    assert st.get_ready_to_run_count() == 400
    st.flush_queue()
    assert [t.task_id for t in st.ready_to_run] == list(range(1, 401))


def test_replies_lost_mid_pass_lose_no_task(make_client: Any, run_id: int, prefix: str) -> None:
    """The connection of the dequeues sent ahead breaks twice during a tick: the calls are
    sent again with their request ids, and the tick queues every task once, in order."""
    st, _tasks = queued_state(make_client(), run_id, prefix, 1500, 10_000, 10_000)
    send = st._ahead.send
    sends = [0]

    def breaking_send(calls: Any) -> Any:
        sends[0] += 1
        link = st._ahead._link
        if sends[0] in (3, 5) and link is not None:
            link.conn.disconnect()  # the replies still on their way are lost
        return send(calls)

    st._ahead.send = breaking_send  # type: ignore[method-assign]
    gateway, update = tick(st)
    assert sends[0] >= 5
    queued = [tid for _, ids in gateway.batches for tid in ids]
    assert queued == list(range(1, 1501))
    st.apply_update(update)  # type: ignore[arg-type]
    assert st.get_ready_to_run_count() == 0 and st.counts()["Q"] == 1500
