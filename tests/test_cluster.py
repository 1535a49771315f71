"""Both fronts on a local 3-primary Redis Cluster: runs spread over the primaries, every key of
a run in one slot, scripts one by one (Cluster cannot pipeline them), reads pipelined, the race
test with OS processes, NOSCRIPT after SCRIPT FLUSH on every node."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from typing import Any

import pytest
import redis
import redis.cluster
from fronts import Front, FrontState
from race_worker import run_workers
from redis.crc import key_slot
from servers import LocalCluster, runs_on_every_primary
from test_fronts import replicas_scenario

from swarm_redis import StateUpdate, TaskRecord
from swarm_redis.engine import scripts
from swarm_redis.engine.keys import RunKeys
from swarm_redis.testing.dags import chain

pytestmark = pytest.mark.real


@pytest.fixture(params=["sync", "async"])
def cluster_front(request: pytest.FixtureRequest, cluster: LocalCluster) -> Iterator[Front]:
    """A front whose clients are RedisCluster clients (sync or asyncio)."""
    make = cluster.async_client if request.param == "async" else cluster.client
    made = Front(request.param, make_client=make)
    yield made
    made.close()


@pytest.fixture
def sync_cluster(cluster: LocalCluster) -> Iterator[redis.cluster.RedisCluster]:
    client = cluster.client()
    yield client
    client.close()


def drive_chain(st: FrontState, n: int) -> list[int]:
    """Queue task 1, then complete each dequeued task until the chain is done."""
    order: list[int] = []
    st.enqueue_task(st.get_task(1))
    while True:
        task = st.dequeue_task()
        if task is None:
            return order
        order.append(task.task_id)
        st.apply_update(StateUpdate(task_statuses={task.task_id: "R"}))
        st.apply_update(StateUpdate(task_statuses={task.task_id: "D"}))


def test_cluster_has_three_primaries(sync_cluster: redis.cluster.RedisCluster) -> None:
    assert len(sync_cluster.get_primaries()) == 3
    assert sync_cluster.cluster_info()["cluster_state"] == "ok"


def test_many_runs_spread_over_the_primaries(
    cluster_front: Front, sync_cluster: redis.cluster.RedisCluster
) -> None:
    prefix = "swc" + secrets.token_hex(4)
    runs = runs_on_every_primary(sync_cluster, prefix, per_primary=3)
    assert len(set(runs.values())) == 3
    states = {}
    for run_id in runs:
        # chunk_budget=2: an update of several tasks becomes several script calls in one list,
        # which the transport must send one by one on a cluster client.
        st = cluster_front.state(run_id, prefix=prefix, chunk_budget=2)
        st.add_tasks(chain(6, array_id=1))
        states[run_id] = st
    for st in states.values():
        assert drive_chain(st, 6) == [1, 2, 3, 4, 5, 6]
    for run_id, st in states.items():
        counts = st.counts()  # a pipeline of plain reads on one slot
        assert (counts["D"], counts["tasks"], counts["ready"]) == (6, 6, 0)
        assert st.all_tasks_final()
        other = cluster_front.attach(run_id, prefix=prefix)
        assert other.get_done_count() == 6
        assert other.version == st.version


def test_chunked_update_on_a_cluster(cluster_front: Front) -> None:
    prefix = "swc" + secrets.token_hex(4)
    run_id = 10**9 + secrets.randbelow(10**9)
    st = cluster_front.state(run_id, prefix=prefix, chunk_budget=3)
    parents = [TaskRecord(i) for i in range(1, 21)]
    child = TaskRecord(100, num_upstreams=20)
    for p in parents:
        p.downstream_swarm_tasks = {child}
    st.add_tasks([*parents, child])
    result = st.apply(StateUpdate(task_statuses=dict.fromkeys(range(1, 21), "D")))
    assert len(result.changed) == 20
    assert [t.task_id for t in result.ready] == [100]
    assert st.get_task(100).num_upstreams_done == 20
    assert [t.task_id for t in st.ready_to_run_list()] == [100]


def test_every_key_of_a_run_sits_in_one_slot(
    cluster: LocalCluster, cluster_front: Front, sync_cluster: redis.cluster.RedisCluster
) -> None:
    prefix = "swc" + secrets.token_hex(4)
    runs = runs_on_every_primary(sync_cluster, prefix, per_primary=1)
    for run_id in runs:
        st = cluster_front.state(run_id, prefix=prefix, max_concurrently_running=3)
        st.add_tasks(chain(4, array_id=1))
        st.cache_resources(7, {"mem": "1G"})
        st.enqueue_task(st.get_task(1))
        st.apply_update(StateUpdate(task_statuses={1: "D", 2: "R"}))
    # Look at what the nodes really hold, node by node.
    found: dict[int, set[int]] = {}
    owner: dict[int, set[int]] = {}
    for node in cluster.nodes:
        plain = node.client(decode_responses=True)
        try:
            for key in plain.scan_iter(match=f"{prefix}:*", count=1000):
                run_id = int(key.split("{", 1)[1].split("}", 1)[0])
                slot = int(plain.execute_command("CLUSTER", "KEYSLOT", key))
                found.setdefault(run_id, set()).add(slot)
                owner.setdefault(run_id, set()).add(node.port)
        finally:
            plain.close()
    assert set(found) == set(runs)
    for run_id, slots in found.items():
        assert slots == {key_slot(RunKeys(prefix, run_id).meta.encode())}
        assert len(owner[run_id]) == 1  # the whole run on one primary
        assert f"127.0.0.1:{owner[run_id].pop()}" == runs[run_id]
    # And the declared key list of a run never leaves its slot either.
    for run_id in runs:
        assert len({key_slot(k.encode()) for k in RunKeys(prefix, run_id).all}) == 1


def test_scripts_reload_after_flush_on_every_node(
    cluster: LocalCluster, cluster_front: Front, sync_cluster: redis.cluster.RedisCluster
) -> None:
    prefix = "swc" + secrets.token_hex(4)
    run_id = 10**9 + secrets.randbelow(10**9)
    st = cluster_front.state(run_id, prefix=prefix)
    st.add_tasks(chain(3, array_id=1))
    sync_cluster.script_flush()  # sent to every primary
    sha = scripts.load("apply_update").sha
    for node in cluster.nodes:
        plain = node.client()
        try:
            assert plain.script_exists(sha) == [False]
        finally:
            plain.close()
    st.apply_update(StateUpdate(task_statuses={1: "D"}))
    assert st.get_task(2).num_upstreams_done == 1
    assert [t.task_id for t in st.dequeue_tasks(5)] == [2]


def test_replicas_on_a_cluster(cluster_front: Front) -> None:
    """Claims, acks, leadership and finalize through Cluster clients (one script per call)."""
    replicas_scenario(cluster_front, 10**9 + secrets.randbelow(10**9), "swc" + secrets.token_hex(4))


def test_race_on_a_cluster(cluster: LocalCluster, sync_cluster: redis.cluster.RedisCluster) -> None:
    """Four processes (two sync, two asyncio) apply overlapping DONE updates while dequeuing."""
    prefix = "swc" + secrets.token_hex(4)
    run_id = 10**9 + secrets.randbelow(10**9)
    front = Front("sync", make_client=cluster.client)
    try:
        st = front.state(run_id, prefix=prefix)
        parents, children, upstreams = race_dag(seed=run_id)
        st.add_tasks([*parents, *children])
        configs: list[dict[str, Any]] = [
            {
                "cluster": cluster.startup_nodes,
                "run_id": run_id,
                "prefix": prefix,
                "parents": [p.task_id for p in parents],
                "seed": run_id + i,
                "front": "async" if i % 2 else "sync",
            }
            for i in range(4)
        ]
        results = run_workers(configs)
        leftover = [t.task_id for t in st.dequeue_tasks(10_000)]
        dequeued = [i for r in results for i in r] + leftover
        assert sorted(dequeued) == sorted(c.task_id for c in children)  # each exactly once
        assert st.get_done_count() == len(parents)
        for child in children:
            task = st.get_task(child.task_id)
            assert task.num_upstreams_done == len(upstreams[child.task_id])
    finally:
        front.close()


def race_dag(
    seed: int, n_parents: int = 60, n_children: int = 40, fan_in: int = 3
) -> tuple[list[TaskRecord], list[TaskRecord], dict[int, list[int]]]:
    """Parents 1..n, children 1001..; each child depends on ``fan_in`` random parents."""
    import random

    rng = random.Random(seed)
    parents = [TaskRecord(i) for i in range(1, n_parents + 1)]
    children = [TaskRecord(1000 + i, num_upstreams=fan_in) for i in range(1, n_children + 1)]
    upstreams: dict[int, list[int]] = {}
    for child in children:
        ups = rng.sample(parents, fan_in)
        upstreams[child.task_id] = [p.task_id for p in ups]
        for p in ups:
            p.downstream_swarm_tasks.add(child)
    return parents, children, upstreams
