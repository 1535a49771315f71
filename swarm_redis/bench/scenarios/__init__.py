"""The benchmark scenarios, one per module, and :func:`run_suite`, which runs them in order.

Each scenario is a function of a :class:`~swarm_redis.bench.context.Context` returning a
JSON-ready dict of raw figures. Sizes come from :class:`~swarm_redis.bench.config.BenchConfig`
(full, ``--quick`` = 1/10, and a hidden ``scale``).
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

from swarm_redis.bench.config import SCENARIOS, BenchConfig
from swarm_redis.bench.context import Context
from swarm_redis.bench.probes import LoadWatch
from swarm_redis.bench.scenarios import (
    blocking,
    flatness,
    jobmon_tick,
    lifecycle,
    memory,
    peers,
    redis_share,
    replicas,
)

# the modules keep their names (``scenarios.peers`` is the module): the functions are here
SCENARIO_FUNCS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "lifecycle": lifecycle.lifecycle,
    "redis_share": redis_share.redis_share,
    "replicas": replicas.replicas,
    "peers": peers.peers,
    "memory": memory.memory,
    "flatness": flatness.flatness,
    "blocking": blocking.blocking,
    "jobmon_tick": lambda ctx: jobmon_tick.jobmon_tick(
        ctx, n=max(20, round(2000 * ctx.config.scale))
    ),
}


def run_suite(config: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the selected scenarios; the JSON-ready results (``machine``, ``config``, scenarios).

    Every scenario also gets ``scenario_s`` and ``scenario_load`` (the machine's load while it
    ran, see :class:`~swarm_redis.bench.probes.LoadWatch`).
    """
    say = progress or (lambda _msg: None)
    ctx = Context(config)
    results: dict[str, Any] = {}
    try:
        results["machine"] = ctx.machine()
        results["config"] = {
            "quick": config.quick,
            "scale": config.scale,
            "batch_size": config.batch_size,
            "repeat": config.repeat,
            "scenarios": [s for s in SCENARIOS if s in config.only],
            "python_executable": sys.executable,
        }
        for name in SCENARIOS:
            if name not in config.only:
                continue
            say(f"running {name} ...")
            t0 = time.perf_counter()
            load = LoadWatch(ctx.client)
            results[name] = SCENARIO_FUNCS[name](ctx)
            results[name]["scenario_s"] = round(time.perf_counter() - t0, 1)
            results[name]["scenario_load"] = load.result()
    finally:
        ctx.cleanup()
    return results


__all__ = ["SCENARIOS", "SCENARIO_FUNCS", "BenchConfig", "run_suite"]
