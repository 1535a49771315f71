"""Scenario ``lifecycle``: tasks/s of four implementations on the same DAG and batch size.

``redis`` (RedisSwarmState, Lua), ``memory`` (the in-memory reference), ``pipelined``
(WATCH/MULTI, no Lua) and ``naive`` (one command per call) each run claim -> Q -> R -> D with
completion propagation until the DAG is done (naive: until its time budget is spent). So do
the two layout floors (``floor_native``, ``floor_record``: :mod:`~swarm_redis.bench.layout_floor`,
the lifecycle's writes and nothing else), the bound below which no script on that layout goes
in the same run. Then each
Redis implementation runs again with :class:`~swarm_redis.bench.measure.OpStats` around every
operation: Redis CPU, client CPU and Redis commands per task and per operation (``per_op``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from swarm_redis.bench import layout_floor
from swarm_redis.bench.alternatives import NaiveState, PipelinedState
from swarm_redis.bench.config import ARRAY_LIMIT, RUN_LIMIT
from swarm_redis.bench.context import Context
from swarm_redis.bench.loop import Claims, Ops, lifecycle_loop
from swarm_redis.bench.measure import OpStats, measure, measure_call
from swarm_redis.bench.probes import LoadWatch, rate
from swarm_redis.bench.profiler import profile
from swarm_redis.state import RedisSwarmState
from swarm_redis.testing.dags import Dag, DagShape, build_dag
from swarm_redis.testing.oracle import SwarmState
from swarm_redis.update import StateUpdate

#: The Redis implementations measured per operation, in report order.
REDIS_IMPLEMENTATIONS: tuple[str, ...] = ("redis", "pipelined", "naive")
#: The layout floors run beside them (keys of the scenario's figures).
FLOORS: tuple[str, ...] = ("floor_native", "floor_record")
#: Share of the naive time budget its per-operation run gets (per-task figures need few tasks).
NAIVE_PER_OP_SHARE = 0.25


@dataclass
class Driver:
    """One Redis implementation set up on a fresh run: its operations and what to report after.

    ``after`` returns the implementation's own figures once the loop ended (all done, round
    trips, ...); ``deadline_s`` cuts the loop short (naive); ``setup`` holds the figures of the
    registration (not timed as part of the lifecycle).
    """

    ops: Ops
    after: Callable[[], dict[str, Any]]
    deadline_s: float | None = None
    setup: dict[str, Any] = field(default_factory=dict)


def registered_run(client: Any, prefix: str, run_id: int, dag: Dag) -> RedisSwarmState:
    """A fresh RedisSwarmState run with ``dag`` registered and its roots queued."""
    state = RedisSwarmState(
        1, run_id, 1, redis=client, prefix=prefix, max_concurrently_running=RUN_LIMIT
    )
    state.add_arrays(dag.arrays)
    state.add_tasks(dag.tasks)
    state.enqueue_tasks(dag.roots)
    return state


def new_redis_run(ctx: Context, dag: Dag) -> RedisSwarmState:
    """:func:`registered_run` on the suite's Redis, under its prefix, with a new run id."""
    return registered_run(ctx.client, ctx.prefix, ctx.new_run_id(), dag)


def redis_ops(state: RedisSwarmState, batch_size: int) -> tuple[Ops, Claims]:
    """RedisSwarmState's lifecycle operations: claim_batch -> ack_batch(Q) -> apply(R) ->
    apply(D, propagating); and the claims (their API counters)."""
    claims = Claims(state, batch_size)

    def apply(statuses: dict[int, str]) -> Any:
        return state.apply(StateUpdate(task_statuses=statuses))

    return Ops(claims.take, claims.ack, apply, apply), claims


def redis_driver(ctx: Context, shape: DagShape) -> Driver:
    """RedisSwarmState: claim_batch -> ack_batch(Q) -> apply(R) -> apply(D, propagating)."""
    dag = build_dag(shape, ARRAY_LIMIT)
    state, setup = measure_call(ctx.client, shape.n_tasks, lambda: new_redis_run(ctx, dag))
    ops, claims = redis_ops(state, ctx.config.batch_size)

    def after() -> dict[str, Any]:
        return {"claim_api": claims.api, "all_done": state.counts()["D"] == shape.n_tasks}

    return Driver(ops, after, setup=setup)


def new_pipelined_run(ctx: Context, shape: DagShape, run_id: int) -> tuple[Dag, PipelinedState]:
    """A fresh run of ``shape`` written by :class:`PipelinedState`, its roots queued."""
    dag = build_dag(shape, ARRAY_LIMIT)
    alt = PipelinedState(ctx.text_client, run_id, prefix=ctx.prefix)
    alt.create(RUN_LIMIT)
    alt.add_arrays(dag.arrays)
    alt.add_tasks(dag.tasks)
    alt.enqueue(dag.roots)
    return dag, alt


