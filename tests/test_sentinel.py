"""Both fronts through Sentinel: a run continues through a primary kill and promotion, scripts
come back after NOSCRIPT, and a failover to a replica that missed the last writes is caught as
StateLostError (then the run is rebuilt as docs/scaling.md says)."""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from fronts import Front, FrontState
from servers import SentinelGroup, missing_binaries, skip_or_fail, wait_until

from swarm_redis import StateLostError, StateUpdate
from swarm_redis.engine import scripts
from swarm_redis.testing.dags import chain

pytestmark = pytest.mark.real

#: Errors a client sees while the primary is dead and no replica is promoted yet. A command
#: that failed with one of them was not executed (the server was gone), so it can be retried.
UNAVAILABLE = (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError)


@pytest.fixture
def group() -> Iterator[SentinelGroup]:
    """A fresh primary + replica + three sentinels (each test may kill the primary)."""
    why = missing_binaries("redis-server")
    if why:
        skip_or_fail(f"Sentinel tests need redis-server: {why}")
    made = SentinelGroup().start()
    try:
        yield made
    finally:
        made.stop()


@pytest.fixture(params=["sync", "async"])
def sentinel_front(request: pytest.FixtureRequest, group: SentinelGroup) -> Iterator[Front]:
    """A front whose clients reach the primary through Sentinel."""
    is_async = request.param == "async"
    made = Front(request.param, make_client=lambda: group.master_client(is_async))
    yield made
    made.close()


def retry_until_available(call: Callable[[], Any], timeout: float = 30.0) -> tuple[Any, float]:
    """Call until the primary answers; the result and how long the run was unavailable."""
    start = time.monotonic()
    while True:
        try:
            return call(), time.monotonic() - start
        except UNAVAILABLE:
            if time.monotonic() - start > timeout:
                raise
            time.sleep(0.05)


def step(st: FrontState) -> int | None:
    """Run the head of the queue to DONE; its id, or None when the queue is empty."""
    task = st.dequeue_task()
    if task is None:
        return None
    st.apply_update(StateUpdate(task_statuses={task.task_id: "R"}))
    st.apply_update(StateUpdate(task_statuses={task.task_id: "D"}))
    return int(task.task_id)


def replicated(group: SentinelGroup) -> None:
    """Wait until the replica has every write of the primary (WAIT 1)."""
    assert group.primary is not None
    primary = group.primary.client()
    try:
        assert primary.wait(1, 5000) == 1
    finally:
        primary.close()


def test_run_continues_through_a_failover(
    group: SentinelGroup, sentinel_front: Front, run_id: int, prefix: str
) -> None:
    st = sentinel_front.state(run_id, prefix=prefix)
    st.add_tasks(chain(10))
    st.enqueue_task(st.get_task(1))
    done = [step(st) for _ in range(4)]
    assert done == [1, 2, 3, 4]
    replicated(group)
    assert group.primary is not None and group.replica is not None
    old_port = group.primary.port
    sha = scripts.load("apply_update").sha
    promoted = group.replica.client()
    try:
        # Redis 7 replicates what scripts did, not the scripts: the replica has none of them.
        assert promoted.script_exists(sha) == [False]
        group.primary.kill(signal.SIGKILL)
        task_id, unavailable = retry_until_available(lambda: step(st))
        print(f"\n[{sentinel_front.name}] failover: run unavailable for {unavailable:.2f} s")
        assert task_id == 5
        # the client found the new primary through one sentinel; the first may lag a moment
        deadline = time.monotonic() + 10
        while group.master_port() != group.replica.port and time.monotonic() < deadline:
            time.sleep(0.05)
        assert group.master_port() == group.replica.port != old_port
        while (nxt := step(st)) is not None:
            done.append(nxt)
        assert done == [1, 2, 3, 4, 6, 7, 8, 9, 10]
        assert st.get_done_count() == 10
        assert st.all_tasks_final()
        # The promoted replica had no copy of our scripts: they came back through NOSCRIPT.
        assert promoted.script_exists(sha) == [True]
        assert promoted.info("replication")["role"] == "master"
    finally:
        promoted.close()


def test_scripts_reload_after_script_flush(
    group: SentinelGroup, sentinel_front: Front, run_id: int, prefix: str
) -> None:
    st = sentinel_front.state(run_id, prefix=prefix)
    st.add_tasks(chain(3))
    assert group.primary is not None
    primary = group.primary.client()
    try:
        sha = scripts.load("apply_update").sha
        primary.script_flush()
        assert primary.script_exists(sha) == [False]
        st.apply_update(StateUpdate(task_statuses={1: "D"}))  # NOSCRIPT, load, retry
        assert primary.script_exists(sha) == [True]
        assert st.get_task(2).num_upstreams_done == 1
        assert [t.task_id for t in st.dequeue_tasks(3)] == [2]
    finally:
        primary.close()


def test_failover_that_lost_writes_raises_state_lost(
    group: SentinelGroup, sentinel_front: Front, run_id: int, prefix: str
) -> None:
    """The replica misses the last writes (its replication stream is paused), then is promoted."""
    assert group.primary is not None and group.replica is not None
    st = sentinel_front.state(run_id, prefix=prefix)
    st.add_tasks(chain(6))
    st.enqueue_task(st.get_task(1))
    assert step(st) == 1
    replicated(group)
    kept = st.version
    replica = group.replica.client(decode_responses=True)
    try:
        # CLIENT PAUSE WRITE postpones the primary's stream on the replica: these writes
        # reach the primary only.
        replica.execute_command("CLIENT", "PAUSE", 30000, "WRITE")
        assert step(st) == 2
        seen = st.version
        assert seen > kept
        group.primary.kill(signal.SIGKILL)
        wait_until(
            lambda: replica.info("replication")["master_link_status"] == "down",
            10,
            "the replica to lose its primary",
        )
        replica.execute_command("CLIENT", "UNPAUSE")  # the unapplied stream died with the link
        with pytest.raises(StateLostError) as info:
            retry_until_available(st.counts)
        assert (info.value.run_id, info.value.seen, info.value.found) == (run_id, seen, kept)
        promoted = group.replica.port
        wait_until(
            lambda: group.master_port() == promoted,
            10,
            "the first sentinel to report the promoted replica",
        )
    finally:
        replica.close()
    # Recovery (docs/scaling.md): a fresh state, definitions with the server's
    # statuses, a full sync apply, initial counts.
    server = {1: "D", 2: "D", 3: "G", 4: "G", 5: "G", 6: "G"}
    fresh = sentinel_front.state(run_id, prefix=prefix)
    definitions = chain(6)
    for task in definitions:
        task.status = server[task.task_id]
    fresh.add_tasks(definitions)
    fresh.apply_update(StateUpdate(task_statuses=server))
    fresh.compute_initial_upstream_done_counts()
    assert fresh.get_done_count() == 2
    assert fresh.get_task(3).num_upstreams_done == 1
    assert [t.task_id for t in fresh.ready_to_run_list()] == [3]
    assert step(fresh) == 3
