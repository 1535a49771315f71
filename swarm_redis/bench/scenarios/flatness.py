"""Scenario ``flatness``: one update of 1,000 D changes (propagating) on runs of growing size;
its time should not grow with the run."""

from __future__ import annotations

import statistics
import time
from typing import Any

from swarm_redis.bench.context import Context
from swarm_redis.bench.loop import Claims
from swarm_redis.bench.probes import delta, script_usec
from swarm_redis.update import StateUpdate


def flatness(ctx: Context, reps: int = 7) -> dict[str, Any]:
    """The scenario (see the module docstring)."""
    cfg = ctx.config
    k = cfg.update_size
    sizes: dict[str, Any] = {}
    for n in cfg.flatness_sizes:
        run = ctx.registered_run(n)
        times, srv, ready = [], [], []
        # as in the lifecycle: the ready layer is claimed and acked (Q), then runs (R); the
        # timed update completes it (D), which credits the next layer and queues it
        claims = Claims(run.state, cfg.batch_size, ttl_s=3600.0)
        for layer in range(min(reps, run.shape.n_layers - 1)):
            run.used_layers.add(layer)
            ids: list[int] = []
            while len(ids) < k and (got := claims.take()) is not None:
                claims.ack(got[0], dict.fromkeys(got[1], "Q"))
                ids += got[1]
            run.state.apply(StateUpdate(task_statuses=dict.fromkeys(ids, "R")))
            u0 = script_usec(ctx.client)
            t0 = time.perf_counter()
            result = run.state.apply(StateUpdate(task_statuses=dict.fromkeys(ids, "D")))
            times.append((time.perf_counter() - t0) * 1000)
            u = delta(script_usec(ctx.client), u0)
            if u is not None:
                srv.append(u / 1000)
            ready.append(len(result.ready))
        sizes[str(n)] = {
            "apply_ms_median": round(statistics.median(times), 3),
            "apply_ms_min": round(min(times), 3),
            "apply_ms": [round(t, 3) for t in times],
            "redis_ms_median": round(statistics.median(srv), 3) if srv else None,
            "queued_per_update": ready,
            "register_s": round(run.register_s, 2),
        }
    small, large = str(cfg.flatness_sizes[0]), str(cfg.flatness_sizes[-1])
    med = {n: s["apply_ms_median"] for n, s in sizes.items()}
    low = {n: s["apply_ms_min"] for n, s in sizes.items()}
    return {
        "ratio_min": round(low[large] / low[small], 3) if low[small] else None,
        "update_changes": k,
        "shape": {"width": cfg.flat_width, "fan_in": 3},
        "sizes": sizes,
        "ratio": round(med[large] / med[small], 3) if med[small] else None,
        "ratio_of": f"{large} / {small}",
    }
