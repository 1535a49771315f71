"""The benchmark scenarios: lifecycle, replicas, flatness, blocking, memory, redis_share and
jobmon_tick (in :mod:`swarm_redis.bench.jobmon_tick`).

Each scenario is a function of a :class:`Context` returning a JSON-ready dict of raw figures.
Sizes come from :class:`BenchConfig` (full, ``--quick`` = 1/10, and a hidden ``scale``).
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing as mp
import os
import platform
import secrets
import statistics
import sys
import time
import traceback
from array import array
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any, TypeVar

import redis

from swarm_redis.bench.alternatives import NaiveState, PipelinedState
from swarm_redis.bench.jobmon_tick import jobmon_tick
from swarm_redis.demo.embedded import EmbeddedRedis, connect, resolve_url
from swarm_redis.engine.keys import RUN_KEY_NAMES
from swarm_redis.records import ArrayRecord
from swarm_redis.state import RedisSwarmState
from swarm_redis.testing.dags import DEFAULT_WIDTH, Dag, DagShape, build_dag
from swarm_redis.testing.oracle import SwarmState
from swarm_redis.update import StateUpdate

#: Scenario names, in the order they run (memory before flatness and blocking: they share runs).
SCENARIOS: tuple[str, ...] = (
    "lifecycle",
    "redis_share",
    "replicas",
    "memory",
    "flatness",
    "blocking",
    "jobmon_tick",
)
#: Workflow limit of benchmark runs: high enough never to hold a batch back.
RUN_LIMIT = 1_000_000_000
#: Limit of every array.
ARRAY_LIMIT = 1_000_000
REPLICA_COUNTS: tuple[int, ...] = (1, 2, 4)
_SPAWN = mp.get_context("spawn")


# --- configuration ----------------------------------------------------------------------------


@dataclass
class BenchConfig:
    """What to run and at which sizes.

    Args:
        quick: 1/10 of the full sizes (memory, flatness and blocking on 100k-task runs).
        scale: Extra factor on every size (hidden option, for smoke tests).
        url: Redis URL; None: ``REDIS_URL``, else a private embedded server.
        only: Scenarios to run (default all).
        batch_size: Tasks per claim in lifecycle and replicas.
        naive_budget_s: Seconds the ``naive`` lifecycle may run before it is cut short.
        profile_dir: Write a pyinstrument profile of the lifecycle's Redis path here.
        breakdown: Also run the lifecycle's Redis path with per-operation Redis statistics.
        repeat: Run each lifecycle implementation (but naive) this often; keep the fastest.
    """

    quick: bool = False
    scale: float = 1.0
    url: str | None = None
    only: tuple[str, ...] = SCENARIOS
    batch_size: int = 500
    naive_budget_s: float | None = None
    profile_dir: str | None = None
    breakdown: bool = False
    repeat: int = 1

    def _n(self, full: int) -> int:
        factor = (0.1 if self.quick else 1.0) * self.scale
        return max(20, round(full * factor))

    @property
    def lifecycle_tasks(self) -> int:
        """Tasks of the lifecycle and replicas DAG."""
        return self._n(100_000)

    @property
    def flatness_sizes(self) -> tuple[int, ...]:
        """Run sizes of the flatness scenario (10k/100k/1M; quick: 10k/100k)."""
        small = max(20, round(10_000 * self.scale))
        if self.quick:
            return (small, small * 10)
        return (small, small * 10, small * 100)

    @property
    def big_tasks(self) -> int:
        """Tasks of the memory and blocking run (1M; quick: 100k)."""
        return self.flatness_sizes[-1]

    @property
    def blocking_update(self) -> int:
        """Changes in each of the large updates of the blocking scenario."""
        return max(10, self.big_tasks // 10)

    @property
    def update_size(self) -> int:
        """Changes in a flatness update (1,000, fewer when scaled down)."""
        return min(1000, self.flat_width)

    @property
    def flat_width(self) -> int:
        """Layer width of the flatness/memory/blocking runs (one shape for every size)."""
        return max(2, min(DEFAULT_WIDTH, self.flatness_sizes[0] // 10))

    def width_for(self, n: int) -> int:
        """Layer width of a lifecycle-sized DAG of ``n`` tasks."""
        return max(2, min(DEFAULT_WIDTH, n // 10))

    @property
    def naive_budget(self) -> float:
        """Seconds granted to the naive lifecycle."""
        if self.naive_budget_s is not None:
            return self.naive_budget_s
        return (3.0 if self.quick else 20.0) * min(1.0, self.scale)


# --- server figures -----------------------------------------------------------------------------


def server_cpu(client: Any) -> float | None:
    """Redis CPU seconds (user + sys, all threads) so far, or None without INFO."""
    try:
        info = client.info("cpu")
    except redis.ResponseError:
        return None
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def used_memory(client: Any) -> int | None:
    """INFO ``used_memory``, or None without INFO."""
    try:
        return int(client.info("memory")["used_memory"])
    except redis.ResponseError:
        return None


def script_usec(client: Any) -> int | None:
    """Microseconds Redis spent in EVALSHA so far (INFO commandstats), or None."""
    try:
        stats = client.info("commandstats")
    except redis.ResponseError:
        return None
    entry = stats.get("cmdstat_evalsha")
    return int(entry["usec"]) if entry else 0


def _delta(after: float | None, before: float | None) -> float | None:
    return None if after is None or before is None else after - before


def _rate(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else 0.0


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine spent busy so far (all cores, /proc/stat), or None."""
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (fields + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


class LoadWatch:
    """Load of the machine during a measurement: load average and CPU used by everyone."""

    def __init__(self) -> None:
        self.load0 = os.getloadavg()[0]
        self.busy0 = machine_busy_s()
        self.t0 = time.perf_counter()

    def result(self, own_cpu_s: float | None = None) -> dict[str, Any]:
        """Load averages, machine CPU busy, and the part not ours (``own_cpu_s``) if given."""
        wall = time.perf_counter() - self.t0
        busy = _delta(machine_busy_s(), self.busy0)
        out: dict[str, Any] = {
            "loadavg_1m": [round(self.load0, 2), round(os.getloadavg()[0], 2)],
            "machine_busy_cores": round(busy / wall, 2) if busy is not None and wall else None,
        }
        if busy is not None and own_cpu_s is not None:
            out["others_cpu_s"] = round(max(0.0, busy - own_cpu_s), 3)
        return out


# --- context ----------------------------------------------------------------------------------


@dataclass
class RegisteredRun:
    """A run registered by :meth:`Context.registered_run`, shared by memory/flatness/blocking."""

    shape: DagShape
    dag: Dag
    state: RedisSwarmState
    register_s: float
    memory_delta: int | None
    pings: dict[str, float] | None
    used_layers: set[int] = field(default_factory=set)


class Context:
    """The Redis under test, its clients, the key prefix and shared runs of one suite run."""

    def __init__(self, config: BenchConfig) -> None:
        self.config = config
        url, emb = resolve_url(config.url)
        self.url = url
        self.embedded: EmbeddedRedis | None = emb
        self.private = emb is not None and emb.backend == "redis-server"
        self.client = connect(url)
        self.text_client = connect(url, decode_responses=True)
        self.prefix = "bench" + secrets.token_hex(4)
        self._run_ids = itertools.count(1)
        self.runs: dict[int, RegisteredRun] = {}
        self.lifecycle_raw: dict[str, Any] | None = None
        if self.private:
            # the SLOWLOG shows the longest single calls of the blocking scenario
            self.client.config_set("slowlog-log-slower-than", 1000)
            self.client.config_set("slowlog-max-len", 100_000)

    def new_run_id(self) -> int:
        """A run id unused in this suite run (keys are also under a random prefix)."""
        return next(self._run_ids)

    def redis_version(self) -> str:
        """The server's version, or what the backend is when INFO is unavailable."""
        try:
            return str(self.text_client.info("server")["redis_version"])
        except redis.ResponseError:
            return "unknown (no INFO: fakeredis?)"

    def machine(self) -> dict[str, Any]:
        """Cores, Python, Redis version and where Redis runs."""
        import redis as redis_py

        return {
            "cores": os.cpu_count(),
            "python": platform.python_version(),
            "redis_version": self.redis_version(),
            "redis_py": redis_py.__version__,
            "hiredis": bool(redis_py.utils.HIREDIS_AVAILABLE),
            "platform": platform.platform(),
            "server": (
                "private redis-server (embedded, unix socket)"
                if self.private
                else ("embedded fakeredis" if self.embedded else "given URL (may be shared)")
            ),
        }

    def registered_run(self, n: int) -> RegisteredRun:
        """A run of ``n`` tasks (flatness shape), registered once per suite run.

        The first call registers it with a PING probe running and measures the memory delta.
        """
        if n in self.runs:
            return self.runs[n]
        shape = DagShape(n, width=self.config.flat_width)
        dag = build_dag(shape, ARRAY_LIMIT)
        before = used_memory(self.client)
        state = RedisSwarmState(
            1, self.new_run_id(), 1, redis=self.client, prefix=self.prefix,
            max_concurrently_running=RUN_LIMIT,
        )  # fmt: skip
        with PingProbe(self.url) as probe:
            t0 = time.perf_counter()
            state.add_arrays(dag.arrays)
            state.add_tasks(dag.tasks)
            state.enqueue_tasks(dag.roots)
            elapsed = time.perf_counter() - t0
            probe.mark("register", t0, t0 + elapsed)
        after = used_memory(self.client)
        mem = None if after is None or before is None else after - before
        run = RegisteredRun(shape, dag, state, elapsed, mem, probe.stats("register"))
        self.runs[n] = run
        return run

    def cleanup(self) -> None:
        """Delete every key of this suite run, and stop the embedded server."""
        try:
            if self.private:
                self.client.config_set("slowlog-log-slower-than", 10000)
            batch: list[Any] = []
            for key in self.client.scan_iter(match=f"{self.prefix}:*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    self.client.unlink(*batch)
                    batch = []
            if batch:
                self.client.unlink(*batch)
        finally:
            self.client.close()
            self.text_client.close()
            if self.embedded is not None:
                self.embedded.stop()


# --- PING probe --------------------------------------------------------------------------------


def _pinger(url: str, conn: Connection, interval_s: float) -> None:
    """Child process: PING until told to stop; send back (start times, latencies)."""
    client = connect(url, protocol=3)
    starts, lats = array("d"), array("d")
    conn.send("ready")
    while not conn.poll():
        t = time.perf_counter()
        client.ping()
        lats.append(time.perf_counter() - t)
        starts.append(t)
        time.sleep(interval_s)
    conn.recv()
    conn.send((starts.tobytes(), lats.tobytes()))
    client.close()


P = TypeVar("P", bound="PingProbe")


class PingProbe:
    """A separate process PINGs Redis every ``interval_s``; latencies per marked window.

    A process, not a thread: the benchmark's own Python must not delay the probe (GIL).
    """

    def __init__(self, url: str, interval_s: float = 0.0005) -> None:
        self.url = url
        self.interval_s = interval_s
        self.windows: dict[str, tuple[float, float]] = {}
        self.starts: list[float] = []
        self.lats: list[float] = []
        self._proc: Any = None
        self._conn: Connection | None = None

    def _worker(self) -> Callable[[str, Connection, float], None]:
        """The function the probe process runs."""
        return _pinger

    def __enter__(self: P) -> P:
        parent, child = _SPAWN.Pipe()
        self._proc = _SPAWN.Process(
            target=self._worker(), args=(self.url, child, self.interval_s), daemon=True
        )
        self._proc.start()
        self._conn = parent
        if not parent.poll(30) or parent.recv() != "ready":
            raise RuntimeError("PING probe did not start")
        return self

    def __exit__(self, *exc: object) -> None:
        conn = self._conn
        if conn is not None:
            conn.send("stop")
            if conn.poll(30):
                raw_starts, raw_lats = conn.recv()
                starts, lats = array("d"), array("d")
                starts.frombytes(raw_starts)
                lats.frombytes(raw_lats)
                self.starts, self.lats = list(starts), list(lats)
        if self._proc is not None:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()

    def mark(self, name: str, start: float, stop: float) -> None:
        """Name a time window (``time.perf_counter`` values, comparable across processes)."""
        self.windows[name] = (start, stop)

    def stats(self, *names: str) -> dict[str, float]:
        """PING count, max, p99 and p50 (ms) of the PINGs sent inside the named windows."""
        spans = [self.windows[n] for n in names]
        sel = [
            lat * 1000
            for t, lat in zip(self.starts, self.lats)
            if any(a <= t <= b for a, b in spans)
        ]
        return _latency_stats(sel)


def _latency_stats(ms: Sequence[float]) -> dict[str, float]:
    if not ms:
        return {"pings": 0, "max_ms": 0.0, "p99_ms": 0.0, "p50_ms": 0.0}
    ordered = sorted(ms)
    return {
        "pings": len(ordered),
        "max_ms": round(ordered[-1], 3),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 3),
        "p50_ms": round(ordered[len(ordered) // 2], 3),
    }


# --- lifecycle: the four implementations ----------------------------------------------------------


class _Claims:
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
        if self.replica is not None:
            if time.monotonic() - self._beat > 5.0:
                self.state.heartbeat(self.replica)
                self._beat = time.monotonic()
            batch = self.state.claim_batch(self.replica, self.batch_size)
            return None if batch is None else (batch, list(batch.task_ids))
        tasks = self.state.dequeue_tasks(self.batch_size)
        return (None, [t.task_id for t in tasks]) if tasks else None

    def ack(self, token: Any, statuses: dict[int, str]) -> None:
        if self.replica is not None:
            self.state.ack_batch(self.replica, token, statuses)
        else:
            self.state.apply(StateUpdate(task_statuses=statuses))


def _lifecycle_loop(
    take: Callable[[], tuple[Any, list[int]] | None],
    ack: Callable[[Any, dict[int, str]], Any],
    apply: Callable[[dict[int, str]], Any],
    deadline: float | None = None,
) -> int:
    """claim -> Q (ack) -> R -> D until nothing is claimable; tasks done."""
    done = 0
    while deadline is None or time.perf_counter() < deadline:
        got = take()
        if got is None:
            break
        token, ids = got
        ack(token, dict.fromkeys(ids, "Q"))
        apply(dict.fromkeys(ids, "R"))
        apply(dict.fromkeys(ids, "D"))
        done += len(ids)
    return done


def _measure(ctx: Context, body: Callable[[], int]) -> dict[str, Any]:
    """Run ``body`` (returns tasks done); wall, client CPU, Redis CPU and script time."""
    cpu0, usec0 = server_cpu(ctx.client), script_usec(ctx.client)
    load = LoadWatch()
    c0, t0 = time.process_time(), time.perf_counter()
    done = body()
    wall, client = time.perf_counter() - t0, time.process_time() - c0
    cpu1, usec1 = server_cpu(ctx.client), script_usec(ctx.client)
    srv = _delta(cpu1, cpu0)
    scripts = _delta(usec1, usec0)
    return {
        "load": load.result(client + (srv or 0.0)),
        "tasks": done,
        "seconds": round(wall, 4),
        "tasks_per_s": round(_rate(done, wall), 1),
        "client_cpu_s": round(client, 4),
        "redis_cpu_s": None if srv is None else round(srv, 4),
        "redis_script_s": None if scripts is None else round(scripts / 1e6, 4),
        "us_per_task_client": round(client / done * 1e6, 2) if done else None,
        "us_per_task_redis": round(srv / done * 1e6, 2) if done and srv is not None else None,
    }


class OpStats:
    """Per-operation Redis CPU, client CPU and Redis commands (INFO around every call).

    Costs two INFO round trips per call; meaningful on a private server only.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self.redis_cpu: defaultdict[str, float] = defaultdict(float)
        self.client_cpu: defaultdict[str, float] = defaultdict(float)
        self.calls: dict[str, Counter[str]] = defaultdict(Counter)
        self.usec: dict[str, Counter[str]] = defaultdict(Counter)

    def _snap(self) -> tuple[dict[str, tuple[int, int]], float]:
        stats = self.client.info("commandstats")
        cpu = self.client.info("cpu")
        cmds = {k[8:]: (int(v["calls"]), int(v["usec"])) for k, v in stats.items()}
        main = float(cpu["used_cpu_user_main_thread"]) + float(cpu["used_cpu_sys_main_thread"])
        return cmds, main

    def wrap(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        """``fn`` with its costs added under ``name``."""

        def call(*args: Any) -> Any:
            before, cpu0 = self._snap()
            c0 = time.process_time()
            out = fn(*args)
            self.client_cpu[name] += time.process_time() - c0
            after, cpu1 = self._snap()
            self.redis_cpu[name] += cpu1 - cpu0
            for cmd, (n, us) in after.items():
                n0, us0 = before.get(cmd, (0, 0))
                if n > n0 and cmd != "info":
                    self.calls[name][cmd] += n - n0
                    self.usec[name][cmd] += us - us0
            return out

        return call

    def result(self, tasks: int) -> dict[str, Any]:
        """Per operation and per task: Redis and client CPU (µs), commands and their µs."""
        out: dict[str, Any] = {}
        for name in self.redis_cpu:
            top = sorted(self.usec[name].items(), key=lambda kv: -kv[1])
            out[name] = {
                "redis_cpu_us": round(self.redis_cpu[name] / tasks * 1e6, 2),
                "client_cpu_us": round(self.client_cpu[name] / tasks * 1e6, 2),
                "commands": {
                    c: [round(self.calls[name][c] / tasks, 4), round(us / tasks, 2)]
                    for c, us in top
                },
            }
        return out


def run_redis_lifecycle(ctx: Context, shape: DagShape, mode: str = "measure") -> dict[str, Any]:
    """RedisSwarmState: claim_batch -> ack_batch(Q) -> apply(R) -> apply(D, propagating).

    ``mode``: "measure" (timed), "profile" (pyinstrument) or "breakdown" (:class:`OpStats`).
    """
    cfg = ctx.config
    dag = build_dag(shape, ARRAY_LIMIT)
    state = RedisSwarmState(
        1, ctx.new_run_id(), 1, redis=ctx.client, prefix=ctx.prefix,
        max_concurrently_running=RUN_LIMIT,
    )  # fmt: skip
    t0 = time.perf_counter()
    state.add_arrays(dag.arrays)
    state.add_tasks(dag.tasks)
    state.enqueue_tasks(dag.roots)
    setup = time.perf_counter() - t0
    claims = _Claims(state, cfg.batch_size)
    take, ack = claims.take, claims.ack

    def apply(statuses: dict[int, str]) -> Any:
        return state.apply(StateUpdate(task_statuses=statuses))

    apply_r, apply_d = apply, apply
    stats = OpStats(ctx.client)
    if mode == "breakdown":
        take, ack = stats.wrap("claim", take), stats.wrap("ack Q", ack)
        apply_r, apply_d = stats.wrap("apply R", apply), stats.wrap("apply D", apply)

    def body() -> int:
        return _lifecycle_loop(
            take, ack, lambda s: (apply_r if next(iter(s.values())) == "R" else apply_d)(s)
        )

    if mode == "profile":
        return {"profile": _profile(body, cfg.profile_dir or ".", "lifecycle_redis")}
    if mode == "breakdown":
        return stats.result(body())
    out = _measure(ctx, body)
    out["register_s"] = round(setup, 3)
    out["claim_api"] = claims.api
    counts = state.counts()
    out["all_done"] = counts["D"] == shape.n_tasks
    return out


def _profile(body: Callable[[], int], folder: str, name: str) -> str:
    """Run ``body`` under pyinstrument; write text and HTML reports; the text path."""
    from pyinstrument import Profiler

    os.makedirs(folder, exist_ok=True)
    profiler = Profiler(interval=0.0005)
    profiler.start()
    body()
    profiler.stop()
    path = os.path.join(folder, name)
    with open(path + ".txt", "w", encoding="utf-8") as f:
        f.write(profiler.output_text(unicode=True, color=False, show_all=False))
    with open(path + ".html", "w", encoding="utf-8") as f:
        f.write(profiler.output_html())
    return path + ".txt"


def run_memory_lifecycle(shape: DagShape, batch_size: int) -> dict[str, Any]:
    """memory.SwarmState: dequeue, apply Q, R, D, propagate_completions and enqueue."""
    dag = build_dag(shape, ARRAY_LIMIT)
    state = SwarmState(1, 1, 1, max_concurrently_running=RUN_LIMIT)
    for a in dag.arrays:
        state.add_array(a)
    for t in dag.tasks:
        state.add_task(t)
    for t in dag.roots:
        state.enqueue_task(t)
    load = LoadWatch()
    c0, t0 = time.process_time(), time.perf_counter()
    done = 0
    while state.ready_to_run:
        batch: list[Any] = []
        while state.ready_to_run and len(batch) < batch_size:
            task = state.dequeue_task()
            if task is not None:
                batch.append(task)
        ids = [t.task_id for t in batch]
        state.apply_update(StateUpdate(task_statuses=dict.fromkeys(ids, "Q")))
        state.apply_update(StateUpdate(task_statuses=dict.fromkeys(ids, "R")))
        changed = state.apply_update(StateUpdate(task_statuses=dict.fromkeys(ids, "D")))
        for ready in state.propagate_completions(changed):
            state.enqueue_task(ready)
        done += len(ids)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return {
        "load": load.result(cpu),
        "tasks": done,
        "seconds": round(wall, 4),
        "tasks_per_s": round(_rate(done, wall), 1),
        "client_cpu_s": round(cpu, 4),
        "us_per_task_client": round(cpu / done * 1e6, 2) if done else None,
        "all_done": state.get_done_count() == shape.n_tasks,
    }


def _pipelined_setup(ctx: Context, shape: DagShape, run_id: int) -> tuple[Dag, PipelinedState]:
    dag = build_dag(shape, ARRAY_LIMIT)
    alt = PipelinedState(ctx.text_client, run_id, prefix=ctx.prefix)
    alt.create(RUN_LIMIT)
    alt.add_arrays(dag.arrays)
    alt.add_tasks(dag.tasks)
    alt.enqueue(dag.roots)
    return dag, alt


def run_pipelined_lifecycle(ctx: Context, shape: DagShape) -> dict[str, Any]:
    """PipelinedState (WATCH/MULTI/EXEC, no Lua): claim -> ack(Q) -> R -> D."""
    _, alt = _pipelined_setup(ctx, shape, ctx.new_run_id())
    replica = alt.join("bench-pipelined")

    def take() -> tuple[Any, list[int]] | None:
        b = alt.claim(replica, ctx.config.batch_size)
        return None if b is None else (b, list(b.task_ids))

    out = _measure(
        ctx,
        lambda: _lifecycle_loop(take, lambda b, s: alt.ack(replica, b, s), lambda s: alt.apply(s)),
    )
    out["transactions"] = alt.transactions
    out["watch_retries"] = alt.retries
    out["round_trips"] = alt.round_trips
    out["all_done"] = alt.counts()["D"] == shape.n_tasks
    return out


def run_naive_lifecycle(ctx: Context, shape: DagShape, budget_s: float) -> dict[str, Any]:
    """NaiveState (one command per call), cut short after ``budget_s`` seconds."""
    run_id = ctx.new_run_id()
    dag, _ = _pipelined_setup(ctx, shape, run_id)
    alt = NaiveState(ctx.text_client, run_id, prefix=ctx.prefix)
    alt.register_objects(dag.tasks)
    replica = alt.join("bench-naive")

    def take() -> tuple[Any, list[int]] | None:
        b = alt.claim(replica, ctx.config.batch_size)
        return None if b is None else (b, list(b.task_ids))

    deadline = time.perf_counter() + budget_s
    out = _measure(
        ctx,
        lambda: _lifecycle_loop(
            take, lambda b, s: alt.ack(replica, b, s), lambda s: alt.apply(s), deadline
        ),
    )
    out["round_trips"] = alt.round_trips
    out["budget_s"] = budget_s
    out["complete"] = out["tasks"] == shape.n_tasks
    return out


def lifecycle(ctx: Context) -> dict[str, Any]:
    """Scenario 1: tasks/s of the four implementations on the same DAG and batch size."""
    cfg = ctx.config
    shape = DagShape(cfg.lifecycle_tasks, width=cfg.width_for(cfg.lifecycle_tasks))
    out: dict[str, Any] = {"dag": shape.describe(), "batch_size": cfg.batch_size}
    out["repeat"] = cfg.repeat
    runs: dict[str, Callable[[], dict[str, Any]]] = {
        "memory": lambda: run_memory_lifecycle(shape, cfg.batch_size),
        "redis": lambda: run_redis_lifecycle(ctx, shape),
        "pipelined": lambda: run_pipelined_lifecycle(ctx, shape),
    }
    for name, fn in runs.items():
        tries = [fn() for _ in range(cfg.repeat)]
        out[name] = max(tries, key=lambda x: float(x["tasks_per_s"]))
        out[name]["tasks_per_s_all"] = [x["tasks_per_s"] for x in tries]
    ctx.lifecycle_raw = out["redis"]
    out["naive"] = run_naive_lifecycle(ctx, shape, cfg.naive_budget)
    for name in ("redis", "memory", "pipelined", "naive"):
        x = out[name]
        out[f"{name}_tasks_per_s"] = x["tasks_per_s"]
        if x.get("us_per_task_client") is not None:
            # load-independent cost: CPU of the client plus CPU of Redis, per task
            x["cpu_us_per_task"] = round(
                x["us_per_task_client"] + (x.get("us_per_task_redis") or 0), 2
            )
    r = out["redis_tasks_per_s"]
    out["redis_vs_memory"] = round(r / out["memory_tasks_per_s"], 4)
    out["redis_vs_pipelined"] = round(r / out["pipelined_tasks_per_s"], 3)
    out["redis_vs_naive"] = (
        round(r / out["naive_tasks_per_s"], 2) if out["naive"]["tasks"] else None
    )
    if cfg.profile_dir:
        out["profile"] = run_redis_lifecycle(ctx, shape, "profile")["profile"]
    if cfg.breakdown:
        out["breakdown"] = run_redis_lifecycle(ctx, shape, "breakdown")
    return out


def redis_share(ctx: Context) -> dict[str, Any]:
    """Scenario 6: Redis CPU against the client's CPU during the lifecycle's Redis path."""
    raw = ctx.lifecycle_raw
    if raw is None:
        cfg = ctx.config
        shape = DagShape(cfg.lifecycle_tasks, width=cfg.width_for(cfg.lifecycle_tasks))
        raw = run_redis_lifecycle(ctx, shape)
    srv, cli = raw["redis_cpu_s"], raw["client_cpu_s"]
    return {
        "redis_cpu_s": srv,
        "redis_script_s": raw["redis_script_s"],
        "client_cpu_s": cli,
        "ratio": None if srv is None or not cli else round(srv / cli, 3),
        "tasks": raw["tasks"],
        "seconds": raw["seconds"],
    }


# --- replicas ---------------------------------------------------------------------------------


def _replica_worker(
    url: str, prefix: str, run_id: int, batch_size: int, conn: Connection, start: Any
) -> None:
    """Child process: attach to the run, wait for the start signal, work until all is final."""
    try:
        client = connect(url)
        t0 = time.perf_counter()
        state = RedisSwarmState.attach(client, run_id, prefix=prefix)
        claims = _Claims(state, batch_size)
        conn.send(("ready", time.perf_counter() - t0))
        start.wait()
        c0 = time.process_time()
        done = idle = 0
        while True:
            got = claims.take()
            if got is None:
                if state.all_tasks_final():
                    break
                idle += 1
                time.sleep(0.001)
                continue
            token, ids = got
            claims.ack(token, dict.fromkeys(ids, "Q"))
            state.apply(StateUpdate(task_statuses=dict.fromkeys(ids, "R")))
            state.apply(StateUpdate(task_statuses=dict.fromkeys(ids, "D")))
            done += len(ids)
        if claims.replica is not None:
            state.leave(claims.replica)
        result = {
            "tasks": done,
            "end": time.perf_counter(),
            "client_cpu_s": time.process_time() - c0,
            "idle_polls": idle,
            "claim_api": claims.api,
        }
        conn.send(("done", result))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        raise


def _replica_round(ctx: Context, shape: DagShape, k: int) -> dict[str, Any]:
    dag = build_dag(shape, ARRAY_LIMIT)
    run_id = ctx.new_run_id()
    state = RedisSwarmState(
        1, run_id, 1, redis=ctx.client, prefix=ctx.prefix, max_concurrently_running=RUN_LIMIT
    )
    state.add_arrays(dag.arrays)
    state.add_tasks(dag.tasks)
    state.enqueue_tasks(dag.roots)
    del dag
    start = _SPAWN.Event()
    procs, conns = [], []
    for _ in range(k):
        parent, child = _SPAWN.Pipe()
        p = _SPAWN.Process(
            target=_replica_worker,
            args=(ctx.url, ctx.prefix, run_id, ctx.config.batch_size, child, start),
            daemon=True,
        )
        p.start()
        procs.append(p)
        conns.append(parent)
    attach = []
    try:
        for c in conns:
            kind, value = c.recv()
            if kind != "ready":
                raise RuntimeError(f"replica failed to start:\n{value}")
            attach.append(value)
        cpu0 = server_cpu(ctx.client)
        load = LoadWatch()
        t0 = time.perf_counter()
        start.set()
        results = []
        for c in conns:
            kind, value = c.recv()
            if kind != "done":
                raise RuntimeError(f"replica failed:\n{value}")
            results.append(value)
        cpu1 = server_cpu(ctx.client)
    finally:
        for p in procs:
            p.join(30)
            if p.is_alive():
                p.kill()
    wall = max(r["end"] for r in results) - t0
    total = sum(r["tasks"] for r in results)
    srv = _delta(cpu1, cpu0)
    clients = sum(r["client_cpu_s"] for r in results)
    return {
        "load": load.result(clients + (srv or 0.0)),
        "replicas": k,
        "tasks": total,
        "seconds": round(wall, 4),
        "tasks_per_s": round(_rate(total, wall), 1),
        "per_replica_tasks": [r["tasks"] for r in results],
        "attach_s": [round(a, 3) for a in attach],
        "clients_cpu_s": round(clients, 3),
        "redis_cpu_s": None if srv is None else round(srv, 3),
        "idle_polls": sum(r["idle_polls"] for r in results),
        "claim_api": results[0]["claim_api"],
        "all_done": state.counts()["D"] == shape.n_tasks,
    }


def replicas(ctx: Context) -> dict[str, Any]:
    """Scenario 2: 1, 2 and 4 replica processes sharing one run; aggregate tasks/s."""
    cfg = ctx.config
    shape = DagShape(cfg.lifecycle_tasks, width=cfg.width_for(cfg.lifecycle_tasks))
    rounds = {str(k): _replica_round(ctx, shape, k) for k in REPLICA_COUNTS}
    per_s = {k: r["tasks_per_s"] for k, r in rounds.items()}
    return {
        "dag": shape.describe(),
        "batch_size": cfg.batch_size,
        "tasks_per_s": per_s,
        "ratio_4_vs_1": round(per_s["4"] / per_s["1"], 3) if per_s["1"] else None,
        "rounds": rounds,
    }


# --- flatness, blocking, memory -------------------------------------------------------------------


def _layers(run: RegisteredRun, count: int, first: int) -> Iterator[list[int]]:
    """``count`` unused layers from ``first`` on (ids), marked as used."""
    layer = first
    while count and layer < run.shape.n_layers - 1:
        if layer not in run.used_layers:
            run.used_layers.add(layer)
            count -= 1
            yield list(run.shape.layer_ids(layer))
        layer += 1


def flatness(ctx: Context, reps: int = 7) -> dict[str, Any]:
    """Scenario 3: one apply_update of 1,000 D changes (propagating) on runs of growing size."""
    cfg = ctx.config
    k = cfg.update_size
    sizes: dict[str, Any] = {}
    for n in cfg.flatness_sizes:
        run = ctx.registered_run(n)
        times, srv, ready = [], [], []
        # as in the lifecycle: the ready layer is claimed and acked (Q), then runs (R); the
        # timed update completes it (D), which credits the next layer and queues it
        claims = _Claims(run.state, cfg.batch_size, ttl_s=3600.0)
        for layer in range(min(reps, run.shape.n_layers - 1)):
            run.used_layers.add(layer)
            ids: list[int] = []
            while len(ids) < k and (got := claims.take()) is not None:
                claims.ack(got[0], dict.fromkeys(got[1], "Q"))
                ids += got[1]
            run.state.apply(StateUpdate(task_statuses=dict.fromkeys(ids, "R")))
            u0 = script_usec(ctx.client)
            t0 = time.perf_counter()
            result = run.state.apply(StateUpdate(task_statuses=dict.fromkeys(ids, "D")))
            times.append((time.perf_counter() - t0) * 1000)
            u = _delta(script_usec(ctx.client), u0)
            if u is not None:
                srv.append(u / 1000)
            ready.append(len(result.ready))
        sizes[str(n)] = {
            "apply_ms_median": round(statistics.median(times), 3),
            "apply_ms_min": round(min(times), 3),
            "apply_ms": [round(t, 3) for t in times],
            "redis_ms_median": round(statistics.median(srv), 3) if srv else None,
            "queued_per_update": ready,
            "register_s": round(run.register_s, 2),
        }
    small, large = str(cfg.flatness_sizes[0]), str(cfg.flatness_sizes[-1])
    med = {n: s["apply_ms_median"] for n, s in sizes.items()}
    low = {n: s["apply_ms_min"] for n, s in sizes.items()}
    return {
        "ratio_min": round(low[large] / low[small], 3) if low[small] else None,
        "update_changes": k,
        "shape": {"width": cfg.flat_width, "fan_in": 3},
        "sizes": sizes,
        "ratio": round(med[large] / med[small], 3) if med[small] else None,
        "ratio_of": f"{large} / {small}",
    }


def _slowlog_reset(ctx: Context) -> None:
    if ctx.private:
        ctx.client.slowlog_reset()


def _slowlog_max_ms(ctx: Context) -> float | None:
    if not ctx.private:
        return None
    entries = ctx.client.slowlog_get(100_000)
    return round(max((int(e["duration"]) for e in entries), default=0) / 1000, 3)


@contextlib.contextmanager
def _chunking(state: RedisSwarmState, budget: int) -> Iterator[None]:
    """Temporarily use another ``chunk_budget`` (the constructor option) on ``state``."""
    core = state._core
    old_budget = core.chunk_budget
    core.chunk_budget = budget
    try:
        yield
    finally:
        core.chunk_budget = old_budget


def _blocking_round(
    ctx: Context, run: RegisteredRun, ids: list[int], probe: PingProbe, tag: str
) -> dict[str, Any]:
    """Apply R then D (propagating) to ``ids`` in one update each; PING figures per phase."""
    phases: dict[str, Any] = {}
    _slowlog_reset(ctx)
    for status in ("R", "D"):
        t0 = time.perf_counter()
        result = run.state.apply(StateUpdate(task_statuses=dict.fromkeys(ids, status)))
        t1 = time.perf_counter()
        probe.mark(tag + status, t0, t1)
        phases[f"{status} x {len(ids)}"] = {
            "seconds": round(t1 - t0, 3),
            "changed": len(result.changed),
            "queued": len(result.ready),
        }
    return {"phases": phases, "slowlog_max_ms": _slowlog_max_ms(ctx)}


def _evalsha_calls(client: Any) -> int | None:
    try:
        entry = client.info("commandstats").get("cmdstat_evalsha")
    except redis.ResponseError:
        return None
    return int(entry["calls"]) if entry else 0


#: Children of the one completion of the blocking scenario's fan-out case (quick: 1/10).
FANOUT_CHILDREN = 500_000


def blocking_fanout(ctx: Context, children: int | None = None) -> dict[str, Any]:
    """Blocking case: ONE completion whose task has 500k children (quick: 50k).

    PING latency from another process, BUSY replies and the longest command while the fan-out
    is credited (in bounded slices, one round trip each) and the children are queued.
    """
    from swarm_redis.records import TaskRecord

    n = children if children is not None else ctx.config._n(FANOUT_CHILDREN)
    state = RedisSwarmState(
        1, ctx.new_run_id(), 1, redis=ctx.client, prefix=ctx.prefix,
        max_concurrently_running=RUN_LIMIT, events_maxlen=1000,
    )  # fmt: skip
    parent = TaskRecord(1, 0, "G", 0, 0)
    kids = [TaskRecord(i, 0, "G", 1, 0) for i in range(2, n + 2)]
    parent.downstream_swarm_tasks = set(kids)
    t0 = time.perf_counter()
    state.add_tasks([parent, *kids])
    register_s = time.perf_counter() - t0
    busy = queued = 0
    _slowlog_reset(ctx)
    with PingProbe(ctx.url) as probe:
        time.sleep(0.2)
        cpu0, calls0 = server_cpu(ctx.client), _evalsha_calls(ctx.client)
        t0 = time.perf_counter()
        try:
            queued = len(state.apply(StateUpdate(task_statuses={1: "D"})).ready)
        except redis.ResponseError as e:
            if "BUSY" not in str(e):
                raise
            busy += 1
        t1 = time.perf_counter()
        probe.mark("fanout", t0, t1)
        cpu = _delta(server_cpu(ctx.client), cpu0)
        calls = _delta(_evalsha_calls(ctx.client), calls0)
    return {
        "children": n,
        "register_s": round(register_s, 3),
        "seconds": round(t1 - t0, 3),
        "queued": queued,
        "busy": busy,
        "script_calls": calls,
        # Redis CPU per script call: what a call costs when Redis is not starved of CPU
        "redis_cpu_ms_per_call": round(cpu / calls * 1000, 3) if cpu and calls else None,
        "slowlog_max_ms": _slowlog_max_ms(ctx),
        **probe.stats("fanout"),
    }


#: Chunk budgets tried besides the default in the blocking scenario.
BLOCKING_VARIANTS: tuple[int, ...] = (500, 2000)


def blocking(ctx: Context) -> dict[str, Any]:
    """Scenario 4: PING latency from another process while the largest updates apply.

    The target is measured with the library's defaults; the variants show what smaller chunks
    would change (the core always sends the chunks of one update one round trip at a time).
    """
    cfg = ctx.config
    run = ctx.registered_run(cfg.big_tasks)
    n_layers = max(1, cfg.blocking_update // run.shape.width)
    first = min(10, run.shape.n_layers // 4)
    default_budget = run.state._core.chunk_budget
    rounds: dict[str, Any] = {}
    with PingProbe(ctx.url) as probe:
        time.sleep(0.2)
        t = time.perf_counter()
        probe.mark("idle", t - 0.2, t)
        ids = [i for layer in _layers(run, n_layers, first) for i in layer]
        n_changes = len(ids)
        rounds["default"] = _blocking_round(ctx, run, ids, probe, "default")
        for budget in BLOCKING_VARIANTS:
            ids = [i for layer in _layers(run, n_layers, first) for i in layer]
            if not ids:
                break
            name = f"budget {budget}"
            with _chunking(run.state, budget):
                rounds[name] = _blocking_round(ctx, run, ids, probe, name)
    for name, r in rounds.items():
        for status, phase in zip(("R", "D"), list(r["phases"])):
            r["phases"][phase].update(probe.stats(name + status))
        overall = probe.stats(name + "R", name + "D")
        r.update(max_ms=overall["max_ms"], p99_ms=overall["p99_ms"], pings=overall["pings"])
    main = rounds.pop("default")
    fanout = blocking_fanout(ctx)
    return {
        "fanout": fanout,
        "run_tasks": cfg.big_tasks,
        "update_changes": n_changes,
        "chunk_budget": default_budget,
        "phases": main["phases"],
        "idle": probe.stats("idle"),
        "register": run.pings,
        "max_ms": main["max_ms"],
        "p99_ms": main["p99_ms"],
        "pings": main["pings"],
        "slowlog_max_ms": main["slowlog_max_ms"],
        "variants": rounds,
        "bounded_calls": bounded_calls(ctx),
    }


# --- blocking: bounded calls at 1M (status-set reads, enqueue/dequeue, claim) ---------------------


def _busy_pinger(url: str, conn: Connection, interval_s: float) -> None:
    """Child process: PING until told to stop; (start times, latencies, BUSY reply times)."""
    client = connect(url, protocol=3)
    starts, lats, busy = array("d"), array("d"), array("d")
    conn.send("ready")
    while not conn.poll():
        t = time.perf_counter()
        try:
            client.ping()
        except redis.ResponseError as e:
            if "BUSY" not in str(e):
                raise
            busy.append(t)
        except redis.TimeoutError:  # blocked past the socket timeout: a (long) latency
            pass
        lats.append(time.perf_counter() - t)
        starts.append(t)
        time.sleep(interval_s)
    conn.recv()
    conn.send((starts.tobytes(), lats.tobytes(), busy.tobytes()))
    client.close()


class BusyPingProbe(PingProbe):
    """A :class:`PingProbe` that also counts BUSY replies (a script past busy-reply-threshold)."""

    def __init__(self, url: str, interval_s: float = 0.0005) -> None:
        super().__init__(url, interval_s)
        self.busy: list[float] = []

    def _worker(self) -> Callable[[str, Connection, float], None]:
        return _busy_pinger

    def __exit__(self, *exc: object) -> None:
        conn = self._conn
        if conn is not None:
            conn.send("stop")
            if conn.poll(60):
                raw = conn.recv()
                got = []
                for part in raw:
                    a = array("d")
                    a.frombytes(part)
                    got.append(list(a))
                self.starts, self.lats, self.busy = got
        if self._proc is not None:
            self._proc.join(10)
            if self._proc.is_alive():
                self._proc.kill()

    def busy_in(self, name: str) -> int:
        a, b = self.windows[name]
        return sum(1 for t in self.busy if a <= t <= b)


def _fill_records(
    client: Any, state: RedisSwarmState, ids: range, array_id: int, status: str
) -> None:
    """Tasks written straight into the run's keys (record + status set): a fast big fixture."""
    keys = state.keys
    for lo in range(ids.start, ids.stop, 20_000):
        part = range(lo, min(lo + 20_000, ids.stop))
        pipe = client.pipeline(transaction=False)
        pipe.hset(keys.task, mapping={i: f"{status}|0|||{array_id}|0|0|" for i in part})
        pipe.sadd(keys.status_set(status), *part)
        pipe.execute()


def _bounded_case(
    ctx: Context, probe: BusyPingProbe, name: str, action: Callable[[], int]
) -> dict[str, Any]:
    """Run ``action`` (returns the tasks it handled) inside a probe window; its figures."""
    _slowlog_reset(ctx)
    t0 = time.perf_counter()
    handled = action()
    t1 = time.perf_counter()
    probe.mark(name, t0, t1)
    return {
        "tasks": handled,
        "seconds": round(t1 - t0, 3),
        "slowlog_max_ms": _slowlog_max_ms(ctx),
    }


def _bounded_sizes(cfg: BenchConfig) -> dict[str, int]:
    """Sizes of the bounded-call cases (full: 1M set, 300k enqueue/dequeue, 60k claim queue)."""
    factor = (0.1 if cfg.quick else 1.0) * cfg.scale
    return {
        "set": max(100, round(1_000_000 * factor)),
        "queue": max(100, round(300_000 * factor)),
        "claim_queue": max(100, round(60_000 * factor)),
    }


def bounded_calls(ctx: Context) -> dict[str, Any]:
    """Blocking, bounded-call cases: PING latency and BUSY replies from another process while
    (1) get_tasks_by_status reads a 1M-task set, (2) enqueue_tasks queues 300k tasks,
    (3) dequeue_tasks takes them back, (4) claim_batch forms batches with 60k queued tasks of
    a full array ahead of the array with room. Each case on its own run, fixtures written
    straight into the keys (not measured)."""
    cfg = ctx.config
    sizes = _bounded_sizes(cfg)
    cases: dict[str, Any] = {}
    client = ctx.client

    def new_state(limit: int = 10_000) -> RedisSwarmState:
        return RedisSwarmState(1, ctx.new_run_id(), 1, limit, redis=client, prefix=ctx.prefix)

    read_st = new_state()
    _fill_records(client, read_st, range(1, sizes["set"] + 1), 1, "D")
    q_st = new_state()
    _fill_records(client, q_st, range(1, sizes["queue"] + 1), 1, "G")
    q_tasks = sorted(q_st.get_tasks_by_status("G"), key=lambda t: t.task_id)
    c_st = new_state(limit=100_000)
    blocked = sizes["claim_queue"]
    c_st.add_arrays([ArrayRecord(1, 0), ArrayRecord(2, 1000)])
    _fill_records(client, c_st, range(1, blocked + 1), 1, "G")
    _fill_records(client, c_st, range(blocked + 1, blocked + 2001), 2, "G")
    c_tasks = sorted(c_st.get_tasks_by_status("G"), key=lambda t: t.task_id)
    c_st.enqueue_tasks(c_tasks)  # 60k of the full array 1 first, then array 2
    rep = c_st.join_replica(ttl_s=3600.0)
    claim_ms: list[float] = []

    def claims() -> int:
        n = 0
        for _ in range(4):
            u0 = script_usec(client)
            batch = c_st.claim_batch(rep, max_size=250)
            u = _delta(script_usec(client), u0)
            if u is not None:
                claim_ms.append(u / 1000)
            n += len(batch.task_ids) if batch else 0
        return n

    with BusyPingProbe(ctx.url) as probe:
        time.sleep(0.2)
        t = time.perf_counter()
        probe.mark("idle", t - 0.2, t)
        cases[f"get_tasks_by_status over {sizes['set']}"] = _bounded_case(
            ctx, probe, "read", lambda: len(read_st.get_tasks_by_status("D"))
        )
        cases[f"enqueue_tasks of {sizes['queue']}"] = _bounded_case(
            ctx, probe, "enqueue", lambda: len(q_st.enqueue_tasks(q_tasks))
        )
        cases[f"dequeue_tasks of {sizes['queue']}"] = _bounded_case(
            ctx, probe, "dequeue", lambda: len(q_st.dequeue_tasks(sizes["queue"]))
        )
        cases[f"claim_batch x4 behind {blocked} queued of a full array"] = _bounded_case(
            ctx, probe, "claim", claims
        )
    for figures, window in zip(cases.values(), ("read", "enqueue", "dequeue", "claim")):
        stats = probe.stats(window)
        figures.update(
            max_ms=stats["max_ms"], p99_ms=stats["p99_ms"], pings=stats["pings"],
            busy=probe.busy_in(window),
        )  # fmt: skip
    cases[f"claim_batch x4 behind {blocked} queued of a full array"]["claim_redis_ms"] = [
        round(ms, 3) for ms in claim_ms
    ]
    return {
        "sizes": sizes,
        "idle": probe.stats("idle"),
        "cases": cases,
        "max_ms": max(c["max_ms"] for c in cases.values()),
        "busy": sum(c["busy"] for c in cases.values()),
    }


_KINDS: dict[str, str] = {
    "task": "task records (hash)",
    "ready": "ready queue (zset + queued set + qres + qidx)",
    "queued": "ready queue (zset + queued set + qres + qidx)",
    "qres": "ready queue (zset + queued set + qres + qidx)",
    "qidx": "ready queue (zset + queued set + qres + qidx)",
    "events": "event stream",
}


def memory(ctx: Context) -> dict[str, Any]:
    """Scenario 5: INFO used_memory per task after registering a large run, by key kind."""
    cfg = ctx.config
    run = ctx.registered_run(cfg.big_tasks)
    by_key: dict[str, int] = {}
    for name in RUN_KEY_NAMES:
        key = run.state.keys.key(name)
        with contextlib.suppress(redis.ResponseError):
            size = ctx.client.memory_usage(key, samples=0)
            if size:
                by_key[name] = int(size)
    kinds: dict[str, int] = {}
    for name, size in by_key.items():
        kind = _KINDS.get(name, "status sets" if name.startswith("s:") else "run-level hashes")
        kinds[kind] = kinds.get(kind, 0) + size
    n = cfg.big_tasks
    delta = run.memory_delta
    return {
        "tasks": n,
        "shape": run.shape.describe(),
        "used_memory_delta": delta,
        "bytes_per_task": round(delta / n, 1) if delta is not None else None,
        "keys_total": sum(by_key.values()),
        "keys_bytes_per_task": round(sum(by_key.values()) / n, 1),
        "by_key": by_key,
        "by_kind_bytes_per_task": {k: round(v / n, 1) for k, v in kinds.items()},
        "register_s": round(run.register_s, 2),
        "exact": ctx.private,
    }


SCENARIO_FUNCS: dict[str, Callable[[Context], dict[str, Any]]] = {
    "lifecycle": lifecycle,
    "redis_share": redis_share,
    "replicas": replicas,
    "memory": memory,
    "flatness": flatness,
    "blocking": blocking,
    "jobmon_tick": lambda ctx: jobmon_tick(ctx, n=max(20, round(2000 * ctx.config.scale))),
}


def run_suite(config: BenchConfig, progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Run the selected scenarios; the JSON-ready results (``machine``, ``config``, scenarios)."""
    say = progress or (lambda _msg: None)
    ctx = Context(config)
    results: dict[str, Any] = {}
    try:
        results["machine"] = ctx.machine()
        results["config"] = {
            "quick": config.quick,
            "scale": config.scale,
            "batch_size": config.batch_size,
            "scenarios": [s for s in SCENARIOS if s in config.only],
            "python_executable": sys.executable,
        }
        for name in SCENARIOS:
            if name not in config.only:
                continue
            say(f"running {name} ...")
            t0 = time.perf_counter()
            load = LoadWatch()
            results[name] = SCENARIO_FUNCS[name](ctx)
            results[name]["scenario_s"] = round(time.perf_counter() - t0, 1)
            results[name]["scenario_load"] = load.result()
    finally:
        ctx.cleanup()
    return results
