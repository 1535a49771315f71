"""Scenario ``replicas``: 1, 2 and 4 processes share one run; aggregate tasks/s of ours and
of ``pipelined`` (WATCH/MULTI) with the same process counts.

Each process attaches to the run (ours: ``RedisSwarmState.attach``; pipelined: a
:class:`~swarm_redis.bench.alternatives.PipelinedState` on the run it registered), waits for
the common start signal and runs claim -> Q -> R -> D until every task is final. With several
pipelined processes, transactions collide on the keys they WATCH and recompute: the ratio under
contention is measured, not argued. The rounds alternate (ours k, pipelined k) so that a change
of the machine's load hits both alike.
"""

from __future__ import annotations

import os
import time
import traceback
from collections.abc import Callable
from multiprocessing.connection import Connection
from typing import Any

from swarm_redis.bench.alternatives import PipelinedState
from swarm_redis.bench.config import ARRAY_LIMIT, REPLICA_COUNTS, SPAWN
from swarm_redis.bench.context import Context
from swarm_redis.bench.loop import Claims, Ops, lifecycle_loop
from swarm_redis.bench.probes import LoadWatch, delta, rate, server_cpu
from swarm_redis.bench.scenarios.lifecycle import (
    alt_ops,
    lifecycle_shape,
    new_pipelined_run,
    new_redis_run,
)
from swarm_redis.demo.embedded import connect
from swarm_redis.state import RedisSwarmState
from swarm_redis.testing.dags import DagShape, build_dag
from swarm_redis.update import StateUpdate

#: The implementations of the scenario: ours (Lua) and the WATCH/MULTI one.
KINDS: tuple[str, ...] = ("redis", "pipelined")


def _ours(url: str, prefix: str, run_id: int, batch_size: int) -> tuple[Ops, Any, Any]:
    """Our replica: ops, finished() and what to do and report at the end."""
    state = RedisSwarmState.attach(connect(url), run_id, prefix=prefix)
    claims = Claims(state, batch_size)

    def apply(statuses: dict[int, str]) -> Any:
        return state.apply(StateUpdate(task_statuses=statuses))

    def close() -> dict[str, Any]:
        if claims.replica is not None:
            state.leave(claims.replica)
        return {"claim_api": claims.api}

    return Ops(claims.take, claims.ack, apply, apply), state.all_tasks_final, close


def _pipelined(url: str, prefix: str, run_id: int, batch_size: int) -> tuple[Ops, Any, Any]:
    """A pipelined replica: ops, finished() and its transaction figures at the end."""
    alt = PipelinedState(connect(url, decode_responses=True), run_id, prefix=prefix)
    replica = alt.join(f"bench-pipelined-{os.getpid()}")

    def close() -> dict[str, Any]:
        return {
            "transactions": alt.transactions,
            "watch_retries": alt.retries,
            "round_trips": alt.round_trips,
        }

    return alt_ops(alt, replica, batch_size), alt.all_final, close


_MAKERS: dict[str, Callable[[str, str, int, int], tuple[Ops, Any, Any]]] = {
    "redis": _ours,
    "pipelined": _pipelined,
}


def _replica_worker(
    kind: str, url: str, prefix: str, run_id: int, batch_size: int, conn: Connection, start: Any
) -> None:
    """Child process: attach to the run, wait for the start signal, work until all is final."""
    try:
        t0 = time.perf_counter()
        ops, finished, close = _MAKERS[kind](url, prefix, run_id, batch_size)
        conn.send(("ready", time.perf_counter() - t0))
        start.wait()
        c0 = time.process_time()
        done = lifecycle_loop(ops, finished=finished)
        result = {
            "tasks": done,
            "end": time.perf_counter(),
            "client_cpu_s": time.process_time() - c0,
            "idle_polls": ops.idle_polls,
            **close(),
        }
        conn.send(("done", result))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


def _register(ctx: Context, kind: str, shape: DagShape) -> tuple[int, Callable[[], bool]]:
    """A fresh run for ``kind``: its id and a check that every task is done."""
    if kind == "redis":
        state = new_redis_run(ctx, build_dag(shape, ARRAY_LIMIT))
        return state.workflow_run_id, lambda: state.counts()["D"] == shape.n_tasks
    run_id = ctx.new_run_id()
    _, alt = new_pipelined_run(ctx, shape, run_id)
    return run_id, lambda: alt.counts()["D"] == shape.n_tasks


def _expect(conn: Connection, want: str) -> Any:
    """The next message of a replica process, which must be ``want`` (else its traceback)."""
    what, value = conn.recv()
    if what != want:
        raise RuntimeError(f"replica process failed (waiting for {want!r}):\n{value}")
    return value


def _replica_round(ctx: Context, kind: str, shape: DagShape, k: int) -> dict[str, Any]:
    run_id, all_done = _register(ctx, kind, shape)
    start = SPAWN.Event()
    procs, conns = [], []
    for _ in range(k):
        parent, child = SPAWN.Pipe()
        p = SPAWN.Process(
            target=_replica_worker,
            args=(kind, ctx.url, ctx.prefix, run_id, ctx.config.batch_size, child, start),
            daemon=True,
        )
        p.start()
        procs.append(p)
        conns.append(parent)
    try:
        attach = [_expect(c, "ready") for c in conns]
        cpu0 = server_cpu(ctx.client)
        load = LoadWatch()
        t0 = time.perf_counter()
        start.set()
        results = [_expect(c, "done") for c in conns]
        cpu1 = server_cpu(ctx.client)
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    wall = max(r["end"] for r in results) - t0
    total = sum(r["tasks"] for r in results)
    srv = delta(cpu1, cpu0)
    clients = sum(r["client_cpu_s"] for r in results)
    out = {
        "load": load.result(clients + (srv or 0.0)),
        "replicas": k,
        "tasks": total,
        "seconds": round(wall, 4),
        "tasks_per_s": round(rate(total, wall), 1),
        "per_replica_tasks": [r["tasks"] for r in results],
        "attach_s": [round(a, 3) for a in attach],
        "clients_cpu_s": round(clients, 3),
        "redis_cpu_s": None if srv is None else round(srv, 3),
        "us_per_task_redis": round(srv / total * 1e6, 2) if srv is not None and total else None,
        "idle_polls": sum(r["idle_polls"] for r in results),
        "all_done": all_done(),
    }
    if kind == "redis":
        out["claim_api"] = results[0]["claim_api"]
    else:
        for name in ("transactions", "watch_retries", "round_trips"):
            out[name] = sum(r[name] for r in results)
    return out


def replicas(ctx: Context) -> dict[str, Any]:
    """The scenario (see the module docstring)."""
    cfg = ctx.config
    shape = lifecycle_shape(ctx)
    rounds: dict[str, dict[str, Any]] = {kind: {} for kind in KINDS}
    for k in REPLICA_COUNTS:
        for kind in KINDS:
            rounds[kind][str(k)] = _replica_round(ctx, kind, shape, k)
    per_s = {k: r["tasks_per_s"] for k, r in rounds["redis"].items()}
    pipe_s = {k: r["tasks_per_s"] for k, r in rounds["pipelined"].items()}
    return {
        "dag": shape.describe(),
        "batch_size": cfg.batch_size,
        "tasks_per_s": per_s,
        "pipelined_tasks_per_s": pipe_s,
        "vs_pipelined": {k: round(per_s[k] / pipe_s[k], 3) if pipe_s[k] else None for k in per_s},
        "ratio_4_vs_1": round(per_s["4"] / per_s["1"], 3) if per_s["1"] else None,
        "rounds": rounds["redis"],
        "pipelined_rounds": rounds["pipelined"],
    }
