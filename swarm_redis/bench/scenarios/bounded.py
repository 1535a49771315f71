"""Blocking, bounded calls: PING latency and BUSY replies from another process while the
biggest reads, queue calls and claims of a 1M-task run execute (part of ``blocking``)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from swarm_redis.bench.config import BenchConfig
from swarm_redis.bench.context import Context
from swarm_redis.bench.probes import BusyPingProbe, delta, script_usec
from swarm_redis.records import ArrayRecord
from swarm_redis.state import RedisSwarmState


def _fill_records(
    client: Any, state: RedisSwarmState, ids: range, array_id: int, status: str
) -> None:
    """Tasks written straight into the run's keys (record + status set): a fast big fixture."""
    keys = state.keys
    for lo in range(ids.start, ids.stop, 20_000):
        part = range(lo, min(lo + 20_000, ids.stop))
        pipe = client.pipeline(transaction=False)
        pipe.hset(keys.task, mapping={i: f"{status}|0|||{array_id}|0|0|" for i in part})
        pipe.sadd(keys.status_set(status), *part)
        pipe.execute()


def _bounded_case(
    ctx: Context, probe: BusyPingProbe, name: str, action: Callable[[], int]
) -> dict[str, Any]:
    """Run ``action`` (returns the tasks it handled) inside a probe window; its figures."""
    ctx.slowlog_reset()
    t0 = time.perf_counter()
    handled = action()
    t1 = time.perf_counter()
    probe.mark(name, t0, t1)
    return {
        "tasks": handled,
        "seconds": round(t1 - t0, 3),
        "slowlog_max_ms": ctx.slowlog_max_ms(),
    }


def _bounded_sizes(cfg: BenchConfig) -> dict[str, int]:
    """Sizes of the bounded-call cases (full: 1M set, 300k enqueue/dequeue, 60k claim queue)."""
    factor = (0.1 if cfg.quick else 1.0) * cfg.scale
    return {
        "set": max(100, round(1_000_000 * factor)),
        "queue": max(100, round(300_000 * factor)),
        "claim_queue": max(100, round(60_000 * factor)),
    }


def bounded_calls(ctx: Context) -> dict[str, Any]:
    """Blocking, bounded-call cases: PING latency and BUSY replies from another process while
    (1) get_tasks_by_status reads a 1M-task set, (2) enqueue_tasks queues 300k tasks,
    (3) dequeue_tasks takes them back, (4) claim_batch forms batches with 60k queued tasks of
    a full array ahead of the array with room. Each case on its own run, fixtures written
    straight into the keys (not measured)."""
    cfg = ctx.config
    sizes = _bounded_sizes(cfg)
    cases: dict[str, Any] = {}
    client = ctx.client

    def new_state(limit: int = 10_000) -> RedisSwarmState:
        return RedisSwarmState(1, ctx.new_run_id(), 1, limit, redis=client, prefix=ctx.prefix)

    read_st = new_state()
    _fill_records(client, read_st, range(1, sizes["set"] + 1), 1, "D")
    q_st = new_state()
    _fill_records(client, q_st, range(1, sizes["queue"] + 1), 1, "G")
    q_tasks = sorted(q_st.get_tasks_by_status("G"), key=lambda t: t.task_id)
    c_st = new_state(limit=100_000)
    blocked = sizes["claim_queue"]
    c_st.add_arrays([ArrayRecord(1, 0), ArrayRecord(2, 1000)])
    _fill_records(client, c_st, range(1, blocked + 1), 1, "G")
    _fill_records(client, c_st, range(blocked + 1, blocked + 2001), 2, "G")
    c_tasks = sorted(c_st.get_tasks_by_status("G"), key=lambda t: t.task_id)
    c_st.enqueue_tasks(c_tasks)  # 60k of the full array 1 first, then array 2
    rep = c_st.join_replica(ttl_s=3600.0)
    claim_ms: list[float] = []

    def claims() -> int:
        n = 0
        for _ in range(4):
            u0 = script_usec(client)
            batch = c_st.claim_batch(rep, max_size=250)
            u = delta(script_usec(client), u0)
            if u is not None:
                claim_ms.append(u / 1000)
            n += len(batch.task_ids) if batch else 0
        return n

    with BusyPingProbe(ctx.url) as probe:
        time.sleep(0.2)
        t = time.perf_counter()
        probe.mark("idle", t - 0.2, t)
        cases[f"get_tasks_by_status over {sizes['set']}"] = _bounded_case(
            ctx, probe, "read", lambda: len(read_st.get_tasks_by_status("D"))
        )
        cases[f"enqueue_tasks of {sizes['queue']}"] = _bounded_case(
            ctx, probe, "enqueue", lambda: len(q_st.enqueue_tasks(q_tasks))
        )
        cases[f"dequeue_tasks of {sizes['queue']}"] = _bounded_case(
            ctx, probe, "dequeue", lambda: len(q_st.dequeue_tasks(sizes["queue"]))
        )
        cases[f"claim_batch x4 behind {blocked} queued of a full array"] = _bounded_case(
            ctx, probe, "claim", claims
        )
    for figures, window in zip(cases.values(), ("read", "enqueue", "dequeue", "claim")):
        stats = probe.stats(window)
        figures.update(
            max_ms=stats["max_ms"], p99_ms=stats["p99_ms"], pings=stats["pings"],
            busy=probe.busy_in(window),
        )  # fmt: skip
    cases[f"claim_batch x4 behind {blocked} queued of a full array"]["claim_redis_ms"] = [
        round(ms, 3) for ms in claim_ms
    ]
    return {
        "sizes": sizes,
        "idle": probe.stats("idle"),
        "cases": cases,
        "max_ms": max(c["max_ms"] for c in cases.values()),
        "busy": sum(c["busy"] for c in cases.values()),
    }
