"""The replica loop for jobmon: jobmon's orchestrator duties, shared by N processes.

Each duty of jobmon's ``WorkflowRunOrchestrator`` is done by the leader or by any replica (the
table is in docs/jobmon.md, section "Duties"):

* leader: start the run's one distributor and restart it when it dies
  (:mod:`swarm_redis.jobmon.distributor`); move the run to RUNNING once the distributor has
  launched; sync task statuses (incremental, full every ``wedged_workflow_sync_interval`` and
  before deciding the run is stuck), request triage, sync the workflow and array limits;
  heartbeat the run and follow the server's answer (resume signals C/H: terminate running task
  instances, finalize TERMINATED once drained; E/T/S from the server: stop); process changed
  tasks (ADJUSTING_RESOURCES: adjust resources, shared through the run's resource cache, queue at
  the front; retried REGISTERING: queue at the back); fail_fast; the run's timeout; reconcile;
  finalize (DONE, ERROR, TERMINATED) once;
* any replica: claim a batch under the workflow and array limits (``claim_batch`` keeps jobmon's
  batching order: head first, same array and same resources, the rest keeps its order), queue
  it on the server in one round trip, acknowledge the answer (``ack_batch``) stamped with the
  server's time, or release it when the server cannot be reached; re-drive the batches of dead
  replicas; process the tasks its acknowledgement changed.

Retries and max attempts are the server's (it moves a failed task back to G, to A, or to F
after ``max_attempts``); completions, propagation and queueing of what became ready happen in
the same Redis script as the status change, once, whoever applies it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from swarm_redis.constants import (
    PRE_RUN_STATUSES,
    SERVER_STOP_STATUSES,
    TERMINAL_RUN_STATUSES,
    TERMINATING_STATUSES,
)
from swarm_redis.errors import SwarmRedisError
from swarm_redis.jobmon import distributor as dist
from swarm_redis.jobmon.gateway import JobmonGateway
from swarm_redis.replica.gateway import GatewayError
from swarm_redis.replica.loop import ReplicaResult, _Loop
from swarm_redis.state import RedisSwarmState
from swarm_redis.update import StateUpdate

#: The server's run statuses on the way to LAUNCHED, in jobmon's order (its distributor's steps).
LAUNCH_STEPS = ("B", "I", "O")
#: Seconds between the leader's requests to start the run while the server has not launched it.
START_RETRY_S = 0.5

__all__ = ["JobmonLoop", "orchestrator_result", "run_jobmon_replica"]

logger = logging.getLogger(__name__)


def _cluster_name(state: RedisSwarmState) -> str | None:
    for task in state._core.tasks.values():
        cluster = getattr(task, "cluster", None)
        name = getattr(cluster, "cluster_name", None)
        if name:
            return str(name)
    return None


def orchestrator_result(state: RedisSwarmState, elapsed: float) -> Any:
    """jobmon's ``OrchestratorResult`` of the run, read from Redis (any replica can build it)."""
    from jobmon.client.swarm.orchestrator import OrchestratorResult

    tasks = state.get_all_tasks()
    statuses = {int(task_id): str(task.status) for task_id, task in tasks.items()}
    done = frozenset(i for i, s in statuses.items() if s == "D")
    failed = frozenset(i for i, s in statuses.items() if s == "F")
    return OrchestratorResult(
        final_status=state.status,
        elapsed_time=elapsed,
        total_tasks=len(statuses),
        done_count=len(done),
        failed_count=len(failed),
        num_previously_complete=state.num_previously_complete,
        task_final_statuses=statuses,
        done_task_ids=done,
        failed_task_ids=failed,
    )


def adjust_jobmon_resources(state: RedisSwarmState) -> Callable[[Any], None]:
    """jobmon's ``_set_adjusted_task_resources``, shared: the adjusted resources are cached in
    the run under their stable key, so the replica that claims the task queues them."""

    def adjust(task: Any) -> None:
        current = getattr(task, "current_task_resources", None)
        if current is None or not hasattr(current, "adjust_resources"):
            return
        adjusted = current.adjust_resources(
            resource_scales=getattr(task, "resource_scales", None) or {},
            fallback_queues=getattr(task, "fallback_queues", None),
        )
        task.current_task_resources = adjusted
        key = state._core.resource_key(task)
        if not key:
            return
        try:
            task.current_task_resources = state.cache_resources(int(key, 16), adjusted)
        except (TypeError, SwarmRedisError) as e:  # no codec for TaskResources: local only
            logger.warning("adjusted resources of task %s not shared: %s", task.task_id, e)

    return adjust


