"""Replicas as real OS processes on a real Redis, with real signals (issue 3).

* Zombie: a replica holding a batch is SIGSTOPped until its lease expires and another replica
  reaps it; after SIGCONT its ack is refused and changes nothing.
* Leader failover: the leader process is SIGKILLed; another replica leads within two lease
  periods with a larger epoch; a write fenced with the old epoch is refused.
* Limits under contention: many processes claim concurrently against tight workflow and array
  limits while a sampler checks, atomically (MULTI), that claimed + active never exceeds a limit.

Leases are 1 s, so the group runs in well under a minute.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from replies import as_bytes, stream_entries
from test_coordination import redis_ms, snapshot

from swarm_redis import (
    ArrayRecord,
    FencedError,
    RedisSwarmState,
    TaskRecord,
)

pytestmark = [pytest.mark.real, pytest.mark.slow]

CHILD = Path(__file__).with_name("_replica_child.py")
TTL_S = 1.0
#: Upper bound for waiting on a child (a failure, not a measurement).
PATIENCE_S = 60.0


class Child:
    """A replica process; its stdout lines arrive on a queue."""

    def __init__(self, mode: str, url: str, prefix: str, run_id: int, *args: object) -> None:
        cmd = [sys.executable, str(CHILD), mode, url, prefix, str(run_id), str(TTL_S)]
        self.proc = subprocess.Popen(
            [*cmd, *map(str, args)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._pump, daemon=True).start()

    def _pump(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))

    def expect(self, *prefixes: str) -> str:
        """The next line starting with one of ``prefixes`` (others are skipped)."""
        deadline = time.monotonic() + PATIENCE_S
        while True:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            if line.startswith(prefixes):
                return line

    def send(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def children() -> Iterator[list[Child]]:
    made: list[Child] = []
    yield made
    for child in made:
        try:
            os.kill(child.proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        child.stop()


@pytest.fixture
def client(real_redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(real_redis_url, protocol=3)
    yield c
    c.close()


def make_run(
    client: redis.Redis,
    run_id: int,
    prefix: str,
    limit: int,
    arrays: dict[int, int],
    tasks: dict[int, int],
) -> RedisSwarmState:
    """A run with ``tasks`` (id -> array), all queued in id order."""
    st = RedisSwarmState(1, run_id, 1, limit, redis=client, prefix=prefix)
    st.add_arrays([ArrayRecord(a, n) for a, n in arrays.items()])
    objs = [TaskRecord(tid, aid) for tid, aid in sorted(tasks.items())]
    st.add_tasks(objs)
    st.enqueue_tasks(objs)
    return st


def lease_deadline(client: redis.Redis, st: RedisSwarmState, replica_id: str) -> int:
    raw = client.hget(st.keys.replicas, replica_id)
    assert raw is not None
    return int(as_bytes(raw).decode().split("|")[1])


def test_zombie_ack_is_refused_and_changes_nothing(
    client: redis.Redis, real_redis_url: str, run_id: int, prefix: str, children: list[Child]
) -> None:
    st = make_run(client, run_id, prefix, 10, {1: 10}, dict.fromkeys(range(1, 6), 1))
    zombie = Child("zombie", real_redis_url, prefix, run_id)
    children.append(zombie)
    claimed = json.loads(zombie.expect("CLAIMED").split(" ", 1)[1])
    os.kill(zombie.proc.pid, signal.SIGSTOP)
    deadline = lease_deadline(client, st, claimed["id"])
    while redis_ms(client) <= deadline:
        time.sleep(0.05)

    live = st.join_replica(30.0)
    report = st.reap(force=True)
    assert report.dead_replicas == (claimed["id"],) and report.batches == 1
    batch = st.claim_batch(live)
    assert batch is not None and batch.redriven
    assert batch.batch_id == claimed["batch"] and list(batch.task_ids) == claimed["tasks"]

    before = snapshot(client, st)
    os.kill(zombie.proc.pid, signal.SIGCONT)
    zombie.send("ack")
    answer = zombie.expect("ACKED", "LEASELOST")
    assert answer.startswith("LEASELOST"), answer
    assert zombie.proc.wait(timeout=PATIENCE_S) == 0
    assert snapshot(client, st) == before

    st.ack_batch(live, batch, dict.fromkeys(batch.task_ids, "Q"))
    assert st.get_active_task_count() == len(batch.task_ids)
    assert st.reconcile().clean


def test_leader_failover_and_fencing(
    client: redis.Redis, real_redis_url: str, run_id: int, prefix: str, children: list[Child]
) -> None:
    st = make_run(client, run_id, prefix, 10, {1: 10}, {})
    st.set_run_status("R")
    procs = {}
    for _ in range(3):
        child = Child("leader", real_redis_url, prefix, run_id)
        children.append(child)
        procs[child.expect("ID").split(" ", 1)[1]] = child
    info = st.leader()
    while info is None:
        time.sleep(0.05)
        info = st.leader()
    old_epoch = info.epoch
    kill_ms = redis_ms(client)
    procs[info.replica_id].proc.send_signal(signal.SIGKILL)
    procs[info.replica_id].proc.wait()

    give_up = time.monotonic() + PATIENCE_S
    new = st.leader()
    while new is None or new.epoch == old_epoch:
        assert time.monotonic() < give_up, "no replica took over"
        time.sleep(0.02)
        new = st.leader()
    assert new.replica_id != info.replica_id and new.epoch > old_epoch
    # when the takeover happened, by Redis time: the stream id of its "leader" event
    takeover_ms = min(
        int(eid.decode().split("-")[0])
        for eid, fields in stream_entries(client, st.keys.events)
        if fields[b"type"] == b"leader" and int(fields[b"epoch"]) > old_epoch
    )
    assert takeover_ms - kill_ms <= 2 * TTL_S * 1000

    # the live replicas keep heartbeating, so compare what a fenced write could touch
    before = client.hgetall(st.keys.meta)
    with pytest.raises(FencedError):
        st.set_run_status("C", epoch=old_epoch)
    with pytest.raises(FencedError):
        st.finalize("E", epoch=old_epoch)
    after = client.hgetall(st.keys.meta)
    assert {k: v for k, v in after.items() if k != b"version"} == {
        k: v for k, v in before.items() if k != b"version"
    }
    assert st.status == "R" and b"finalized" not in after


def test_limits_hold_under_contention(
    client: redis.Redis, real_redis_url: str, run_id: int, prefix: str, children: list[Child]
) -> None:
    limit = 8
    arrays = {1: 3, 2: 4, 3: 5}
    tasks = {tid: 1 + tid % 3 for tid in range(1, 301)}
    st = make_run(client, run_id, prefix, limit, arrays, tasks)

    stop = threading.Event()
    samples: list[dict[str, int]] = []
    failures: list[str] = []

    def sample() -> None:
        sampler = redis.Redis.from_url(real_redis_url, protocol=3)
        active_keys = [st.keys.status_set(s) for s in "QIOR"]
        while not stop.is_set():
            pipe = sampler.pipeline(transaction=True)  # MULTI/EXEC: one instant
            pipe.hkeys(st.keys.claims)
            for key in active_keys:
                pipe.smembers(key)
            claimed, *active = pipe.execute()
            busy = {int(t) for t in claimed}
            overlap = set()
            for members in active:
                ids = {int(t) for t in members}
                overlap |= busy & ids
                busy |= ids
            per_array = {"run": len(busy)}
            for tid in busy:
                key = str(tasks[tid])
                per_array[key] = per_array.get(key, 0) + 1
            samples.append(per_array)
            if per_array["run"] > limit:
                failures.append(f"workflow: {per_array}")
            for aid, cap in arrays.items():
                if per_array.get(str(aid), 0) > cap:
                    failures.append(f"array {aid}: {per_array}")
            if overlap:
                failures.append(f"claimed and active at once: {sorted(overlap)}")
        sampler.close()

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    for seed in range(8):
        children.append(Child("claimer", real_redis_url, prefix, run_id, 4, seed))
    acked: list[int] = []
    for child in children:
        acked += json.loads(child.expect("DONE").split(" ", 1)[1])
        assert child.proc.wait(timeout=PATIENCE_S) == 0
    stop.set()
    thread.join()

    assert failures == []
    assert len(samples) > 10
    assert max(s["run"] for s in samples) <= limit
    assert sorted(acked) == sorted(tasks)  # every task queued exactly once
    assert st.get_done_count() == len(tasks) and st.all_tasks_final()
    assert client.hlen(st.keys.reserved) == 0 and client.hlen(st.keys.claims) == 0
    assert st.reconcile().clean
