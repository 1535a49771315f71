"""``swarm-redis demo``: several replica processes share one run, one is killed now and then,
and the run still finishes correctly.

The demo builds a synthetic DAG (several arrays with their own limits, several resource
shapes), registers it with :class:`~swarm_redis.state.RedisSwarmState`, starts the simulated
jobmon server (:mod:`swarm_redis.demo.sim`) and K replica OS processes
(``python -m swarm_redis.replica``), shows a live view, SIGKILLs a random replica every few
seconds and starts a replacement, and ends with a verdict checked from three independent
sides: Redis (every task final), the simulated server's record (no task queued twice for one
attempt, limits never exceeded) and the consistency checker (:func:`swarm_redis.ops.verify.find_drift`).

Without ``--url`` and ``REDIS_URL`` it uses :class:`~swarm_redis.demo.embedded.EmbeddedRedis`: a
private ``redis-server`` from PATH, else fakeredis's TCP server in this process (slower, no
persistence). Everything it starts (replicas, simulated server, private Redis, temp dir) is
stopped on exit, on Ctrl-C (SIGINT) and on SIGTERM.

``--role seed`` and ``--role sim`` run single parts for docker-compose: register the DAG and
exit; or serve the simulated server for a registered run until it is final, then print the
verdict.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import random
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import IO, Any

import redis
from rich.console import Console, Group
from rich.live import Live
from rich.text import Text

from swarm_redis.demo.embedded import (
    EmbeddedRedis,
    EmbeddedRedisError,
    connect,
    pdeathsig_preexec,
    resolve_url,
)
from swarm_redis.demo.sim import AUTHKEY_ENV, SimConfig, SimReport, SimServer
from swarm_redis.engine.keys import RunKeys
from swarm_redis.errors import InvalidInputError, SwarmRedisError, UnknownRunError
from swarm_redis.exit_codes import (
    EXIT_CONNECTION,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_TERMINATED,
    EXIT_USAGE,
)
from swarm_redis.ops.reads import RunSnapshot, read_snapshot, scan_keys
from swarm_redis.ops.render import watch_line, watch_view
from swarm_redis.ops.verify import find_drift
from swarm_redis.records import ArrayRecord, TaskRecord
from swarm_redis.state import RedisSwarmState

__all__ = [
    "RESOURCE_SHAPES",
    "SHAPES",
    "DemoDag",
    "DemoResult",
    "ReplicaPool",
    "add_demo_parser",
    "array_limits",
    "build_dag",
    "register_run",
    "run_demo",
]

#: DAG shapes of ``--shape``.
SHAPES: tuple[str, ...] = ("layered", "wide", "chain", "random")
#: Parts of the demo ``--role`` can run alone (docker-compose runs them as services).
ROLES: tuple[str, ...] = ("all", "seed", "sim")
#: Resource requests the tasks cycle through: batches form per array and per shape.
RESOURCE_SHAPES: tuple[dict[str, Any], ...] = (
    {"num_cores": 1, "memory_gb": 1, "runtime_s": 600, "queue": "all.q"},
    {"num_cores": 4, "memory_gb": 8, "runtime_s": 3600, "queue": "all.q"},
    {"num_cores": 16, "memory_gb": 64, "runtime_s": 7200, "queue": "long.q"},
)
#: Number of arrays; a task's array is its depth in the DAG modulo this (one per "phase").
N_ARRAYS = 4
#: Range of each simulated Q, I, O and R step, in seconds.
STEP_S = (0.01, 0.08)
#: Replica lease: a killed replica's claims are re-driven after about this long.
LEASE_S = 2.0
#: The first kill comes after ``--kill-every`` seconds or at this share of final tasks,
#: whichever is first, so that even a short demo shows a failover.
FIRST_KILL_SHARE = 0.3


# --- the DAG ------------------------------------------------------------------------------------


@dataclass
class DemoDag:
    """A synthetic DAG: linked TaskRecords, their arrays, and each task's upstream ids."""

    shape: str
    tasks: list[TaskRecord]
    arrays: list[ArrayRecord]
    upstreams: dict[int, list[int]]
    depth: int

    @property
    def roots(self) -> list[TaskRecord]:
        """Tasks without upstreams, in id order."""
        return [t for t in self.tasks if t.num_upstreams == 0]

    @property
    def n_edges(self) -> int:
        return sum(len(u) for u in self.upstreams.values())

    def describe(self) -> str:
        """One line for humans."""
        limits = ", ".join(f"{a.array_id}:{a.max_concurrently_running}" for a in self.arrays)
        return (
            f"{len(self.tasks)} tasks, {self.n_edges} edges, depth {self.depth}, "
            f"{len(self.roots)} roots, shape {self.shape}, array limits {{{limits}}}, "
            f"{len(RESOURCE_SHAPES)} resource shapes"
        )


def array_limits(limit: int, n_arrays: int = N_ARRAYS) -> list[int]:
    """Per-array limits derived from the workflow limit: some tighter, one equal to it."""
    fractions = (0.5, 0.25, 1.0, 0.35)
    return [max(1, int(limit * fractions[i % len(fractions)])) for i in range(n_arrays)]


