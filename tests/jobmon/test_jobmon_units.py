"""The jobmon replica's parts without a jobmon server: build lock, distributor lease, gateway
calls (against a recording requester), the finalize rule and limit sync, on both backends."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

import pytest
import redis
from jobmon_env import require_jobmon

require_jobmon()  # swarm_redis.jobmon needs jobmon at import

from swarm_redis.jobmon import distributor as dist  # noqa: E402
from swarm_redis.jobmon.build import share  # noqa: E402
from swarm_redis.jobmon.gateway import JobmonGateway  # noqa: E402
from swarm_redis.jobmon.replica import JobmonLoop  # noqa: E402
from swarm_redis.replica.gateway import GatewayError  # noqa: E402
from swarm_redis.state import RedisSwarmState  # noqa: E402


@dataclass(eq=False)
class Task:
    task_id: int
    array_id: int = 1
    status: str = "G"
    num_upstreams: int = 0
    num_upstreams_done: int = 0
    downstream_swarm_tasks: set[Any] = field(default_factory=set)
    current_task_resources: Any = None
    cluster: Any = None
    resource_scales: dict[str, Any] = field(default_factory=dict)
    fallback_queues: list[Any] = field(default_factory=list)

    def __hash__(self) -> int:
        return self.task_id


@dataclass
class Array:
    array_id: int
    max_concurrently_running: int


@dataclass
class JState:
    """The shape of jobmon's SwarmState that share() reads."""

    workflow_id: int
    workflow_run_id: int
    dag_id: int = 1
    max_concurrently_running: int = 10
    status: str = "B"
    tasks: dict[int, Task] = field(default_factory=dict)
    arrays: dict[int, Array] = field(default_factory=dict)


def diamond(run_id: int, done_first: bool = False) -> JState:
    """1 -> {2, 3} -> 4, jobmon-builder style: edges wired, counts already credited."""
    t = {i: Task(i) for i in (1, 2, 3, 4)}
    t[1].downstream_swarm_tasks = {t[2], t[3]}
    t[2].downstream_swarm_tasks = {t[4]}
    t[3].downstream_swarm_tasks = {t[4]}
    t[2].num_upstreams = t[3].num_upstreams = 1
    t[4].num_upstreams = 2
    if done_first:
        t[1].status = "D"
        t[2].num_upstreams_done = t[3].num_upstreams_done = 1  # jobmon's builder counted it
    return JState(7, run_id, tasks=t, arrays={1: Array(1, 3)})


def test_share_registers_once_and_others_attach(r: redis.Redis, run_id: int, prefix: str) -> None:
    results: list[tuple[RedisSwarmState, bool]] = []
    errors: list[BaseException] = []

    def go() -> None:
        try:
            results.append(share(diamond(run_id, done_first=True), r, prefix=prefix))
        except BaseException as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    assert sorted(reg for _, reg in results) == [False, False, False, True]
    for state, _ in results:
        # counted once, whoever registered: the DONE upstream credited exactly once
        assert state.get_task(2).num_upstreams_done == 1
        assert state.get_task(4).num_upstreams_done == 0
        assert isinstance(state.get_task(4), Task)  # this replica's own objects
        assert state.num_previously_complete == 1
    state = results[0][0]
    assert r.get(state.keys.build_lock) == b"built"
    # the edges are complete in Redis: completing 2 and 3 makes 4 ready
    assert state.enqueue_initial_fringe() == 2  # 2 and 3: their only upstream is DONE
    from swarm_redis.update import StateUpdate

    state.apply(StateUpdate(task_statuses={2: "D", 3: "D"}))
    assert 4 in [t.task_id for t in state.ready_to_run]


def test_share_takes_over_a_dead_builder(r: redis.Redis, run_id: int, prefix: str) -> None:
    state = RedisSwarmState(7, run_id, 1, redis=r, prefix=prefix)
    r.set(state.keys.build_lock, "building|dead", px=200)  # a builder that died mid-way
    shared, registered = share(diamond(run_id), r, prefix=prefix, build_lock_ttl_s=1)
    assert registered
    assert shared.get_task(4).num_upstreams == 2


