"""Our gateway protocol (:mod:`swarm_redis.replica.gateway`) over jobmon's own server routes.

:class:`JobmonGateway` speaks to a real jobmon server through jobmon's ``Requester`` (the
blocking client jobmon's builder and distributor use), on the same routes as jobmon's async
``ServerGateway``:

* ``queue_task_batch`` -> ``POST /array/{id}/queue_task_batch`` with the bound TaskResources id
  and the cluster id of the batch's first task (jobmon's scheduler does the same), then
  ``GET /time``: the answer is stamped with the server's time *after* the queue call, so a sync
  fetched before the call can never move a queued task back (hazard H2 of the notes);
* ``get_task_statuses`` -> ``POST /workflow/{id}/task_status_updates`` (``last_sync`` when
  incremental); the server's ``time`` is the next ``since``;
* ``log_heartbeat`` -> ``POST /workflow_run/{id}/log_heartbeat``; ``update_run_status`` ->
  ``PUT /workflow_run/{id}/update_status`` (the server answers the status it holds);
* and the synchronizer's other duties: ``request_triage``, ``get_limits`` (workflow and array
  concurrency) and ``terminate_task_instances`` (resume signals).

Every failure of a call (unreachable server, retries exhausted, an unexpected answer) is raised
as :class:`~swarm_redis.replica.gateway.GatewayError`: nothing is known of its effect.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from swarm_redis.replica.gateway import GatewayError, StatusesByLetter

__all__ = ["JobmonGateway", "validated_resources"]

logger = logging.getLogger(__name__)


def validated_resources(task: Any) -> Any:
    """jobmon's ``_set_validated_task_resources`` for one task, without a cache: the resources
    the task is queued with (the one-shot ``compute_resources_callable`` applied, then coerced
    to the queue's limits). Idempotent: coercing coerced resources changes nothing."""
    from jobmon.client.task_resources import TaskResources

    resources = task.current_task_resources
    callable_ = getattr(task, "compute_resources_callable", None)
    if callable_ is not None:
        dynamic = callable_()
        if not isinstance(dynamic, dict):
            from jobmon.core.exceptions import CallableReturnedInvalidObject

            raise CallableReturnedInvalidObject(
                f"compute_resources_callable of task {task.task_id} returned "
                f"{type(dynamic).__name__}, not a dict"
            )
        requested = dict(resources.requested_resources)
        requested.update(dynamic)
        task.compute_resources_callable = None
        resources = TaskResources(requested, resources.queue, requester=resources.requester)
    return resources.coerce_resources()


class JobmonGateway:
    """The gateway protocol against a jobmon server (see the module docstring).

    Args:
        requester: jobmon's ``Requester`` (``Requester.from_defaults()`` reads jobmon's config).
        workflow_id: The workflow of the run.
        workflow_run_id: The run.
        lookup: Task id -> the task object (a jobmon ``SwarmTask`` with ``cluster`` and
            ``current_task_resources``), for :meth:`queue_task_batch` called with ids only.
        resources_for: Resource key -> the TaskResources shared under that key (adjusted
            resources live in the run's resource cache), or None to use the task's own.
    """

    def __init__(
        self,
        requester: Any,
        workflow_id: int,
        workflow_run_id: int,
        *,
        lookup: Callable[[int], Any] | None = None,
        resources_for: Callable[[str], Any] | None = None,
    ) -> None:
        self.requester = requester
        self.workflow_id = int(workflow_id)
        self.workflow_run_id = int(workflow_run_id)
        self.lookup = lookup
        self.resources_for = resources_for
        self._bound: dict[str, Any] = {}  # resource key -> bound TaskResources (this process)
        self._lock = threading.Lock()
        #: Server round trips made, by route kind (for the figures of tests and the demo).
        self.calls: dict[str, int] = {}

    # --- plumbing -------------------------------------------------------------------------------

    def _send(self, kind: str, route: str, message: dict[str, Any], method: str) -> Any:
        self.calls[kind] = self.calls.get(kind, 0) + 1
        try:
            code, response = self.requester.send_request(
                app_route=route, message=message, request_type=method
            )
        except Exception as e:  # requests, tenacity, jobmon's InvalidResponse ...
            raise GatewayError(f"{method.upper()} {route} failed: {e}") from e
        if code != 200:
            raise GatewayError(f"{method.upper()} {route} answered {code}: {response}")
        return response

    def server_time(self) -> str:
        """The server's clock (its ``/time``), as the string it sends."""
        return str(self._send("time", "/time", {}, "get")["time"])

    # --- the gateway protocol -------------------------------------------------------------------

    def _bound_resources(self, resource_key: str, first: Any) -> Any:
        """The bound TaskResources of a batch: shared under its key, else the task's own."""
        with self._lock:
            cached = self._bound.get(resource_key) if resource_key else None
        if cached is not None:
            return cached
        resources = None
        if resource_key and self.resources_for is not None:
            resources = self.resources_for(resource_key)
        if resources is None:
            resources = validated_resources(first)
        if not resources.is_bound:
            self.calls["bind"] = self.calls.get("bind", 0) + 1
            try:
                resources.bind()
            except Exception as e:
                raise GatewayError(f"binding task resources failed: {e}") from e
        first.current_task_resources = resources
        if resource_key:
            with self._lock:
                self._bound[resource_key] = resources
        return resources

    def queue_tasks(
        self, array_id: int, tasks: Sequence[Any], resource_key: str = ""
    ) -> tuple[StatusesByLetter, str | None]:
        """Queue task objects as one batch (one round trip, plus the server's time)."""
        if not tasks:
            return {}, None
        first = tasks[0]
        resources = self._bound_resources(resource_key, first)
        for task in tasks[1:]:
            task.current_task_resources = resources
        response = self._send(
            "queue",
            f"/array/{int(array_id)}/queue_task_batch",
            {
                "task_ids": [int(t.task_id) for t in tasks],
                "task_resources_id": resources.id,
                "workflow_run_id": self.workflow_run_id,
                "cluster_id": first.cluster.id,
            },
            "post",
        )
        answer = {str(s): [int(i) for i in ids] for s, ids in response["tasks_by_status"].items()}
        return answer, self.server_time()

    def queue_task_batch(
        self, array_id: int, task_ids: Sequence[int], resource_key: str
    ) -> tuple[StatusesByLetter, str | None]:
        """The protocol's form: task ids, looked up with ``lookup``."""
        if self.lookup is None:
            raise GatewayError("JobmonGateway needs lookup= to queue tasks by id")
        return self.queue_tasks(array_id, [self.lookup(int(i)) for i in task_ids], resource_key)

    def get_task_statuses(self, since: str | None) -> tuple[StatusesByLetter, str]:
        """Statuses changed at or after ``since`` (every task when None) and the server time."""
        message = {} if since is None else {"last_sync": str(since)}
        response = self._send(
            "sync", f"/workflow/{self.workflow_id}/task_status_updates", message, "post"
        )
        answer = {str(s): [int(i) for i in ids] for s, ids in response["tasks_by_status"].items()}
        return answer, str(response["time"])

    def log_heartbeat(self, run_status: str, next_report_increment: float = 90.0) -> str:
        """Heartbeat the run; the status the server holds afterwards (a resume signal: C/H)."""
        response = self._send(
            "heartbeat",
            f"/workflow_run/{self.workflow_run_id}/log_heartbeat",
            {"status": run_status, "next_report_increment": next_report_increment},
            "post",
        )
        return str(response["status"])

    def update_run_status(self, status: str) -> str:
        """Ask for a run transition; the server answers the status it holds (refusals too)."""
        response = self._send(
            "status",
            f"/workflow_run/{self.workflow_run_id}/update_status",
            {"status": status},
            "put",
        )
        return str(response["status"])

    # --- the synchronizer's other duties --------------------------------------------------------

    def request_triage(self) -> None:
        """Ask the server to triage task instances that missed their heartbeats."""
        self._send(
            "triage", f"/workflow_run/{self.workflow_run_id}/set_status_for_triaging", {}, "post"
        )

    def get_limits(self, array_ids: Iterable[int]) -> tuple[int, dict[int, int]]:
        """The workflow's ``max_concurrently_running`` and every array's limit."""
        wf = self._send(
            "limits", f"/workflow/{self.workflow_id}/get_max_concurrently_running", {}, "get"
        )
        arrays: dict[int, int] = {}
        for array_id in array_ids:
            response = self._send(
                "limits", f"/array/{int(array_id)}/get_array_max_concurrently_running", {}, "get"
            )
            arrays[int(array_id)] = int(response["max_concurrently_running"])
        return int(wf["max_concurrently_running"]), arrays

    def terminate_task_instances(self) -> None:
        """Ask the server to stop the run's running task instances (after a resume signal)."""
        self._send(
            "terminate",
            f"/workflow_run/{self.workflow_run_id}/terminate_task_instances",
            {},
            "put",
        )
