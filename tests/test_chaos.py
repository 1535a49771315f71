"""Chaos: replica processes share a 20,000-task run while the test SIGKILLs one every 1-3 s.

The replicas are real OS processes (``python -m swarm_redis.replica``) on a real Redis, talking
to the simulated jobmon server (:mod:`swarm_redis.demo.sim`), which checks every queue call. After
the run: every task is DONE, or ERROR_FATAL where the server made it fatal, or REGISTERING
behind such a task; Redis agrees with the server on every task; the server saw no task queued
twice for one attempt, no limit exceeded, no task queued before its upstreams were done; the
run was finalized once; and ``reconcile`` finds nothing to fix.
"""

from __future__ import annotations

import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from replica_procs import ReplicaProcs, layered_dag
from replies import as_bytes

from swarm_redis import ArrayRecord, RedisSwarmState
from swarm_redis.demo.sim import SimConfig, SimReport, SimServer

pytestmark = [pytest.mark.real, pytest.mark.slow]

LAYERS = 8
PER_LAYER = 2500  # 20,000 tasks
WORKFLOW_LIMIT = 300
ARRAY_LIMITS = {1: 120, 2: 80, 3: 100, 4: 60}  # each tighter than the run, together looser
REPLICAS = 4
TTL_S = 1.5
HANG_GUARD_S = 240  # only stops a hung run; nothing is asserted about time


