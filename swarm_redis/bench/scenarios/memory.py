"""Scenario ``memory``: INFO used_memory per task after registering a large run, by key kind
(the run is shared with flatness and blocking)."""

from __future__ import annotations

import contextlib
from typing import Any

import redis

from swarm_redis.bench.context import Context
from swarm_redis.engine.keys import RUN_KEY_NAMES

_KINDS: dict[str, str] = {
    "task": "task records (hash)",
    "ready": "ready queue (zset + queued set + qres + qidx)",
    "queued": "ready queue (zset + queued set + qres + qidx)",
    "qres": "ready queue (zset + queued set + qres + qidx)",
    "qidx": "ready queue (zset + queued set + qres + qidx)",
    "events": "event stream",
}


def memory(ctx: Context) -> dict[str, Any]:
    """The scenario (see the module docstring)."""
    cfg = ctx.config
    run = ctx.registered_run(cfg.big_tasks)
    by_key: dict[str, int] = {}
    for name in RUN_KEY_NAMES:
        key = run.state.keys.key(name)
        with contextlib.suppress(redis.ResponseError):
            size = ctx.client.memory_usage(key, samples=0)
            if size:
                by_key[name] = int(size)
    kinds: dict[str, int] = {}
    for name, size in by_key.items():
        kind = _KINDS.get(name, "status sets" if name.startswith("s:") else "run-level hashes")
        kinds[kind] = kinds.get(kind, 0) + size
    n = cfg.big_tasks
    delta = run.memory_delta
    return {
        "tasks": n,
        "shape": run.shape.describe(),
        "used_memory_delta": delta,
        "bytes_per_task": round(delta / n, 1) if delta is not None else None,
        "keys_total": sum(by_key.values()),
        "keys_bytes_per_task": round(sum(by_key.values()) / n, 1),
        "by_key": by_key,
        "by_kind_bytes_per_task": {k: round(v / n, 1) for k, v in kinds.items()},
        "register_s": round(run.register_s, 2),
        "exact": ctx.private,
    }
