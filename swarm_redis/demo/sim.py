"""A simulated jobmon server for tests and the demo, shared by several replica processes at once.

Transport: the server is one OS process (``python -m swarm_redis.demo.sim``, configured through its
stdin as JSON) holding the whole server state in memory and serving requests over TCP
(127.0.0.1 and a free port by default) with the protocol of :mod:`swarm_redis.demo.simwire`:
length-prefixed JSON frames, each authenticated with HMAC-SHA256 under a key shared with the
clients (16 random bytes by default); nothing received is ever executed. Each client
connection gets a thread; one lock serializes the model, so the checks below see every instant; a clock thread moves tasks along. It deliberately shares
nothing with the Redis store under test: a bug in our Lua cannot hide a bug from the checker.
:class:`SimCore` is the model alone, usable in-process (tests run it with threads).

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
  :meth:`SimServer.signal_run_status` (e.g. "C") reaches the leader as a resume signal.

Checks, in :class:`SimReport`: instances per (task, attempt) above one, ids in two queue calls
in flight together, active tasks (Q/I/O/R) above the workflow or an array limit after any queue
step, a task queued before all its upstreams were DONE, a task queued under the wrong array.

Lifetime: :meth:`SimServer.start` returns once the server listens; :meth:`SimServer.stop`
shuts it down and returns the final report. The server runs in its own session and ignores
SIGINT (a terminal Ctrl-C reaches only the parent, whose cleanup stops it); it exits by itself
when its parent dies (its stdin pipe closes).
"""

from __future__ import annotations

import bisect
import datetime
import heapq
import logging
import os
import random
import secrets
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

import orjson

from swarm_redis.constants import ACTIVE_TASK_STATUSES, TASK_STATUSES, run_transition_allowed
from swarm_redis.demo import simwire
from swarm_redis.engine.validation import sync_stamp
from swarm_redis.errors import InvalidInputError
from swarm_redis.replica.gateway import GatewayError, StatusesByLetter, by_status

__all__ = [
    "LimitViolation",
    "QueueCall",
    "SimClient",
    "SimConfig",
    "SimCore",
    "SimReport",
    "SimServer",
    "format_server_time",
]

logger = logging.getLogger(__name__)

#: Environment variable a replica process reads the server's authkey from (hex).
AUTHKEY_ENV = "SWARM_SIM_AUTHKEY"
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


# --- JSON forms of what crosses a pipe or a socket ----------------------------------------------


def _pairs(mapping: Mapping[int, Any]) -> list[list[Any]]:
    return [[int(k), v] for k, v in mapping.items()]


def config_to_json(config: SimConfig) -> dict[str, Any]:
    """A SimConfig as plain JSON values (int keys as pairs)."""
    return {
        "tasks": _pairs(config.tasks),
        "workflow_limit": config.workflow_limit,
        "array_limits": _pairs(config.array_limits),
        "upstreams": [[int(t), [int(u) for u in us]] for t, us in config.upstreams.items()],
        "step_s": list(config.step_s),
        "fail_rate": config.fail_rate,
        "resource_error_share": config.resource_error_share,
        "max_attempts": config.max_attempts,
        "always_fail": sorted(int(t) for t in config.always_fail),
        "queue_latency_s": list(config.queue_latency_s),
        "initial_statuses": _pairs(config.initial_statuses),
        "run_status": config.run_status,
        "seed": config.seed,
    }


