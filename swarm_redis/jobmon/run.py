"""One call in jobmon's terms: run a jobmon workflow run on N replicas sharing Redis.

* :func:`run_workflow` -- jobmon's ``run_workflow(workflow, workflow_run_id, ...)`` with a
  ``redis_url``: builds jobmon's swarm with jobmon's builder, shares it in Redis (or attaches
  when another replica registered it), and runs this process as one replica until the run
  ends; returns jobmon's ``OrchestratorResult`` (read from Redis, the same whichever replica
  ended the run). No ``distributor_alive``: the replicas keep the run's one distributor
  themselves.
* :func:`run` -- what ``Workflow.run()`` does (bind, resume, create the workflow run), then
  :func:`run_workflow`; other hosts join with ``swarm-redis jobmon-replica --run ID``.
* :func:`run_replica_of` -- a replica that knows only the run id (and the workflow id, read from
  Redis when the run is there): builds jobmon's task objects from the server's database.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import redis as redis_py

from swarm_redis.errors import UnknownRunError
from swarm_redis.jobmon.build import jobmon_state_from_db, jobmon_state_from_workflow, share
from swarm_redis.jobmon.gateway import JobmonGateway
from swarm_redis.jobmon.replica import orchestrator_result, run_jobmon_replica
from swarm_redis.replica.loop import ReplicaResult
from swarm_redis.state import RedisSwarmState

__all__ = ["ReplicaOutcome", "run", "run_replica_of", "run_workflow"]

logger = logging.getLogger(__name__)


@dataclass
class ReplicaOutcome:
    """What one replica did and jobmon's result of the run it served.

    Attributes:
        result: jobmon's ``OrchestratorResult`` (final status, counts, per-task statuses).
        replica: The replica loop's own figures (batches, epochs, finalized ...).
        registered: True if this replica registered the run in Redis.
        distributors_started: Distributors this replica started as leader.
        server_calls: Server round trips of this replica, by kind.
    """

    result: Any
    replica: ReplicaResult
    registered: bool
    distributors_started: int
    server_calls: dict[str, int]


def _heartbeat_settings(config: Any) -> tuple[float, float]:
    from jobmon.core.configuration import JobmonConfig

    jc = JobmonConfig()
    interval = getattr(config, "heartbeat_interval", None)
    if interval is None:
        interval = jc.get_int("heartbeat", "workflow_run_interval")
    buffer = getattr(config, "heartbeat_report_by_buffer", None)
    if buffer is None:
        buffer = jc.get_float("heartbeat", "report_by_buffer")
    return float(interval), float(buffer)


def _client(redis_url: str | None, redis: Any) -> Any:
    if redis is not None:
        return redis
    if redis_url is None:
        raise ValueError("run_workflow needs redis_url= (or redis=)")
    return redis_py.Redis.from_url(redis_url, protocol=3)


def _serve(
    state: RedisSwarmState,
    jstate: Any,
    requester: Any,
    registered: bool,
    *,
    redis_url: str | None,
    prefix: str,
    config: Any,
    timeout: float,
    stop: threading.Event | None,
    **loop_kwargs: Any,
) -> ReplicaOutcome:
    interval, buffer = _heartbeat_settings(config)
    gateway = JobmonGateway(
        requester,
        state.workflow_id,
        state.workflow_run_id,
        lookup=lambda task_id: state._core.tasks[task_id],
        resources_for=lambda key: state.get_cached_resources(int(key, 16)),
    )
    start = time.perf_counter()
    replica, _, started = run_jobmon_replica(
        state,
        gateway,
        redis_url=redis_url,
        prefix=prefix,
        heartbeat_interval=interval,
        heartbeat_report_by_buffer=buffer,
        wedged_workflow_sync_interval=float(
            getattr(config, "wedged_workflow_sync_interval", 600) or 600
        ),
        fail_fast=bool(getattr(config, "fail_fast", False)),
        timeout=timeout,
        stop=stop,
        **loop_kwargs,
    )
    result = orchestrator_result(state, time.perf_counter() - start)
    return ReplicaOutcome(result, replica, registered, started, dict(gateway.calls))


def run_workflow(
    workflow: Any,
    workflow_run_id: int,
    *,
    redis_url: str | None = None,
    redis: Any = None,
    prefix: str = "swarm",
    status: str = "B",
    config: Any = None,
    timeout: int = 36000,
    requester: Any = None,
    stop: threading.Event | None = None,
    outcome: list[ReplicaOutcome] | None = None,
    **loop_kwargs: Any,
) -> Any:
    """Run ``workflow``'s run ``workflow_run_id`` as one of N replicas; jobmon's result.

    Args:
        workflow: The bound jobmon ``Workflow``.
        workflow_run_id: The run (created and BOUND, as ``Workflow.run()`` does; no distributor
            started: the leader starts the run's one distributor).
        redis_url: Where the shared state lives (or pass a client as ``redis``).
        prefix: Key prefix of the run in Redis.
        status: The run's status when it was created (jobmon passes BOUND).
        config: jobmon's ``WorkflowRunConfig`` (fail_fast, heartbeats, wedged sync interval).
        timeout: Seconds before the leader ends the run in ERROR.
        requester: jobmon's ``Requester`` (default: the workflow's).
        stop: Set it to make this replica leave the run (the others carry on).
        outcome: If given, the :class:`ReplicaOutcome` is appended to it.
        loop_kwargs: Tuning of the loop (``ttl_s``, ``batch_size``, ``poll_s``, ``sync_s``,
            ``reconcile_s``, ``replica_id``, ``distributor_log``).
    """
    requester = requester if requester is not None else workflow.requester
    client = _client(redis_url, redis)
    jstate = jobmon_state_from_workflow(
        workflow, workflow_run_id, requester=requester, status=status
    )
    state, registered = share(jstate, client, prefix=prefix)
    out = _serve(
        state,
        jstate,
        requester,
        registered,
        redis_url=redis_url,
        prefix=prefix,
        config=config,
        timeout=timeout,
        stop=stop,
        **loop_kwargs,
    )
    if outcome is not None:
        outcome.append(out)
    return out.result


def run_replica_of(
    workflow_run_id: int,
    *,
    redis_url: str,
    workflow_id: int | None = None,
    prefix: str = "swarm",
    config: Any = None,
    timeout: int = 36000,
    requester: Any = None,
    wait_s: float = 600.0,
    stop: threading.Event | None = None,
    **loop_kwargs: Any,
) -> ReplicaOutcome:
    """A replica of a run known by its id: jobmon's task objects come from the server's DB.

    The workflow id is read from Redis when the run is registered there; otherwise pass it
    (this replica then registers the run itself, from the database).
    """
    from jobmon.core.requester import Requester

    requester = requester if requester is not None else Requester.from_defaults()
    client = _client(redis_url, None)
    deadline = time.monotonic() + wait_s
    while workflow_id is None:
        try:
            workflow_id = RedisSwarmState.attach(client, workflow_run_id, prefix=prefix).workflow_id
        except UnknownRunError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    jstate = jobmon_state_from_db(int(workflow_id), workflow_run_id, requester=requester)
    state, registered = share(jstate, client, prefix=prefix, wait_s=wait_s)
    return _serve(
        state,
        jstate,
        requester,
        registered,
        redis_url=redis_url,
        prefix=prefix,
        config=config,
        timeout=timeout,
        stop=stop,
        **loop_kwargs,
    )


def run(
    workflow: Any,
    *,
    redis_url: str,
    prefix: str = "swarm",
    resume: bool = False,
    reset_running_jobs: bool = True,
    resume_timeout: int = 300,
    fail_fast: bool = False,
    seconds_until_timeout: int = 36000,
    on_run_created: Any = None,
    **kwargs: Any,
) -> Any:
    """``Workflow.run()`` on shared state: bind, (resume,) create the run, run this replica.

    ``on_run_created(workflow_run_id)`` is called once the run exists, before it starts (start
    the other replicas there). Returns jobmon's ``OrchestratorResult``.
    """
    from jobmon.client.swarm import WorkflowRunConfig
    from jobmon.client.workflow_run import WorkflowRunFactory
    from jobmon.core.constants import WorkflowRunStatus

    workflow.bind()
    if not workflow._newly_created and not resume:
        from jobmon.core.exceptions import WorkflowAlreadyExists

        raise WorkflowAlreadyExists("This workflow already exists; pass resume=True to resume it")
    factory = WorkflowRunFactory(workflow.workflow_id)
    if not workflow._newly_created and resume:
        factory.set_workflow_resume(
            reset_running_jobs=reset_running_jobs, resume_timeout=resume_timeout
        )
    workflow._bind_tasks(reset_if_running=reset_running_jobs, chunk_size=workflow._chunk_size)
    wfr = factory.create_workflow_run()
    wfr._update_status(WorkflowRunStatus.BOUND)
    if on_run_created is not None:
        on_run_created(wfr.workflow_run_id)
    result = run_workflow(
        workflow,
        wfr.workflow_run_id,
        redis_url=redis_url,
        prefix=prefix,
        status=wfr.status or "B",
        config=WorkflowRunConfig(fail_fast=fail_fast),
        timeout=seconds_until_timeout,
        **kwargs,
    )
    workflow.last_workflow_run_id = wfr.workflow_run_id
    workflow._num_previously_completed = result.num_previously_complete
    for task in workflow.tasks.values():
        task.final_status = result.task_final_statuses.get(task.task_id)
    return result
