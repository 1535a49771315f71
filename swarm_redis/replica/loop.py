"""The reference replica loop: one orchestrator replica of a run shared through Redis.

Any number of these run against one run and one server gateway; each does, in a loop:

1. membership: heartbeat its lease (re-join under a new incarnation if it was lost), reap dead
   replicas, try to lead (acquire also renews);
2. as leader only: start the run (B -> R) on the server and in Redis, fetch the task statuses
   changed since the last sync and apply them (completions are propagated and what became ready
   is queued in the same script), process the changes, heartbeat the run to the server and
   follow its signals (resume, stop), reconcile now and then, and finalize once when every task
   is final (or nothing is left to do);
3. while the run is RUNNING: claim a batch, queue it on the server, acknowledge the answer
   stamped with the server's time (or release the batch if the server cannot be reached);
4. stop when the run's status is terminal, or when ``stop`` is set; then leave the run.

Changed tasks are processed as jobmon's orchestrator does: ADJUSTING_RESOURCES -> adjust the
resources and queue at the front; REGISTERING with every upstream done -> queue at the back.
A replica that dies anywhere in this loop leaves nothing that reaping, re-driving or
``reconcile`` does not heal (see docs/replicas.md).

Faults: a transient Redis error (connection lost, timeout, BUSY, LOADING, OOM, READONLY after a
failover, TRYAGAIN/MOVED/ASK/CLUSTERDOWN on a Cluster:
:func:`~swarm_redis.replica.faults.is_transient`) makes the loop back
off (capped exponential delay with jitter) and go on; the acknowledgement or release of a batch
in flight is retried until it lands. A claim whose reply was lost may have claimed a batch this
replica never saw: it leaves (which gives unsent claimed batches back to the queue front) and
joins as a new incarnation. A lost lease means a new incarnation too. StateLostError (Redis lost
the run's writes) stops the loop: the run must be rebuilt first.

Run it as an OS process with ``python -m swarm_redis.replica --run RUN --sim HOST:PORT``
(:mod:`swarm_redis.replica.process`).
"""

from __future__ import annotations

import datetime
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from swarm_redis.constants import (
    ACTIVE_TASK_STATUSES,
    PENDING_TASK_STATUSES,
    PRE_RUN_STATUSES,
    TERMINAL_RUN_STATUSES,
    TERMINATING_STATUSES,
)
from swarm_redis.engine.coordination import MAX_CLAIM_SIZE, Batch, Replica
from swarm_redis.engine.validation import check_int, seconds_to_ms
from swarm_redis.errors import FencedError, LeaseLostError, StateLostError, TransitionError
from swarm_redis.exit_codes import EXIT_STATE_LOST
from swarm_redis.replica.faults import is_transient
from swarm_redis.replica.gateway import Gateway, GatewayError, invert
from swarm_redis.state import RedisSwarmState
from swarm_redis.update import StateUpdate

__all__ = ["ReplicaResult", "adjust_resources", "is_transient", "run_replica"]

logger = logging.getLogger(__name__)


@dataclass
class ReplicaResult:
    """What one replica did before it stopped.

    Attributes:
        replica_id: The id of its last membership (a lost lease means a new one).
        reason: "final" (the run reached a terminal status), "stopped" (asked to stop) or
            "state_lost" (Redis lost the run's writes: see :data:`EXIT_STATE_LOST`).
        run_status: The run's status when the loop ended.
        batches: Batches queued on the server and acknowledged.
        tasks_sent: Task ids sent in those batches.
        redriven: Batches taken over from dead replicas.
        released: Batches given back because the server could not be reached.
        syncs: Status fetches applied as leader (full ones included).
        full_syncs: Full status fetches applied as leader.
        epochs: Leadership epochs held, in order.
        finalized: True if this replica finalized the run.
        reconciles: Reconcile sweeps run as leader.
        leases_lost: Times its membership was lost (reaped) and it re-joined.
        transient_errors: Redis errors it backed off from (see :func:`is_transient`).
        rejoins: Times it left and re-joined after a claim whose outcome was unknown.
        error: Why it stopped, when ``reason`` is "state_lost".
    """

    replica_id: str = ""
    reason: str = ""
    run_status: str = ""
    batches: int = 0
    tasks_sent: int = 0
    redriven: int = 0
    released: int = 0
    syncs: int = 0
    full_syncs: int = 0
    epochs: list[int] = field(default_factory=list)
    finalized: bool = False
    reconciles: int = 0
    leases_lost: int = 0
    transient_errors: int = 0
    rejoins: int = 0
    error: str = ""


