"""The simulated jobmon server's model: what it knows, what it checks, and the state it keeps.

Model (jobmon's server, reduced to what a replica can observe):

* ``queue_task_batch`` pre-selects the requested ids that are G or A, then (after an optional
  latency, lock released as between jobmon's SELECT and UPDATE) moves those still G or A to Q with
  one more attempt, and records a task instance for every pre-selected id that is now Q. Two
  overlapping calls with the same id therefore both record an instance for one attempt: the
  duplicate jobmon would create. It answers every requested id's current status.
* Queued tasks move Q -> I -> O -> R -> D after random step times. A run fails with
  ``fail_rate`` (always for ``always_fail`` ids): to F once ``max_attempts`` are used, else to A
  (resource error, share ``resource_error_share``) or back to G (retry).
* Every status change gets a strictly increasing server time; ``get_task_statuses(since)``
  answers the tasks changed at or after ``since`` (inclusive, like jobmon), and the time now
  (``"YYYY-MM-DD HH:MM:SS.ffffff"``).
* The run status follows :func:`swarm_redis.constants.run_transition_allowed`;
  ``log_heartbeat`` and ``update_run_status`` answer the status the server holds, so a forced
  :meth:`~swarm_redis.demo.sim.server.SimServer.signal_run_status` (e.g. "C") reaches the leader
  as a resume signal.

Checks, in :class:`SimReport`: instances per (task, attempt) above one, ids in two queue calls
in flight together, active tasks (Q/I/O/R) above the workflow or an array limit after any queue
step, a task queued before all its upstreams were DONE, a task queued under the wrong array.

:class:`SimCore` is thread-safe and does no I/O: the server process serves it, and tests run it
in-process with threads. It deliberately shares nothing with the Redis store under test: a bug
in our Lua cannot hide a bug from the checker.
"""

from __future__ import annotations

import bisect
import datetime
import heapq
import random
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarm_redis.constants import ACTIVE_TASK_STATUSES, TASK_STATUSES, run_transition_allowed
from swarm_redis.engine.validation import sync_stamp
from swarm_redis.errors import InvalidInputError
from swarm_redis.replica.gateway import StatusesByLetter, by_status

__all__ = [
    "LimitViolation",
    "QueueCall",
    "SimConfig",
    "SimCore",
    "SimReport",
    "format_server_time",
]

_QUEUEABLE = frozenset({"G", "A"})
_ACTIVE = frozenset(ACTIVE_TASK_STATUSES)
_NEXT = {"Q": "I", "I": "O", "O": "R"}
_EPOCH = datetime.datetime(1970, 1, 1)


def format_server_time(us: int) -> str:
    """Microseconds since the epoch (UTC) as the server's ``YYYY-MM-DD HH:MM:SS.ffffff``."""
    return (_EPOCH + datetime.timedelta(microseconds=us)).strftime("%Y-%m-%d %H:%M:%S.%f")


