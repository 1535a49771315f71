"""Scenario ``redis_share``: Redis CPU against the client's CPU during the lifecycle's Redis
path (the lifecycle's own run when it ran, else one run of its own)."""

from __future__ import annotations

from typing import Any

from swarm_redis.bench.context import Context
from swarm_redis.bench.scenarios.lifecycle import lifecycle_shape, run_redis_lifecycle


def redis_share(ctx: Context) -> dict[str, Any]:
    """The scenario (see the module docstring)."""
    raw = ctx.lifecycle_raw
    if raw is None:
        raw = run_redis_lifecycle(ctx, lifecycle_shape(ctx))
    srv, cli = raw["redis_cpu_s"], raw["client_cpu_s"]
    return {
        "redis_cpu_s": srv,
        "redis_script_s": raw["redis_script_s"],
        "client_cpu_s": cli,
        "ratio": None if srv is None or not cli else round(srv / cli, 3),
        "tasks": raw["tasks"],
        "seconds": raw["seconds"],
    }