class JobmonLoop(_Loop):
    """The reference loop (:mod:`swarm_redis.replica.loop`) with jobmon's duties (module docstring)."""

    def __init__(
        self,
        state: RedisSwarmState,
        gateway: JobmonGateway,
        *,
        redis_url: str | None,
        prefix: str,
        heartbeat_interval: float,
        heartbeat_report_by_buffer: float,
        sync_s: float,
        wedged_workflow_sync_interval: float,
        fail_fast: bool,
        timeout: float,
        manage_distributor: bool,
        distributor_log: str | None,
        max_stall_s: float = 120.0,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            state,
            gateway,
            full_sync_s=wedged_workflow_sync_interval,
            server_heartbeat_s=heartbeat_interval,
            **kwargs,
        )
        self.jgateway = gateway
        self.redis_url = redis_url
        self.prefix = prefix
        self.next_report = heartbeat_interval * heartbeat_report_by_buffer
        self.sync_s = sync_s
        self.fail_fast = fail_fast
        self.timeout = timeout
        self.manage_distributor = manage_distributor and redis_url is not None
        self.distributor_log = distributor_log
        self.started = time.monotonic()
        self.next_sync = 0.0
        self.next_limits = 0.0
        self.next_terminate = 0.0
        self.next_distributor = 0.0
        self.next_start = 0.0
        self.distributors_started = 0
        self.cluster_name = _cluster_name(state)
        self.max_stall_s = max_stall_s
        self.last_step = time.monotonic()
        self.keeper_stop = threading.Event()

    # --- leases kept while the loop waits on the server ------------------------------------------

    def keep_leases(self) -> None:
        """Thread: renew this replica's lease (and leadership) every third of a lease while
        the loop is blocked in a slow server call, but never for a loop stalled longer than
        ``max_stall_s`` (a hung replica must lose its work to the others)."""
        keeper = RedisSwarmState._for_existing_run(
            self.state.redis, self.state.workflow_run_id, prefix=self.state.keys.prefix
        )
        while not self.keeper_stop.wait(self.beat_s):
            replica, epoch = self.replica, self.epoch
            if replica is None or time.monotonic() - self.last_step > self.max_stall_s:
                continue
            try:
                keeper.heartbeat(replica)
                if epoch is not None:
                    keeper.renew_leadership(replica, epoch)
            except (SwarmRedisError, OSError) as e:  # the loop finds out and re-joins
                logger.debug("lease keeper: %s", e)

    def step(self) -> bool:
        """The reference step, noting progress for the lease keeper."""
        self.last_step = time.monotonic()
        return super().step()

    def run(self) -> ReplicaResult:
        """The reference loop, with the lease keeper running beside it."""
        thread = threading.Thread(target=self.keep_leases, name="lease-keeper", daemon=True)
        thread.start()
        try:
            return super().run()
        finally:
            self.keeper_stop.set()
            thread.join(timeout=5)

    # --- the distributor ------------------------------------------------------------------------

    def keep_distributor(self) -> None:
        """Leader: make sure the run has its one distributor (start one if the lease is free)."""
        if not self.manage_distributor or self.cluster_name is None:
            return
        now = time.monotonic()
        if now < self.next_distributor:
            return
        self.next_distributor = now + 1.0
        client = self.state.redis
        if dist.read_lease(client, self.state.keys) is not None:
            return
        token = dist.new_token()
        if not dist.claim(client, self.state.keys, token):
            return
        assert self.redis_url is not None
        dist.start_supervisor(
            url=self.redis_url,
            prefix=self.prefix,
            run_id=self.state.workflow_run_id,
            cluster_name=self.cluster_name,
            token=token,
            log_path=self.distributor_log,
        )
        self.distributors_started += 1
        logger.info(
            "started the distributor of run %s (token %s)", self.state.workflow_run_id, token
        )

    def start_run(self, status: str) -> str:
        """Leader: move the server's run to RUNNING once the distributor has launched it.

        jobmon's distributor moves the run B -> I -> O as it starts, in two requests that can
        race on the server: the second one may be read before the first one is committed
        ("Cannot transition ... from B to O"), and the run then stays INSTANTIATED for good.
        A distributor whose lease says ``alive`` has had both requests answered, so the leader
        sends the missing steps itself. Tried every :data:`START_RETRY_S` at most.
        """
        now = time.monotonic()
        if now < self.next_start:
            return status
        self.next_start = now + START_RETRY_S
        answer = self.gateway.update_run_status("R")
        if answer in LAUNCH_STEPS[:-1] and self.distributor_alive():
            logger.warning("the server holds run status %s after the distributor launched", answer)
            for step in LAUNCH_STEPS[LAUNCH_STEPS.index(answer) + 1 :]:
                answer = self.gateway.update_run_status(step)
            answer = self.gateway.update_run_status("R")
        return self.set_status(answer) if answer != status else status

    def distributor_alive(self) -> bool:
        """True when the run's distributor lease says jobmon's distributor said ALIVE."""
        lease = dist.read_lease(self.state.redis, self.state.keys)
        return lease is not None and lease.state == "alive"

    # --- leader duties --------------------------------------------------------------------------

    def lead(self, status: str) -> str:
        """One round of jobmon's orchestrator duties (see the module docstring)."""
        assert self.epoch is not None
        try:
            if status not in TERMINAL_RUN_STATUSES:
                self.keep_distributor()
            if status in PRE_RUN_STATUSES:
                status = self.start_run(status)
                if status in PRE_RUN_STATUSES:
                    return status
            now = time.monotonic()
            if now >= self.next_sync:
                self.next_sync = now + self.sync_s
                self.jgateway.request_triage()
                if now >= self.next_limits:
                    self.next_limits = now + 5 * self.sync_s
                    self.sync_limits()
                self.sync()
            if now >= self.next_server_beat:
                self.next_server_beat = now + self.server_heartbeat_s
                answer = self.jgateway.log_heartbeat(status, self.next_report)
                if answer != status and answer not in PRE_RUN_STATUSES:
                    logger.info("server holds run status %s (we had %s)", answer, status)
                    status = self.set_status(answer)
            if status in SERVER_STOP_STATUSES or status in TERMINAL_RUN_STATUSES:
                return status
            counts = self.state.counts()
            if status in TERMINATING_STATUSES:
                if any(counts[s] for s in "IOR") and now >= self.next_terminate:
                    self.next_terminate = now + self.server_heartbeat_s
                    self.jgateway.terminate_task_instances()
            elif self.fail_fast and counts["F"] > 0:
                logger.info("fail_fast: a task failed, ending the run")
                return self.finalize("E")
            if time.monotonic() - self.started > self.timeout:
                logger.error("run timeout (%ss) exceeded: ending the run", self.timeout)
                return self.finalize("E")
            status = self.end_round(status, now)
        except GatewayError as e:
            logger.warning("leader: server call failed: %s", e)
        return status

    def sync_limits(self) -> None:
        """The synchronizer's limit fetches, applied as one update."""
        limit, arrays = self.jgateway.get_limits(list(self.state._core.arrays))
        self.state.apply(StateUpdate(max_concurrently_running=limit, array_limits=arrays))

    def finalize(self, final: str) -> str:
        """jobmon's ``_finalize`` rule, then the reference's once-only finalize."""
        counts = self.state.counts()
        status = self.state.status
        if counts["tasks"] == counts["D"]:
            final = "D"
        elif status in TERMINATING_STATUSES:
            final = "T"
        elif final == "D":
            final = "E"
        return super().finalize(final)

    def process(self, changed: Iterable[Any]) -> None:
        """Count failures for fail_fast, then the reference's processing (A front, G back)."""
        super().process(changed)