@dataclass(frozen=True)
class SimConfig:
    """What the simulated server knows and how it behaves.

    Args:
        tasks: Task id -> array id, for every task of the DAG.
        workflow_limit: The run's max_concurrently_running (checked, not enforced).
        array_limits: Array id -> its limit (checked; arrays absent here are not checked).
        upstreams: Task id -> upstream ids, for the "queued before its upstreams" check.
        step_s: Range of the random time each of Q, I, O and R takes, in seconds.
        fail_rate: Chance that a run fails instead of finishing.
        resource_error_share: Share of failures that are resource errors (to A, not G).
        max_attempts: A failure on this attempt is fatal (F).
        always_fail: Ids whose every run fails (so they end in F).
        queue_latency_s: Range of the pause between a queue call's select and its update.
        initial_statuses: Statuses other than G at the start (e.g. D from an earlier run).
        run_status: The run's status at the start.
        seed: Seed of the server's random choices.
    """

    tasks: Mapping[int, int]
    workflow_limit: int
    array_limits: Mapping[int, int] = field(default_factory=dict)
    upstreams: Mapping[int, Sequence[int]] = field(default_factory=dict)
    step_s: tuple[float, float] = (0.005, 0.05)
    fail_rate: float = 0.0
    resource_error_share: float = 0.5
    max_attempts: int = 3
    always_fail: frozenset[int] = frozenset()
    queue_latency_s: tuple[float, float] = (0.0, 0.0)
    initial_statuses: Mapping[int, str] = field(default_factory=dict)
    run_status: str = "B"
    seed: int | None = None

    def __post_init__(self) -> None:
        if self.workflow_limit < 0 or any(v < 0 for v in self.array_limits.values()):
            raise InvalidInputError("limits must be >= 0")
        if not 0.0 <= self.fail_rate <= 1.0 or not 0.0 <= self.resource_error_share <= 1.0:
            raise InvalidInputError("fail_rate and resource_error_share must be in [0, 1]")
        if self.max_attempts < 1:
            raise InvalidInputError("max_attempts must be >= 1")
        for pair in (self.step_s, self.queue_latency_s):
            if not 0.0 <= pair[0] <= pair[1]:
                raise InvalidInputError(f"time range {pair} must be 0 <= low <= high")
        for task_id, status in self.initial_statuses.items():
            if status not in TASK_STATUSES or status in _ACTIVE:
                raise InvalidInputError(f"initial status {status!r} of task {task_id}")
        unknown = set(self.initial_statuses) - set(self.tasks)
        if unknown:
            raise InvalidInputError(f"initial statuses for unknown tasks {sorted(unknown)[:5]}")

    @classmethod
    def from_state(cls, state: Any, **kwargs: Any) -> SimConfig:
        """The DAG, limits and DONE tasks of a run in a RedisSwarmState; ``kwargs`` as above."""
        tasks: dict[int, int] = {}
        upstreams: dict[int, list[int]] = {}
        initial: dict[int, str] = {}
        for task_id, task in state.tasks.items():
            tasks[int(task_id)] = int(task.array_id)
            if task.status == "D":
                initial[int(task_id)] = "D"
            for child in task.downstream_swarm_tasks:
                upstreams.setdefault(int(child.task_id), []).append(int(task_id))
        arrays = {int(a): int(obj.max_concurrently_running) for a, obj in state.arrays.items()}
        return cls(
            tasks=tasks,
            workflow_limit=int(state.max_concurrently_running),
            array_limits=arrays,
            upstreams=upstreams,
            initial_statuses=initial,
            **kwargs,
        )


@dataclass(frozen=True)
class LimitViolation:
    """Active tasks above a limit right after ``task_id`` was queued."""

    server_time: str
    scope: str  # "workflow" or "array <id>"
    active: int
    limit: int
    task_id: int


@dataclass(frozen=True)
class QueueCall:
    """One queue_task_batch call as the server saw it."""

    call_id: int
    server_time: str
    array_id: int
    resource_key: str
    task_ids: tuple[int, ...]
    queued: tuple[tuple[int, int], ...]  # (task id, attempt) instances it recorded


@dataclass
class SimReport:
    """Everything the simulated server observed; :attr:`problems` lists the failed checks."""

    queue_calls: int = 0
    attempts_started: int = 0
    resent: int = 0
    unknown_ids: int = 0
    duplicates: list[tuple[int, int, int]] = field(default_factory=list)
    overlaps: list[tuple[int, int, int]] = field(default_factory=list)
    limit_violations: list[LimitViolation] = field(default_factory=list)
    dependency_violations: list[tuple[int, int]] = field(default_factory=list)
    wrong_array: list[tuple[int, int]] = field(default_factory=list)
    max_active: int = 0
    max_active_per_array: dict[int, int] = field(default_factory=dict)
    statuses: dict[int, str] = field(default_factory=dict)
    attempts: dict[int, int] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    run_status: str = ""
    run_status_history: list[str] = field(default_factory=list)
    heartbeats: int = 0
    fetches: int = 0
    queue_log: list[QueueCall] = field(default_factory=list)

    @property
    def problems(self) -> list[str]:
        """One line per failed check; empty when the server saw nothing wrong."""
        out = []
        if self.duplicates:
            out.append(
                f"{len(self.duplicates)} (task, attempt) queued twice: {self.duplicates[:5]}"
            )
        if self.overlaps:
            out.append(f"{len(self.overlaps)} ids in two queue calls at once: {self.overlaps[:5]}")
        if self.limit_violations:
            out.append(
                f"{len(self.limit_violations)} limit violations: {self.limit_violations[:3]}"
            )
        if self.dependency_violations:
            out.append(
                f"{len(self.dependency_violations)} tasks queued before an upstream was done: "
                f"{self.dependency_violations[:5]}"
            )
        if self.wrong_array:
            out.append(f"{len(self.wrong_array)} tasks queued under another array")
        return out

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.problems


