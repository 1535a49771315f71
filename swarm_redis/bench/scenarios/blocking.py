"""Scenario ``blocking``: PING latency from another process while the largest updates apply
(with the default chunk budget and variants), while one completion credits 500k children, and
during the bounded-call cases of :mod:`swarm_redis.bench.scenarios.bounded`."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

import redis

from swarm_redis.bench.config import RUN_LIMIT
from swarm_redis.bench.context import Context, RegisteredRun
from swarm_redis.bench.probes import PingProbe, delta, evalsha_calls, server_cpu
from swarm_redis.bench.scenarios.bounded import bounded_calls
from swarm_redis.records import TaskRecord
from swarm_redis.state import RedisSwarmState
from swarm_redis.update import StateUpdate


@contextlib.contextmanager
def _chunking(state: RedisSwarmState, budget: int) -> Iterator[None]:
    """Temporarily use another ``chunk_budget`` (the constructor option) on ``state``."""
    core = state._core
    old_budget = core.chunk_budget
    core.chunk_budget = budget
    try:
        yield
    finally:
        core.chunk_budget = old_budget


def _blocking_round(
    ctx: Context, run: RegisteredRun, ids: list[int], probe: PingProbe, tag: str
) -> dict[str, Any]:
    """Apply R then D (propagating) to ``ids`` in one update each; PING figures per phase."""
    phases: dict[str, Any] = {}
    ctx.slowlog_reset()
    for status in ("R", "D"):
        t0 = time.perf_counter()
        result = run.state.apply(StateUpdate(task_statuses=dict.fromkeys(ids, status)))
        t1 = time.perf_counter()
        probe.mark(tag + status, t0, t1)
        phases[f"{status} x {len(ids)}"] = {
            "seconds": round(t1 - t0, 3),
            "changed": len(result.changed),
            "queued": len(result.ready),
        }
    return {"phases": phases, "slowlog_max_ms": ctx.slowlog_max_ms()}


#: Children of the one completion of the blocking scenario's fan-out case (quick: 1/10).
FANOUT_CHILDREN = 500_000


def blocking_fanout(ctx: Context, children: int | None = None) -> dict[str, Any]:
    """Blocking case: ONE completion whose task has 500k children (quick: 50k).

    PING latency from another process, BUSY replies and the longest command while the task is
    registered (its children as ``kids`` slices, then its record) and while the fan-out is
    credited (one slice per round trip) and the children are queued.
    """
    n = children if children is not None else ctx.config._n(FANOUT_CHILDREN)
    state = RedisSwarmState(
        1, ctx.new_run_id(), 1, redis=ctx.client, prefix=ctx.prefix,
        max_concurrently_running=RUN_LIMIT, events_maxlen=1000,
    )  # fmt: skip
    parent = TaskRecord(1, 0, "G", 0, 0)
    kids = [TaskRecord(i, 0, "G", 1, 0) for i in range(2, n + 2)]
    parent.downstream_swarm_tasks = set(kids)
    busy = queued = 0
    with PingProbe(ctx.url) as probe:
        time.sleep(0.2)
        # registration is bounded too: the 500k ids go as kids slices, then the record
        ctx.slowlog_reset()
        t0 = time.perf_counter()
        state.add_tasks([parent, *kids])
        register_s = time.perf_counter() - t0
        probe.mark("register", t0, t0 + register_s)
        register_slowlog = ctx.slowlog_max_ms()
        ctx.slowlog_reset()
        cpu0, calls0 = server_cpu(ctx.client), evalsha_calls(ctx.client)
        t0 = time.perf_counter()
        try:
            queued = len(state.apply(StateUpdate(task_statuses={1: "D"})).ready)
        except redis.ResponseError as e:
            if "BUSY" not in str(e):
                raise
            busy += 1
        t1 = time.perf_counter()
        probe.mark("fanout", t0, t1)
        cpu = delta(server_cpu(ctx.client), cpu0)
        calls = delta(evalsha_calls(ctx.client), calls0)
    register = probe.stats("register")
    return {
        "children": n,
        "register_s": round(register_s, 3),
        "register_max_ms": register["max_ms"],
        "register_slowlog_max_ms": register_slowlog,
        "seconds": round(t1 - t0, 3),
        "queued": queued,
        "busy": busy,
        "script_calls": calls,
        # Redis CPU per script call: what a call costs when Redis is not starved of CPU
        "redis_cpu_ms_per_call": round(cpu / calls * 1000, 3) if cpu and calls else None,
        "slowlog_max_ms": ctx.slowlog_max_ms(),
        **probe.stats("fanout"),
    }


#: Chunk budgets tried besides the default in the blocking scenario.
BLOCKING_VARIANTS: tuple[int, ...] = (500, 2000)


def blocking(ctx: Context) -> dict[str, Any]:
    """The scenario: PING latency from another process while the largest updates apply.

    The target is measured with the library's defaults; the variants show what smaller chunks
    would change (the core always sends the chunks of one update one round trip at a time).
    """
    cfg = ctx.config
    run = ctx.registered_run(cfg.big_tasks)
    n_layers = max(1, cfg.blocking_update // run.shape.width)
    first = min(10, run.shape.n_layers // 4)
    default_budget = run.state._core.chunk_budget
    rounds: dict[str, Any] = {}
    with PingProbe(ctx.url) as probe:
        time.sleep(0.2)
        t = time.perf_counter()
        probe.mark("idle", t - 0.2, t)
        ids = [i for layer in run.take_layers(n_layers, first) for i in layer]
        n_changes = len(ids)
        rounds["default"] = _blocking_round(ctx, run, ids, probe, "default")
        for budget in BLOCKING_VARIANTS:
            ids = [i for layer in run.take_layers(n_layers, first) for i in layer]
            if not ids:
                break
            name = f"budget {budget}"
            with _chunking(run.state, budget):
                rounds[name] = _blocking_round(ctx, run, ids, probe, name)
    for name, r in rounds.items():
        for status, phase in zip(("R", "D"), list(r["phases"])):
            r["phases"][phase].update(probe.stats(name + status))
        overall = probe.stats(name + "R", name + "D")
        r.update(max_ms=overall["max_ms"], p99_ms=overall["p99_ms"], pings=overall["pings"])
    main = rounds.pop("default")
    fanout = blocking_fanout(ctx)
    return {
        "fanout": fanout,
        "run_tasks": cfg.big_tasks,
        "update_changes": n_changes,
        "chunk_budget": default_budget,
        "phases": main["phases"],
        "idle": probe.stats("idle"),
        "register": run.pings,
        "max_ms": main["max_ms"],
        "p99_ms": main["p99_ms"],
        "pings": main["pings"],
        "slowlog_max_ms": main["slowlog_max_ms"],
        "variants": rounds,
        "bounded_calls": bounded_calls(ctx),
    }
