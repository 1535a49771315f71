"""The gateway: the few jobmon server calls a replica makes, as a typing Protocol.

A replica loop (:mod:`swarm_redis.replica.loop`) talks to the workflow server only through these
calls, modelled on jobmon's routes:

* ``queue_task_batch`` -- ``POST /array/{id}/queue_task_batch``: the server moves the requested
  tasks that are REGISTERING or ADJUSTING_RESOURCES to QUEUED (one new attempt each) and answers
  the current status of every requested id, in the server's ``{status: [ids]}`` shape, with the
  server time of that answer (None if the server does not tell it). The time lets the replica
  stamp its acknowledgement, so that neither a sync fetched before the queue call nor a late
  acknowledgement after a newer sync can move a task backwards (hazard H2).
* ``get_task_statuses`` -- the synchronizer's fetch: the statuses of every task changed at or
  after ``since`` (all tasks when ``since`` is None), and the server's time now, which is the
  ``since`` of the next incremental fetch.
* ``log_heartbeat`` -- the run's heartbeat: the server tries to move the run to the reported
  status and answers the status it holds (for example a resume signal, C or H).
* ``update_run_status`` -- an explicit run-status transition; answers the status now held.

:class:`swarm_redis.demo.sim.SimClient` implements it against the simulated server; an adapter over
jobmon's requester would implement it against the real one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from swarm_redis.errors import SwarmRedisError

__all__ = ["Gateway", "GatewayError", "by_status", "invert"]

#: The server's shape of task statuses: status letter -> task ids.
StatusesByLetter = dict[str, list[int]]


class GatewayError(SwarmRedisError, ConnectionError):
    """A server call failed (unreachable server, refused request); nothing is known of its effect."""


@runtime_checkable
class Gateway(Protocol):
    """The server calls a replica makes (see the module docstring)."""

    def queue_task_batch(
        self, array_id: int, task_ids: Sequence[int], resource_key: str
    ) -> tuple[StatusesByLetter, str | None]:
        """Queue the tasks that are G or A; every requested id's status, and the server time."""
        ...

    def get_task_statuses(self, since: str | None) -> tuple[StatusesByLetter, str]:
        """Statuses of the tasks changed at or after ``since`` (all if None), and the time now."""
        ...

    def log_heartbeat(self, run_status: str) -> str:
        """Report the run's status; the status the server holds afterwards."""
        ...

    def update_run_status(self, status: str) -> str:
        """Ask for a run-status transition; the status the server holds afterwards."""
        ...


def invert(statuses: Mapping[str, Iterable[int]]) -> dict[int, str]:
    """``{status: [ids]}`` -> ``{id: status}`` (the shape of ``StateUpdate.task_statuses``)."""
    return {int(task_id): status for status, ids in statuses.items() for task_id in ids}


def by_status(task_statuses: Mapping[int, str]) -> StatusesByLetter:
    """``{id: status}`` -> the server's ``{status: [ids]}`` shape, ids sorted."""
    out: StatusesByLetter = {}
    for task_id, status in task_statuses.items():
        out.setdefault(status, []).append(int(task_id))
    for ids in out.values():
        ids.sort()
    return out