@pytest.fixture
def client(real_redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(real_redis_url, protocol=3)
    yield c
    c.close()


def blocked(task_id: int, statuses: dict[int, str], upstreams: dict[int, list[int]]) -> bool:
    """True if some upstream, directly or further up, ended in ERROR_FATAL."""
    stack, seen = list(upstreams.get(task_id, ())), set()
    while stack:
        up = stack.pop()
        if up in seen:
            continue
        seen.add(up)
        if statuses[up] == "F":
            return True
        stack.extend(upstreams.get(up, ()))
    return False


def drive_with_kills(
    state: RedisSwarmState, replicas: ReplicaProcs, rng: random.Random
) -> tuple[int, int]:
    """Run until every replica exited; SIGKILL a random one (every other time the leader)
    every 1-3 s while the run is not final, starting a new one each time. Kills, leader kills."""
    for _ in range(REPLICAS):
        replicas.start()
    next_kill: float | None = None
    kills = leader_kills = 0
    guard = time.monotonic() + HANG_GUARD_S
    while replicas.alive():
        if time.monotonic() > guard:
            raise AssertionError(
                f"the run hung: {state.counts()}, leader {state.leader()}\n{replicas.tail(15)}"
            )
        time.sleep(0.05)
        final = state.status in ("D", "E", "S", "T", "A")
        if next_kill is None:
            if state.counts()["D"] > 0:  # replicas are up and tasks finish: start the chaos
                next_kill = time.monotonic() + rng.uniform(1, 3)
            continue
        if final or time.monotonic() < next_kill:
            continue
        alive = replicas.alive()
        leader = state.leader()
        victim = rng.choice(alive)
        if kills % 2 == 1 and leader is not None and leader.replica_id in alive:
            victim = leader.replica_id
        leader_kills += leader is not None and victim == leader.replica_id
        replicas.kill(victim)
        kills += 1
        replicas.start()
        next_kill = time.monotonic() + rng.uniform(1, 3)
    return kills, leader_kills


def wait_members_gone(state: RedisSwarmState, client: redis.Redis) -> None:
    """Reap until the killed replicas' leases expired and no member is left."""
    for _ in range(400):  # bounded: leases are TTL_S long
        state.reap(force=True)
        if client.hlen(state.keys.replicas) == 0:
            return
        time.sleep(0.05)
    raise AssertionError(f"members left: {client.hgetall(state.keys.replicas)}")


def test_replicas_survive_sigkill_chaos(
    client: redis.Redis, real_redis_url: str, prefix: str, run_id: int, tmp_path: Path
) -> None:
    rng = random.Random(run_id)
    dag = layered_dag(rng, LAYERS, PER_LAYER, len(ARRAY_LIMITS))
    # Fatal tasks: three leaves, and one task of the layer before (its dependents stay blocked).
    parents = [t for t in dag.layers[-2] if dag.tasks[t].downstream_swarm_tasks]
    fatal = frozenset(rng.sample(dag.layers[-1], 3) + rng.sample(parents, 1))
    state = RedisSwarmState(
        1, run_id, 1, max_concurrently_running=WORKFLOW_LIMIT, redis=client, prefix=prefix
    )
    state.add_arrays([ArrayRecord(a, limit) for a, limit in ARRAY_LIMITS.items()])
    state.add_tasks(dag.tasks.values())
    config = SimConfig(
        tasks={t: task.array_id for t, task in dag.tasks.items()},
        workflow_limit=WORKFLOW_LIMIT,
        array_limits=ARRAY_LIMITS,
        upstreams=dag.upstreams,
        step_s=(0.002, 0.02),
        fail_rate=0.03,
        resource_error_share=0.5,
        max_attempts=5,
        always_fail=fatal,
        seed=run_id,
    )
    sim = SimServer.start(config)
    replicas = ReplicaProcs(
        real_redis_url,
        prefix,
        run_id,
        sim,
        tmp_path,
        *("--ttl", str(TTL_S), "--poll", "0.02", "--full-sync", "10", "--reconcile", "5"),
    )
    try:
        kills, leader_kills = drive_with_kills(state, replicas, rng)
        report: SimReport | None = sim.stop()
    finally:
        replicas.kill_all()
        sim.stop()
    assert report is not None

    # Every replica that was not killed ended cleanly, when the run was final.
    survivors = [n for n in replicas.procs if n not in replicas.killed]
    results = replicas.results()
    assert all(replicas.procs[n].returncode == 0 for n in survivors), replicas.tail(15)
    assert all(results[n]["reason"] == "final" for n in survivors), results
    assert kills >= 1
    counters = {
        as_bytes(k).decode(): int(v) for k, v in client.hgetall(state.keys.counters).items()
    }
    print(
        f"kills: {kills} ({leader_kills} leaders), leader: {state.leader()}, "
        f"redrives: {counters.get('redrives', 0)}, resent: {report.resent}, "
        f"server: {report.counts}"
    )

    # The server saw nothing wrong.
    assert report.duplicates == [], report.duplicates[:5]
    assert report.overlaps == [], report.overlaps[:5]
    assert report.limit_violations == [], report.limit_violations[:5]
    assert report.dependency_violations == [], report.dependency_violations[:5]
    assert report.wrong_array == [] and report.unknown_ids == 0
    assert report.max_active <= WORKFLOW_LIMIT
    assert all(report.max_active_per_array[a] <= ARRAY_LIMITS[a] for a in ARRAY_LIMITS)

    # Every task is DONE, or ERROR_FATAL because the server made it so, or blocked behind one.
    server = report.statuses
    failed = {t for t, s in server.items() if s == "F"}
    assert fatal <= failed  # (a random failure on every attempt is possible, if unlikely)
    assert all(report.attempts[t] == config.max_attempts for t in failed)
    unexpected = [
        (t, s)
        for t, s in server.items()
        if s not in ("D", "F") and not (s == "G" and blocked(t, server, dag.upstreams))
    ]
    assert unexpected == []
    assert any(s == "G" for s in server.values())  # the fatal parent blocks its dependents

    # Redis agrees with the server on every task, and nothing is left queued or claimed.
    ours = {s: {t.task_id for t in state.get_tasks_by_status(s)} for s in "GDF"}
    assert ours == {s: {t for t, x in server.items() if x == s} for s in "GDF"}
    counts = state.counts()
    assert counts["ready"] == 0 and counts["claimed"] == 0
    assert sum(counts[s] for s in "QIORAE") == 0

    # Finalized once: the server went B -> R -> E (a fatal task), and so did Redis.
    assert report.run_status_history == ["B", "R", "E"]
    assert state.status == "E"
    assert client.hget(state.keys.meta, "finalized") == b"E"
    assert sum(bool(r["finalized"]) for r in results.values()) <= 1

    # Nothing to heal once the killed replicas' leases are gone.
    wait_members_gone(state, client)
    fixed = state.reconcile()
    assert fixed.clean, fixed