def test_distributor_lease_claim_renew_release(r: redis.Redis, run_id: int, prefix: str) -> None:
    keys = RedisSwarmState(7, run_id, 1, redis=r, prefix=prefix).keys
    assert dist.read_lease(r, keys) is None
    assert dist.claim(r, keys, "aaa", ttl_s=5)
    assert not dist.claim(r, keys, "bbb", ttl_s=5)  # exactly one
    lease = dist.read_lease(r, keys)
    assert lease is not None and lease.token == "aaa" and lease.state == "starting"
    assert dist.renew(r, keys, "aaa", "alive", ttl_s=5)
    assert not dist.renew(r, keys, "bbb", "alive", ttl_s=5)  # not its lease
    lease = dist.read_lease(r, keys)
    assert lease is not None and lease.state == "alive" and 0 < lease.ttl_ms <= 5000
    assert not dist.release(r, keys, "bbb")
    assert dist.release(r, keys, "aaa")
    assert dist.read_lease(r, keys) is None
    assert dist.claim(r, keys, "bbb", ttl_s=5)


class Requester:
    """Records jobmon requests and answers like the server."""

    def __init__(
        self,
        fail: set[str] | None = None,
        statuses: dict[str, list[int]] | None = None,
        run_status: str | None = None,
    ) -> None:
        self.sent: list[tuple[str, dict[str, Any], str]] = []
        self.fail = fail or set()
        self.statuses = {"D": [1]} if statuses is None else statuses  # task status updates
        self.run_status = run_status  # what the server holds (None: what it was told)

    def send_request(self, app_route: str, message: dict[str, Any], request_type: str) -> Any:
        self.sent.append((app_route, message, request_type))
        if any(f in app_route for f in self.fail):
            raise ConnectionError("server down")
        if app_route == "/time":
            return 200, {"time": "2026-11-30 07:00:00"}
        if app_route.endswith("/queue_task_batch"):
            return 200, {"tasks_by_status": {"Q": message["task_ids"]}}
        if app_route.endswith("/task_status_updates"):
            return 200, {"time": "2026-11-30 07:00:01", "tasks_by_status": self.statuses}
        if app_route.endswith("/get_max_concurrently_running"):
            return 200, {"max_concurrently_running": 5}
        if "get_array_max_concurrently_running" in app_route:
            return 200, {"max_concurrently_running": 2}
        if app_route.endswith("/log_heartbeat"):
            return 200, {"status": self.run_status or message["status"]}
        if app_route.endswith("/update_status"):
            if self.run_status is None or message["status"] in ("D", "E", "T"):
                self.run_status = message["status"]
            return 200, {"status": self.run_status}
        return 200, {}


class Resources:
    def __init__(self) -> None:
        self.binds = 0

    @property
    def is_bound(self) -> bool:
        return self.binds > 0

    @property
    def id(self) -> int:
        return 99

    def bind(self) -> None:
        self.binds += 1

    def coerce_resources(self) -> Resources:
        return self


@dataclass
class Cluster:
    id: int = 3


def test_gateway_one_round_trip_per_batch_and_one_bind_per_key() -> None:
    req = Requester()
    gw = JobmonGateway(req, 7, 11)
    res = Resources()
    tasks = [Task(i, current_task_resources=res, cluster=Cluster()) for i in (5, 6, 7)]
    answer, when = gw.queue_tasks(2, tasks, "k1")
    assert answer == {"Q": [5, 6, 7]} and when == "2026-11-30 07:00:00"
    gw.queue_tasks(2, [Task(8, current_task_resources=res, cluster=Cluster())], "k1")
    queued = [m for route, m, _ in req.sent if route.endswith("/queue_task_batch")]
    assert queued[0] == {
        "task_ids": [5, 6, 7],
        "task_resources_id": 99,
        "workflow_run_id": 11,
        "cluster_id": 3,
    }
    assert len(queued) == 2 and res.binds == 1
    assert gw.calls == {"bind": 1, "queue": 2, "time": 2}
    assert gw.get_task_statuses(None) == ({"D": [1]}, "2026-11-30 07:00:01")
    assert req.sent[-1][1] == {}
    gw.get_task_statuses("2026-11-30 07:00:01")
    assert req.sent[-1][1] == {"last_sync": "2026-11-30 07:00:01"}
    assert gw.get_limits([1, 2]) == (5, {1: 2, 2: 2})


def test_gateway_failures_are_gateway_errors() -> None:
    gw = JobmonGateway(Requester(fail={"queue_task_batch", "log_heartbeat"}), 7, 11)
    task = Task(5, current_task_resources=Resources(), cluster=Cluster())
    with pytest.raises(GatewayError):
        gw.queue_tasks(2, [task], "")
    with pytest.raises(GatewayError):
        gw.log_heartbeat("R")
    with pytest.raises(GatewayError):
        JobmonGateway(Requester(), 7, 11).queue_task_batch(2, [5], "")  # no lookup