def config_from_json(doc: Mapping[str, Any]) -> SimConfig:
    """The inverse of :func:`config_to_json` (SimConfig checks the values)."""
    return SimConfig(
        tasks={int(t): int(a) for t, a in doc["tasks"]},
        workflow_limit=int(doc["workflow_limit"]),
        array_limits={int(a): int(n) for a, n in doc["array_limits"]},
        upstreams={int(t): [int(u) for u in us] for t, us in doc["upstreams"]},
        step_s=(float(doc["step_s"][0]), float(doc["step_s"][1])),
        fail_rate=float(doc["fail_rate"]),
        resource_error_share=float(doc["resource_error_share"]),
        max_attempts=int(doc["max_attempts"]),
        always_fail=frozenset(int(t) for t in doc["always_fail"]),
        queue_latency_s=(float(doc["queue_latency_s"][0]), float(doc["queue_latency_s"][1])),
        initial_statuses={int(t): str(s) for t, s in doc["initial_statuses"]},
        run_status=str(doc["run_status"]),
        seed=None if doc["seed"] is None else int(doc["seed"]),
    )


def report_to_json(report: SimReport) -> dict[str, Any]:
    """A SimReport as plain JSON values (int keys as pairs)."""
    return {
        "queue_calls": report.queue_calls,
        "attempts_started": report.attempts_started,
        "resent": report.resent,
        "unknown_ids": report.unknown_ids,
        "duplicates": [list(d) for d in report.duplicates],
        "overlaps": [list(o) for o in report.overlaps],
        "limit_violations": [
            [v.server_time, v.scope, v.active, v.limit, v.task_id] for v in report.limit_violations
        ],
        "dependency_violations": [list(d) for d in report.dependency_violations],
        "wrong_array": [list(w) for w in report.wrong_array],
        "max_active": report.max_active,
        "max_active_per_array": _pairs(report.max_active_per_array),
        "statuses": _pairs(report.statuses),
        "attempts": _pairs(report.attempts),
        "counts": dict(report.counts),
        "run_status": report.run_status,
        "run_status_history": list(report.run_status_history),
        "heartbeats": report.heartbeats,
        "fetches": report.fetches,
        "queue_log": [
            [q.call_id, q.server_time, q.array_id, q.resource_key, list(q.task_ids), q.queued]
            for q in report.queue_log
        ],
    }


def _ints(values: Sequence[Any]) -> tuple[int, ...]:
    return tuple(int(v) for v in values)


def report_from_json(doc: Mapping[str, Any]) -> SimReport:
    """The inverse of :func:`report_to_json`; raises KeyError/TypeError/ValueError if malformed."""
    return SimReport(
        queue_calls=int(doc["queue_calls"]),
        attempts_started=int(doc["attempts_started"]),
        resent=int(doc["resent"]),
        unknown_ids=int(doc["unknown_ids"]),
        duplicates=[(int(a), int(b), int(c)) for a, b, c in doc["duplicates"]],
        overlaps=[(int(a), int(b), int(c)) for a, b, c in doc["overlaps"]],
        limit_violations=[
            LimitViolation(str(w), str(s), int(a), int(n), int(t))
            for w, s, a, n, t in doc["limit_violations"]
        ],
        dependency_violations=[(int(a), int(b)) for a, b in doc["dependency_violations"]],
        wrong_array=[(int(a), int(b)) for a, b in doc["wrong_array"]],
        max_active=int(doc["max_active"]),
        max_active_per_array={int(a): int(n) for a, n in doc["max_active_per_array"]},
        statuses={int(t): str(s) for t, s in doc["statuses"]},
        attempts={int(t): int(n) for t, n in doc["attempts"]},
        counts={str(s): int(n) for s, n in doc["counts"].items()},
        run_status=str(doc["run_status"]),
        run_status_history=[str(s) for s in doc["run_status_history"]],
        heartbeats=int(doc["heartbeats"]),
        fetches=int(doc["fetches"]),
        queue_log=[
            QueueCall(
                int(c),
                str(w),
                int(a),
                str(k),
                _ints(ids),
                tuple((int(t), int(n)) for t, n in queued),
            )
            for c, w, a, k, ids, queued in doc["queue_log"]
        ],
    )


# --- serving ------------------------------------------------------------------------------------

_CALLS = frozenset(
    {
        "queue_task_batch",
        "get_task_statuses",
        "log_heartbeat",
        "update_run_status",
        "signal_run_status",
        "report",
    }
)