def alt_ops(alt: PipelinedState | NaiveState, replica: Any, batch_size: int) -> Ops:
    """The lifecycle operations of a Lua-less implementation for ``replica``."""

    def take() -> tuple[Any, list[int]] | None:
        b = alt.claim(replica, batch_size)
        return None if b is None else (b, list(b.task_ids))

    def ack(b: Any, s: dict[int, str]) -> Any:
        return alt.ack(replica, b, s)

    return Ops(take, ack, alt.apply, alt.apply)


def pipelined_driver(ctx: Context, shape: DagShape) -> Driver:
    """PipelinedState (WATCH/MULTI/EXEC, no Lua): claim -> ack(Q) -> R -> D."""
    run_id = ctx.new_run_id()
    (_, alt), setup = measure_call(
        ctx.client, shape.n_tasks, lambda: new_pipelined_run(ctx, shape, run_id)
    )
    replica = alt.join("bench-pipelined")

    def after() -> dict[str, Any]:
        return {
            "transactions": alt.transactions,
            "watch_retries": alt.retries,
            "round_trips": alt.round_trips,
            "all_done": alt.counts()["D"] == shape.n_tasks,
        }

    return Driver(alt_ops(alt, replica, ctx.config.batch_size), after, setup=setup)


def naive_driver(ctx: Context, shape: DagShape, budget_s: float) -> Driver:
    """NaiveState (one command per call), cut short after ``budget_s`` seconds."""
    run_id = ctx.new_run_id()
    (dag, _), setup = measure_call(
        ctx.client, shape.n_tasks, lambda: new_pipelined_run(ctx, shape, run_id)
    )
    alt = NaiveState(ctx.text_client, run_id, prefix=ctx.prefix)
    alt.register_objects(dag.tasks)
    replica = alt.join("bench-naive")

    def after() -> dict[str, Any]:
        return {"round_trips": alt.round_trips, "budget_s": budget_s}

    ops = alt_ops(alt, replica, ctx.config.batch_size)
    return Driver(ops, after, deadline_s=budget_s, setup=setup)


def run_floor(ctx: Context, shape: DagShape, layout: str) -> dict[str, Any]:
    """The lifecycle of a layout's floor on ``shape`` (fresh keys under the suite's prefix)."""
    p = f"{ctx.prefix}:floor{ctx.new_run_id()}:"
    ops = layout_floor.floor_run(ctx.client, layout, shape, ctx.config.batch_size, p)
    out = measure(ctx.client, lambda: lifecycle_loop(ops))
    out["all_done"] = ctx.client.scard(p + "s:D") == shape.n_tasks
    return out


def run_driver(ctx: Context, driver: Driver, mode: str = "measure") -> dict[str, Any]:
    """Drive the loop: "measure" (timed), "per_op" (:class:`OpStats`) or "profile"."""
    deadline = None if driver.deadline_s is None else time.perf_counter() + driver.deadline_s
    if mode == "profile":
        folder = ctx.config.profile_dir or "."
        return {"profile": profile(lambda: lifecycle_loop(driver.ops), folder, "lifecycle_redis")}
    if mode == "per_op":
        stats = OpStats(ctx.client)
        ops = driver.ops.wrapped(stats.wrap)
        c0 = time.perf_counter()
        done = lifecycle_loop(ops, deadline)
        seconds = round(time.perf_counter() - c0, 3)
        return {"tasks": done, "seconds": seconds, "ops": stats.result(done), **driver.after()}
    out: dict[str, Any] = measure(ctx.client, lambda: lifecycle_loop(driver.ops, deadline))
    out["register_s"] = driver.setup.get("seconds")
    out["register"] = driver.setup
    out.update(driver.after())
    return out


def run_memory_lifecycle(shape: DagShape, batch_size: int) -> dict[str, Any]:
    """memory.SwarmState: dequeue, apply Q, R, D, propagate_completions and enqueue."""
    dag = build_dag(shape, ARRAY_LIMIT)
    state = SwarmState(1, 1, 1, max_concurrently_running=RUN_LIMIT)
    for a in dag.arrays:
        state.add_array(a)
    for t in dag.tasks:
        state.add_task(t)
    for t in dag.roots:
        state.enqueue_task(t)
    load = LoadWatch()
    c0, t0 = time.process_time(), time.perf_counter()
    done = 0
    while state.ready_to_run:
        batch: list[Any] = []
        while state.ready_to_run and len(batch) < batch_size:
            task = state.dequeue_task()
            if task is not None:
                batch.append(task)
        ids = [t.task_id for t in batch]
        state.apply_update(StateUpdate(task_statuses=dict.fromkeys(ids, "Q")))
        state.apply_update(StateUpdate(task_statuses=dict.fromkeys(ids, "R")))
        changed = state.apply_update(StateUpdate(task_statuses=dict.fromkeys(ids, "D")))
        for ready in state.propagate_completions(changed):
            state.enqueue_task(ready)
        done += len(ids)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "load": load.result(cpu),
        "tasks": done,
        "seconds": round(wall, 4),
        "tasks_per_s": round(rate(done, wall), 1),
        "client_cpu_s": round(cpu, 4),
        "us_per_task_client": round(cpu / done * 1e6, 2) if done else None,
        "all_done": state.get_done_count() == shape.n_tasks,
    }


