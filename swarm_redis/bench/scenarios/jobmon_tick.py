"""Scenario ``jobmon_tick``: one tick of jobmon's own Scheduler over a ready queue.

jobmon's ``Scheduler._generate_batches`` takes tasks off ``state.ready_to_run`` one at a time,
puts the ones that do not fit the current batch back at the tail and the unscheduled ones back at
the head. The same workflow (``n`` ready tasks of one array, equal TaskResources, limits high
enough for all) is scheduled by one ``tick`` followed by ``apply_update`` of its answer (what
the orchestrator's ``_do_scheduling`` does) on three states:

* ``memory``: jobmon's own in-memory ``SwarmState``;
* ``redis``: a plain ``RedisSwarmState`` (every queue call one round trip);
* ``dropin``: :class:`swarm_redis.jobmon.JobmonSwarmState` (read-ahead queue buffer).

``s`` is the tick (the figure of the target), ``apply_s`` the apply after it; round trips count
both.

The server is a stub that answers every batch with QUEUED at once, so the figures are the
state's. Skipped, with a note, when jobmon is not installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import time
from collections.abc import Callable
from typing import Any, cast

#: The issue's workflow: 2,000 ready tasks.
DEFAULT_TASKS = 2000
#: Rounds of the in-memory and drop-in states, interleaved; the fastest of each is kept (the
#: machine may be shared). The plain RedisSwarmState (thousands of round trips) runs once.
ROUNDS = 5


def jobmon_available() -> bool:
    try:
        return importlib.util.find_spec("jobmon.client.swarm.services.scheduler") is not None
    except ModuleNotFoundError:
        return False


class _StubGateway:
    """jobmon's ServerGateway as far as the Scheduler uses it: every task queued at once."""

    def __init__(self) -> None:
        self.batches: list[int] = []

    async def queue_task_batch(
        self, array_id: int, task_ids: list[int], task_resources_id: int, cluster_id: int
    ) -> Any:
        from jobmon.client.swarm.gateway import QueueResponse

        self.batches.append(len(task_ids))
        return QueueResponse(tasks_by_status={"Q": list(task_ids)})

    async def _ensure_session(self) -> Any:  # resources are bound: never called
        raise AssertionError("the stub gateway has no session")


class _Cluster:
    id = 1


def _workflow(n: int) -> tuple[list[Any], Any]:
    """``n`` REGISTERING SwarmTasks of array 1 with one bound TaskResources, and the array."""
    from jobmon.client.swarm.array import SwarmArray
    from jobmon.client.swarm.task import SwarmTask
    from jobmon.client.task_resources import TaskResources
    from jobmon.plugins.sequential.seq_queue import SequentialQueue

    no_requester: Any = object()  # nothing is sent to a server
    resources = TaskResources(
        {"cores": 1, "memory": 1, "runtime": 60}, SequentialQueue(1, "null.q", {}), no_requester
    )
    resources._id = 1  # bound: the scheduler sends its id
    cluster: Any = _Cluster()
    tasks = [
        SwarmTask(
            task_id=i,
            array_id=1,
            status="G",
            max_attempts=3,
            task_resources=resources,
            cluster=cluster,
        )
        for i in range(1, n + 1)
    ]
    array = SwarmArray(1, max_concurrently_running=10 * n)
    return tasks, array


class _RoundTrips:
    """Counts the round trips of a RedisSwarmState: the transport's executions, and the
    dequeues the drop-in sends ahead (one each)."""

    def __init__(self, state: Any) -> None:
        self.n = 0
        inner = state._transport.execute

        def counted(calls: Any) -> Any:
            self.n += 1
            return inner(calls)

        state._transport.execute = counted
        ahead = getattr(state, "_ahead", None)
        if ahead is not None:
            send = ahead.send

            def counted_send(calls: Any) -> Any:
                self.n += 1
                return send(calls)

            ahead.send = counted_send


def _tick(state: Any) -> tuple[float, float, int]:
    """One scheduler tick, then the apply of its answer (as the orchestrator's
    ``_do_scheduling``); (tick seconds, apply seconds, tasks queued)."""
    from jobmon.client.swarm.services.scheduler import Scheduler

    gateway = _StubGateway()
    scheduler = Scheduler(gateway=cast(Any, gateway), state=cast(Any, state))
    loop = asyncio.new_event_loop()
    try:
        t0 = time.perf_counter()
        update = loop.run_until_complete(scheduler.tick(timeout=-1))
        t1 = time.perf_counter()
        if update.task_statuses:
            state.apply_update(update)
        t2 = time.perf_counter()
    finally:
        loop.close()
    return t1 - t0, t2 - t1, len(update.task_statuses)


def _one_round(make: Callable[[], Any], n: int, count_trips: bool) -> dict[str, Any]:
    tasks, array = _workflow(n)
    state = make()
    state.add_array(array)
    if hasattr(state, "add_tasks"):
        state.add_tasks(tasks)
        state.enqueue_tasks(tasks)
    else:
        for t in tasks:
            state.add_task(t)
            state.enqueue_task(t)
    trips = _RoundTrips(state) if count_trips else None
    tick_s, apply_s, queued = _tick(state)
    out: dict[str, Any] = {"s": tick_s, "apply_s": apply_s, "queued": queued}
    if trips is not None:
        out["round_trips"] = trips.n
    return out


def jobmon_tick(ctx: Any, n: int = DEFAULT_TASKS, rounds: int = ROUNDS) -> dict[str, Any]:
    """The scenario (see the module docstring)."""
    if not jobmon_available():
        return {
            "skipped": (
                "jobmon 3.6 is not installed (not on the package index): install it from its "
                "source (docs/jobmon.md, Install) to run this scenario"
            )
        }
    from jobmon.client.swarm.state import SwarmState as MemoryState

    from swarm_redis.jobmon import JobmonSwarmState
    from swarm_redis.state import RedisSwarmState

    limit = 10 * n

    def memory() -> Any:
        return MemoryState(1, ctx.new_run_id(), 1, max_concurrently_running=limit)

    def redis_state() -> Any:
        return RedisSwarmState(1, ctx.new_run_id(), 1, limit, redis=ctx.client, prefix=ctx.prefix)

    def dropin() -> Any:
        return JobmonSwarmState(1, ctx.new_run_id(), 1, limit, redis=ctx.client, prefix=ctx.prefix)

    makers = {"memory": memory, "redis": redis_state, "dropin": dropin}
    best: dict[str, dict[str, Any]] = {}
    for r in range(rounds):
        for name, make in makers.items():
            if name == "redis" and r > 0:
                continue
            got = _one_round(make, n, count_trips=name != "memory")
            if got["queued"] != n:
                raise AssertionError(f"{name}: the tick queued {got['queued']} of {n} tasks")
            if name not in best or got["s"] < best[name]["s"]:
                best[name] = got
    results: dict[str, Any] = {"tasks": n, "rounds": rounds}
    for name, got in best.items():
        results[name] = {k: round(v, 4) if isinstance(v, float) else v for k, v in got.items()}
    mem_s = results["memory"]["s"]
    results["ratio"] = round(results["dropin"]["s"] / mem_s, 2) if mem_s else None
    results["redis_ratio"] = round(results["redis"]["s"] / mem_s, 2) if mem_s else None
    return results
