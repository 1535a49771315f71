"""A replica for the multi-process race tests, run as ``python race_worker.py '<json>'``.

It attaches to an existing run, prints ``ready``, waits for a line on stdin (the start signal,
so every worker starts at once), then applies DONE updates for ``parents`` in random overlapping
batches while dequeuing, drains the queue at the end, and prints the ids it dequeued as JSON.

JSON fields: ``run_id``, ``prefix``, ``parents`` (ids), ``seed``, ``front`` ("sync"/"async"),
and either ``url`` (standalone / unix socket) or ``cluster`` (a list of ``[host, port]``).
"""

from __future__ import annotations

import asyncio
import json
import random
import sys
from typing import Any

from swarm_redis import AsyncRedisSwarmState, RedisSwarmState, StateUpdate


def _batches(parents: list[int], rng: random.Random) -> list[list[int]]:
    """Every parent at least once, in random batches of 1-6 that overlap one another."""
    order = parents[:]
    rng.shuffle(order)
    out: list[list[int]] = []
    i = 0
    while i < len(order):
        size = rng.randint(1, 6)
        batch = order[i : i + size]
        if out and rng.random() < 0.5:
            batch = batch + rng.sample(out[-1], min(2, len(out[-1])))  # replay a few
        out.append(batch)
        i += size
    return out


def _sync(cfg: dict[str, Any]) -> list[int]:
    import redis
    import redis.cluster

    client: Any
    if "cluster" in cfg:
        client = redis.cluster.RedisCluster(
            startup_nodes=[redis.cluster.ClusterNode(h, p) for h, p in cfg["cluster"]], protocol=3
        )
    else:
        client = redis.Redis.from_url(cfg["url"], protocol=3)
    state = RedisSwarmState.attach(client, cfg["run_id"], prefix=cfg["prefix"])
    rng = random.Random(cfg["seed"])
    print("ready", flush=True)
    sys.stdin.readline()
    got: list[int] = []
    for batch in _batches(cfg["parents"], rng):
        state.apply_update(StateUpdate(task_statuses=dict.fromkeys(batch, "D")))
        got += [t.task_id for t in state.dequeue_tasks(rng.randint(1, 3))]
    while True:
        more = state.dequeue_tasks(5)
        if not more:
            break
        got += [t.task_id for t in more]
    client.close()
    return got


async def _async(cfg: dict[str, Any]) -> list[int]:
    import redis.asyncio
    import redis.asyncio.cluster

    client: Any
    if "cluster" in cfg:
        client = redis.asyncio.cluster.RedisCluster(
            startup_nodes=[redis.asyncio.cluster.ClusterNode(h, p) for h, p in cfg["cluster"]],
            protocol=3,
        )
    else:
        client = redis.asyncio.Redis.from_url(cfg["url"], protocol=3)
    state = await AsyncRedisSwarmState.attach(client, cfg["run_id"], prefix=cfg["prefix"])
    rng = random.Random(cfg["seed"])
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    got: list[int] = []
    for batch in _batches(cfg["parents"], rng):
        await state.apply_update(StateUpdate(task_statuses=dict.fromkeys(batch, "D")))
        got += [t.task_id for t in await state.dequeue_tasks(rng.randint(1, 3))]
    while True:
        more = await state.dequeue_tasks(5)
        if not more:
            break
        got += [t.task_id for t in more]
    await client.aclose()
    return got


def run_workers(configs: list[dict[str, Any]], timeout: float = 120.0) -> list[list[int]]:
    """Start one worker process per config, start them together, return what each dequeued."""
    import subprocess

    procs = [
        subprocess.Popen(
            [sys.executable, __file__, json.dumps(cfg)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for cfg in configs
    ]
    try:
        for p in procs:
            assert p.stdout is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                raise AssertionError(f"worker did not start: {line!r} {p.communicate()[1]}")
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=timeout)
            if p.returncode != 0:
                raise AssertionError(f"worker failed ({p.returncode}):\n{err}")
            results.append(json.loads(out.strip().splitlines()[-1]))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def main() -> None:
    cfg = json.loads(sys.argv[1])
    got = asyncio.run(_async(cfg)) if cfg.get("front") == "async" else _sync(cfg)
    print(json.dumps(got), flush=True)


if __name__ == "__main__":
    main()