def lifecycle_shape(ctx: Context) -> DagShape:
    """The DAG of the lifecycle, redis_share and replicas scenarios."""
    cfg = ctx.config
    return DagShape(cfg.lifecycle_tasks, width=cfg.width_for(cfg.lifecycle_tasks))


def run_redis_lifecycle(ctx: Context, shape: DagShape, mode: str = "measure") -> dict[str, Any]:
    """The RedisSwarmState lifecycle on a fresh run of ``shape`` (see :func:`run_driver`)."""
    return run_driver(ctx, redis_driver(ctx, shape), mode)


def lifecycle(ctx: Context) -> dict[str, Any]:
    """The scenario (see the module docstring)."""
    cfg = ctx.config
    shape = lifecycle_shape(ctx)
    out: dict[str, Any] = {"dag": shape.describe(), "batch_size": cfg.batch_size}
    out["repeat"] = cfg.repeat
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "memory": lambda: run_memory_lifecycle(shape, cfg.batch_size),
        "redis": lambda: run_redis_lifecycle(ctx, shape),
        "pipelined": lambda: run_driver(ctx, pipelined_driver(ctx, shape)),
        "floor_native": lambda: run_floor(ctx, shape, "native"),
        "floor_record": lambda: run_floor(ctx, shape, "record"),
    }
    for name, fn in runs.items():
        tries = [fn() for _ in range(cfg.repeat)]
        out[name] = max(tries, key=lambda x: float(x["tasks_per_s"]))
        out[name]["tasks_per_s_all"] = [x["tasks_per_s"] for x in tries]
    ctx.lifecycle_raw = out["redis"]
    out["naive"] = run_driver(ctx, naive_driver(ctx, shape, cfg.naive_budget))
    out["naive"]["complete"] = out["naive"]["tasks"] == shape.n_tasks
    for name in ("redis", "memory", "pipelined", "naive", *FLOORS):
        x = out[name]
        out[f"{name}_tasks_per_s"] = x["tasks_per_s"]
        if x.get("us_per_task_client") is not None:
            # load-independent cost: CPU of the client plus CPU of Redis, per task
            x["cpu_us_per_task"] = round(
                x["us_per_task_client"] + (x.get("us_per_task_redis") or 0), 2
            )
    r = out["redis_tasks_per_s"]
    out["redis_vs_memory"] = round(r / out["memory_tasks_per_s"], 4)
    out["redis_vs_pipelined"] = round(r / out["pipelined_tasks_per_s"], 3)
    for name in FLOORS:  # what the layout's floor would give against the same references
        out[f"{name}_vs_memory"] = round(out[name]["tasks_per_s"] / out["memory_tasks_per_s"], 4)
        out[f"{name}_vs_pipelined"] = round(
            out[name]["tasks_per_s"] / out["pipelined_tasks_per_s"], 3
        )
    out["redis_vs_naive"] = (
        round(r / out["naive_tasks_per_s"], 2) if out["naive"]["tasks"] else None
    )
    if OpStats.available(ctx.client):
        out["per_op"] = per_operation(ctx, shape)
    if cfg.profile_dir:
        out["profile"] = run_redis_lifecycle(ctx, shape, "profile")["profile"]
    out["breakdown_commands"] = cfg.breakdown
    return out


def per_operation(ctx: Context, shape: DagShape) -> dict[str, Any]:
    """Each Redis implementation once more with :class:`OpStats` around every operation."""
    naive_budget = ctx.config.naive_budget * NAIVE_PER_OP_SHARE
    makers: dict[str, Callable[[], Driver]] = {
        "redis": lambda: redis_driver(ctx, shape),
        "pipelined": lambda: pipelined_driver(ctx, shape),
        "naive": lambda: naive_driver(ctx, shape, naive_budget),
    }
    return {name: run_driver(ctx, makers[name](), "per_op") for name in REDIS_IMPLEMENTATIONS}
