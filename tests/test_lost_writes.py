"""Lost-write detection on both fronts and both backends.

Each replica remembers the highest write version of the run it saw; when Redis answers with a
lower one (a failover that lost the last writes, a restart without persistence, an older
snapshot restored) every read and every script raises StateLostError naming the run and both
versions. The recovery recipe of docs/scaling.md rebuilds a correct run.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
import redis
from fronts import Front, FrontState

from swarm_redis import ArrayRecord, StateLostError, StateUpdate, TaskRecord
from swarm_redis.engine.keys import RunKeys
from swarm_redis.testing.dags import diamond

MakeClient = Callable[..., redis.Redis]


def snapshot(client: redis.Redis, keys: RunKeys) -> dict[str, bytes]:
    """DUMP of every existing key of the run."""
    dumps = {k: client.dump(k) for k in keys.all}
    return {k: v for k, v in dumps.items() if v is not None}


def restore(client: redis.Redis, keys: RunKeys, dumps: dict[str, bytes]) -> None:
    """Put the run back as it was in ``dumps`` (what a failover to a lagging replica does)."""
    client.delete(*keys.all)
    for key, value in dumps.items():
        client.restore(key, 0, value)


#: Every kind of call a replica makes: scripts that write, scripts that read, plain reads.
OPERATIONS: dict[str, Callable[[FrontState, Any], Any]] = {
    "apply_update": lambda st, rep: st.apply_update(StateUpdate(task_statuses={5: "R"})),
    "update_task_status": lambda st, rep: st.update_task_status(5, "Q"),
    "propagate_completions": lambda st, rep: st.propagate_completions([1]),
    "enqueue_task": lambda st, rep: st.enqueue_task(TaskRecord(5, 7)),
    "dequeue_task": lambda st, rep: st.dequeue_task(),
    "add_tasks": lambda st, rep: st.add_tasks([TaskRecord(99)]),
    "add_array": lambda st, rep: st.add_array(ArrayRecord(8, 3)),
    "cache_resources": lambda st, rep: st.cache_resources(123, {"mem": "2G"}),
    "get_cached_resources": lambda st, rep: st.get_cached_resources(456),
    "set_status": lambda st, rep: st.set_status("R"),
    "set_num_previously_complete": lambda st, rep: st.set_num_previously_complete(4),
    "compute_initial_counts": lambda st, rep: st.compute_initial_upstream_done_counts(),
    "get_tasks_by_status": lambda st, rep: st.get_tasks_by_status("G"),
    "get_task": lambda st, rep: st.get_task(1),
    "counts": lambda st, rep: st.counts(),
    "has_pending_work": lambda st, rep: st.has_pending_work(),
    "get_status": lambda st, rep: st.get_status(),
    "get_available_capacity": lambda st, rep: st.get_available_capacity(),
    "get_array_capacity": lambda st, rep: st.get_array_capacity(7),
    "ready_to_run_len": lambda st, rep: st.ready_to_run_len(),
    "ready_to_run_list": lambda st, rep: st.ready_to_run_list(),
    "get_all_tasks": lambda st, rep: st.get_all_tasks(),
    "get_percent_done": lambda st, rep: st.get_percent_done(),
    "join_replica": lambda st, rep: st.join_replica(ttl_s=30),
    "heartbeat": lambda st, rep: st.heartbeat(rep),
    "claim_batch": lambda st, rep: st.claim_batch(rep),
    "acquire_leadership": lambda st, rep: st.acquire_leadership(rep, ttl_s=30),
    "leader": lambda st, rep: st.leader(),
    "reap": lambda st, rep: st.reap(force=True),
    "set_run_status": lambda st, rep: st.set_run_status("R"),
    "finalize": lambda st, rep: st.finalize("E"),
    "enqueue_initial_fringe": lambda st, rep: st.enqueue_initial_fringe(),
    "reconcile": lambda st, rep: st.reconcile(),
}


def started_run(front: Front, run_id: int, prefix: str) -> FrontState:
    st = front.state(run_id, prefix=prefix, workflow_id=1, dag_id=1, max_concurrently_running=5)
    st.add_array(ArrayRecord(7, 3))
    st.add_tasks(diamond(7, lone=True))
    st.apply_update(StateUpdate(task_statuses={1: "D"}))
    return st


def replica_of(st: FrontState) -> Any:
    """A replica membership taken before the loss (for the calls that need one)."""
    return st.join_replica(ttl_s=30)


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_vanished_run_is_detected_by_every_call(
    front: Front, make_client: MakeClient, run_id: int, prefix: str, operation: str
) -> None:
    """Redis restarted without persistence: every key of the run is gone."""
    st = started_run(front, run_id, prefix)
    rep = replica_of(st)
    seen = st.version
    assert seen > 0
    client = make_client()
    assert client.delete(*st.keys.all) > 0
    with pytest.raises(StateLostError) as info:
        OPERATIONS[operation](st, rep)
    err = info.value
    assert (err.run_id, err.seen, err.found) == (run_id, seen, 0)
    assert str(run_id) in str(err) and f"version {seen}" in str(err)
    # Nothing was written by the refused call (a write would have created keys again).
    assert client.exists(*st.keys.all) == 0


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
def test_version_that_went_backwards_is_detected_by_every_call(
    front: Front, make_client: MakeClient, run_id: int, prefix: str, operation: str
) -> None:
    """A failover to a replica that missed the last writes: an older snapshot comes back."""
    st = started_run(front, run_id, prefix)
    rep = replica_of(st)
    client = make_client()
    old = snapshot(client, st.keys)
    old_version = int(client.hget(st.keys.meta, "version") or 0)
    st.apply_update(StateUpdate(task_statuses={2: "D"}))  # lost below
    seen = st.version
    assert seen > old_version
    restore(client, st.keys, old)
    with pytest.raises(StateLostError) as info:
        OPERATIONS[operation](st, rep)
    assert (info.value.run_id, info.value.seen, info.value.found) == (run_id, seen, old_version)
    assert int(client.hget(st.keys.meta, "version") or 0) == old_version  # nothing written


def test_detection_is_sticky_and_other_replicas_notice_too(
    front: Front, make_client: MakeClient, run_id: int, prefix: str
) -> None:
    st = started_run(front, run_id, prefix)
    other = front.attach(run_id, prefix=prefix)
    client = make_client()
    client.delete(*st.keys.all)
    # Another process re-creates the run from scratch (version 1): both old replicas notice.
    newcomer = front.state(run_id, prefix=prefix)
    assert newcomer.version == 1
    for replica in (st, other):
        for _ in range(2):
            with pytest.raises(StateLostError) as info:
                replica.counts()
            assert info.value.found == 1


def reference_counts(front: Front, prefix: str, run_id: int, statuses: dict[int, str]) -> Any:
    """The per-task (status, done) of a run built from scratch with the given statuses."""
    st = front.state(run_id, prefix=prefix)
    st.add_tasks(diamond(7, lone=True))
    st.apply_update(StateUpdate(task_statuses=statuses))
    return {t: (st.get_task(t).status, st.get_task(t).num_upstreams_done) for t in range(1, 6)}


@pytest.mark.parametrize("loss", ["vanished", "rolled_back"])
def test_recovery_rebuilds_from_the_server_statuses(
    front: Front, make_client: MakeClient, run_id: int, prefix: str, loss: str
) -> None:
    """docs/scaling.md: a fresh state, add_tasks, a full sync apply, initial counts."""
    st = started_run(front, run_id, prefix)
    client = make_client()
    old = snapshot(client, st.keys)
    st.apply_update(StateUpdate(task_statuses={2: "D", 3: "R"}))
    if loss == "vanished":
        client.delete(*st.keys.all)
    else:
        restore(client, st.keys, old)
    with pytest.raises(StateLostError):
        st.get_status()
    # The truth according to the jobmon server: 1, 2 DONE, 3 RUNNING.
    server = {1: "D", 2: "D", 3: "R", 4: "G", 5: "G"}
    fresh = front.state(run_id, prefix=prefix, max_concurrently_running=5)
    # fresh objects: statuses from the server, done counts from zero
    definitions = diamond(7, lone=True)
    for task in definitions:
        task.status = server[task.task_id]
    fresh.add_tasks(definitions)
    fresh.apply_update(StateUpdate(task_statuses=server))
    fresh.compute_initial_upstream_done_counts()
    got = {t: (fresh.get_task(t).status, fresh.get_task(t).num_upstreams_done) for t in range(1, 6)}
    assert got == reference_counts(front, prefix, run_id + 1, server)
    assert got[3] == ("R", 2)
    assert fresh.get_done_count() == 2
    assert fresh.get_active_task_count() == 1
    # The recovered run keeps working and detects the next loss too.
    fresh.apply_update(StateUpdate(task_statuses={3: "D"}))
    assert fresh.get_task(4).num_upstreams_done == 1