#: Seconds a new connection has to complete the handshake.
HANDSHAKE_TIMEOUT_S = 10.0
#: Seconds the process waits, once asked to shut down, for its final report to be sent (a run of
#: 20k tasks takes well over the old fixed 50 ms to report).
SHUTDOWN_ANSWER_S = 60.0
_SHUTDOWN_ASKED = threading.Event()
_SHUTDOWN_ANSWERED = threading.Event()


def _result_json(name: str, result: Any) -> Any:
    if isinstance(result, SimReport):
        return report_to_json(result)
    return result


def serve_connection(
    core: SimCore, sock: socket.socket, authkey: bytes, stop: threading.Event
) -> None:
    """Authenticate one client, then answer its calls until it disconnects or breaks the protocol.

    A bad MAC, an oversize or malformed frame closes the connection with a logged reason; a
    well-formed request the model refuses gets an error answer and the connection stays.
    """
    peer = _peer(sock)
    channel = simwire.Channel(sock, authkey, side="server", max_in=simwire.MAX_REQUEST_BYTES)
    with sock:
        try:
            sock.settimeout(HANDSHAKE_TIMEOUT_S)
            channel.server_handshake()
            sock.settimeout(None)
        except (simwire.WireError, OSError) as e:
            logger.warning("simulated server: closing connection from %s: handshake: %s", peer, e)
            return
        while not stop.is_set():
            try:
                request = channel.recv()
            except simwire.WireError as e:
                if "closed by the peer" not in str(e):
                    logger.warning("simulated server: closing connection from %s: %s", peer, e)
                return
            except OSError:
                return
            if (
                not isinstance(request, dict)
                or not isinstance(request.get("call"), str)
                or not isinstance(request.get("args"), list)
            ):
                logger.warning(
                    "simulated server: closing connection from %s: malformed request %.80r",
                    peer,
                    request,
                )
                return
            name, args = request["call"], request["args"]
            try:
                if name == "shutdown":
                    _SHUTDOWN_ASKED.set()
                    stop.set()
                    core.wake()
                    try:
                        report = core.report(include_log=bool(args and args[0]))
                        channel.send({"ok": report_to_json(report)})
                    finally:
                        _SHUTDOWN_ANSWERED.set()
                    return
                if name not in _CALLS:
                    channel.send({"err": f"unknown call {name[:80]!r}"})
                    continue
                try:
                    result = getattr(core, name)(*args)
                except Exception as e:  # a bad request must not kill the server
                    channel.send({"err": f"{type(e).__name__}: {e}"})
                else:
                    channel.send({"ok": _result_json(name, result)})
            except OSError:  # the client died waiting
                return


def _peer(sock: socket.socket) -> str:
    try:
        name = sock.getpeername()
    except OSError:
        return "?"
    if isinstance(name, tuple) and len(name) >= 2:
        return f"{name[0]}:{name[1]}"
    return str(name) or "local"


def _accept_loop(
    core: SimCore, listener: socket.socket, authkey: bytes, stop: threading.Event
) -> None:
    """Hand each new connection to its own thread."""
    while not stop.is_set():
        try:
            sock, _ = listener.accept()
        except OSError:
            if stop.is_set():
                return
            logger.warning("simulated server: accept failed", exc_info=True)
            time.sleep(0.05)
            continue
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        threading.Thread(
            target=serve_connection,
            args=(core, sock, authkey, stop),
            daemon=True,
            name="sim-conn",
        ).start()


