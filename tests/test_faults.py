"""Fault injection: replica processes finish a run while its Redis misbehaves.

Each scenario runs a small DAG (400 tasks) with three reference replica processes
(``python -m swarm_redis.replica``) and the simulated jobmon server, on a private redis-server
started with ``--enable-debug-command yes``, AOF with ``appendfsync always`` and
``maxmemory-policy noeviction``, and injects one fault in the middle of the run:

* ``debug-sleep``: ``DEBUG SLEEP`` past the replicas' socket timeout (1 s), three times;
* ``client-kill``: ``CLIENT KILL TYPE normal`` every 0.2 s for 3 s;
* ``script-flush``: ``SCRIPT FLUSH`` five times;
* ``pause-write``: ``CLIENT PAUSE 2000 WRITE``;
* ``oom``: ``maxmemory`` just above the memory used (OOM on writes) for 2 s, then unlimited;
* ``aof-restart``: ``SHUTDOWN`` and a new redis-server on the same port and directory.

Every run must then finish: every task DONE in Redis and on the server, the run finalized
once, ``verify`` clean, nothing queued or claimed, no task queued twice for one attempt, no
limit exceeded, no task queued before its upstreams, every replica exiting 0 with reason "final".
"""

from __future__ import annotations

import random
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis
from replica_procs import ReplicaProcs, layered_dag
from servers import missing_binaries, skip_or_fail, wait_until

from swarm_redis import ArrayRecord, RedisSwarmState
from swarm_redis.demo.embedded import free_port
from swarm_redis.demo.redis_server import RedisProcess, start_redis_server
from swarm_redis.demo.sim import SimConfig, SimReport, SimServer
from swarm_redis.exit_codes import EXIT_NOT_FOUND, EXIT_STATE_LOST
from swarm_redis.ops.verify import find_drift

pytestmark = [pytest.mark.real, pytest.mark.slow]

LAYERS = 4
PER_LAYER = 100  # 400 tasks
WORKFLOW_LIMIT = 40
ARRAY_LIMITS = {1: 15, 2: 12, 3: 20}
REPLICAS = 3
TTL_S = 2.0
SOCKET_TIMEOUT_S = 1.0
HANG_GUARD_S = 90  # only stops a hung run; nothing is asserted about time
PREFIX = "faults"
SERVER_ARGS = [
    *("--enable-debug-command", "yes"),
    *("--appendonly", "yes", "--appendfsync", "always"),
    *("--maxmemory-policy", "noeviction"),
]


class Server:
    """The private redis-server; :meth:`restart` replaces it on the same port and directory."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="swarm-faults-")
        self.port = free_port()
        self.proc: RedisProcess = self._start()

    def _start(self) -> RedisProcess:
        return start_redis_server(SERVER_ARGS, workdir=self.dir, port=self.port)

    @property
    def url(self) -> str:
        return self.proc.url

    def admin(self) -> redis.Redis:
        return redis.Redis(port=self.port, protocol=3, socket_timeout=10)

    def restart(self) -> None:
        """SHUTDOWN (AOF fsynced on every write), then start again from the same files."""
        self.proc.stop(nosave=False)
        self.proc = self._start()

    def stop(self) -> None:
        self.proc.stop()


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    missing = missing_binaries("redis-server")
    if missing:
        skip_or_fail(missing)
    srv = Server()
    try:
        yield srv
    finally:
        srv.stop()


def build_run(client: redis.Redis, run_id: int, rng: random.Random) -> SimConfig:
    """Register a layered DAG (each task after 1-3 of the layer before); the server's config."""
    dag = layered_dag(rng, LAYERS, PER_LAYER, len(ARRAY_LIMITS))
    state = RedisSwarmState(
        1, run_id, 1, max_concurrently_running=WORKFLOW_LIMIT, redis=client, prefix=PREFIX
    )
    state.add_arrays([ArrayRecord(a, limit) for a, limit in ARRAY_LIMITS.items()])
    state.add_tasks(dag.tasks.values())
    return SimConfig(
        tasks={t: task.array_id for t, task in dag.tasks.items()},
        workflow_limit=WORKFLOW_LIMIT,
        array_limits=ARRAY_LIMITS,
        upstreams=dag.upstreams,
        step_s=(0.01, 0.05),
        fail_rate=0.05,
        max_attempts=50,
        seed=run_id,
    )


