"""The shared state of a jobmon workflow run, built with jobmon's own builder.

Every replica builds jobmon's in-memory picture of the run with jobmon's ``SwarmBuilder``
(``SwarmTask`` objects with their cluster, resources, scales and fallback queues, and the DAG's
edges), either from the user's ``Workflow`` object (a new run) or from the server's database
(a replica on another host, or a resumed run). Then :func:`share` makes the Redis state:

1. the run is created in Redis unless it exists (one atomic script: concurrent starts create it
   once);
2. one replica takes the run's build lock (``SET NX`` with a TTL, key ``build_lock``) and
   registers arrays, tasks with their complete downstream edges and resource keys, and the
   initial upstream counts (absolute and gated, so a second registration changes nothing), then
   marks the run ``built``;
3. every other replica waits for ``built`` (taking the lock over if the builder died: its TTL
   expires) and attaches: the registry's records are replaced by its own jobmon task objects,
   mirrors set from Redis, so scheduling has each task's cluster and resources.

The DAG is registered only once the builder has wired every edge (jobmon's resume path adds
tasks before it wires them), so the edges in Redis are complete.
"""

from __future__ import annotations

import logging
import secrets
import time
from typing import Any

from swarm_redis.errors import SwarmRedisError
from swarm_redis.state import RedisSwarmState

__all__ = [
    "BUILD_LOCK_TTL_S",
    "BuildTimeout",
    "jobmon_state_from_db",
    "jobmon_state_from_workflow",
    "share",
]

logger = logging.getLogger(__name__)

#: How long a builder may hold the build lock before another replica takes over.
BUILD_LOCK_TTL_S = 60.0
_BUILT = b"built"


class BuildTimeout(SwarmRedisError, TimeoutError):
    """The run's definitions were not registered in time (no builder finished)."""


def jobmon_state_from_workflow(
    workflow: Any, workflow_run_id: int, *, requester: Any = None, status: str = "B"
) -> Any:
    """jobmon's SwarmState of a new run, from the user's bound ``Workflow`` (jobmon's builder)."""
    from jobmon.client.swarm.builder import SwarmBuilder

    builder = SwarmBuilder(
        requester=requester if requester is not None else workflow.requester,
        workflow_run_id=int(workflow_run_id),
        initial_status=status,
    )
    builder.build_from_workflow(workflow)
    return builder._ensure_state()


def jobmon_state_from_db(
    workflow_id: int, workflow_run_id: int, *, requester: Any = None, chunk_size: int = 500
) -> Any:
    """jobmon's SwarmState of a run, from the server's database (the tasks not yet DONE).

    jobmon's own resume path (``build_from_workflow_id``) without its side effects on the
    run's status: the run may already be RUNNING under other replicas.
    """
    from jobmon.client.swarm.builder import SwarmBuilder
    from jobmon.core.requester import Requester

    builder = SwarmBuilder(
        requester=requester if requester is not None else Requester.from_defaults(),
        workflow_run_id=int(workflow_run_id),
    )
    builder._last_heartbeat_time = time.time()  # the leader heartbeats the run, not builders
    builder._set_workflow_metadata(int(workflow_id))
    builder._set_tasks_from_db(chunk_size=chunk_size)
    builder._set_downstreams_from_db(chunk_size=chunk_size)
    return builder._ensure_state()


def _adopt(state: RedisSwarmState, jstate: Any) -> int:
    """Replace registry records by this process's jobmon objects; how many were adopted."""
    core = state._core
    adopted = 0
    for task_id, task in jstate.tasks.items():
        record = core.tasks.get(int(task_id))
        if record is None or record is task:
            continue
        task.status = record.status
        task.num_upstreams_done = record.num_upstreams_done
        core.tasks[int(task_id)] = task
        adopted += 1
    for array_id, array in jstate.arrays.items():
        record = core.arrays.get(int(array_id))
        if record is not None and record is not array:
            array.max_concurrently_running = record.max_concurrently_running
            core.arrays[int(array_id)] = array
    return adopted


def _register(state: RedisSwarmState, jstate: Any) -> None:
    """Register a jobmon state's definitions in Redis (idempotent)."""
    tasks = list(jstate.tasks.values())
    for task in tasks:
        # jobmon's builder already counted DONE upstreams; Redis counts them itself, once
        task.num_upstreams_done = 0
    state.add_arrays(list(jstate.arrays.values()))
    state.add_tasks(tasks)
    state.compute_initial_upstream_done_counts()
    state.num_previously_complete = sum(1 for t in tasks if t.status == "D")


def share(
    jstate: Any,
    redis: Any,
    *,
    prefix: str = "swarm",
    build_lock_ttl_s: float = BUILD_LOCK_TTL_S,
    wait_s: float = 600.0,
    **state_kwargs: Any,
) -> tuple[RedisSwarmState, bool]:
    """The shared Redis state of ``jstate``'s run; True if this call registered it.

    Safe when several replicas call it at once (see the module docstring). ``state_kwargs``
    go to :class:`~swarm_redis.state.RedisSwarmState` (codec, chunk_budget ...).
    """
    state = RedisSwarmState(
        int(jstate.workflow_id),
        int(jstate.workflow_run_id),
        int(jstate.dag_id),
        int(jstate.max_concurrently_running),
        str(jstate.status),
        redis=redis,
        prefix=prefix,
        **state_kwargs,
    )
    key = state.keys.build_lock
    token = secrets.token_hex(8)
    deadline = time.monotonic() + wait_s
    ttl_ms = max(1, int(build_lock_ttl_s * 1000))
    while True:
        value = redis.get(key)
        if value is not None and (value.encode() if isinstance(value, str) else value) == _BUILT:
            break
        if redis.set(key, f"building|{token}", nx=True, px=ttl_ms):
            logger.info("registering run %s (%d tasks)", state.workflow_run_id, len(jstate.tasks))
            _register(state, jstate)
            redis.set(key, _BUILT)
            return state, True
        if time.monotonic() > deadline:
            raise BuildTimeout(
                f"run {state.workflow_run_id}: nobody finished registering it in {wait_s}s"
            )
        time.sleep(0.1)
    state._run(state._core.load_all(refresh=True))
    adopted = _adopt(state, jstate)
    logger.info("attached to run %s (%d jobmon tasks adopted)", state.workflow_run_id, adopted)
    return state, False