def listen(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listener = socket.socket(family, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((host, port))
        listener.listen(128)
    except OSError:
        listener.close()
        raise
    return listener


def _watch_parent(parent_pid: int, stop: threading.Event) -> None:
    """Stop when the parent closes our stdin (it died, or stop() closed it) or is gone."""

    def eof() -> None:
        sys.stdin.buffer.read()
        stop.set()

    threading.Thread(target=eof, daemon=True, name="sim-stdin").start()
    while not stop.wait(0.5):
        if os.getppid() != parent_pid:
            stop.set()


def _child_main() -> None:
    """The server process (``python -m swarm_redis.demo.sim``): config on stdin, address on stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=logging.INFO, format=f"%(asctime)s sim[{os.getpid()}] %(levelname)s %(message)s"
    )
    stop = threading.Event()
    try:
        size = int.from_bytes(sys.stdin.buffer.read(8), "big")
        doc = orjson.loads(sys.stdin.buffer.read(size))
        config = config_from_json(doc["config"])
        host, port, parent_pid = str(doc["host"]), int(doc["port"]), int(doc["parent_pid"])
        authkey = bytes.fromhex(doc["authkey"])
        core = SimCore(config)
        listener = listen(host, port)
    except Exception as e:
        print(f"error {type(e).__name__}: {e}", flush=True)
        return
    for target, args in (
        (core.run_clock, (stop,)),
        (_accept_loop, (core, listener, authkey, stop)),
        (_watch_parent, (parent_pid, stop)),
    ):
        threading.Thread(target=target, args=args, daemon=True).start()
    bound_host, bound_port = listener.getsockname()[:2]
    print(f"ready {bound_host} {bound_port}", flush=True)
    stop.wait()
    if _SHUTDOWN_ASKED.is_set():  # the final report must leave before the process ends
        _SHUTDOWN_ANSWERED.wait(SHUTDOWN_ANSWER_S)
    time.sleep(0.05)
    listener.close()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # not a normal exit: daemon threads may hold stdin's lock (fatal at finalization)


def _parse_address(address: str | tuple[str, int]) -> tuple[str, int]:
    if isinstance(address, tuple):
        return address
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise InvalidInputError(f"simulated server address {address!r} is not HOST:PORT")
    return host.strip("[]"), int(port)


def _authkey(authkey: bytes | str | None) -> bytes:
    if authkey is None:
        authkey = os.environ.get(AUTHKEY_ENV, "")
        if not authkey:
            raise InvalidInputError(f"no authkey given and {AUTHKEY_ENV} is not set")
    if isinstance(authkey, str):
        try:
            return bytes.fromhex(authkey.strip())
        except ValueError:
            raise InvalidInputError("the simulated server's authkey must be hex") from None
    return authkey


class SimClient:
    """The gateway over a connection to a :class:`SimServer` (thread-safe).

    Each call is one authenticated request and its answer. After a failed call (timeout, broken
    connection) the connection is dropped and the next call opens a new one.

    Args:
        address: ``"HOST:PORT"`` (:attr:`SimServer.address`) or a (host, port) tuple.
        authkey: The server's key, bytes or hex; default: the ``SWARM_SIM_AUTHKEY`` variable.
        timeout: Seconds to wait for each answer before raising GatewayError.
    """

    def __init__(
        self,
        address: str | tuple[str, int],
        authkey: bytes | str | None = None,
        *,
        timeout: float = 30.0,
    ) -> None:
        self.address = _parse_address(address)
        self.timeout = timeout
        self._key = _authkey(authkey)
        self._lock = threading.Lock()
        self._closed = False
        self._channel: simwire.Channel | None = self._connect()

    def _connect(self) -> simwire.Channel:
        try:
            sock = socket.create_connection(self.address, timeout=self.timeout)
        except OSError as e:
            raise GatewayError(f"cannot reach the simulated server at {self.address}: {e}") from e
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            channel = simwire.Channel(
                sock, self._key, side="client", max_in=simwire.MAX_REPLY_BYTES
            )
            channel.client_handshake()
        except (OSError, simwire.WireError) as e:
            sock.close()
            raise GatewayError(f"cannot reach the simulated server at {self.address}: {e}") from e
        return channel

    def _call(self, name: str, *args: Any) -> Any:
        with self._lock:
            if self._closed:
                raise GatewayError("the connection to the simulated server is closed")
            channel = self._channel or self._connect()
            self._channel = channel
            try:
                channel.sock.settimeout(self.timeout)
                channel.send({"call": name, "args": list(args)})
                reply = channel.recv()
            except (OSError, simwire.WireError) as e:
                self._channel = None
                channel.sock.close()
                what = "no answer within" if isinstance(e, TimeoutError) else "failed:"
                detail = f"{self.timeout} s" if isinstance(e, TimeoutError) else str(e)
                raise GatewayError(f"{name} {what} {detail}") from e
        if isinstance(reply, dict) and "ok" in reply:
            return reply["ok"]
        if isinstance(reply, dict) and isinstance(reply.get("err"), str):
            raise GatewayError(f"{name} refused: {reply['err']}")
        raise GatewayError(f"{name}: malformed answer {str(reply)[:80]!r}")

    def _shaped(self, name: str, reply: Any) -> tuple[StatusesByLetter, str | None]:
        try:
            answer, when = reply
            statuses = {str(s): [int(t) for t in ids] for s, ids in answer.items()}
        except (TypeError, ValueError, AttributeError):
            raise GatewayError(f"{name}: malformed answer {str(reply)[:80]!r}") from None
        if when is not None and not isinstance(when, str):
            raise GatewayError(f"{name}: malformed server time {when!r}")
        return statuses, when

    def _report(self, name: str, reply: Any) -> SimReport:
        try:
            return report_from_json(reply)
        except (KeyError, TypeError, ValueError, AttributeError):
            raise GatewayError(f"{name}: malformed report") from None

    def queue_task_batch(
        self, array_id: int, task_ids: Sequence[int], resource_key: str
    ) -> tuple[StatusesByLetter, str | None]:
        """Queue the tasks that are G or A; every requested id's status, and the server time."""
        reply = self._call(
            "queue_task_batch", int(array_id), [int(t) for t in task_ids], str(resource_key)
        )
        return self._shaped("queue_task_batch", reply)

    def get_task_statuses(self, since: str | None) -> tuple[StatusesByLetter, str]:
        """Statuses of the tasks changed at or after ``since`` (all if None), and the time now."""
        answer, when = self._shaped("get_task_statuses", self._call("get_task_statuses", since))
        if when is None:
            raise GatewayError("get_task_statuses: no server time in the answer")
        return answer, when

    def log_heartbeat(self, run_status: str) -> str:
        """Report the run's status; the status the server holds afterwards."""
        return str(self._call("log_heartbeat", run_status))

    def update_run_status(self, status: str) -> str:
        """Ask for a run-status transition; the status the server holds afterwards."""
        return str(self._call("update_run_status", status))

    def signal_run_status(self, status: str) -> str:
        """Force the run's status on the server (test hook: resume or stop signals)."""
        return str(self._call("signal_run_status", status))

    def report(self, include_log: bool = False) -> SimReport:
        """What the server observed so far."""
        return self._report("report", self._call("report", bool(include_log)))

    def shutdown(self, include_log: bool = False) -> SimReport:
        """Stop the server; its final report."""
        return self._report("shutdown", self._call("shutdown", bool(include_log)))

    def close(self) -> None:
        """Close the connection (idempotent)."""
        with self._lock:
            self._closed = True
            if self._channel is not None:
                self._channel.sock.close()
                self._channel = None

    def __enter__(self) -> SimClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SimServer:
    """A running simulated server process; use :meth:`start`, :meth:`client`, :meth:`stop`."""

    def __init__(
        self, process: subprocess.Popen[bytes], address: tuple[str, int], authkey: bytes
    ) -> None:
        self._process = process
        self._address = address
        self.authkey = authkey
        self.final_report: SimReport | None = None

    @classmethod
    def start(
        cls,
        config: SimConfig,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        authkey: bytes | None = None,
        timeout: float = 60.0,
    ) -> SimServer:
        """Start the server process (``python -m swarm_redis.demo.sim``); return once it listens.

        Args:
            config: The DAG, limits and behaviour.
            host: Address to listen on: loopback by default. Listen elsewhere only on a private
                network (a compose network, say) with a key of your own.
            port: Port (0: a free one).
            authkey: Shared key, at least 16 bytes (default: 16 random bytes).
            timeout: Seconds to wait for the server to listen.
        """
        key = authkey if authkey is not None else secrets.token_bytes(16)
        if len(key) < simwire.MIN_KEY_BYTES:
            raise InvalidInputError(
                f"the simulated server's authkey must be at least {simwire.MIN_KEY_BYTES} bytes"
            )
        payload = orjson.dumps(
            {
                "config": config_to_json(config),
                "host": host,
                "port": int(port),
                "authkey": key.hex(),
                "parent_pid": os.getpid(),
            }
        )
        process = subprocess.Popen(
            [sys.executable, "-m", "swarm_redis.demo.sim"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            start_new_session=True,  # a terminal Ctrl-C reaches only the parent, which stops us
        )
        assert process.stdin is not None and process.stdout is not None
        try:
            process.stdin.write(len(payload).to_bytes(8, "big") + payload)
            process.stdin.flush()
            ready, _, _ = select.select([process.stdout], [], [], timeout)
            line = process.stdout.readline().decode() if ready else ""
        except OSError as e:
            line = f"error {e}"
        if not line.startswith("ready "):
            process.kill()
            process.wait(timeout)
            why = line.strip() or f"no answer within {timeout} s"
            raise GatewayError(f"the simulated server failed to start: {why}")
        _, bound_host, bound_port = line.split()
        server = cls(process, (bound_host, int(bound_port)), key)
        logger.info("simulated server pid %s listening on %s", process.pid, server.address)
        return server

    @property
    def address(self) -> str:
        """``"HOST:PORT"``, for :class:`SimClient` and a replica's ``--sim`` option."""
        return f"{self._address[0]}:{self._address[1]}"

    @property
    def authkey_hex(self) -> str:
        """The authkey as hex, for ``SWARM_SIM_AUTHKEY`` or a replica's ``--sim-key``."""
        return self.authkey.hex()

    @property
    def pid(self) -> int:
        """The server process id."""
        return self._process.pid

    def alive(self) -> bool:
        """True while the server process runs."""
        return self._process.poll() is None

    def client(self, timeout: float = 30.0) -> SimClient:
        """A new connection to the server."""
        return SimClient(self._address, self.authkey, timeout=timeout)

    def report(self, include_log: bool = False) -> SimReport:
        """What the server observed so far (the final report once stopped)."""
        if self.final_report is not None:
            return self.final_report
        with self.client() as c:
            return c.report(include_log)

    def signal_run_status(self, status: str) -> str:
        """Force the run's status on the server (test hook)."""
        with self.client() as c:
            return c.signal_run_status(status)

    def stop(self, timeout: float = 5.0, include_log: bool = False) -> SimReport | None:
        """Shut the server down (idempotent); its final report, None if it was already gone."""
        if self.alive() and self.final_report is None:
            try:
                with self.client(timeout=timeout) as c:
                    self.final_report = c.shutdown(include_log)
            except GatewayError as e:
                logger.warning("simulated server did not shut down cleanly: %s", e)
        for stream in (self._process.stdin, self._process.stdout):
            if stream is not None:
                stream.close()
        try:
            self._process.wait(timeout)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout)
        return self.final_report

    def __enter__(self) -> SimServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


if __name__ == "__main__":
    # Run the imported module's copy, so its logger is swarm_redis.demo.sim, not __main__.
    from swarm_redis.demo.sim import _child_main as main

    main()