def new_replicas(server: Server, run_id: int, sim: SimServer, logs: Path) -> ReplicaProcs:
    """The run's replica processes (none started): short socket timeout, small batches."""
    url = f"redis://127.0.0.1:{server.port}/0?socket_timeout={SOCKET_TIMEOUT_S}"
    return ReplicaProcs(
        url,
        PREFIX,
        run_id,
        sim,
        logs,
        *("--ttl", str(TTL_S), "--poll", "0.02", "--full-sync", "5", "--reconcile", "3"),
        *("--batch-size", "25"),
    )


# --- the faults ----------------------------------------------------------------------------------


def debug_sleep(server: Server) -> None:
    admin = server.admin()
    for _ in range(3):
        admin.execute_command("DEBUG", "SLEEP", str(SOCKET_TIMEOUT_S * 2.5))
        time.sleep(0.5)


def client_kill(server: Server) -> None:
    admin = server.admin()
    end = time.monotonic() + 3.0
    while time.monotonic() < end:
        admin.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
        time.sleep(0.2)


def script_flush(server: Server) -> None:
    admin = server.admin()
    for _ in range(5):
        admin.script_flush()
        time.sleep(0.3)


def pause_write(server: Server) -> None:
    server.admin().execute_command("CLIENT", "PAUSE", "2000", "WRITE")
    time.sleep(2.2)


def oom(server: Server) -> None:
    admin = server.admin()
    used = int(admin.info("memory")["used_memory"])
    admin.config_set("maxmemory", str(used + 64 * 1024))
    try:
        wait_until(lambda: _refuses_writes(admin), 5, "OOM on writes")
        time.sleep(2.0)
    finally:
        admin.config_set("maxmemory", "0")


def _refuses_writes(admin: redis.Redis) -> bool:
    try:
        admin.set("faults:oom-probe", "x" * 200_000)
    except redis.exceptions.OutOfMemoryError:
        return True
    admin.delete("faults:oom-probe")
    return False


def aof_restart(server: Server) -> None:
    server.restart()


FAULTS: dict[str, Callable[[Server], None]] = {
    "debug-sleep": debug_sleep,
    "client-kill": client_kill,
    "script-flush": script_flush,
    "pause-write": pause_write,
    "oom": oom,
    "aof-restart": aof_restart,
}


@pytest.mark.parametrize("fault", list(FAULTS))
def test_run_finishes_through_fault(
    fault: str, server: Server, run_id: int, tmp_path: Path
) -> None:
    rng = random.Random(run_id)
    client = redis.Redis(port=server.port, protocol=3, socket_timeout=10)
    config = build_run(client, run_id, rng)
    sim = SimServer.start(config)
    replicas = new_replicas(server, run_id, sim, tmp_path)
    state = RedisSwarmState.attach(client, run_id, prefix=PREFIX)
    injected = threading.Event()
    fault_error: list[BaseException] = []

    def inject() -> None:
        try:
            FAULTS[fault](server)
        except BaseException as e:  # reported by the test below
            fault_error.append(e)
        finally:
            injected.set()

    try:
        for _ in range(REPLICAS):
            replicas.start()
        # in the middle of the run: once a quarter of the tasks are done on the server
        wait_until(
            lambda: sim.report().counts["D"] >= len(config.tasks) // 4, HANG_GUARD_S, "progress"
        )
        injector = threading.Thread(target=inject, daemon=True)
        injector.start()
        deadline = time.monotonic() + HANG_GUARD_S
        while replicas.alive():
            if time.monotonic() > deadline:
                raise AssertionError(f"the run hung after {fault}\n{replicas.tail()}")
            time.sleep(0.1)
        injector.join(30)
        report: SimReport | None = sim.stop()
    finally:
        replicas.kill_all()
        sim.stop()
    assert injected.is_set() and fault_error == [], fault_error
    assert report is not None

    # Every replica ended cleanly once the run was final.
    results = replicas.results()
    assert all(p.returncode == 0 for p in replicas.procs.values()), replicas.tail()
    assert sorted(results) == sorted(replicas.procs), replicas.tail()
    assert all(r["reason"] == "final" for r in results.values()), results
    print(
        f"{fault}: transient errors {sum(r['transient_errors'] for r in results.values())}, "
        f"re-joins {sum(r['rejoins'] for r in results.values())}, leases lost "
        f"{sum(r['leases_lost'] for r in results.values())}, attempts "
        f"{report.attempts_started}, resent {report.resent}"
    )

    # The server saw no task queued twice for one attempt, no limit exceeded, no early task.
    assert report.duplicates == [], report.duplicates[:5]
    assert report.overlaps == [], report.overlaps[:5]
    assert report.limit_violations == [], report.limit_violations[:5]
    assert report.dependency_violations == [], report.dependency_violations[:5]
    assert report.wrong_array == [] and report.unknown_ids == 0
    assert report.max_active <= WORKFLOW_LIMIT
    assert all(report.max_active_per_array.get(a, 0) <= n for a, n in ARRAY_LIMITS.items())

    # Every task is DONE on both sides, the run finalized once, verify finds nothing.
    assert set(report.statuses.values()) == {"D"}
    assert report.run_status_history == ["B", "R", "D"]
    fresh = RedisSwarmState.attach(client, run_id, prefix=PREFIX)
    assert fresh.status == "D"
    counts = fresh.counts()
    assert counts["D"] == counts["tasks"] == len(config.tasks)
    assert counts["ready"] == 0 and counts["claimed"] == 0
    assert sum(bool(r["finalized"]) for r in results.values()) == 1
    drift = find_drift(client, state.keys)
    assert drift.clean, drift.to_json()
    client.close()


