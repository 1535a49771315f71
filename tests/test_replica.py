"""The reference replica loop, in-process: threads as replicas, the simulated server's model as
the gateway. (Real processes and real kills: tests/test_chaos.py.)"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
import redis

from swarm_redis import ArrayRecord, RedisSwarmState, StateLostError, TaskRecord
from swarm_redis.demo.sim import SimConfig, SimCore
from swarm_redis.ops.verify import find_drift
from swarm_redis.replica.faults import is_transient
from swarm_redis.replica.gateway import Gateway, GatewayError, StatusesByLetter
from swarm_redis.replica.loop import ReplicaResult, adjust_resources, run_replica
from swarm_redis.testing.dags import random_layered, upstreams_of

MakeClient = Callable[..., redis.Redis]


def run_fast(state: RedisSwarmState, gateway: Gateway, **kw: Any) -> ReplicaResult:
    """run_replica with short periods, so the small runs here take a fraction of a second."""
    settings: dict[str, Any] = {"ttl_s": 2.0, "poll_s": 0.005, "full_sync_s": 1.0}
    return run_replica(state, gateway, **{**settings, "reconcile_s": 1.0, **kw})


def small_dag(state: RedisSwarmState, layers: int = 3, width: int = 12) -> dict[int, list[int]]:
    """Register a layered DAG (arrays 1 and 2); its upstreams."""
    tasks = random_layered(random.Random(3), layers, width, fan_in=2, n_arrays=2)
    state.add_arrays([ArrayRecord(1, 4), ArrayRecord(2, 3)])
    state.add_tasks(tasks)
    return upstreams_of(tasks)


@pytest.fixture
def state(make_client: MakeClient, prefix: str, run_id: int) -> RedisSwarmState:
    return RedisSwarmState(
        1, run_id, 1, max_concurrently_running=6, redis=make_client(), prefix=prefix
    )


@pytest.fixture
def clock() -> Iterator[Callable[[SimCore], SimCore]]:
    """Runs the clock thread of the cores it is given until the test ends."""
    stop = threading.Event()
    threads: list[threading.Thread] = []
    cores: list[SimCore] = []

    def start(core: SimCore) -> SimCore:
        thread = threading.Thread(target=core.run_clock, args=(stop,), daemon=True)
        thread.start()
        threads.append(thread)
        cores.append(core)
        return core

    yield start
    stop.set()
    for core in cores:
        core.wake()
    for thread in threads:
        thread.join()


def attach(state: RedisSwarmState, make_client: MakeClient) -> RedisSwarmState:
    return RedisSwarmState.attach(make_client(), state.workflow_run_id, prefix=state.keys.prefix)


def test_two_replicas_finish_a_dag_with_failures(
    state: RedisSwarmState,
    make_client: MakeClient,
    clock: Callable[[SimCore], SimCore],
) -> None:
    upstreams = small_dag(state)
    sim = clock(
        SimCore(
            SimConfig.from_state(state, step_s=(0.0, 0.002), fail_rate=0.2, max_attempts=20, seed=1)
        )
    )
    results: list[ReplicaResult] = []

    def replica() -> None:
        results.append(run_fast(attach(state, make_client), sim))

    threads = [threading.Thread(target=replica) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()

    report = sim.report()
    assert report.ok, report.problems
    assert set(report.statuses.values()) == {"D"}
    assert report.attempts_started > len(report.statuses)  # some runs failed and were retried
    from_state = SimConfig.from_state(state).upstreams
    assert {t: sorted(u) for t, u in from_state.items()} == {
        t: sorted(u) for t, u in upstreams.items()
    }
    assert state.status == "D" and state.get_done_count() == len(report.statuses)
    assert [r.reason for r in results] == ["final", "final"]
    assert sum(r.finalized for r in results) == 1
    assert report.run_status_history == ["B", "R", "D"]
    assert sum(len(r.epochs) for r in results) >= 1
    assert state.counts()["claimed"] == 0 and state.counts()["ready"] == 0


def test_a_resume_signal_terminates_the_run(
    state: RedisSwarmState, clock: Callable[[SimCore], SimCore]
) -> None:
    small_dag(state)
    sim = clock(SimCore(SimConfig.from_state(state)))
    sim.signal_run_status("C")  # the server asked for a resume before the run started
    result = run_fast(state, sim)
    assert result.reason == "final" and result.finalized
    assert state.status == "T" and sim.report().run_status == "T"
    assert sim.report().queue_calls == 0  # nothing is scheduled unless the run is RUNNING


def test_a_server_stop_ends_the_loop_without_finalizing(
    state: RedisSwarmState, clock: Callable[[SimCore], SimCore]
) -> None:
    small_dag(state)
    sim = clock(SimCore(SimConfig.from_state(state)))
    sim.signal_run_status("S")
    result = run_fast(state, sim)
    assert result.reason == "final" and not result.finalized
    assert state.status == "S"


class Unreachable:
    """A gateway whose queue calls fail; the rest goes to the simulated server."""

    def __init__(self, sim: SimCore, stop: threading.Event) -> None:
        self.sim = sim
        self.stop = stop
        self.calls = 0

    def queue_task_batch(
        self, array_id: int, task_ids: Sequence[int], resource_key: str
    ) -> tuple[StatusesByLetter, str | None]:
        self.calls += 1
        self.stop.set()  # one batch is enough: the loop releases it, then leaves
        raise GatewayError("connection refused")

    def get_task_statuses(self, since: str | None) -> tuple[StatusesByLetter, str]:
        return self.sim.get_task_statuses(since)

    def log_heartbeat(self, run_status: str) -> str:
        return self.sim.log_heartbeat(run_status)

    def update_run_status(self, status: str) -> str:
        return self.sim.update_run_status(status)


def test_an_unreachable_server_gets_the_batch_released_in_order(
    state: RedisSwarmState, clock: Callable[[SimCore], SimCore]
) -> None:
    small_dag(state)
    sim = clock(SimCore(SimConfig.from_state(state)))
    stop = threading.Event()
    gateway = Unreachable(sim, stop)
    result = run_fast(state, gateway, queue_retries=1, stop=stop)
    assert result.reason == "stopped" and result.released == 1 and gateway.calls == 2
    assert sim.report().queue_calls == 0
    queue = [t.task_id for t in state.ready_to_run]
    assert queue[:3] == [1, 3, 5]  # the released batch (array 2, limit 3) is back in front
    assert sorted(queue) == list(range(1, 13))  # the first layer, nothing lost
    assert state.counts()["claimed"] == 0
    assert state.leader() is None  # it left: leadership resigned


class Crashing(Unreachable):
    """A gateway whose queue call dies with something unexpected, after it may have queued."""

    def queue_task_batch(
        self, array_id: int, task_ids: Sequence[int], resource_key: str
    ) -> tuple[StatusesByLetter, str | None]:
        self.sim.queue_task_batch(array_id, task_ids, resource_key)
        raise RuntimeError("crashed after the server queued the batch")


def test_a_crash_with_a_batch_in_flight_leaves_it_to_be_reaped(
    state: RedisSwarmState, make_client: MakeClient, clock: Callable[[SimCore], SimCore]
) -> None:
    small_dag(state)
    sim = clock(SimCore(SimConfig.from_state(state)))
    with pytest.raises(RuntimeError, match="crashed"):
        run_fast(state, Crashing(sim, threading.Event()), replica_id="crasher", ttl_s=0.3)
    # Still a member holding the batch: leave() would have queued it again as unsent.
    assert state.counts()["claimed"] == 3 and state.counts()["Q"] == 0
    assert make_client().hexists(state.keys.replicas, "crasher")
    # Once its lease expired, the next replica reaps it and re-drives the batch first.
    result = run_fast(attach(state, make_client), sim)
    assert result.redriven == 1 and state.status == "D"
    report = sim.report()
    assert report.ok and report.attempts_started == len(report.statuses)  # no extra attempt


def test_adjust_resources_doubles_memory() -> None:
    task = TaskRecord(1)
    adjust_resources(task)
    assert task.current_task_resources == {"memory_gb": 2}
    adjust_resources(task)
    assert task.current_task_resources == {"memory_gb": 4}


# --- transient faults -----------------------------------------------------------------------------


def _response(code: str, text: str) -> Exception:
    """The error redis-py's parser builds for a ``-CODE text`` reply (not always a
    ResponseError: LOADING gives a BusyLoadingError, a ConnectionError)."""
    from redis._parsers.base import BaseParser

    error = BaseParser.parse_error(f"{code} {text}")
    assert isinstance(error, Exception)
    return error


FAULTS: dict[str, Callable[[], Exception]] = {
    "connection": lambda: redis.exceptions.ConnectionError("Connection reset by peer"),
    "timeout": lambda: redis.exceptions.TimeoutError("Timeout reading from socket"),
    "busy": lambda: _response("BUSY", "Redis is busy running a script."),
    "loading": lambda: _response("LOADING", "Redis is loading the dataset in memory"),
    "oom": lambda: _response("OOM", "command not allowed when used memory > 'maxmemory'."),
    "readonly": lambda: _response("READONLY", "You can't write against a read only replica."),
    "tryagain": lambda: _response("TRYAGAIN", "Multiple keys request during rehashing of slot"),
    "moved": lambda: _response("MOVED", "3999 127.0.0.1:6381"),
    "ask": lambda: _response("ASK", "3999 127.0.0.1:6381"),
    "clusterdown": lambda: _response("CLUSTERDOWN", "The cluster is down"),
    "noreplicas": lambda: _response("NOREPLICAS", "Not enough good replicas to write."),
}


class FaultyClient:
    """A redis-py client whose calls fail now and then with ``fault()``.

    A fault strikes before the call reaches Redis, or after it ran (the reply is lost: the
    harder case, e.g. a claim that Redis made but the replica never heard of). Faults stop after
    ``budget`` of them, so the run can finish.
    """

    def __init__(
        self, inner: redis.Redis, fault: Callable[[], Exception], *, seed: int, budget: int
    ) -> None:
        self._inner = inner
        self._fault = fault
        self._rng = random.Random(seed)
        self.budget = budget
        self.armed = False
        self.injected = {"before": 0, "after": 0}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def _strike(self) -> str | None:
        if self.armed and self.budget > 0 and self._rng.random() < 0.12:
            self.budget -= 1
            when = self._rng.choice(("before", "after"))
            self.injected[when] += 1
            return when
        return None

    def _call(self, fn: Callable[[], Any]) -> Any:
        when = self._strike()
        if when == "before":
            raise self._fault()
        reply = fn()
        if when == "after":
            raise self._fault()
        return reply

    def evalsha(self, *args: Any) -> Any:
        return self._call(lambda: self._inner.evalsha(*args))

    def execute_command(self, *args: Any, **kw: Any) -> Any:
        return self._call(lambda: self._inner.execute_command(*args, **kw))

    def pipeline(self, *args: Any, **kw: Any) -> Any:
        outer = self
        pipe = self._inner.pipeline(*args, **kw)

        class Pipe:
            def __getattr__(self, name: str) -> Any:
                return getattr(pipe, name)

            def execute(self, *a: Any, **k: Any) -> Any:
                return outer._call(lambda: pipe.execute(*a, **k))

        return Pipe()


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_the_loop_rides_out_transient_faults(
    fault: str,
    state: RedisSwarmState,
    make_client: MakeClient,
    clock: Callable[[SimCore], SimCore],
) -> None:
    small_dag(state)
    sim = clock(
        SimCore(
            SimConfig.from_state(state, step_s=(0.0, 0.002), fail_rate=0.1, max_attempts=20, seed=2)
        )
    )
    clients = [FaultyClient(make_client(), FAULTS[fault], seed=seed, budget=25) for seed in (1, 2)]
    results: list[ReplicaResult] = []
    errors: list[BaseException] = []

    def replica(client: FaultyClient) -> None:
        try:
            other = RedisSwarmState.attach(client, state.workflow_run_id, prefix=state.keys.prefix)
            client.armed = True  # attach is the caller's business; the loop's calls get faults
            results.append(run_fast(other, sim, ttl_s=1.0))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=replica, args=(c,)) for c in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "a replica hung"
    assert errors == []
    injected = sum(sum(c.injected.values()) for c in clients)
    assert injected >= 5 and sum(r.transient_errors for r in results) >= 1
    report = sim.report()
    assert report.ok, report.problems
    assert set(report.statuses.values()) == {"D"}
    assert [r.reason for r in results] == ["final", "final"]
    assert state.status == "D" and state.get_done_count() == len(report.statuses)
    counts = state.counts()
    assert counts["claimed"] == 0 and counts["ready"] == 0
    assert find_drift(make_client(), state.keys).clean


class LosesState:
    """A client whose calls raise StateLostError once ``after`` calls went through."""

    def __init__(self, inner: redis.Redis, run_id: int, after: int) -> None:
        self._inner = inner
        self._run_id = run_id
        self.left = after

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def evalsha(self, *args: Any) -> Any:
        self.left -= 1
        if self.left < 0:
            raise StateLostError(self._run_id, 40, 3)
        return self._inner.evalsha(*args)


def test_state_lost_stops_the_loop_with_a_reason(
    state: RedisSwarmState, make_client: MakeClient, clock: Callable[[SimCore], SimCore]
) -> None:
    small_dag(state)
    sim = clock(SimCore(SimConfig.from_state(state)))
    client = LosesState(make_client(), state.workflow_run_id, after=6)
    other = RedisSwarmState.attach(client, state.workflow_run_id, prefix=state.keys.prefix)
    result = run_fast(other, sim)
    assert result.reason == "state_lost"
    assert "went backwards" in result.error and "rebuild the run" in result.error
    assert result.transient_errors == 0


def test_auth_errors_are_not_transient() -> None:
    assert not is_transient(redis.exceptions.AuthenticationError("WRONGPASS"))
    assert not is_transient(_response("NOPERM", "this user has no permissions"))
    assert not is_transient(redis.exceptions.ResponseError("ERR unknown command"))
    assert not is_transient(StateLostError(1, 2, 1))
    assert all(is_transient(make()) for make in FAULTS.values())