def _loop(state: RedisSwarmState, req: Requester, **kw: Any) -> JobmonLoop:
    gw = JobmonGateway(req, 7, state.workflow_run_id, lookup=state.get_task)
    args: dict[str, Any] = {
        "redis_url": None,
        "prefix": "x",
        "heartbeat_interval": 1.0,
        "heartbeat_report_by_buffer": 3.0,
        "sync_s": 0.0,
        "wedged_workflow_sync_interval": 600.0,
        "fail_fast": False,
        "timeout": 3600.0,
        "manage_distributor": False,
        "distributor_log": None,
        "ttl_s": 5.0,
        "batch_size": 10,
        "poll_s": 0.01,
        "stop": threading.Event(),
        "reconcile_s": 30.0,
        "queue_retries": 0,
        "adjust": lambda t: None,
        "replica_id": None,
    }
    args.update(kw)
    return JobmonLoop(state, gw, **args)


def test_sync_limits_and_finalize_rule(r: redis.Redis, run_id: int, prefix: str) -> None:
    state, _ = share(diamond(run_id), r, prefix=prefix)
    req = Requester()
    loop = _loop(state, req)
    loop.sync_limits()
    assert state.max_concurrently_running == 5
    assert state.arrays[1].max_concurrently_running == 2
    replica = loop.join()
    loop.epoch = state.acquire_leadership(replica)
    state.set_run_status("R", epoch=loop.epoch)
    from swarm_redis.update import StateUpdate

    # one task failed for good, the rest blocked or done: jobmon's rule says ERROR
    state.apply(StateUpdate(task_statuses={1: "D", 2: "F", 3: "D"}))
    assert loop.finalize("D") == "E"
    sent = [m["status"] for route, m, _ in req.sent if route.endswith("/update_status")]
    assert sent == ["E"]


def test_fail_fast_ends_the_run(r: redis.Redis, run_id: int, prefix: str) -> None:
    state, _ = share(diamond(run_id), r, prefix=prefix)
    req = Requester()
    loop = _loop(state, req, fail_fast=True)
    replica = loop.join()
    loop.epoch = state.acquire_leadership(replica)
    state.set_run_status("R", epoch=loop.epoch)
    from swarm_redis.update import StateUpdate

    state.apply(StateUpdate(task_statuses={1: "F"}))
    assert loop.lead("R") == "E"
    assert state.status == "E"


def _routes(req: Requester, suffix: str) -> list[dict[str, Any]]:
    return [m for route, m, _ in req.sent if route.endswith(suffix)]


def _lead(loop: JobmonLoop) -> None:
    replica = loop.join()
    loop.epoch = loop.state.acquire_leadership(replica)
    loop.state.set_run_status("R", epoch=loop.epoch)


def test_adjusting_resources_are_scaled_shared_and_queued_first(
    r: redis.Redis, run_id: int, prefix: str
) -> None:
    """A resource error (ADJUSTING_RESOURCES from the server's sync): jobmon's
    adjust_resources runs once, the result is cached in the run for every replica, and the
    task goes to the front of the ready queue."""
    from jobmon.client.task_resources import TaskResources
    from jobmon.plugins.sequential.seq_queue import SequentialQueue

    from swarm_redis.jobmon.replica import adjust_jobmon_resources

    queue = SequentialQueue(8642, "null.q", {})  # an id of its own: queues are per process

    def resources() -> Any:
        return TaskResources({"memory": "1G", "cores": 1, "runtime": 60}, queue, None)

    js = diamond(run_id)
    js.tasks[5] = Task(5)  # another root: ready before the adjusted task comes back
    js.tasks[1].status = "R"  # running, then it hits its memory limit
    for task in js.tasks.values():
        task.current_task_resources = resources()
        task.resource_scales = {"memory": 0.5}
    expected = resources().adjust_resources(resource_scales={"memory": 0.5}, fallback_queues=[])
    assert expected != resources()
    state, _ = share(js, r, prefix=prefix)
    req = Requester(statuses={"A": [1]})
    loop = _loop(state, req, adjust=adjust_jobmon_resources(state))
    _lead(loop)
    assert state.enqueue_initial_fringe() == 1  # task 5
    loop.sync()
    assert [t.task_id for t in state.ready_to_run] == [1, 5]  # the adjusted task first
    adjusted = state.get_task(1).current_task_resources
    assert adjusted == expected and state.get_task(5).current_task_resources == resources()
    # another replica finds the adjusted resources under the task's resource key
    key = int(state._core.resource_key(state.get_task(1)), 16)
    other = RedisSwarmState.attach(r, run_id, prefix=prefix)
    shared = other.get_cached_resources(key)
    assert isinstance(shared, TaskResources) and shared == expected
    assert state.get_task(1).status == "A"


