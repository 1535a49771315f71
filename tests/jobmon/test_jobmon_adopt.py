"""A restarted distributor takes over the dead one's task instances (swarm_redis.jobmon.adopt).

jobmon's own ``DistributorService`` against a recording requester that answers as jobmon's
server does (no server, no cluster): without adoption it fails on a dead distributor's
INSTANTIATED task instances; with it, it launches them, skips the LAUNCHED ones it cannot
heartbeat, and ends TRIAGING ones it cannot triage.
"""

from __future__ import annotations

from typing import Any, cast

import pytest
from jobmon_env import require_jobmon

require_jobmon()

from jobmon.core.cluster_protocol import ClusterDistributor  # noqa: E402
from jobmon.core.requester import Requester  # noqa: E402
from jobmon.distributor.distributor_service import DistributorService  # noqa: E402
from jobmon.distributor.distributor_workflow_run import DistributorWorkflowRun  # noqa: E402

from swarm_redis.jobmon.adopt import ORPHAN_DISTRIBUTOR_ID, adopt_orphans  # noqa: E402

RUN = 7
ARRAY, BATCH, RESOURCES = 5, 2, 9


class Server:
    """Answers jobmon's distributor routes; ``db`` is task instance id -> status."""

    def __init__(self, db: dict[int, str]) -> None:
        self.db = dict(db)
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.after_sync: dict[int, str] = {}  # changes that land just after the next sync

    def send_request(self, app_route: str, message: dict[str, Any], request_type: str) -> Any:
        self.calls.append((app_route, message))
        if app_route.endswith("/sync_status"):
            known = set(message["task_instance_ids"])
            status = message["status"]
            updates: dict[str, list[int]] = {}
            for ti, s in self.db.items():
                if (s == status) != (ti in known):  # new in this status, or left it
                    updates.setdefault(s, []).append(ti)
            self.db.update(self.after_sync)
            self.after_sync = {}
            return 200, {"status_updates": updates, "time": "2026-01-01 00:00:00"}
        if app_route == "/task_instance/instantiate_task_instances":
            # jobmon's server: a task instance already INSTANTIATED stays so and gets its batch
            ids = [t for t in message["task_instance_ids"] if self.db.get(t) == "I"]
            batches = [(ARRAY, "work", BATCH, RESOURCES, ids)] if ids else []
            return 200, {"task_instance_batches": batches}
        if app_route == f"/task_resources/{RESOURCES}":
            return 200, {"requested_resources": "{'cores': 1}", "queue_name": "null.q"}
        if app_route.endswith("/log_distributor_id"):
            self.db[int(app_route.split("/")[2])] = "O"
            return 200, {}
        if app_route.endswith("/log_unknown_error"):
            self.db[int(app_route.split("/")[2])] = "U"
            return 200, {}
        return 200, {}

    def routes(self, suffix: str) -> list[int]:
        return [int(r.split("/")[2]) for r, _ in self.calls if r.endswith(suffix)]


class Cluster:
    """A cluster without arrays that gives every job an id (what jobmon's plugins answer)."""

    def __init__(self) -> None:
        self.submitted: list[str] = []

    def start(self) -> None:
        pass

    def build_worker_node_command(self, task_instance_id: Any, **kwargs: Any) -> str:
        return f"worker {task_instance_id}"

    def submit_array_to_batch_distributor(self, **kwargs: Any) -> Any:
        raise NotImplementedError

    def submit_to_batch_distributor(self, command: str, name: str, requested_resources: Any) -> str:
        self.submitted.append(command)
        return str(100 + len(self.submitted))

    def get_submitted_or_running(self, distributor_ids: Any = None) -> set[str]:
        return set()

    def get_remote_exit_info(self, distributor_id: str) -> tuple[str, str]:
        raise AssertionError("an orphan's exit status must not be asked for")


class Run:
    workflow_run_id = RUN


def service(server: Server, cluster: Cluster, adopt: bool) -> Any:
    svc = DistributorService(
        cast(ClusterDistributor, cluster),
        requester=cast(Requester, server),
        workflow_run_heartbeat_interval=1,
        task_instance_heartbeat_interval=1,
        heartbeat_report_by_buffer=3.0,
        distributor_poll_interval=1,
        raise_on_error=True,
    )
    svc.workflow_run = cast(DistributorWorkflowRun, Run())
    return adopt_orphans(svc) if adopt else svc


def round_of(svc: Any, status: str) -> None:
    """What the distributor's main loop does for one status."""
    svc.refresh_status_from_db(status)
    if status in svc._command_generator_map:
        svc.process_status(status)


def test_jobmons_own_distributor_fails_on_a_dead_ones_instantiated_instances() -> None:
    svc = service(Server({11: "I", 12: "I"}), Cluster(), adopt=False)
    with pytest.raises(AttributeError, match="_batch"):
        round_of(svc, "I")


def test_instantiated_orphans_are_launched_once() -> None:
    server, cluster = Server({11: "I", 12: "I", 13: "I"}), Cluster()
    svc = service(server, cluster, adopt=True)
    server.after_sync = {13: "R"}  # moves on before the distributor asks for its batch
    round_of(svc, "I")
    (ask,) = [m for r, m in server.calls if r == "/task_instance/instantiate_task_instances"]
    assert ask["task_instance_ids"] == [11, 12, 13]
    assert sorted(server.routes("/log_distributor_id")) == [11, 12]
    assert cluster.submitted == ["worker 11", "worker 12"]
    assert 13 not in svc._task_instances  # read again, in its new status, by the next refresh
    assert server.db == {11: "O", 12: "O", 13: "R"}
    # nothing is launched twice: the next rounds find them LAUNCHED
    round_of(svc, "I")
    round_of(svc, "O")
    assert cluster.submitted == ["worker 11", "worker 12"]


def test_launched_orphans_are_not_heartbeated_and_triaging_ones_end_in_error() -> None:
    server, cluster = Server({21: "O", 22: "T"}), Cluster()
    svc = service(server, cluster, adopt=True)
    for status in ("O", "T"):
        round_of(svc, status)
    svc.log_task_instance_report_by_date()  # jobmon's: AttributeError '_distributor_id'
    assert server.routes("/log_unknown_error") == [22]
    (error,) = [m for r, m in server.calls if r.endswith("/log_unknown_error")]
    assert error["distributor_id"] == ORPHAN_DISTRIBUTOR_ID
    assert error["error_state"] == "U"
    assert server.db[21] == "O"  # left to the server's triage: its report-by date lapses
    assert not cluster.submitted
