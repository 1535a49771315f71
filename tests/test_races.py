"""Races between real OS processes sharing one run on a real Redis server.

A layered DAG of 10,000 tasks (some DONE from an earlier run, some running, some with a
starting done count) is registered once. Four spawned processes then attach to the run with
``RedisSwarmState.attach`` and, all at once, apply overlapping and duplicated DONE updates in
random chunks (each process its own shuffled subset; chunks replayed; some updates sent twice)
while dequeuing and reporting every id they dequeue. Afterwards the run must be exactly what a
single careful replica would have produced: every status as expected, every done counter equal to
its starting count plus its DONE upstreams, each completion propagated once, no task dequeued
twice, nothing ready lost, status sets and records in agreement, no task in two sets, per-array
active counters right, and the queued set equal to the ready list.
"""

from __future__ import annotations

import multiprocessing
import queue as queue_mod
import random
import traceback
from collections import Counter
from typing import Any

import pytest
import redis

from swarm_redis import ArrayRecord, RedisSwarmState, StateUpdate, TaskRecord
from swarm_redis.constants import ACTIVE_TASK_STATUSES, TASK_STATUSES
from swarm_redis.engine.commands import decode_record, text
from swarm_redis.testing.dags import from_parents, random_parents

N_LAYERS = 10
WIDTH = 1000
N_WORKERS = 4
ARRAY_IDS = (1, 2, 3, 4)
WORKER_TIMEOUT = 120.0


def build_dag(rng: random.Random) -> tuple[list[TaskRecord], dict[int, list[int]]]:
    """Tasks (ids 1..N) with random initial statuses and starting counts; upstream ids."""
    parents = random_parents(rng, N_LAYERS, WIDTH)
    statuses = []
    for _ in parents:
        roll = rng.random()
        statuses.append("D" if roll < 0.05 else "R" if roll < 0.10 else "Q" if roll < 0.13 else "G")
    arrays = [rng.choice(ARRAY_IDS) for _ in parents]
    tasks = from_parents(parents, arrays=arrays, statuses=statuses)
    for task in tasks:
        if rng.random() < 0.1:  # upstreams finished outside this run: a starting count
            extra = rng.randint(1, 2)
            task.num_upstreams += extra
            task.num_upstreams_done += extra
    return tasks, {i + 1: [p + 1 for p in ps] for i, ps in enumerate(parents)}


def worker(
    url: str,
    prefix: str,
    run_id: int,
    wid: int,
    done_ids: list[int],
    seed: int,
    barrier: Any,
    out: Any,
) -> None:
    """One replica: attach, then apply DONE updates in overlapping chunks while dequeuing."""
    try:
        client = redis.Redis.from_url(url, protocol=3)
        state = RedisSwarmState.attach(client, run_id, prefix=prefix)
        rng = random.Random(seed)
        order = list(done_ids)
        rng.shuffle(order)
        barrier.wait(timeout=60)
        state.compute_initial_upstream_done_counts()  # all race it: it must stay a no-op
        i = 0
        previous: list[int] = []
        while i < len(order):
            size = rng.randint(20, 400)
            chunk = order[i : i + size]
            i += size
            if previous and rng.random() < 0.4:  # replay part of the previous chunk
                chunk += rng.sample(previous, min(len(previous), rng.randint(1, 50)))
            update = StateUpdate(task_statuses={t: "D" for t in chunk})
            state.apply_update(update)
            if rng.random() < 0.2:  # the very same update twice
                state.apply_update(update)
            got = state.dequeue_tasks(rng.randint(1, 40))
            if got:
                out.put((wid, [t.task_id for t in got]))
            if rng.random() < 0.3:
                one = state.dequeue_task()
                if one is not None:
                    out.put((wid, [one.task_id]))
            previous = chunk
        client.close()
        out.put((wid, None))
    except BaseException:
        out.put((wid, "ERROR " + traceback.format_exc()))


def read_run(client: redis.Redis, state: RedisSwarmState) -> dict[str, Any]:
    keys = state.keys
    pipe = client.pipeline(transaction=False)
    pipe.hgetall(keys.task)
    for s in TASK_STATUSES:
        pipe.smembers(keys.status_set(s))
    pipe.zrange(keys.ready, 0, -1)
    pipe.smembers(keys.queued)
    pipe.hgetall(keys.active)
    pipe.hget(keys.counters, "propagations")
    raw_tasks, *sets, ready, queued, active, propagations = pipe.execute()
    return {
        "records": {int(text(k)): decode_record(int(text(k)), v) for k, v in raw_tasks.items()},
        "sets": {s: {int(text(m)) for m in members} for s, members in zip(TASK_STATUSES, sets)},
        "ready": [int(text(x)) for x in ready],
        "queued": {int(text(x)) for x in queued},
        "active": {int(text(k)): int(v) for k, v in active.items()},
        "propagations": int(propagations or 0),
    }