def run_jobmon_replica(
    state: RedisSwarmState,
    gateway: JobmonGateway,
    *,
    redis_url: str | None = None,
    prefix: str = "swarm",
    heartbeat_interval: float = 30.0,
    heartbeat_report_by_buffer: float = 3.1,
    sync_s: float | None = None,
    wedged_workflow_sync_interval: float = 600.0,
    fail_fast: bool = False,
    timeout: float = 36000.0,
    manage_distributor: bool = True,
    distributor_log: str | None = None,
    ttl_s: float = 10.0,
    batch_size: int = 500,
    poll_s: float = 0.1,
    stop: threading.Event | None = None,
    reconcile_s: float = 30.0,
    replica_id: str | None = None,
) -> tuple[ReplicaResult, float, int]:
    """Run one jobmon replica until the run is final (or ``stop``); its result, the elapsed
    time and the number of distributors it started."""
    loop = JobmonLoop(
        state,
        gateway,
        redis_url=redis_url,
        prefix=prefix,
        heartbeat_interval=heartbeat_interval,
        heartbeat_report_by_buffer=heartbeat_report_by_buffer,
        sync_s=heartbeat_interval if sync_s is None else sync_s,
        wedged_workflow_sync_interval=wedged_workflow_sync_interval,
        fail_fast=fail_fast,
        timeout=timeout,
        manage_distributor=manage_distributor,
        distributor_log=distributor_log,
        ttl_s=ttl_s,
        batch_size=batch_size,
        poll_s=poll_s,
        stop=stop if stop is not None else threading.Event(),
        reconcile_s=reconcile_s,
        queue_retries=2,
        adjust=adjust_jobmon_resources(state),
        replica_id=replica_id,
    )
    start = time.perf_counter()
    result = loop.run()
    return result, time.perf_counter() - start, loop.distributors_started