def adjust_resources(task: Any) -> None:
    """Double the memory of a task the server sent back for a resource error (reference hook).

    The new resources change the task's resource key, so it is batched apart from the others.
    """
    current = getattr(task, "current_task_resources", None)
    resources = dict(current) if isinstance(current, Mapping) else {}
    resources["memory_gb"] = 2 * int(resources.get("memory_gb", 1))
    task.current_task_resources = resources


def _since_text(value: datetime.datetime | str | None) -> str | None:
    if isinstance(value, datetime.datetime):
        return value.isoformat(sep=" ")
    return value


class _Loop:
    """The loop's state between iterations; one instance per :func:`run_replica` call."""

    def __init__(
        self,
        state: RedisSwarmState,
        gateway: Gateway,
        *,
        ttl_s: float,
        batch_size: int,
        poll_s: float,
        stop: threading.Event,
        full_sync_s: float,
        reconcile_s: float,
        server_heartbeat_s: float,
        queue_retries: int,
        adjust: Callable[[Any], None],
        replica_id: str | None,
    ) -> None:
        # settings checked before the loop joins: a bad one is a clear error now, not a
        # refusal of every claim later
        check_int(batch_size, "batch size", lo=1, hi=MAX_CLAIM_SIZE)
        check_int(queue_retries, "queue retries", lo=0, hi=1000)
        seconds_to_ms(ttl_s, "lease ttl")
        for value, what in (
            (poll_s, "poll period"),
            (full_sync_s, "full sync period"),
            (reconcile_s, "reconcile period"),
            (server_heartbeat_s, "server heartbeat period"),
        ):
            seconds_to_ms(value, what)
        self.state = state
        self.replica_id = replica_id
        self.gateway = gateway
        self.ttl_s = ttl_s
        self.batch_size = batch_size
        self.poll_s = poll_s
        self.stop = stop
        self.full_sync_s = full_sync_s
        self.reconcile_s = reconcile_s
        self.server_heartbeat_s = server_heartbeat_s
        self.queue_retries = queue_retries
        self.adjust = adjust
        self.beat_s = ttl_s / 3
        self.result = ReplicaResult()
        self.replica: Replica | None = None
        self.in_flight: Batch | None = None
        self.epoch: int | None = None
        self.since: str | None = None
        self.next_beat = 0.0
        self.next_full = 0.0
        self.next_server_beat = 0.0
        self.next_reconcile = 0.0
        self.healed = False
        self.fringe_done = False
        self.claim_unknown = False  # a claim failed in transit: it may hold a batch we never saw
        self.failures = 0  # transient errors in a row
        self.backoff_base_s = 0.05
        self.backoff_cap_s = max(0.05, min(2.0, ttl_s / 4))
        self.rng = random.Random()

    # --- membership and leadership --------------------------------------------------------------

    def join(self) -> Replica:
        """Join (or re-join) the run under a new incarnation; leadership starts over."""
        self.replica = self.state.join_replica(self.ttl_s, replica_id=self.replica_id)
        self.result.replica_id = self.replica.id
        self.epoch = None
        self.next_beat = 0.0  # reap and try to lead at once
        logger.info("replica %s joined run %s", self.replica.id, self.state.workflow_run_id)
        return self.replica

    def keep_membership(self) -> Replica:
        """Every third of a lease: heartbeat, reap the dead, try to lead (acquire renews)."""
        replica = self.replica or self.join()
        now = time.monotonic()
        if now < self.next_beat:
            return replica
        self.state.heartbeat(replica)  # LeaseLostError: run() joins again
        self.state.reap()
        epoch = self.state.acquire_leadership(replica)
        self.next_beat = now + self.beat_s  # only once it worked: a failed beat is tried again
        if epoch != self.epoch:
            if epoch is None:
                logger.warning("replica %s lost the lead (epoch %s)", replica.id, self.epoch)
            else:
                logger.info("replica %s leads with epoch %s", replica.id, epoch)
                self.result.epochs.append(epoch)
                self.since = _since_text(self.state.last_sync)
                self.next_reconcile = now  # heal what the previous leader left half done
            self.epoch = epoch
        return replica

    def leave(self) -> None:
        """Leave the run, unless a batch may be on the server without its acknowledgement."""
        if self.replica is None or self.result.reason == "state_lost":
            return
        if self.in_flight is not None:
            # leave() would queue the batch again as unsent, though the server may have queued
            # it: stay a member until the lease expires, so it is reaped and re-driven instead.
            logger.warning(
                "replica %s stops with batch %s possibly on the server: not leaving",
                self.replica.id,
                self.in_flight.batch_id,
            )
            return
        try:
            self.state.leave(self.replica)
        except Exception as e:  # leaving is best effort: reaping covers a failed leave
            logger.warning("replica %s could not leave cleanly: %s", self.replica.id, e)

    # --- processing changes ---------------------------------------------------------------------

    def process(self, changed: Iterable[Any]) -> None:
        """jobmon's ``_process_changed_tasks``: A -> adjust, front; ready G -> back."""
        front: list[Any] = []
        back: list[Any] = []
        for task in sorted(changed, key=lambda t: int(t.task_id)):
            if task.status == "A":
                self.adjust(task)
                front.append(task)
            elif task.status == "G" and task.num_upstreams_done >= task.num_upstreams:
                back.append(task)
        if front:
            self.state.enqueue_tasks(front, front=True)
        if back:
            self.state.enqueue_tasks(back)

    # --- leader duties --------------------------------------------------------------------------

    def lead(self, status: str) -> str:
        """One round of leader duties; the run status afterwards."""
        assert self.epoch is not None
        try:
            if status in PRE_RUN_STATUSES:
                status = self.set_status(self.gateway.update_run_status("R"))
            self.sync()
            now = time.monotonic()
            if now >= self.next_server_beat:
                self.next_server_beat = now + self.server_heartbeat_s
                answer = self.gateway.log_heartbeat(status)
                if answer != status:
                    logger.info("server holds run status %s (we had %s)", answer, status)
                    status = self.set_status(answer)
            status = self.end_round(status, now)
        except GatewayError as e:
            logger.warning("leader: server call failed: %s", e)
        return status

    def end_round(self, status: str, now: float) -> str:
        """The close of a leader round: reconcile when due, then finalize when the run is over."""
        if now >= self.next_reconcile:
            self.next_reconcile = now + self.reconcile_s
            self.reconcile()
        return self.maybe_finalize(status)

    def set_status(self, status: str) -> str:
        """Move the run status (fenced); the status Redis holds afterwards."""
        try:
            return self.state.set_run_status(status, epoch=self.epoch)
        except TransitionError as e:
            logger.warning("run status %s refused: %s", status, e)
            return self.state.status

    def sync(self, *, full: bool = False) -> None:
        """Fetch the statuses changed since the last sync (all of them now and then), apply."""
        now = time.monotonic()
        full = full or self.since is None or now >= self.next_full
        answer, server_now = self.gateway.get_task_statuses(None if full else self.since)
        update = StateUpdate(task_statuses=invert(answer), sync_time=server_now)
        result = self.state.apply(update)
        self.since = server_now
        self.result.syncs += 1
        if full:
            self.result.full_syncs += 1
            self.next_full = now + self.full_sync_s
        self.process(result.changed)

    def reconcile(self) -> None:
        """Heal crash windows (see ``RedisSwarmState.reconcile``) and log what was fixed."""
        report = self.state.reconcile()
        self.result.reconciles += 1
        if not report.clean:
            logger.info("reconcile fixed %s", report)

    def maybe_finalize(self, status: str) -> str:
        """Finalize once the run is over: all tasks final, drained after a resume, or stuck."""
        if status not in ("R", *TERMINATING_STATUSES):
            return status
        counts = self.state.counts()  # one round trip for every test below
        active = any(counts[s] for s in ACTIVE_TASK_STATUSES)
        if status in TERMINATING_STATUSES:
            if counts["claimed"] == 0 and not active:
                return self.finalize("T")
            return status
        if counts["D"] + counts["F"] == counts["tasks"] and counts["claimed"] == 0:
            return self.finalize("D" if counts["D"] == counts["tasks"] else "E")
        if counts["ready"] or counts["claimed"] or active:
            self.healed = False
            return status
        # Nothing queued, claimed or running, yet not every task is final: either the rest is
        # blocked behind failed tasks, or a replica died between applying a change and
        # queueing what it made ready (an A or a retried G task). Heal, look again, decide.
        if not self.healed:
            self.healed = True
            self.reconcile()
            self.sync(full=True)
            return status
        if any(counts[s] for s in PENDING_TASK_STATUSES):
            self.healed = False  # still pending after a heal: heal again next round
            return status
        return self.finalize("E")

    def finalize(self, final: str) -> str:
        """Tell the server first (as jobmon does), then end the run in Redis, once."""
        assert self.replica is not None and self.epoch is not None
        self.state.renew_leadership(self.replica, self.epoch)  # FencedError: a paused ex-leader
        answer = self.gateway.update_run_status(final)
        if answer != final:
            logger.warning("server answered %s to final status %s", answer, final)
        try:
            if self.state.finalize(final, epoch=self.epoch):
                self.result.finalized = True
                logger.info("run %s finalized: %s", self.state.workflow_run_id, final)
        except TransitionError as e:
            logger.warning("finalize %s refused: %s", final, e)
        return self.state.status

    # --- scheduling -----------------------------------------------------------------------------

    def schedule(self, replica: Replica) -> bool:
        """Claim, queue and acknowledge batches for a while; True if any was sent.

        The leader stops after ``poll_s`` to sync again; the others after half a beat.
        """
        budget = self.poll_s if self.epoch is not None else self.beat_s / 2
        deadline = time.monotonic() + budget
        sent = False
        while time.monotonic() < deadline and not self.stop.is_set():
            try:
                batch = self.state.claim_batch(replica, self.batch_size)
            except Exception as e:
                if is_transient(e):
                    # The claim may have run in Redis with its answer lost: a batch held by this
                    # incarnation that nobody will send. Leaving gives it back (see rejoin).
                    self.claim_unknown = True
                raise
            if batch is None:
                break
            if batch.redriven:
                self.result.redriven += 1
            sent = self.send(replica, batch) or sent
        return sent

    def send(self, replica: Replica, batch: Batch) -> bool:
        """Queue one claimed batch on the server and acknowledge the answer."""
        self.in_flight = batch
        answer: dict[str, list[int]] | None = None
        when: str | None = None
        for attempt in range(self.queue_retries + 1):
            try:  # re-sending is harmless: the server queues only G/A tasks
                answer, when = self.gateway.queue_task_batch(
                    batch.array_id, batch.task_ids, batch.resource_key
                )
                break
            except GatewayError as e:
                logger.warning("queue batch %s, try %d: %s", batch.batch_id, attempt + 1, e)
                self.stop.wait(self.poll_s)
        try:
            if answer is None:
                if not self.until_done(lambda: self.state.release_batch(replica, batch)):
                    return False  # stopped: still in flight, so the lease expiry re-drives it
                self.in_flight = None
                self.result.released += 1
                return False
            statuses = invert(answer)
            acked: list[set[Any]] = []
            if not self.until_done(
                lambda: acked.append(self.state.ack_batch(replica, batch, statuses, sync_time=when))
            ):
                return False  # stopped: still in flight, so the lease expiry re-drives it
            changed = acked[0]
        except LeaseLostError as e:
            logger.warning(
                "batch %s was reaped (%s); another replica re-drives it", batch.batch_id, e
            )
            self.in_flight = None
            self.next_beat = 0.0  # re-join at once
            return False
        self.in_flight = None
        self.result.batches += 1
        self.result.tasks_sent += len(batch.task_ids)
        self.process(changed)
        return True

    # --- transient faults -----------------------------------------------------------------------

    def backoff(self, error: BaseException) -> None:
        """Count a transient error and wait a capped exponential delay with jitter."""
        self.failures += 1
        self.result.transient_errors += 1
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** min(self.failures - 1, 16))
        delay = ceiling / 2 + self.rng.uniform(0.0, ceiling / 2)
        if self.failures == 1 or self.failures % 20 == 0:
            logger.warning(
                "replica %s: transient Redis error (%d in a row), retrying in %.2f s: %s: %s",
                self.result.replica_id,
                self.failures,
                delay,
                type(error).__name__,
                error,
            )
        self.stop.wait(delay)

    def recovered(self) -> None:
        """A step went through: the next error starts a new backoff sequence."""
        if self.failures:
            logger.info(
                "replica %s: Redis answers again after %d transient errors",
                self.result.replica_id,
                self.failures,
            )
        self.failures = 0

    def until_done(self, call: Callable[[], object]) -> bool:
        """Run ``call`` until it goes through, backing off on transient errors; False if stopped.

        Used where giving up would strand work: the acknowledgement or release of a batch that
        is in flight. An acknowledgement re-sent after it landed raises LeaseLostError, which the
        caller handles as a reaped batch.
        """
        while True:
            try:
                call()
            except Exception as e:
                if not is_transient(e):
                    raise
                self.backoff(e)
                if self.stop.is_set():
                    return False
                continue
            self.recovered()
            return True

    def rejoin(self) -> None:
        """Leave (unsent claimed batches go back to the queue) and join as a new incarnation."""
        assert self.replica is not None
        self.state.leave(self.replica)
        self.replica = None
        self.claim_unknown = False
        self.result.rejoins += 1
        logger.info(
            "replica %s left after a lost claim reply; joining again", self.result.replica_id
        )
        self.join()

    # --- the loop -------------------------------------------------------------------------------

    def step(self) -> bool:
        """One iteration; True once the run's status is terminal."""
        replica = self.keep_membership()
        status = self.state.status
        if status in TERMINAL_RUN_STATUSES:
            return True
        if self.epoch is not None:
            status = self.lead(status)
        sent = status == "R" and self.schedule(replica)
        if not sent:
            self.stop.wait(self.poll_s)
        return False

    def run(self) -> ReplicaResult:
        """Loop until the run is final or ``stop`` is set.

        A lost lease means a new incarnation; a transient Redis error (:func:`is_transient`)
        means a backoff and another try; StateLostError ends the loop with reason "state_lost".
        """
        try:
            while not self.stop.is_set():
                try:
                    if self.replica is None:
                        self.join()
                    elif self.claim_unknown and self.in_flight is None:
                        self.rejoin()
                    if not self.fringe_done:
                        self.state.enqueue_initial_fringe()
                        self.fringe_done = True
                    if self.step():
                        self.result.reason = "final"
                        break
                    self.recovered()
                except FencedError as e:
                    logger.warning("leader epoch %s fenced: %s", self.epoch, e)
                    self.epoch = None
                except LeaseLostError as e:
                    self.result.leases_lost += 1
                    logger.warning(
                        "replica %s lost its lease (%s); joining again", self.result.replica_id, e
                    )
                    self.replica = None
                    self.claim_unknown = False  # the reaper re-drives whatever it held
                except StateLostError as e:
                    logger.error(
                        "replica %s stops: %s (exit status %d with python -m swarm_redis.replica)",
                        self.result.replica_id,
                        e,
                        EXIT_STATE_LOST,
                    )
                    self.result.reason = "state_lost"
                    self.result.error = str(e)
                    break
                except Exception as e:
                    if not is_transient(e):
                        raise
                    self.backoff(e)
            else:
                self.result.reason = "stopped"
            if self.result.reason != "state_lost":
                try:
                    self.result.run_status = self.state.status
                except Exception as e:  # the status is a courtesy; the loop's work is done
                    logger.warning("could not read the run status at the end: %s", e)
        finally:
            self.leave()
        return self.result


