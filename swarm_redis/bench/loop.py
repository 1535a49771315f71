"""The claim -> Q -> R -> D loop every lifecycle-shaped scenario drives, and :class:`Claims`,
its claim/ack step on a :class:`~swarm_redis.state.RedisSwarmState`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from swarm_redis.state import RedisSwarmState
from swarm_redis.update import StateUpdate

#: The lifecycle's operations, in loop order: the per-operation figures are keyed by these.
OPERATIONS: tuple[str, ...] = ("claim", "ack Q", "apply R", "apply D")

Take = Callable[[], "tuple[Any, list[int]] | None"]
Ack = Callable[[Any, dict[int, str]], Any]
Apply = Callable[[dict[int, str]], Any]


class Claims:
    """claim -> ack on a RedisSwarmState (``claim_batch``/``ack_batch``).

    Falls back to ``dequeue_tasks`` + ``apply(Q)`` on a build without the claim API.
    """

    def __init__(self, state: RedisSwarmState, batch_size: int, ttl_s: float = 60.0) -> None:
        self.state = state
        self.batch_size = batch_size
        self.api = "claim_batch" if hasattr(state, "claim_batch") else "dequeue_tasks"
        self.replica: Any = state.join_replica(ttl_s=ttl_s) if self.api == "claim_batch" else None
        self._beat = time.monotonic()

    def take(self) -> tuple[Any, list[int]] | None:
        """Claim the next batch: (token for :meth:`ack`, task ids), or None."""
        if self.replica is not None:
            if time.monotonic() - self._beat > 5.0:
                self.state.heartbeat(self.replica)
                self._beat = time.monotonic()
            batch = self.state.claim_batch(self.replica, self.batch_size)
            return None if batch is None else (batch, list(batch.task_ids))
        tasks = self.state.dequeue_tasks(self.batch_size)
        return (None, [t.task_id for t in tasks]) if tasks else None

    def ack(self, token: Any, statuses: dict[int, str]) -> None:
        """Answer the queue call of a claimed batch."""
        if self.replica is not None:
            self.state.ack_batch(self.replica, token, statuses)
        else:
            self.state.apply(StateUpdate(task_statuses=statuses))


@dataclass
class Ops:
    """The four operations of one lifecycle implementation (R and D may be the same call)."""

    take: Take
    ack: Ack
    apply_r: Apply
    apply_d: Apply
    #: Claims that found nothing while other replicas still held work (see lifecycle_loop).
    idle_polls: int = 0

    def wrapped(self, wrap: Callable[[str, Callable[..., Any]], Callable[..., Any]]) -> Ops:
        """The same operations, each passed through ``wrap(name, fn)`` (see OPERATIONS)."""
        take, ack, apply_r, apply_d = OPERATIONS
        return Ops(
            wrap(take, self.take),
            wrap(ack, self.ack),
            wrap(apply_r, self.apply_r),
            wrap(apply_d, self.apply_d),
        )


def lifecycle_loop(
    ops: Ops, deadline: float | None = None, finished: Callable[[], bool] | None = None
) -> int:
    """claim -> Q (ack) -> R -> D until nothing is claimable (or ``deadline``); tasks done.

    With ``finished`` (several replicas share the run), an empty claim ends the loop only once
    ``finished()`` says every task is final; until then it waits 1 ms and claims again (counted
    in ``ops.idle_polls``).
    """
    done = 0
    while deadline is None or time.perf_counter() < deadline:
        got = ops.take()
        if got is None:
            if finished is None or finished():
                break
            ops.idle_polls += 1
            time.sleep(0.001)
            continue
        token, ids = got
        ops.ack(token, dict.fromkeys(ids, "Q"))
        ops.apply_r(dict.fromkeys(ids, "R"))
        ops.apply_d(dict.fromkeys(ids, "D"))
        done += len(ids)
    return done
