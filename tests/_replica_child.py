"""A replica process for tests/test_replica_races.py (real processes, real signals).

Usage: python _replica_child.py MODE URL PREFIX RUN_ID TTL_S [ARGS...]

Modes (each prints one line per event on stdout, flushed):

* ``zombie``: join, claim one batch, print ``CLAIMED <json>``, then heartbeat every TTL/4
  until a line arrives on stdin; then ack the batch with Q for every task and print ``ACKED``
  or ``LEASELOST <message>``.
* ``leader``: join, print ``ID <id>``; forever: heartbeat, reap, acquire leadership (print
  ``LEAD <epoch>`` on every new epoch); sleep TTL/10.
* ``claimer`` MAX_SIZE SEED: join; until every task is final: claim a batch of random size
  <= MAX_SIZE, ack it with Q, complete each acked task (D) 5-30 ms later; print
  ``DONE <json list of acked task ids>``.
"""

from __future__ import annotations

import json
import random
import select
import sys
import time

import redis

from swarm_redis import LeaseLostError, RedisSwarmState, StateUpdate


def say(*parts: object) -> None:
    print(*parts, flush=True)


def zombie(state: RedisSwarmState, ttl_s: float) -> None:
    rep = state.join_replica(ttl_s)
    batch = state.claim_batch(rep)
    assert batch is not None
    say("CLAIMED", json.dumps({"id": rep.id, "batch": batch.batch_id, "tasks": batch.task_ids}))
    while not select.select([sys.stdin], [], [], ttl_s / 4)[0]:
        try:
            state.heartbeat(rep)
        except LeaseLostError:
            say("HEARTBEAT-LOST")
    sys.stdin.readline()
    try:
        state.ack_batch(rep, batch, dict.fromkeys(batch.task_ids, "Q"))
        say("ACKED")
    except LeaseLostError as exc:
        say("LEASELOST", exc)


def leader(state: RedisSwarmState, ttl_s: float) -> None:
    rep = state.join_replica(ttl_s)
    say("ID", rep.id)
    led = None
    while True:
        state.heartbeat(rep)
        state.reap()
        epoch = state.acquire_leadership(rep)
        if epoch is not None and epoch != led:
            say("LEAD", epoch)
        led = epoch
        time.sleep(ttl_s / 10)


def claimer(state: RedisSwarmState, ttl_s: float, max_size: int, seed: int) -> None:
    rng = random.Random(seed)
    rep = state.join_replica(ttl_s)
    beat = time.monotonic()
    acked: list[int] = []
    running: list[tuple[float, int]] = []
    while True:
        now = time.monotonic()
        if now - beat > ttl_s / 4:
            state.heartbeat(rep)
            beat = now
        finished = [tid for due, tid in running if due <= now]
        if finished:
            running = [(due, tid) for due, tid in running if due > now]
            state.apply_update(StateUpdate(task_statuses=dict.fromkeys(finished, "D")))
        batch = state.claim_batch(rep, rng.randint(1, max_size))
        if batch is not None:
            state.ack_batch(rep, batch, dict.fromkeys(batch.task_ids, "Q"))
            acked += batch.task_ids
            running += [(now + rng.uniform(0.005, 0.03), tid) for tid in batch.task_ids]
        elif not running and state.all_tasks_final():
            break
        else:
            time.sleep(0.002)
    state.leave(rep)
    say("DONE", json.dumps(acked))


def main() -> None:
    mode, url, prefix, run_id, ttl = sys.argv[1:6]
    client = redis.Redis.from_url(url, protocol=3)
    state = RedisSwarmState.attach(client, int(run_id), prefix=prefix)
    ttl_s = float(ttl)
    if mode == "zombie":
        zombie(state, ttl_s)
    elif mode == "leader":
        leader(state, ttl_s)
    elif mode == "claimer":
        claimer(state, ttl_s, int(sys.argv[6]), int(sys.argv[7]))
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
