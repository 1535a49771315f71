"""Deleting a run's keys, and the liveness check that stands in front of it.

``purge`` deletes the key table's names of one run (no pattern, so no other run is reached) and
refuses a live run: status not terminal, or a replica lease still valid by Redis's clock (see
:class:`swarm_redis.ops.reads.RunLiveness`). The check and the deletion are one WATCHed
MULTI/EXEC: a replica that joins or a status that changes in between aborts the purge instead
of being deleted under it.
"""

from __future__ import annotations

from typing import Any

import redis

from swarm_redis.engine.keys import RunKeys
from swarm_redis.errors import SwarmRedisError
from swarm_redis.ops.reads import RunLiveness, read_liveness, run_status_name

__all__ = ["PurgeRefused", "describe_liveness", "refusal", "unlink_run"]


class PurgeRefused(SwarmRedisError):
    """The run is live, became live, or changed during the purge: nothing was deleted."""


def describe_liveness(life: RunLiveness) -> str:
    """``status RUNNING (R); replicas: r1 (lease 12.3 s left), 2 expired`` for messages."""
    status = "no meta key" if life.run_status is None else run_status_name(life.run_status)
    parts = [
        f"{r.replica_id} (lease {(r.lease_left_ms or 0) / 1000:.1f} s left)"
        for r in life.live_replicas
    ]
    parts += [
        f"{rid} (lease unreadable: {v[:40]!r})" for rid, v in life.unreadable_replicas.items()
    ]
    replicas = ", ".join(parts) or "none alive"
    if life.expired_replicas:
        replicas += f", {len(life.expired_replicas)} expired"
    return f"status {status}; replicas: {replicas}"


def refusal(keys: RunKeys, life: RunLiveness) -> str | None:
    """Why a purge without ``--force`` must not go ahead (None: the run is not live)."""
    if not life.live:
        return None
    why = []
    if life.status_live:
        why.append("its status is not terminal")
    if life.live_replicas:
        why.append(f"{len(life.live_replicas)} replica(s) hold a valid lease")
    if life.unreadable_replicas:
        why.append(f"{len(life.unreadable_replicas)} replica lease(s) cannot be read")
    return (
        f"refusing to purge run {keys.run_id}: it is live ({' and '.join(why)}; "
        f"{describe_liveness(life)}); stop it first, or pass --force"
    )


def unlink_run(client: Any, keys: RunKeys, *, check_liveness: bool) -> int:
    """UNLINK the run's key-table keys (and the phase times of a profiled run) in one
    MULTI/EXEC, WATCHing the key table; the count deleted.

    With ``check_liveness`` (no --force) the liveness is read again under WATCH and must still
    say "not live"; any write to the run before EXEC aborts the transaction (nothing deleted).

    Raises:
        PurgeRefused: The run became live, or changed before EXEC.
    """
    with client.pipeline(transaction=True) as pipe:
        pipe.watch(*keys.all)
        if check_liveness:
            again = read_liveness(client, keys)  # any connection: WATCH covers it
            if again.live:
                raise PurgeRefused(
                    f"refusing to purge run {keys.run_id}: it became live "
                    f"({describe_liveness(again)}); nothing deleted"
                )
        pipe.multi()
        pipe.unlink(*keys.all, keys.phases)  # phases: only a profiled run has it (a benchmark)
        try:
            (deleted,) = pipe.execute()
        except redis.WatchError:
            raise PurgeRefused(
                f"run {keys.run_id} changed during the purge: nothing deleted, try again"
            ) from None
    return int(deleted)
