"""Where the Redis time of the lifecycle's scripts goes, phase by phase, on a real server.

The scripts carry ``--!phase <name>`` marks: Lua comments, free in production. With phase
profiling on (:func:`swarm_redis.engine.scripts.profile_phases`) every script that writes is
sent as a variant in which each mark adds the Redis time (``TIME``) since the previous mark to
the phase it names; the sums go to a hash beside the run's keys. This runs the lifecycle (claim
-> Q -> R -> D, fan-in 3) of ``--tasks`` tasks with those variants and prints, for each script,
each phase's Redis µs per task of the run and its share of the script.

It complements the callgrind harness (:mod:`swarm_redis.bench.instructions`): instructions do
not move with the machine's load but miss what memory costs (a field of a hash of a million
tasks is a few cache misses away), while these times are what Redis spent, phase by phase.
A mark costs about a µs (one ``TIME``): calls of hundreds of tasks keep that small against what
they measure. The lifecycle's own figures (``swarm-redis bench``) stay the reference for totals.

Run it with ``python -m swarm_redis.bench.phases [--tasks N] [--url URL]`` (default: REDIS_URL,
else a private embedded redis-server).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from typing import Any

from swarm_redis.bench.config import ARRAY_LIMIT, BenchConfig
from swarm_redis.bench.context import Context
from swarm_redis.bench.loop import lifecycle_loop
from swarm_redis.bench.scenarios.lifecycle import redis_ops, registered_run
from swarm_redis.engine import scripts
from swarm_redis.engine.commands import text
from swarm_redis.engine.keys import RunKeys
from swarm_redis.testing.dags import DagShape, build_dag

#: The scripts of the lifecycle, in loop order (claim -> ack Q -> apply R and D).
LIFECYCLE_SCRIPTS = ("claim_batch", "ack_batch", "apply_update")


def read_phases(client: Any, keys: RunKeys, tasks: int) -> dict[str, dict[str, float]]:
    """{script: {phase: Redis µs per task}} of the lifecycle's scripts, with ``#calls`` (calls
    per task), from the run's phase hash (``RunKeys.phases``), which is deleted once read."""
    raw = client.hgetall(keys.phases)
    client.delete(keys.phases)
    out: dict[str, dict[str, float]] = {script: {} for script in LIFECYCLE_SCRIPTS}
    for field, value in raw.items():
        script, _, phase = text(field).partition("|")
        if script in out:
            out[script][phase] = int(value) / tasks
    return out


def profile(ctx: Context, tasks: int, width: int, batch: int) -> dict[str, dict[str, float]]:
    """Run the lifecycle of ``tasks`` tasks (layers of ``width``, fan-in 3, claims of
    ``batch``) with phase-profiled scripts; their phases, as :func:`read_phases` gives them."""
    dag = build_dag(DagShape(tasks, width=width, fan_in=3), ARRAY_LIMIT)
    was = scripts.phases_on()
    scripts.profile_phases(True)
    try:
        run_id = ctx.new_run_id()
        state = registered_run(ctx.client, ctx.prefix, run_id, dag)
        keys = RunKeys(ctx.prefix, run_id)
        ctx.client.delete(keys.phases)  # registration and queueing are not part of it
        ops, _ = redis_ops(state, batch)
        done = lifecycle_loop(ops)
        if done != tasks:
            raise RuntimeError(f"the lifecycle finished {done} of {tasks} tasks")
        return read_phases(ctx.client, keys, tasks)
    finally:
        scripts.profile_phases(was)


def table(figures: dict[str, dict[str, float]]) -> list[str]:
    """The phases of each script, costliest first: µs per task and share of the script."""
    lines: list[str] = []
    grand = sum(v for phases in figures.values() for k, v in phases.items() if k != "#calls")
    for script, phases in figures.items():
        timed = {k: v for k, v in phases.items() if k != "#calls"}
        total = sum(timed.values())
        calls = phases.get("#calls", 0.0)
        lines.append(
            f"{script}: {total:.2f} µs per task ({calls:.4f} calls per task,"
            f" {100 * total / grand if grand else 0:.0f} % of the three)"
        )
        for name, us in sorted(timed.items(), key=lambda kv: -kv[1]):
            share = 100 * us / total if total else 0.0
            lines.append(f"  {name:<24} {us:8.2f} µs  {share:5.1f} %")
    lines.append(f"total: {grand:.2f} µs of Redis time per task")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m swarm_redis.bench.phases",
        description="Redis time per task of each phase of the lifecycle's scripts",
    )
    p.add_argument("--tasks", type=int, default=20000, help="tasks (default 20000)")
    p.add_argument("--width", type=int, default=1000, help="layer width (default 1000)")
    p.add_argument("--batch", type=int, default=500, help="claim size (default 500)")
    p.add_argument("--url", help="Redis URL (default: REDIS_URL, else a private embedded server)")
    args = p.parse_args(argv)
    if args.tasks < 1 or args.width < 1 or args.batch < 1:
        p.error("--tasks, --width and --batch must be >= 1")
    ctx = Context(BenchConfig(url=args.url))
    try:
        figures = profile(ctx, args.tasks, args.width, args.batch)
    finally:
        ctx.cleanup()
    print(f"lifecycle phases: {args.tasks} tasks, layers of {args.width}, claims of {args.batch}")
    for line in table(figures):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