def test_lost_state_stops_every_replica_with_exit_7(
    server: Server, run_id: int, tmp_path: Path
) -> None:
    """Redis lost the run (here: its keys deleted, as a restart without persistence would):
    every replica stops with reason "state_lost", exit status 7 and a message saying why."""
    rng = random.Random(run_id)
    client = redis.Redis(port=server.port, protocol=3, socket_timeout=10)
    config = build_run(client, run_id, rng)
    sim = SimServer.start(config)
    replicas = new_replicas(server, run_id, sim, tmp_path)
    keys = RedisSwarmState.attach(client, run_id, prefix=PREFIX).keys
    try:
        names = [replicas.start() for _ in range(REPLICAS)]
        wait_until(lambda: sim.report().counts["D"] >= 20, HANG_GUARD_S, "progress")
        # every replica attached first: one still starting would find no run at all (exit 3,
        # test_a_replica_of_a_missing_run_exits_3), not a run that lost its writes
        wait_until(
            lambda: all(" joined run " in (tmp_path / f"{n}.err").read_text() for n in names),
            HANG_GUARD_S,
            "every replica joined",
        )
        assert client.delete(*keys.all) > 0
        for proc in replicas.procs.values():
            proc.wait(HANG_GUARD_S)
    finally:
        replicas.kill_all()
        sim.stop()
    assert all(p.returncode == EXIT_STATE_LOST == 7 for p in replicas.procs.values())
    results = replicas.results()
    assert {r["reason"] for r in results.values()} == {"state_lost"}
    for name in replicas.procs:
        err = (tmp_path / f"{name}.err").read_text()
        assert "rebuild the run" in err and f"workflow run {run_id}" in err
    assert client.exists(*keys.all) == 0  # nobody wrote the run back (no leave, no re-create)
    client.close()


def test_a_replica_of_a_missing_run_exits_3(server: Server, run_id: int, tmp_path: Path) -> None:
    """A replica started for a run Redis does not hold (never created, or deleted before the
    replica attached) says so and exits with status 3 (EXIT_NOT_FOUND), without a traceback."""
    rng = random.Random(run_id)
    client = redis.Redis(port=server.port, protocol=3, socket_timeout=10)
    config = build_run(client, run_id, rng)
    sim = SimServer.start(config)
    replicas = new_replicas(server, run_id + 1, sim, tmp_path)  # a run id nobody created
    try:
        name = replicas.start()
        replicas.procs[name].wait(HANG_GUARD_S)
    finally:
        replicas.kill_all()
        sim.stop()
        client.delete(*RedisSwarmState.attach(client, run_id, prefix=PREFIX).keys.all)
    assert replicas.procs[name].returncode == EXIT_NOT_FOUND == 3
    err = (tmp_path / f"{name}.err").read_text()
    assert f"workflow run {run_id + 1} not found" in err and "Traceback" not in err