@pytest.mark.slow
@pytest.mark.parametrize("round_no", [0, 1, 2])
def test_replicas_race_on_one_run(
    real_redis_url: str, prefix: str, run_id: int, round_no: int
) -> None:
    rng = random.Random(1000 + round_no)
    tasks, ups = build_dag(rng)
    initial = {t.task_id: t.status for t in tasks}
    start = {t.task_id: t.num_upstreams_done for t in tasks}
    nup = {t.task_id: t.num_upstreams for t in tasks}
    array_of = {t.task_id: t.array_id for t in tasks}
    client = redis.Redis.from_url(real_redis_url, protocol=3)
    state = RedisSwarmState(1, run_id, 5, redis=client, prefix=prefix)
    state.add_arrays([ArrayRecord(a, 50) for a in ARRAY_IDS])
    state.add_tasks(tasks)
    state.compute_initial_upstream_done_counts()

    # DONE updates: 70% of the tasks that are not DONE yet, split so that the workers overlap.
    candidates = [t.task_id for t in tasks if t.status != "D"]
    to_done = sorted(rng.sample(candidates, int(len(candidates) * 0.7)))
    parts = [to_done[k::N_WORKERS] for k in range(N_WORKERS)]
    shares = []
    for k in range(N_WORKERS):
        others = [t for j, part in enumerate(parts) if j != k for t in part]
        shares.append(parts[k] + rng.sample(others, len(others) // 2))

    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(N_WORKERS)
    out = ctx.Queue()
    procs = [
        ctx.Process(
            target=worker,
            args=(real_redis_url, prefix, run_id, k, shares[k], 7 * round_no + k, barrier, out),
        )
        for k in range(N_WORKERS)
    ]
    for p in procs:
        p.start()
    dequeued: list[tuple[int, int]] = []
    finished = 0
    errors: list[str] = []
    try:
        while finished < N_WORKERS:
            try:
                wid, payload = out.get(timeout=WORKER_TIMEOUT)
            except queue_mod.Empty:
                pytest.fail(f"workers silent for {WORKER_TIMEOUT}s ({finished} finished)")
            if payload is None:
                finished += 1
            elif isinstance(payload, str):
                errors.append(payload)
                finished += 1
            else:
                dequeued += [(wid, t) for t in payload]
    finally:
        for p in procs:
            p.join(timeout=30)
            if p.is_alive():
                p.kill()
                p.join()
    assert not errors, errors[0]
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]

    run = read_run(client, state)
    records = run["records"]
    done_set = set(to_done)

    # every status is what one careful replica would have produced
    expected_status = {t: ("D" if t in done_set else s) for t, s in initial.items()}
    assert {t: r.status for t, r in records.items()} == expected_status

    # every counter: its starting count plus its DONE upstreams, each counted once
    for t, r in records.items():
        n_done_ups = sum(1 for u in ups[t] if expected_status[u] == "D")
        assert r.num_upstreams_done == start[t] + n_done_ups, t
        assert r.num_upstreams == nup[t]
        assert r.start == start[t]
        assert r.propagated is (expected_status[t] == "D"), t
    n_done = sum(1 for s in expected_status.values() if s == "D")
    assert run["propagations"] == n_done

    # status sets agree with the records; no task in two sets
    for s in TASK_STATUSES:
        assert run["sets"][s] == {t for t, r in records.items() if r.status == s}, s
    assert sum(len(m) for m in run["sets"].values()) == len(records) == len(tasks)

    # per-array active counters
    for a in ARRAY_IDS:
        want = sum(
            1 for t, s in expected_status.items() if s in ACTIVE_TASK_STATUSES and array_of[t] == a
        )
        assert run["active"].get(a, 0) == want, a
    assert state.get_active_task_count() == sum(
        1 for s in expected_status.values() if s in ACTIVE_TASK_STATUSES
    )

    # the queue: no duplicates, queued set == ready list, only waiting tasks
    ready = run["ready"]
    assert len(ready) == len(set(ready))
    assert set(ready) == run["queued"]
    assert all(expected_status[t] not in ("D", "F") for t in ready)

    # no task was dequeued twice, across all processes
    counts = Counter(t for _, t in dequeued)
    twice = {t: n for t, n in counts.items() if n > 1}
    assert not twice, f"dequeued more than once: {sorted(twice.items())[:10]}"
    assert len(dequeued) > 0
    assert len({wid for wid, _ in dequeued}) >= 2  # several processes really competed

    # nothing ready was lost: each task made ready by an update was dequeued or is still queued
    seen = set(counts) | set(ready)
    must_have_been_ready = {
        t
        for t, s in expected_status.items()
        if s == "G"
        and initial[t] == "G"
        and ups[t]
        and any(u in done_set for u in ups[t])
        and start[t] + sum(1 for u in ups[t] if expected_status[u] == "D") == nup[t]
    }
    assert must_have_been_ready  # the DAG makes some tasks ready
    assert must_have_been_ready <= seen
    assert not (set(ready) & set(counts))  # a dequeued task is not queued again
    could_have_been_ready = must_have_been_ready | done_set
    assert seen <= could_have_been_ready
    client.close()