@pytest.mark.parametrize("signal", ["C", "H"])
def test_resume_signal_terminates_stops_scheduling_and_ends_terminated(
    r: redis.Redis, run_id: int, prefix: str, signal: str
) -> None:
    """The server answers a heartbeat with COLD_RESUME (or HOT_RESUME: jobmon 3.6 handles both
    alike): the leader asks it to terminate the running task instances, no replica queues
    another batch, and once the run has drained the leader finalizes it TERMINATED (jobmon's
    _handle_termination and _finalize)."""
    js = diamond(run_id)
    js.tasks[5] = Task(5)
    js.tasks[1].status = "R"
    state, _ = share(js, r, prefix=prefix)
    req = Requester(statuses={}, run_status=signal)
    loop = _loop(state, req)
    _lead(loop)
    assert state.enqueue_initial_fringe() == 1  # task 5 is ready
    assert loop.lead("R") == signal
    assert state.status == signal
    assert len(_routes(req, "/terminate_task_instances")) == 1
    assert not loop.step()  # a round of the loop: nothing scheduled while terminating
    assert not _routes(req, "/queue_task_batch")
    assert [t.task_id for t in state.ready_to_run] == [5]
    # the server stopped task 1 (its task instance was killed; the task awaits a new run)
    req.statuses = {"G": [1]}
    loop.next_sync = 0.0
    assert loop.lead(signal) == "T"
    assert state.status == "T"
    assert [m["status"] for m in _routes(req, "/update_status")] == ["T"]
    assert not _routes(req, "/queue_task_batch")


def test_server_stop_status_stops_every_replica(r: redis.Redis, run_id: int, prefix: str) -> None:
    """The server holds ERROR (e.g. the run was stopped elsewhere): the leader stores it and
    every replica's loop ends, without telling the server anything more."""
    state, _ = share(diamond(run_id), r, prefix=prefix)
    req = Requester(statuses={}, run_status="E")
    leader = _loop(state, req)
    _lead(leader)
    assert leader.lead("R") == "E"
    other = _loop(RedisSwarmState.attach(r, run_id, prefix=prefix), Requester())
    assert other.step()  # its next round sees the terminal status and ends
    assert not _routes(req, "/update_status") and not _routes(req, "/queue_task_batch")


class StuckLaunchRequester(Requester):
    """A server whose run stayed INSTANTIATED: the distributor's I -> O request lost the race
    with its B -> I request. Only jobmon's transitions B -> I -> O -> R are accepted."""

    def __init__(self) -> None:
        super().__init__(statuses={})
        self.run_status = "I"

    def send_request(self, app_route: str, message: dict[str, Any], request_type: str) -> Any:
        if app_route.endswith("/update_status"):
            self.sent.append((app_route, message, request_type))
            step = {"B": "I", "I": "O", "O": "R"}.get(self.run_status or "")
            if message["status"] == step:
                self.run_status = step
            return 200, {"status": self.run_status}
        return super().send_request(app_route, message, request_type)


def test_leader_finishes_a_launch_the_distributor_lost_to_a_race(
    r: redis.Redis, run_id: int, prefix: str
) -> None:
    state, _ = share(diamond(run_id), r, prefix=prefix)
    req = StuckLaunchRequester()
    loop = _loop(state, req)
    loop.epoch = state.acquire_leadership(loop.join())
    # the distributor has not said ALIVE yet: the leader waits for it, asking for R only
    assert loop.start_run("G") == "I"
    assert [m["status"] for m in _routes(req, "/update_status")] == ["R"]
    assert loop.start_run("I") == "I"  # within START_RETRY_S: no request at all
    assert len(_routes(req, "/update_status")) == 1
    # the distributor said ALIVE (its supervisor's lease), yet the server still holds I
    assert dist.claim(r, state.keys, "tok", ttl_s=5)
    assert dist.renew(r, state.keys, "tok", "alive", ttl_s=5)
    loop.next_start = 0.0
    assert loop.start_run("I") == "R"
    assert state.status == "R"
    assert [m["status"] for m in _routes(req, "/update_status")] == ["R", "R", "O", "R"]