def _parents(n: int, shape: str, rng: random.Random) -> list[list[int]]:
    """0-based upstream indexes of each of ``n`` tasks (every parent index is smaller)."""
    parents: list[list[int]] = [[] for _ in range(n)]
    if shape == "layered":
        layers = max(1, min(20, n // 100))
        width = -(-n // layers)
        for i in range(width, n):
            prev = (i // width - 1) * width
            pos = i % width
            fan_in = min(3, width)
            parents[i] = sorted({prev + (pos + k) % width for k in range(fan_in)})
    elif shape == "wide":
        # Three wide layers: every task of layers 1 and 2 waits for two random tasks before it.
        width = -(-n // 3)
        for i in range(width, n):
            prev = (i // width - 1) * width
            parents[i] = sorted(rng.sample(range(prev, prev + width), min(2, width)))
    elif shape == "chain":
        # Parallel chains of at most 25 steps, interleaved so that ids stay topological.
        n_chains = max(1, -(-n // 25))
        for i in range(n_chains, n):
            parents[i] = [i - n_chains]
    elif shape == "random":
        # Random levels (at most 15); 1 to 3 parents from lower levels, mostly the one below.
        levels = max(1, min(15, n // 50))
        level_of = sorted(rng.randrange(levels) for _ in range(n))
        starts = [level_of.index(lv) if lv in level_of else -1 for lv in range(levels)]
        for i in range(n):
            lv = level_of[i]
            if lv == 0 or rng.random() < 0.05:
                continue
            below = max(x for x in range(lv) if starts[x] >= 0)
            lo = starts[below]
            hi = starts[lv]
            picks = {rng.randrange(lo, hi)}
            for _ in range(rng.randint(0, 2)):
                picks.add(rng.randrange(0, hi))
            parents[i] = sorted(picks)
    else:
        raise ValueError(f"unknown shape {shape!r}; choose from {', '.join(SHAPES)}")
    return parents


def build_dag(
    n_tasks: int,
    shape: str = "layered",
    *,
    limit: int = 200,
    seed: int | None = None,
    first_id: int = 1,
) -> DemoDag:
    """Build a synthetic DAG of ``n_tasks`` TaskRecords (ids from ``first_id``).

    Args:
        n_tasks: Number of tasks (>= 1).
        shape: One of :data:`SHAPES`.
        limit: The workflow limit the array limits are derived from (:func:`array_limits`).
        seed: Seed of the random choices (the same seed gives the same DAG).
        first_id: Id of the first task.
    """
    if n_tasks < 1:
        raise ValueError("n_tasks must be >= 1")
    rng = random.Random(seed)
    parents = _parents(n_tasks, shape, rng)
    depth = [0] * n_tasks
    for i, ps in enumerate(parents):
        if ps:
            depth[i] = 1 + max(depth[p] for p in ps)
    limits = array_limits(limit)
    arrays = [ArrayRecord(a + 1, limits[a], f"phase_{a + 1}") for a in range(N_ARRAYS)]
    tasks = [
        TaskRecord(
            first_id + i,
            depth[i] % N_ARRAYS + 1,
            "G",
            len(parents[i]),
            0,
            current_task_resources=dict(RESOURCE_SHAPES[rng.randrange(len(RESOURCE_SHAPES))]),
        )
        for i in range(n_tasks)
    ]
    upstreams: dict[int, list[int]] = {}
    for i, ps in enumerate(parents):
        if ps:
            upstreams[first_id + i] = [first_id + p for p in ps]
        for p in ps:
            tasks[p].downstream_swarm_tasks.add(tasks[i])
    for task in tasks:
        arrays[task.array_id - 1].add_task(task)
    return DemoDag(shape, tasks, arrays, upstreams, max(depth) + 1)


def register_run(
    client: Any, prefix: str, run_id: int, dag: DemoDag, limit: int
) -> RedisSwarmState:
    """Register the DAG as run ``run_id`` and queue its roots with their resources.

    Idempotent (registration keeps what a run already holds). The roots are queued here, with
    their resource keys, so the first batches form per resource shape; the leader's initial
    fringe then finds nothing more to queue.
    """
    state = RedisSwarmState(
        run_id, run_id, run_id, limit, "B", redis=client, prefix=prefix, events_maxlen=20000
    )
    state.add_arrays(dag.arrays)
    state.add_tasks(dag.tasks)
    state.enqueue_tasks(dag.roots)
    return state


def sim_config(
    dag: DemoDag, limit: int, fail_rate: float, seed: int | None, max_attempts: int = 4
) -> SimConfig:
    """The simulated server's view of the DAG and its limits."""
    return SimConfig(
        tasks={t.task_id: t.array_id for t in dag.tasks},
        workflow_limit=limit,
        array_limits={a.array_id: a.max_concurrently_running for a in dag.arrays},
        upstreams=dag.upstreams,
        step_s=STEP_S,
        fail_rate=fail_rate,
        max_attempts=max_attempts,
        seed=seed,
    )


def blocked_by_failures(
    upstreams: Mapping[int, Sequence[int]], statuses: Mapping[int, str]
) -> set[int]:
    """Tasks that can never run: not final, with an ERROR_FATAL task among their ancestors.

    jobmon never runs the downstreams of a task that failed for good; such a run ends in ERROR
    with these tasks still REGISTERING.
    """
    children: dict[int, list[int]] = {}
    for child, parents in upstreams.items():
        for parent in parents:
            children.setdefault(int(parent), []).append(int(child))
    seen: set[int] = set()
    stack = [t for t, status in statuses.items() if status == "F"]
    while stack:
        for child in children.get(stack.pop(), ()):
            if child not in seen:
                seen.add(child)
                stack.append(child)
    return {t for t in seen if statuses.get(t) not in ("D", "F")}


# --- replica processes --------------------------------------------------------------------------


def replica_command(
    url: str, prefix: str, run_id: int, sim_address: str, *, lease_s: float = LEASE_S
) -> list[str]:
    """The command line of one replica process."""
    return [
        sys.executable,
        "-m",
        "swarm_redis.replica",
        "--url",
        url,
        "--prefix",
        prefix,
        "--run",
        str(run_id),
        "--sim",
        sim_address,
        "--ttl",
        f"{lease_s:g}",
    ]


@dataclass
class _Member:
    serial: int
    proc: subprocess.Popen[bytes]
    log: Path


class ReplicaPool:
    """The demo's replica processes: start, SIGKILL one, replace, stop them all.

    Each replica runs in its own session (a terminal Ctrl-C reaches only the demo, which then
    stops the replicas in order) and, on Linux, dies with the demo (``PR_SET_PDEATHSIG``).
    Its stdout and stderr go to ``logdir/replica-<n>.log``.
    """

    def __init__(self, command: Sequence[str], env: dict[str, str], logdir: Path) -> None:
        self.command = list(command)
        self.env = env
        self.logdir = logdir
        self.members: list[_Member] = []
        self.kills = 0
        self.crashes: list[tuple[int, int]] = []  # (serial, exit status) of unexpected exits
        self.pids: list[int] = []  # every pid ever started, for the report
        self._serial = 0

    def start_one(self) -> _Member:
        """Start one more replica process."""
        self._serial += 1
        log = self.logdir / f"replica-{self._serial}.log"
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                self.command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
                preexec_fn=pdeathsig_preexec(),
            )
        member = _Member(self._serial, proc, log)
        self.members.append(member)
        self.pids.append(proc.pid)
        return member

    def alive(self) -> int:
        """Replica processes still running."""
        return sum(1 for m in self.members if m.proc.poll() is None)

    def kill_random(self, rng: random.Random) -> int | None:
        """SIGKILL a random running replica and reap it; its pid, or None if none runs."""
        running = [m for m in self.members if m.proc.poll() is None]
        if not running:
            return None
        victim = rng.choice(running)
        with contextlib.suppress(ProcessLookupError):
            victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait()
        self.members.remove(victim)
        self.kills += 1
        return victim.proc.pid

    def collect_exited(self) -> list[_Member]:
        """Forget replicas that exited by themselves; record non-zero exits as crashes."""
        gone = [m for m in self.members if m.proc.poll() is not None]
        for m in gone:
            self.members.remove(m)
            if m.proc.returncode != 0:
                self.crashes.append((m.serial, int(m.proc.returncode)))
        return gone

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM every running replica (clean leave), then SIGKILL the ones that linger.

        Replicas that already exited by themselves are collected first (see
        :meth:`collect_exited`); the ones stopped here are not counted as crashes.
        """
        self.collect_exited()
        for m in self.members:
            if m.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for m in self.members:
            try:
                m.proc.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    m.proc.kill()
                m.proc.wait()
        self.members.clear()

    def log_tail(self, serial: int, lines: int = 15) -> str:
        """The last lines of one replica's log."""
        path = self.logdir / f"replica-{serial}.log"
        try:
            text = path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.rstrip().splitlines()[-lines:])


# --- the live view ------------------------------------------------------------------------------


class LiveView:
    """Progress while the demo runs: rich Live on a terminal, else one plain line per second."""

    def __init__(self, out: IO[str], *, tty: bool) -> None:
        self.out = out
        self.tty = tty
        self._live: Live | None = None
        self._samples: deque[tuple[float, int]] = deque(maxlen=8)
        self._last_line = 0.0

    def __enter__(self) -> LiveView:
        if self.tty:
            self._live = Live(
                Text("starting ..."),
                console=Console(file=self.out),
                refresh_per_second=4,
                transient=False,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the live display (idempotent)."""
        if self._live is not None:
            self._live.stop()
            self._live = None

    def rate(self, now: float, finished: int) -> float | None:
        """Completions per second over the last few seconds."""
        self._samples.append((now, finished))
        t0, f0 = self._samples[0]
        if now - t0 < 0.5:
            return None
        return (finished - f0) / (now - t0)

    def update(self, snap: RunSnapshot, *, alive: int, wanted: int, kills: int) -> None:
        """Show one snapshot (rate-limited to a line per second without a terminal)."""
        now = time.monotonic()
        rate = self.rate(now, snap.counts["D"] + snap.counts["F"])
        lead = snap.leader
        leader = f"{lead.replica_id} epoch {lead.epoch}" if lead and lead.replica_id else "none"
        extra = (
            f"replicas alive {alive}/{wanted} (leases valid {snap.replicas_alive})  kills {kills}"
        )
        if self._live is not None:
            self._live.update(Group(watch_view(snap, rate), Text(extra)), refresh=False)
            return
        if now - self._last_line >= 1.0:
            self._last_line = now
            line = (
                f"{watch_line(snap, rate)} replicas={alive}/{wanted} leader={leader} kills={kills}"
            )
            print(line, file=self.out, flush=True)


# --- the verdict --------------------------------------------------------------------------------


@dataclass
class DemoResult:
    """The demo's outcome; :meth:`to_json` is the ``--json`` line."""

    backend: str
    run: int
    prefix: str
    shape: str
    replicas: int
    limit: int
    fail_rate: float
    tasks: int = 0
    done: int = 0
    failed: int = 0
    blocked: int = 0
    claimed: int = 0
    run_status: str = ""
    duplicate_queues: int = 0
    limit_violations: int = 0
    sim_problems: list[str] = field(default_factory=list)
    server_disagrees: int = 0
    drift: int = 0
    drift_kinds: dict[str, int] = field(default_factory=dict)
    kills: int = 0
    replica_crashes: int = 0
    queue_calls: int = 0
    attempts: int = 0
    max_active: int = 0
    leader_epoch: int = 0
    seconds: float = 0.0
    timed_out: bool = False
    interrupted: bool = False
    error: str = ""

    @property
    def throughput(self) -> float:
        """Final tasks per second of wall time."""
        return round((self.done + self.failed) / self.seconds, 1) if self.seconds > 0 else 0.0

    @property
    def checks(self) -> dict[str, bool]:
        """Each verdict check and whether it passed."""
        return {
            "all_tasks_final": self.tasks > 0
            and self.done + self.failed + self.blocked == self.tasks
            and self.claimed == 0,
            "run_finalized": self.run_status == self.expected_run_status,
            "no_duplicate_queues": self.duplicate_queues == 0,
            "limits_respected": self.limit_violations == 0,
            "server_checks": not self.sim_problems,
            "server_agrees": self.server_disagrees == 0,
            "verify_clean": self.drift == 0,
            "no_replica_crash": self.replica_crashes == 0,
            "finished_in_time": not (self.timed_out or self.interrupted or self.error),
        }

    @property
    def expected_run_status(self) -> str:
        """DONE when every task is done, else ERROR (as jobmon's orchestrator ends)."""
        return "D" if self.tasks > 0 and self.done == self.tasks else "E"

    @property
    def ok(self) -> bool:
        return all(self.checks.values())

    def to_json(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out.update(throughput=self.throughput, checks=self.checks, ok=self.ok)
        return out


def _verdict_text(result: DemoResult) -> str:
    if result.error:
        return f"\nverdict: ERROR after {result.seconds:.1f} s: {result.error}"
    if result.interrupted:
        return (
            f"\nverdict: INTERRUPTED after {result.seconds:.1f} s: {result.done} done + "
            f"{result.failed} failed of {result.tasks}, {result.kills} replicas killed; "
            "nothing was checked"
        )
    mark = {True: "ok  ", False: "FAIL"}
    c = result.checks
    blocked = f" + {result.blocked} blocked by a failed upstream" if result.blocked else ""
    lines = [
        "",
        f"verdict: {'PASSED' if result.ok else 'FAILED'}  ({result.backend}"
        + (f", {result.replicas} replicas, {result.kills} killed)" if result.replicas else ")"),
        f"  {mark[c['all_tasks_final']]} all tasks final: {result.done} done + "
        f"{result.failed} failed{blocked} of {result.tasks} ({result.claimed} still claimed)",
        f"  {mark[c['run_finalized']]} run finalized: status {result.run_status or '-'} "
        f"(expected {result.expected_run_status})",
        f"  {mark[c['no_duplicate_queues']]} no task queued twice for one attempt: "
        f"{result.duplicate_queues} duplicates in {result.queue_calls} queue calls",
        f"  {mark[c['limits_respected']]} limits never exceeded: "
        f"{result.limit_violations} violations (max active {result.max_active}/{result.limit})",
        f"  {mark[c['server_checks']]} server's other checks: "
        + ("; ".join(result.sim_problems) or "none failed"),
        f"  {mark[c['server_agrees']]} Redis agrees with the server: "
        f"{result.server_disagrees} tasks differ",
        f"  {mark[c['verify_clean']]} verify clean: {result.drift} drift"
        + (f" {result.drift_kinds}" if result.drift_kinds else ""),
        f"  {mark[c['no_replica_crash']]} no replica crashed: {result.replica_crashes}",
        f"  {mark[c['finished_in_time']]} finished: "
        + ("timed out" if result.timed_out else "interrupted" if result.interrupted else "yes"),
        f"  wall time {result.seconds:.1f} s, throughput {result.throughput} tasks/s, "
        f"{result.attempts} attempts, leader epoch {result.leader_epoch}",
    ]
    return "\n".join(lines)


def _fill_from_snapshot(result: DemoResult, snap: RunSnapshot) -> None:
    result.tasks = snap.tasks
    result.done = snap.counts["D"]
    result.failed = snap.counts["F"]
    result.claimed = snap.claimed
    result.run_status = snap.run_status
    result.leader_epoch = snap.leader.epoch if snap.leader is not None else result.leader_epoch


def _fill_from_report(
    result: DemoResult,
    report: SimReport,
    client: Any,
    keys: RunKeys,
    upstreams: Mapping[int, Sequence[int]],
) -> None:
    result.duplicate_queues = len(report.duplicates)
    result.limit_violations = len(report.limit_violations)
    result.sim_problems = _other_problems(report)
    result.queue_calls = report.queue_calls
    result.attempts = report.attempts_started
    result.max_active = report.max_active
    # The server's final statuses against Redis: every final task must agree.
    redis_final: dict[int, str] = {}
    for status in ("D", "F"):
        for member in client.sscan_iter(keys.status_set(status), count=2000):
            redis_final[int(member)] = status
    server_final = {t: s for t, s in report.statuses.items() if s in ("D", "F")}
    result.server_disagrees = len(
        {t for t, s in server_final.items() if redis_final.get(t) != s}
        | {t for t, s in redis_final.items() if server_final.get(t) != s}
    )
    statuses = {t: redis_final.get(t, "G") for t in report.statuses}
    result.blocked = len(blocked_by_failures(upstreams, statuses))


def _other_problems(report: SimReport) -> list[str]:
    """The server's checks other than duplicates and limits, one line per failed check."""
    out = []
    if report.overlaps:
        out.append(f"{len(report.overlaps)} ids in two queue calls at once")
    if report.dependency_violations:
        out.append(f"{len(report.dependency_violations)} tasks queued before an upstream was done")
    if report.wrong_array:
        out.append(f"{len(report.wrong_array)} tasks queued under another array")
    if report.unknown_ids:
        out.append(f"{report.unknown_ids} unknown task ids queued")
    return out


def _fill_drift(result: DemoResult, client: Any, keys: RunKeys) -> None:
    report = find_drift(client, keys)
    result.drift = report.total
    result.drift_kinds = report.counts


# --- signals and cleanup ------------------------------------------------------------------------


class _Terminated(BaseException):
    """SIGTERM arrived: unwind like KeyboardInterrupt so every finally block runs."""


@contextlib.contextmanager
def _sigterm_unwinds() -> Iterator[None]:
    """Turn SIGTERM into :class:`_Terminated` while the demo runs (main thread only)."""
    if not _main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def _signals_blocked() -> Iterator[None]:
    """Ignore SIGINT and SIGTERM while cleaning up, so a second Ctrl-C cannot cut it short."""
    if not _main_thread():
        yield
        return
    old_int = signal.signal(signal.SIGINT, signal.SIG_IGN)
    old_term = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old_int)
        signal.signal(signal.SIGTERM, old_term)


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def _purge(client: Any, prefix: str, run_id: int) -> int:
    """Delete every key of the run; how many."""
    keys = list(scan_keys(client, RunKeys(prefix, run_id).match_all))  # prefix escaped
    for start in range(0, len(keys), 500):
        client.unlink(*keys[start : start + 500])
    return len(keys)


def _redact(url: str) -> str:
    """The URL without a password."""
    if "@" not in url:
        return url
    scheme, _, rest = url.partition("://")
    return f"{scheme}://***@{rest.rpartition('@')[2]}"


# --- the demo -----------------------------------------------------------------------------------


@dataclass
class _Settings:
    tasks: int
    replicas: int
    kill_every: float
    shape: str
    fail_rate: float
    limit: int
    seed: int | None
    url: str | None
    prefix: str
    run: int | None
    json: bool
    timeout: float
    purge: bool
    role: str
    listen: str
    max_attempts: int


def _settings(args: argparse.Namespace) -> _Settings:
    return _Settings(
        tasks=int(args.tasks),
        replicas=int(args.replicas),
        kill_every=float(args.kill_every),
        shape=str(args.shape),
        fail_rate=float(args.fail_rate),
        limit=int(args.limit),
        seed=args.seed,
        url=getattr(args, "url", None),
        prefix=getattr(args, "prefix", None) or "swarm",
        run=args.run,
        json=bool(getattr(args, "json", False)),
        timeout=float(args.timeout),
        purge=bool(args.purge),
        role=str(args.role),
        listen=str(args.listen),
        max_attempts=int(args.max_attempts),
    )


def _check(s: _Settings) -> str | None:
    if s.tasks < 1:
        return "--tasks must be >= 1"
    if s.replicas < 1:
        return "--replicas must be >= 1"
    if s.kill_every < 0 or s.timeout <= 0:
        return "--kill-every must be >= 0 and --timeout > 0"
    if not 0.0 <= s.fail_rate <= 1.0:
        return "--fail-rate must be between 0 and 1"
    if s.limit < 1:
        return "--limit must be >= 1"
    if s.max_attempts < 1:
        return "--max-attempts must be >= 1"
    if s.run is not None and s.run < 0:
        return "--run must be >= 0"
    return None


class _Demo:
    """One demo run: owns everything it starts, and stops all of it in :meth:`cleanup`."""

    def __init__(self, s: _Settings, say: Callable[[str], None], err: IO[str]) -> None:
        self.s = s
        self.say = say
        self.err = err
        self.embedded: EmbeddedRedis | None = None
        self.client: Any = None
        self.sim: SimServer | None = None
        self.pool: ReplicaPool | None = None
        self.logdir: Path | None = None
        self.view: LiveView | None = None
        self.rng = random.Random(s.seed)

    # each step ---------------------------------------------------------------------------------

    def connect(self) -> tuple[str, str]:
        url, emb = resolve_url(self.s.url)
        self.embedded = emb
        backend = emb.backend if emb is not None else "external"
        where = f"private {emb.backend} at {emb.url}" if emb is not None else _redact(url)
        self.say(f"backend: {backend} ({where})")
        if emb is not None and emb.backend == "fakeredis":
            self.say(
                "  (no redis-server on PATH: fakeredis in this process, about 25x slower "
                "than Redis and without persistence; install redis-server for the real thing)"
            )
        self.client = connect(url, decode_responses=True, protocol=3)
        self.client.ping()
        return url, backend

    def run_id(self) -> int:
        if self.s.run is not None:
            return self.s.run
        return 10**6 + secrets.randbelow(9 * 10**6)

    def start_sim(self, config: SimConfig, host: str = "127.0.0.1", port: int = 0) -> SimServer:
        self.sim = SimServer.start(config, host=host, port=port, authkey=_sim_key())
        self.say(f"simulated server: pid {self.sim.pid} on {self.sim.address}")
        return self.sim

    def cleanup(self) -> None:
        """Stop replicas, the simulated server and the private Redis; remove the temp dir."""
        with _signals_blocked():
            if self.view is not None:
                self.view.close()
            if self.pool is not None:
                self.pool.stop()
            if self.sim is not None:
                with contextlib.suppress(Exception):
                    self.sim.stop()
            if self.client is not None:
                with contextlib.suppress(Exception):
                    self.client.close()
            if self.embedded is not None:
                self.embedded.stop()
            if self.logdir is not None:
                shutil.rmtree(self.logdir, ignore_errors=True)
                self.logdir = None

    # the whole demo ----------------------------------------------------------------------------

    def new_result(self, backend: str, run_id: int, replicas: int, limit: int) -> DemoResult:
        s = self.s
        return DemoResult(
            backend=backend,
            run=run_id,
            prefix=s.prefix,
            shape=s.shape,
            replicas=replicas,
            limit=limit,
            fail_rate=s.fail_rate,
        )

    def run_all(self, result_box: list[DemoResult]) -> int:
        s = self.s
        url, backend = self.connect()
        run_id = self.run_id()
        keys = RunKeys(s.prefix, run_id)
        if self.client.exists(keys.meta):
            self.say(f"run {run_id} already exists under prefix {s.prefix!r}: pick another --run")
            return EXIT_USAGE
        result = self.new_result(backend, run_id, s.replicas, s.limit)
        result_box.append(result)
        dag = build_dag(s.tasks, s.shape, limit=s.limit, seed=s.seed)
        self.say(f"DAG: {dag.describe()}")
        t0 = time.monotonic()
        register_run(self.client, s.prefix, run_id, dag, s.limit)
        self.say(f"registered run {run_id} (prefix {s.prefix}) in {time.monotonic() - t0:.2f} s")
        sim = self.start_sim(sim_config(dag, s.limit, s.fail_rate, s.seed, s.max_attempts))

        self.logdir = Path(tempfile.mkdtemp(prefix="swarm-redis-demo-"))
        env = {**os.environ, AUTHKEY_ENV: sim.authkey_hex}
        self.pool = pool = ReplicaPool(
            replica_command(url, s.prefix, run_id, sim.address), env, self.logdir
        )
        start = time.monotonic()
        for _ in range(s.replicas):
            pool.start_one()
        self.say(
            f"started {s.replicas} replicas (pids {', '.join(map(str, pool.pids))})"
            + (f"; killing one every {s.kill_every:g} s" if s.kill_every > 0 else "")
        )
        if self._drive(result, keys, start):
            self._await_exit(keys, pool)
        result.seconds = round(time.monotonic() - start, 2)
        pool.stop()
        result.replica_crashes = len(pool.crashes)
        result.kills = pool.kills
        self._finish(result, keys, sim.stop(), dag.upstreams)
        for serial, code in pool.crashes[:3]:
            self.say(f"replica {serial} exited with status {code}; log tail:")
            self.say(pool.log_tail(serial))
        if s.purge and self.embedded is None:
            self.say(f"purged {_purge(self.client, s.prefix, run_id)} keys of run {run_id}")
        elif self.embedded is None:
            self.say(
                f"run {run_id} kept under prefix {s.prefix!r}: inspect with "
                f"`swarm-redis --prefix {s.prefix} status {run_id}`, "
                f"remove with `swarm-redis --prefix {s.prefix} purge {run_id} --yes`"
            )
        return EXIT_OK if result.ok else EXIT_FAILED

    def _drive(self, result: DemoResult, keys: RunKeys, start: float) -> bool:
        """Show the live view and kill replicas until the run ends; False on timeout.

        The run ends when every task is final or the leader gave it a terminal status (a run
        with a task that failed for good ends in ERROR, its downstreams never run).
        """
        s = self.s
        pool = self.pool
        assert pool is not None
        tty = not s.json and sys.stdout.isatty()
        self.view = view = LiveView(self.err if s.json else sys.stdout, tty=tty)
        next_kill = start + s.kill_every if s.kill_every > 0 else math.inf
        deadline = start + s.timeout
        with view:
            while True:
                snap = read_snapshot(self.client, keys)
                _fill_from_snapshot(result, snap)
                now = time.monotonic()
                result.seconds = round(now - start, 2)
                result.kills = pool.kills
                if snap.all_final or snap.terminal:
                    view.update(snap, alive=pool.alive(), wanted=s.replicas, kills=pool.kills)
                    return True
                if now >= deadline:
                    result.timed_out = True
                    return False
                for gone in pool.collect_exited():
                    self.say(f"replica {gone.serial} exited by itself ({gone.proc.returncode})")
                while pool.alive() < s.replicas:
                    pool.start_one()
                finished = snap.counts["D"] + snap.counts["F"]
                early = pool.kills == 0 and finished >= FIRST_KILL_SHARE * snap.tasks
                if now >= next_kill or (s.kill_every > 0 and early):
                    pid = pool.kill_random(self.rng)
                    pool.start_one()
                    next_kill = now + s.kill_every
                    if not view.tty:
                        self.say(f"killed replica pid {pid} (SIGKILL), started a replacement")
                view.update(snap, alive=pool.alive(), wanted=s.replicas, kills=pool.kills)
                time.sleep(0.2)

    def _await_exit(self, keys: RunKeys, pool: ReplicaPool) -> None:
        """Wait (bounded) for the leader to finalize the run and every replica to leave."""
        grace = time.monotonic() + max(5.0, 4 * LEASE_S)
        while time.monotonic() < grace:
            if read_snapshot(self.client, keys).terminal and pool.alive() == 0:
                return
            time.sleep(0.1)

    def _finish(
        self,
        result: DemoResult,
        keys: RunKeys,
        report: SimReport | None,
        upstreams: Mapping[int, Sequence[int]],
    ) -> None:
        """Fill the verdict from Redis, the server's final report and the checker."""
        _fill_from_snapshot(result, read_snapshot(self.client, keys))
        if report is not None:
            _fill_from_report(result, report, self.client, keys, upstreams)
        else:
            result.sim_problems.append("the simulated server died before its final report")
        _fill_drift(result, self.client, keys)

    # parts for docker-compose --------------------------------------------------------------------

    def run_seed(self) -> int:
        s = self.s
        self.connect()
        run_id = self.run_id()
        dag = build_dag(s.tasks, s.shape, limit=s.limit, seed=s.seed)
        register_run(self.client, s.prefix, run_id, dag, s.limit)
        self.say(f"registered run {run_id} (prefix {s.prefix}): {dag.describe()}")
        return EXIT_OK

    def run_sim(self, result_box: list[DemoResult]) -> int:
        s = self.s
        if s.run is None:
            self.say("--role sim needs --run")
            return EXIT_USAGE
        host, _, port = s.listen.rpartition(":")
        if (
            host.strip("[]") not in ("127.0.0.1", "localhost", "::1")
            and not os.environ.get(AUTHKEY_ENV, "").strip()
        ):
            self.say(f"--listen {s.listen} is not loopback: set {AUTHKEY_ENV} (hex, >= 16 bytes)")
            return EXIT_USAGE
        _, backend = self.connect()
        keys = RunKeys(s.prefix, s.run)
        try:
            state = RedisSwarmState.attach(self.client, s.run, prefix=s.prefix)
        except UnknownRunError:
            self.say(f"run {s.run} not found under prefix {s.prefix!r}: seed it first")
            return EXIT_USAGE
        config = SimConfig.from_state(
            state,
            step_s=STEP_S,
            fail_rate=s.fail_rate,
            max_attempts=s.max_attempts,
            seed=s.seed,
        )
        sim = self.start_sim(config, host or "127.0.0.1", int(port or 0))
        result = self.new_result(backend, s.run, 0, config.workflow_limit)
        result_box.append(result)
        start = time.monotonic()
        while not read_snapshot(self.client, keys).terminal:
            if time.monotonic() - start >= s.timeout:
                result.timed_out = True
                break
            time.sleep(0.5)
        result.seconds = round(time.monotonic() - start, 2)
        self._finish(result, keys, sim.stop(), config.upstreams)
        return EXIT_OK if result.ok else EXIT_FAILED


def _sim_key() -> bytes:
    """The simulated server's authkey: ``SWARM_SIM_AUTHKEY`` (hex) if set, else random."""
    env = os.environ.get(AUTHKEY_ENV, "").strip()
    if not env:
        return secrets.token_bytes(16)
    try:
        return bytes.fromhex(env)
    except ValueError:
        raise InvalidInputError(f"{AUTHKEY_ENV} must be hex (e.g. openssl rand -hex 16)") from None


def run_demo(args: argparse.Namespace) -> int:
    """Run ``swarm-redis demo`` with parsed arguments; the exit status (0: every check passed).

    Exit statuses: 0 passed, 1 a check failed (or an error), 2 bad usage, 5 Redis unreachable,
    130 interrupted (SIGINT), 143 terminated (SIGTERM).
    """
    if getattr(args, "jobmon", False):
        from swarm_redis.jobmon.demo import run_jobmon_demo  # needs jobmon

        return run_jobmon_demo(args)
    s = _settings(args)
    problem = _check(s)
    if problem is not None:
        print(f"swarm-redis demo: {problem}", file=sys.stderr)
        return EXIT_USAGE
    # With --json, stdout carries only the final JSON line; humans read stderr.
    human = sys.stderr if s.json else sys.stdout

    def say(text: str) -> None:
        print(text, file=human, flush=True)

    demo = _Demo(s, say, human)
    box: list[DemoResult] = []
    code = EXIT_FAILED
    error = ""
    try:
        with _sigterm_unwinds():
            try:
                if s.role == "seed":
                    code = demo.run_seed()
                elif s.role == "sim":
                    code = demo.run_sim(box)
                else:
                    code = demo.run_all(box)
            finally:
                demo.cleanup()
    except KeyboardInterrupt:
        code = EXIT_INTERRUPTED
        if box:
            box[0].interrupted = True
        say("interrupted: replicas, simulated server and private Redis stopped")
    except _Terminated:
        code = EXIT_TERMINATED
        if box:
            box[0].interrupted = True
        say("terminated: replicas, simulated server and private Redis stopped")
    except (redis.ConnectionError, redis.TimeoutError, EmbeddedRedisError) as e:
        code, error = EXIT_CONNECTION, f"cannot reach Redis: {e}"
    except (redis.RedisError, SwarmRedisError, OSError) as e:
        code, error = EXIT_FAILED, f"{type(e).__name__}: {e}"
    if error:
        say(f"swarm-redis demo: {error}")
    if box:
        result = box[0]
        result.error = error
        say(_verdict_text(result))
        if s.json:
            print(json.dumps(result.to_json(), sort_keys=True), flush=True)
    elif s.json and error:
        print(json.dumps({"error": error, "exit_code": code}), flush=True)
    return code


def add_demo_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``demo`` command to the CLI's subparsers; returns its parser.

    ``--url``, ``--prefix`` and ``--json`` default to "not given" (SUPPRESS), so the CLI's
    global options of the same names keep their values when given before ``demo``.
    """
    p: argparse.ArgumentParser = subparsers.add_parser(
        "demo",
        help="several replicas share a run, one is killed every few seconds; verdict at the end",
        description="Several replica processes share one run; a random one is SIGKILLed every "
        "few seconds and replaced; the run still finishes, and a verdict checks it from Redis, "
        "the simulated server's record and the consistency checker. Exit status 0 when every "
        "check passed, 1 when one failed, 130 on Ctrl-C.",
    )
    p.add_argument(
        "--jobmon",
        action="store_true",
        help="run a real jobmon workflow on a local jobmon server instead (needs jobmon; "
        "see the README, 'Use with jobmon')",
    )
    p.add_argument("--tasks", type=int, default=3000, help="number of tasks (default 3000)")
    p.add_argument("--replicas", type=int, default=3, help="replica processes (default 3)")
    p.add_argument(
        "--kill-every",
        type=float,
        default=4.0,
        metavar="S",
        help="SIGKILL a random replica every S seconds and start another (the first one at "
        "30%% done at the latest); 0: never (default 4)",
    )
    p.add_argument("--shape", choices=SHAPES, default="layered", help="DAG shape (default layered)")
    p.add_argument(
        "--fail-rate",
        type=float,
        default=0.05,
        metavar="P",
        help="share of task runs that fail on the simulated server (default 0.05)",
    )
    p.add_argument("--limit", type=int, default=200, help="workflow limit (default 200)")
    p.add_argument(
        "--max-attempts",
        type=int,
        default=4,
        help="a task failing this many times is ERROR_FATAL; its downstreams never run (4)",
    )
    p.add_argument("--seed", type=int, default=None, help="random seed (DAG, server, kills)")
    p.add_argument("--run", type=int, default=None, help="workflow run id (default: random)")
    p.add_argument(
        "--timeout", type=float, default=300.0, help="give up after this many seconds (300)"
    )
    p.add_argument(
        "--purge", action="store_true", help="delete the run's keys at the end (with --url)"
    )
    p.add_argument(
        "--role",
        choices=ROLES,
        default="all",
        help="all (default); seed: register the DAG and exit; sim: serve the simulated server "
        "for a registered run until it is final (docker-compose)",
    )
    p.add_argument(
        "--listen",
        default="127.0.0.1:7000",
        metavar="HOST:PORT",
        help="address of the simulated server with --role sim (default 127.0.0.1:7000; listen "
        "elsewhere only on a private network, with SWARM_SIM_AUTHKEY set to a key of your own)",
    )
    p.add_argument(
        "--url",
        default=argparse.SUPPRESS,
        help="Redis URL (default: REDIS_URL, else a private redis-server, else fakeredis)",
    )
    p.add_argument("--prefix", default=argparse.SUPPRESS, help="key prefix (default swarm)")
    p.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print the verdict as one JSON object on the last line of stdout",
    )
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m swarm_redis.demo``: the demo without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="swarm-redis")
    add_demo_parser(parser.add_subparsers(dest="command", required=True))
    return run_demo(parser.parse_args(["demo", *(argv if argv is not None else sys.argv[1:])]))


if __name__ == "__main__":
    sys.exit(main())
