"""jobmon's distributor, able to take over the task instances of a distributor that died.

jobmon 3.6's distributor keeps per-process facts about the task instances it moves: the batch
a task instance was instantiated into (``DistributorTaskInstance.batch``) and the id the cluster
gave it (``distributor_id``). A distributor started for a run whose previous distributor died
reads that run's task instances from the server with neither, and then fails:

* INSTANTIATED ones: ``_check_instantiated_for_work`` reads ``ti.batch`` outside any command
  (``AttributeError: ... '_batch'``): the distributor exits at its first round;
* LAUNCHED ones: the heartbeat report reads ``ti.distributor_id`` (the same error);
* TRIAGING ones: the cluster is asked for the exit status of an unknown job; the command fails
  and the task instance stays TRIAGING for ever.

:func:`adopt_orphans` fixes these on a ``DistributorService`` through jobmon's own calls:
INSTANTIATED orphans are instantiated again (``/task_instance/instantiate_task_instances``
changes nothing for an instance already INSTANTIATED and answers its batch: array, batch number,
task resources), so the new distributor launches them as the dead one would have; orphans get
the distributor id ``None`` (their cluster job is unknown here: a LAUNCHED one is not
heartbeated, and the server's triage moves it on); a TRIAGING orphan is logged as an
UNKNOWN_ERROR (the server retries the task if attempts remain), since no exit status exists.

``python -m swarm_redis.jobmon.adopt start --cluster_name C --workflow_run_id N`` is jobmon's
``python -m jobmon.distributor.cli start`` with that one change; the distributor supervisor
(:mod:`swarm_redis.jobmon.distributor`) runs it.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

__all__ = ["ORPHAN_DISTRIBUTOR_ID", "adopt_orphans", "main", "run_distributor"]

#: Distributor id sent with the error of a triaged orphan (its real cluster job is unknown).
ORPHAN_DISTRIBUTOR_ID = "orphaned"

_ORPHAN_ERROR = (
    "the distributor that launched this task instance died; its exit status is unknown "
    "(swarm_redis restarted the run's distributor)"
)


def _adopt(service: Any, status: str) -> None:
    """Give this status's task instances read from the server what this process lacks."""
    from jobmon.core.constants import TaskInstanceStatus

    members: set[Any] = service._task_instance_status_map.get(status, set())
    for ti in members:
        if not hasattr(ti, "_distributor_id"):
            ti.distributor_id = None  # launched (if at all) by another distributor
    if status != TaskInstanceStatus.INSTANTIATED:
        return
    orphans = sorted(ti for ti in members if not hasattr(ti, "_batch"))
    if not orphans:
        return
    service.instantiate_task_instances(orphans)
    for ti in orphans:
        if not hasattr(ti, "_batch"):  # no longer INSTANTIATED: the next refresh tells
            members.discard(ti)
            service._task_instances.pop(ti.task_instance_id, None)


def adopt_orphans(service: Any) -> Any:
    """Make a jobmon ``DistributorService`` take over a dead distributor's task instances.

    Wraps the service's ``refresh_status_from_db`` and ``triage_error`` (module docstring);
    returns the service.
    """
    refresh: Callable[[str], None] = service.refresh_status_from_db
    triage: Callable[[Any], None] = service.triage_error

    def refresh_and_adopt(status: str) -> None:
        refresh(status)
        _adopt(service, status)

    def triage_or_give_up(task_instance: Any) -> None:
        if getattr(task_instance, "_distributor_id", None) is not None:
            triage(task_instance)
            return
        from jobmon.core.constants import TaskInstanceStatus

        task_instance.distributor_id = ORPHAN_DISTRIBUTOR_ID
        task_instance.transition_to_error(_ORPHAN_ERROR, TaskInstanceStatus.UNKNOWN_ERROR)

    service.refresh_status_from_db = refresh_and_adopt
    service.triage_error = triage_or_give_up
    return service


def run_distributor(args: Any) -> None:
    """jobmon's ``DistributorCLI.run_distributor``, with :func:`adopt_orphans`."""
    from jobmon.core.cluster import Cluster
    from jobmon.core.logging import set_jobmon_context
    from jobmon.distributor.distributor_service import DistributorService

    set_jobmon_context(workflow_run_id=args.workflow_run_id)
    cluster = Cluster.get_cluster(args.cluster_name)
    service = adopt_orphans(DistributorService(cluster.get_distributor()))
    service.set_workflow_run(args.workflow_run_id)
    service.run()


def main(argv: list[str] | None = None) -> None:
    """jobmon's distributor command line (``start --cluster_name C --workflow_run_id N``)."""
    import shlex

    from jobmon.distributor.cli import DistributorCLI

    cli = DistributorCLI()
    cli._subparsers.choices["start"].set_defaults(func=run_distributor)
    cli.main(None if argv is None else shlex.join(argv))


if __name__ == "__main__":
    main(sys.argv[1:])