def run_replica(
    state: RedisSwarmState,
    gateway: Gateway,
    *,
    ttl_s: float = 10.0,
    batch_size: int = 500,
    poll_s: float = 0.05,
    stop: threading.Event | None = None,
    full_sync_s: float = 60.0,
    reconcile_s: float = 30.0,
    server_heartbeat_s: float = 1.0,
    queue_retries: int = 2,
    adjust: Callable[[Any], None] = adjust_resources,
    replica_id: str | None = None,
) -> ReplicaResult:
    """Run one replica of ``state``'s run until the run is final or ``stop`` is set.

    Args:
        state: The shared run (created, with its tasks and arrays registered, by someone).
        gateway: The workflow server.
        ttl_s: Membership and leadership lease; the lease is renewed every ``ttl_s / 3``.
        batch_size: Most tasks per queue call.
        poll_s: Pause when there is nothing to claim (and the leader's sync period).
        stop: Set it to make the loop leave the run and return.
        full_sync_s: The leader fetches every status (not only changes) this often.
        reconcile_s: The leader runs ``reconcile`` this often.
        server_heartbeat_s: The leader heartbeats the run to the server this often.
        queue_retries: Re-sends of a batch whose queue call failed before it is released.
        adjust: Adjusts a task's resources after a resource error (before it is re-queued).
        replica_id: The replica's name (default ``host-pid-random``); kept across re-joins.
    """
    loop = _Loop(
        state,
        gateway,
        ttl_s=ttl_s,
        batch_size=batch_size,
        poll_s=poll_s,
        stop=stop if stop is not None else threading.Event(),
        full_sync_s=full_sync_s,
        reconcile_s=reconcile_s,
        server_heartbeat_s=server_heartbeat_s,
        queue_retries=queue_retries,
        adjust=adjust,
        replica_id=replica_id,
    )
    return loop.run()
