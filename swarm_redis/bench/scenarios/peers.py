"""Scenario ``peers``: RQ's job lifecycle on the same Redis, beside ours.

Two workloads, each run by RQ and by RedisSwarmState on the same server:

* ``plain``: ``n`` independent jobs (ours: ``n`` tasks without dependencies, one array);
* ``dag``: a layered DAG with fan-in 3 (RQ: ``depends_on`` the three parents; ours: the same
  :class:`~swarm_redis.testing.dags.DagShape`).

Each side has two phases, measured apart: ``register`` (RQ: ``enqueue_many`` layer by layer,
which creates and queues the jobs; ours: ``add_arrays``, ``add_tasks`` and the roots'
``enqueue_tasks``) and ``run`` (RQ: its real ``SimpleWorker`` in burst mode, in this process,
on a no-op job; it dequeues, runs, finishes and enqueues the dependents whose dependencies are
all finished; ours: claim -> Q -> R -> D with propagation, batches of the configured size). The
figures are tasks/s and Redis CPU µs per task of each phase; the comparison is on ``run`` and on
both phases together. RQ keeps its defaults (results kept for 500 s, job timeouts by SIGALRM);
its keys carry the suite's prefix in the queue name, job ids and worker name and are deleted at
the end. Skipped, with a note, when rq is not installed (extra ``peers``).
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Callable
from typing import Any

import redis

from swarm_redis.bench.context import Context
from swarm_redis.bench.measure import measure, measure_call
from swarm_redis.bench.scenarios.lifecycle import redis_driver, run_driver
from swarm_redis.testing.dags import DagShape

#: Jobs of each workload in the full run (quick: 1/10).
PEER_JOBS = 5000
#: Widest layer of the ``dag`` workload.
PEER_WIDTH = 100
#: Jobs per ``enqueue_many`` call (one pipeline each) of the ``plain`` workload.
ENQUEUE_CHUNK = 1000


def noop() -> None:
    """The job every RQ worker runs: nothing, so that the figures are RQ's own."""


def rq_available() -> bool:
    """Whether rq can be imported."""
    return importlib.util.find_spec("rq") is not None


def workload_shapes(n: int) -> dict[str, DagShape]:
    """The two workloads of ``n`` jobs: one layer without edges, and layers with fan-in 3."""
    width = max(3, min(PEER_WIDTH, n // 10))
    return {
        "plain": DagShape(n, width=n, fan_in=1, n_arrays=1),
        "dag": DagShape(n, width=width, fan_in=3),
    }


def _job_id(prefix: str, kind: str, index: int) -> str:
    return f"{prefix}-{kind}-{index}"


def _rq_register(queue: Any, prefix: str, kind: str, shape: DagShape) -> int:
    """Create and queue every job of ``shape``: layer by layer, a pipeline per chunk."""
    from rq import Queue

    n = shape.n_tasks
    step = ENQUEUE_CHUNK if shape.width >= n else shape.width
    for lo in range(0, n, step):
        datas = []
        for i in range(lo, min(lo + step, n)):
            parents: list[Any] = [_job_id(prefix, kind, p) for p in shape.parents_of(i)]
            datas.append(
                Queue.prepare_data(
                    noop, job_id=_job_id(prefix, kind, i), depends_on=parents or None
                )
            )
        queue.enqueue_many(datas)
    return n


def _rq_workload(ctx: Context, conn: Any, kind: str, shape: DagShape) -> dict[str, Any]:
    """RQ on one workload: register, then one SimpleWorker in burst mode until all is done."""
    from rq import Queue, SimpleWorker

    queue = Queue(f"{ctx.prefix}-{kind}", connection=conn)
    n = shape.n_tasks
    _, register = measure_call(ctx.client, n, lambda: _rq_register(queue, ctx.prefix, kind, shape))
    worker = SimpleWorker([queue], connection=conn, name=f"{ctx.prefix}-{kind}-worker")

    def work() -> int:
        worker.work(burst=True, logging_level="WARNING")
        return int(queue.finished_job_registry.count)

    run = measure(ctx.client, work)
    run["failed"] = int(queue.failed_job_registry.count)
    run["all_done"] = run["tasks"] == n and run["failed"] == 0
    return {"register": register, "run": run}


def _ours_workload(ctx: Context, shape: DagShape) -> dict[str, Any]:
    """RedisSwarmState on one workload (registration and lifecycle measured apart)."""
    run = run_driver(ctx, redis_driver(ctx, shape))
    return {"register": run.pop("register"), "run": run}


def _totals(side: dict[str, Any]) -> None:
    """Add both phases together: tasks/s and Redis CPU µs per task of register + run."""
    reg, run = side["register"], side["run"]
    n = run["tasks"]
    seconds = reg["seconds"] + run["seconds"]
    side["total_tasks_per_s"] = round(n / seconds, 1) if seconds else None
    cpu = [x.get("us_per_task_redis") for x in (reg, run)]
    side["total_us_per_task_redis"] = None if None in cpu else round(sum(cpu), 2)


def cleanup_rq_keys(client: Any, prefix: str) -> int:
    """Delete every RQ key of this suite run (they carry ``prefix``); the number deleted."""
    keys = list(client.scan_iter(match=f"rq:*{prefix}*", count=1000))
    for i in range(0, len(keys), 1000):
        client.unlink(*keys[i : i + 1000])
    for registry in ("rq:queues", "rq:workers"):
        members = [m for m in client.smembers(registry) if prefix.encode() in m]
        if members:
            client.srem(registry, *members)
    return len(keys)


def peers(ctx: Context, jobs: int | None = None) -> dict[str, Any]:
    """The scenario (see the module docstring)."""
    if not rq_available():
        return {
            "skipped": "rq is not installed: pip install 'rq>=2' (extra 'peers') to compare "
            "with RQ on the same Redis"
        }
    import rq

    n = jobs if jobs is not None else ctx.config._n(PEER_JOBS)
    conn = redis.Redis.from_url(ctx.url, protocol=2)
    out: dict[str, Any] = {"jobs": n, "rq_version": rq.__version__, "workloads": {}}
    logging.getLogger("rq.worker").setLevel(logging.WARNING)
    sides: dict[str, Callable[[str, DagShape], dict[str, Any]]] = {
        "rq": lambda kind, shape: _rq_workload(ctx, conn, kind, shape),
        "ours": lambda kind, shape: _ours_workload(ctx, shape),
    }
    try:
        for kind, shape in workload_shapes(n).items():
            w: dict[str, Any] = {"shape": shape.describe()}
            for side, fn in sides.items():
                w[side] = fn(kind, shape)
                _totals(w[side])
            ours, theirs = w["ours"], w["rq"]
            w["run_ratio"] = _ratio(ours["run"]["tasks_per_s"], theirs["run"]["tasks_per_s"])
            w["total_ratio"] = _ratio(ours["total_tasks_per_s"], theirs["total_tasks_per_s"])
            out["workloads"][kind] = w
    finally:
        cleanup_rq_keys(conn, ctx.prefix)
        conn.close()
    out["run_ratio"] = {k: w["run_ratio"] for k, w in out["workloads"].items()}
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 2) if a and b else None