class SimCore:
    """The simulated server's model: thread-safe, in memory, no I/O (served by SimServer).

    Args:
        config: The DAG, limits and behaviour.
        between: Called (lock released) between a queue call's select and its update; tests
            use it to hold two calls there at once.
    """

    def __init__(self, config: SimConfig, *, between: Callable[[], None] | None = None) -> None:
        self.config = config
        self._between = between
        self._lock = threading.Lock()
        self._wake = threading.Condition(self._lock)
        self._rng = random.Random(config.seed)
        self._array = {int(t): int(a) for t, a in config.tasks.items()}
        self._status = {t: config.initial_statuses.get(t, "G") for t in self._array}
        self._upstreams = {int(t): tuple(int(u) for u in us) for t, us in config.upstreams.items()}
        self._attempts: dict[int, int] = {}
        self._instances: dict[tuple[int, int], int] = {}
        self._inflight: dict[int, int] = {}
        self._active_total = 0
        self._active: dict[int, int] = {}
        self._due: list[tuple[float, int, int, int]] = []
        self._seq = 0
        self._last_us = 0
        self._change_us: list[int] = []
        self._change_id: list[int] = []
        self._run_status = config.run_status
        self._report = SimReport(
            run_status=config.run_status, run_status_history=[config.run_status]
        )

    # --- clock and bookkeeping (lock held) ----------------------------------------------------

    def _tick(self) -> int:
        """A new server time in µs, strictly after every earlier one."""
        us = max(time.time_ns() // 1000, self._last_us + 1)
        self._last_us = us
        return us

    def _set(self, task_id: int, new: str, now_us: int) -> None:
        old = self._status[task_id]
        array_id = self._array[task_id]
        if old in _ACTIVE and new not in _ACTIVE:
            self._active_total -= 1
            self._active[array_id] -= 1
        elif new in _ACTIVE and old not in _ACTIVE:
            self._active_total += 1
            self._active[array_id] = self._active.get(array_id, 0) + 1
        self._status[task_id] = new
        self._change_us.append(now_us)
        self._change_id.append(task_id)

    def _schedule(self, task_id: int) -> None:
        low, high = self.config.step_s
        self._seq += 1
        due = time.monotonic() + self._rng.uniform(low, high)
        heapq.heappush(self._due, (due, self._seq, task_id, self._attempts.get(task_id, 0)))

    def _check_queued(self, task_id: int, now_us: int) -> None:
        report = self._report
        array_id = self._array[task_id]
        report.max_active = max(report.max_active, self._active_total)
        seen = report.max_active_per_array.get(array_id, 0)
        report.max_active_per_array[array_id] = max(seen, self._active[array_id])
        when = format_server_time(now_us)
        if self._active_total > self.config.workflow_limit:
            report.limit_violations.append(
                LimitViolation(
                    when, "workflow", self._active_total, self.config.workflow_limit, task_id
                )
            )
        limit = self.config.array_limits.get(array_id)
        if limit is not None and self._active[array_id] > limit:
            report.limit_violations.append(
                LimitViolation(when, f"array {array_id}", self._active[array_id], limit, task_id)
            )
        for upstream in self._upstreams.get(task_id, ()):
            if self._status.get(upstream) != "D":
                report.dependency_violations.append((task_id, upstream))

    def _finish_run(self, task_id: int, now_us: int) -> None:
        cfg = self.config
        fails = task_id in cfg.always_fail or self._rng.random() < cfg.fail_rate
        if not fails:
            self._set(task_id, "D", now_us)
        elif self._attempts.get(task_id, 0) >= cfg.max_attempts:
            self._set(task_id, "F", now_us)
        elif self._rng.random() < cfg.resource_error_share:
            self._set(task_id, "A", now_us)
        else:
            self._set(task_id, "G", now_us)

    def advance(self) -> float:
        """Apply every due step; seconds until the next one (at most 0.05)."""
        with self._lock:
            return self._advance()

    def _advance(self) -> float:
        now = time.monotonic()
        while self._due and self._due[0][0] <= now:
            _, _, task_id, attempt = heapq.heappop(self._due)
            status = self._status[task_id]
            if attempt != self._attempts.get(task_id, 0) or status not in _ACTIVE:
                continue
            now_us = self._tick()
            if status == "R":
                self._finish_run(task_id, now_us)
            else:
                self._set(task_id, _NEXT[status], now_us)
                self._schedule(task_id)
        if not self._due:
            return 0.05
        return max(0.0, min(0.05, self._due[0][0] - now))

    def run_clock(self, stop: threading.Event) -> None:
        """Move tasks along until ``stop`` is set (the server's clock thread)."""
        with self._wake:
            while not stop.is_set():
                self._wake.wait(timeout=self._advance())

    def wake(self) -> None:
        """Let the clock thread re-check (after a stop request)."""
        with self._wake:
            self._wake.notify_all()

    # --- the gateway calls ----------------------------------------------------------------------

    def queue_task_batch(
        self, array_id: int, task_ids: Sequence[int], resource_key: str
    ) -> tuple[StatusesByLetter, str]:
        """Queue the requested tasks that are G or A (see the module docstring)."""
        ids = [int(t) for t in task_ids]
        report = self._report
        with self._lock:
            report.queue_calls += 1
            call = report.queue_calls
            selected = []
            for task_id in ids:
                if task_id not in self._status:
                    report.unknown_ids += 1
                    continue
                if self._array[task_id] != array_id:
                    report.wrong_array.append((task_id, array_id))
                    continue
                other = self._inflight.get(task_id)
                if other is None:
                    self._inflight[task_id] = call
                else:
                    report.overlaps.append((task_id, other, call))
                if self._status[task_id] in _QUEUEABLE:
                    selected.append(task_id)
                else:
                    report.resent += 1
            low, high = self.config.queue_latency_s
            pause = self._rng.uniform(low, high) if high > 0 else 0.0
        time.sleep(pause)  # between the SELECT and the UPDATE, as on jobmon's server
        if self._between is not None:
            self._between()
        with self._wake:
            now_us = self._tick()
            instances = []
            for task_id in selected:
                if self._status[task_id] in _QUEUEABLE:
                    self._attempts[task_id] = self._attempts.get(task_id, 0) + 1
                    report.attempts_started += 1
                    self._set(task_id, "Q", now_us)
                    self._schedule(task_id)
                    self._check_queued(task_id, now_us)
                if self._status[task_id] == "Q":
                    key = (task_id, self._attempts[task_id])
                    self._instances[key] = self._instances.get(key, 0) + 1
                    if self._instances[key] == 2:
                        report.duplicates.append((task_id, key[1], 2))
                    instances.append(key)
            for task_id in ids:
                if self._inflight.get(task_id) == call:
                    del self._inflight[task_id]
            when = format_server_time(now_us)
            report.queue_log.append(
                QueueCall(call, when, array_id, resource_key, tuple(ids), tuple(instances))
            )
            answer = by_status({t: self._status[t] for t in ids if t in self._status})
            self._wake.notify_all()
            return answer, when

    def get_task_statuses(self, since: str | None) -> tuple[StatusesByLetter, str]:
        """Statuses of the tasks changed at or after ``since`` (all if None), and the time now."""
        start = None if since is None else sync_stamp(since)
        with self._lock:
            self._report.fetches += 1
            now_us = self._tick()
            if start is None:
                changed = dict(self._status)
            else:
                first = bisect.bisect_left(self._change_us, start)
                changed = {t: self._status[t] for t in self._change_id[first:]}
            return by_status(changed), format_server_time(now_us)

    def _transition(self, status: str) -> str:
        if status != self._run_status and run_transition_allowed(self._run_status, status):
            self._run_status = status
            self._report.run_status_history.append(status)
        return self._run_status

    def log_heartbeat(self, run_status: str) -> str:
        """Count a heartbeat, try the reported transition, answer the status held."""
        with self._lock:
            self._report.heartbeats += 1
            return self._transition(run_status)

    def update_run_status(self, status: str) -> str:
        """Try the transition; answer the status held."""
        with self._lock:
            return self._transition(status)

    def signal_run_status(self, status: str) -> str:
        """Force the run's status, as an operator or a resume request would (test hook)."""
        with self._lock:
            self._run_status = status
            self._report.run_status_history.append(status)
            return status

    def report(self, include_log: bool = False) -> SimReport:
        """A snapshot of what the server observed so far."""
        with self._lock:
            r = self._report
            counts = dict.fromkeys(TASK_STATUSES, 0)
            for status in self._status.values():
                counts[status] += 1
            return SimReport(
                queue_calls=r.queue_calls,
                attempts_started=r.attempts_started,
                resent=r.resent,
                unknown_ids=r.unknown_ids,
                duplicates=[(t, a, self._instances[(t, a)]) for t, a, _ in r.duplicates],
                overlaps=list(r.overlaps),
                limit_violations=list(r.limit_violations),
                dependency_violations=list(r.dependency_violations),
                wrong_array=list(r.wrong_array),
                max_active=r.max_active,
                max_active_per_array=dict(r.max_active_per_array),
                statuses=dict(self._status),
                attempts=dict(self._attempts),
                counts=counts,
                run_status=self._run_status,
                run_status_history=list(r.run_status_history),
                heartbeats=r.heartbeats,
                fetches=r.fetches,
                queue_log=list(r.queue_log) if include_log else [],
            )
