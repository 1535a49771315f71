"""End to end: a real jobmon workflow on jobmon's real server and distributor, run by N replicas.

One jobmon server (sqlite, in a subprocess, as jobmon's fixtures start it) serves the session. The
workflow (204 tasks: two arrays with their own limits and a fan-in between them, a task that fails
once and then succeeds, a task that fails for good and its blocked child, and a final fan-in task)
runs twice at the same time: once with jobmon's stock orchestrator (``Workflow.run()``) and once by
three ``swarm-redis jobmon-replica`` processes sharing Redis, whose leader is SIGKILLed mid-run and
whose next leader is SIGKILLed later. A sampler thread reads the server's database all along. Then
we compare, from the server's records. Also here: a resumed run, a distributor killed mid-run, and
``swarm-redis demo --jobmon``.

Needs jobmon 3.6 (see README, "Use with jobmon") and a real Redis; skipped without them, failed
without them when CI=true.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from background import BackgroundProcess
from jobmon_env import require_jobmon

from swarm_redis.state import RedisSwarmState

require_jobmon()  # skip (fail under CI=true) without jobmon, saying how to get it

from swarm_redis.jobmon.localserver import JobmonServer  # noqa: E402

ACTIVE = ("Q", "I", "O", "R")
WF_LIMIT = 8
LIMITS = {"prep": 3, "work": 4}
#: Tasks of the arrays ``prep`` and ``work``: 204 tasks in all with the four below.
N_PREP, N_WORK = 120, 80
N_TASKS = N_PREP + N_WORK + 4
#: Seconds any one wait of the replicated run may take, so that a stuck run fails in minutes:
#: the whole run takes about 65 s on a quiet 2-core machine.
WAIT_S = 60 + N_TASKS

pytestmark = pytest.mark.timeout(4 * WAIT_S)
#: Seconds a quick workflow (resume, distributor restart) may run before jobmon's own run
#: timeout ends it in ERROR: a stuck run fails its test with the reason instead of hanging.
QUICK_RUN_S = 240
#: Quick tasks of the resume and distributor-restart workflows (plus a gate task and its child).
N_QUICK = 4


@pytest.fixture()
def redis_url(real_redis_url: str) -> str:
    return real_redis_url


@pytest.fixture()
def prefixes(real_redis_url: str) -> Iterator[list[str]]:
    """Key prefixes a test's runs use in the shared Redis; their keys are deleted afterwards."""
    used: list[str] = []
    yield used
    client = redis.Redis.from_url(real_redis_url)
    try:
        for prefix in used:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            for first in range(0, len(keys), 500):
                client.unlink(*keys[first : first + 500])
    finally:
        client.close()


def build_workflow(tag: str, marker_dir: str, cluster: str = "sequential") -> tuple[Any, list[Any]]:
    """The test workflow; its tasks in creation order (the same order for every build)."""
    from jobmon.client.tool import Tool

    tool = Tool(name=f"swarm-e2e-{tag}")
    tool.set_default_compute_resources_from_dict(
        cluster_name=cluster, compute_resources={"queue": "null.q"}
    )

    def template(name: str) -> Any:
        return tool.get_task_template(
            template_name=name,
            command_template="{arg}",
            node_args=["arg"],
            task_args=[],
            op_args=[],
        )

    prep, work, flaky, fatal, child, agg = (
        template(n) for n in ("prep", "work", "flaky", "fatal", "child", "agg")
    )
    wf = tool.create_workflow(
        name=f"e2e-{tag}", workflow_args=f"e2e-{tag}", max_concurrently_running=WF_LIMIT
    )
    a = [prep.create_task(arg=f"echo {tag} a{i}", max_attempts=3) for i in range(N_PREP)]
    # fan-in: every work task waits for three prep tasks
    b = [
        work.create_task(
            arg=f"echo {tag} b{j}",
            upstream_tasks=list(
                {a[j % N_PREP], a[(j + N_PREP // 3) % N_PREP], a[(j * 7) % N_PREP]}
            ),
            max_attempts=3,
        )
        for j in range(N_WORK)
    ]
    marker = os.path.join(marker_dir, f"flaky-{tag}")
    f1 = flaky.create_task(
        arg=f"sh -c 'if [ -f {marker} ]; then echo ok; else touch {marker}; exit 3; fi'",
        max_attempts=3,
        upstream_tasks=[a[0]],
    )
    f2 = fatal.create_task(arg=f"sh -c 'echo {tag} doomed; exit 7'", max_attempts=2)
    c = child.create_task(arg=f"echo {tag} child", upstream_tasks=[f2], max_attempts=3)
    z = agg.create_task(arg=f"echo {tag} agg", upstream_tasks=[*b, f1], max_attempts=3)
    tasks = [*a, *b, f1, f2, c, z]
    wf.add_tasks(tasks)
    for name, limit in LIMITS.items():
        wf.set_task_template_max_concurrency_limit(name, limit)
    return wf, tasks


class Sampler(threading.Thread):
    """Samples the server's active tasks per array and in all, for one workflow."""

    def __init__(self, server: JobmonServer) -> None:
        super().__init__(daemon=True)
        self.server = server
        self.workflows: dict[int, str] = {}
        self.max_total: dict[int, int] = {}
        self.max_array: dict[tuple[int, int], int] = {}
        self.samples = 0
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.3):
            for wf_id in list(self.workflows):
                try:
                    rows = self.server.query(
                        "select array_id, count(*) from task where workflow_id = ? and status in "
                        "('Q','I','O','R') group by array_id",
                        (wf_id,),
                    )
                except Exception:  # a locked database: sample again
                    continue
                self.samples += 1
                total = sum(n for _, n in rows)
                self.max_total[wf_id] = max(self.max_total.get(wf_id, 0), total)
                for array_id, n in rows:
                    key = (wf_id, array_id)
                    self.max_array[key] = max(self.max_array.get(key, 0), n)


def array_limits(server: JobmonServer, wf_id: int) -> dict[int, tuple[str, int]]:
    rows = server.query(
        "select a.id, tt.name, a.max_concurrently_running from array a "
        "join task_template_version ttv on a.task_template_version_id = ttv.id "
        "join task_template tt on ttv.task_template_id = tt.id where a.workflow_id = ?",
        (wf_id,),
    )
    return {int(i): (str(n), int(m)) for i, n, m in rows}


def attempts_and_instances(server: JobmonServer, wf_id: int) -> list[tuple[int, int, int]]:
    """(task id, num_attempts, task instances) for every task of the workflow."""
    return server.query(
        "select t.id, t.num_attempts, (select count(*) from task_instance ti where ti.task_id = t.id) "
        "from task t where t.workflow_id = ? order by t.id",
        (wf_id,),
    )


def start_replica(name: str, run_id: int, wf_id: int, url: str, prefix: str, tmp: str) -> Any:
    log = open(os.path.join(tmp, f"{name}.log"), "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "swarm_redis",
            "jobmon-replica",
            "--run",
            str(run_id),
            "--workflow-id",
            str(wf_id),
            "--url",
            url,
            "--prefix",
            prefix,
            "--replica-id",
            name,
            "--ttl",
            "5",
            "--sync",
            "1",
            "--poll",
            "0.1",
            "--batch-size",
            "50",
            "--distributor-log",
            os.path.join(tmp, "distributor.log"),
            "--json",
        ],
        stdout=subprocess.PIPE,  # only the result line (jobmon's own logs go to stderr)
        stderr=log,
    )
    log.close()
    return proc


def done_count(server: JobmonServer, wf_id: int) -> int:
    try:
        return int(
            server.query(
                "select count(*) from task where workflow_id = ? and status = 'D'", (wf_id,)
            )[0][0]
        )
    except Exception:
        return 0


def wait_until(pred: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def test_replicas_with_kills_match_the_stock_orchestrator(
    jobmon_server: JobmonServer, redis_url: str, prefixes: list[str]
) -> None:
    from jobmon.client.workflow_run import WorkflowRunFactory
    from jobmon.core.constants import WorkflowRunStatus

    t0 = time.monotonic()
    tag = uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="swarm-jobmon-e2e-")  # not tmp_path: kept for the logs
    prefix = f"e2e{tag}"
    prefixes.append(prefix)
    sampler = Sampler(jobmon_server)
    sampler.start()

    # --- jobmon's stock orchestrator on the same workflow, at the same time ------------------
    stock_wf, stock_tasks = build_workflow(f"stock-{tag}", tmp)
    stock: dict[str, Any] = {}

    def run_stock() -> None:
        try:
            stock["status"] = stock_wf.run(seconds_until_timeout=3 * WAIT_S)
        except BaseException as e:  # reported by the assertions below
            stock["error"] = e

    # --- the replicated run ---------------------------------------------------------------------
    wf, tasks = build_workflow(f"shared-{tag}", tmp)
    wf.bind()
    wf._bind_tasks(reset_if_running=True, chunk_size=wf._chunk_size)
    factory = WorkflowRunFactory(wf.workflow_id)
    wfr = factory.create_workflow_run()
    wfr._update_status(WorkflowRunStatus.BOUND)
    run_id = int(wfr.workflow_run_id)
    sampler.workflows[int(wf.workflow_id)] = "shared"

    # jobmon's stock orchestrator on its own copy of the workflow, at the same time
    t_stock = time.monotonic()
    stock_thread = threading.Thread(target=run_stock, daemon=True)
    stock_thread.start()
    t_shared = time.monotonic()

    names = ["r0", "r1", "r2"]
    procs = {
        n: start_replica(n, run_id, int(wf.workflow_id), redis_url, prefix, tmp) for n in names
    }
    client = redis.Redis.from_url(redis_url, protocol=3)
    kills: list[tuple[str, int]] = []
    try:

        def leader() -> str | None:
            try:
                info = RedisSwarmState.attach(client, run_id, prefix=prefix).leader()
            except Exception:
                return None
            return info.replica_id if info is not None else None

        first_kill, second_kill = N_TASKS // 5, (N_TASKS * 3) // 5
        wait_until(
            lambda: done_count(jobmon_server, int(wf.workflow_id)) >= first_kill,
            WAIT_S,
            f"{first_kill} tasks done",
        )
        first = leader()
        assert first in procs, first
        procs[first].send_signal(signal.SIGKILL)
        kills.append((first, done_count(jobmon_server, int(wf.workflow_id))))
        wait_until(
            lambda: (
                leader() not in (None, first)
                and done_count(jobmon_server, int(wf.workflow_id)) >= second_kill
            ),
            WAIT_S,
            f"a new leader and {second_kill} tasks done",
        )
        second = leader()
        assert second in procs and second != first
        procs[second].send_signal(signal.SIGKILL)
        kills.append((second, done_count(jobmon_server, int(wf.workflow_id))))
        survivor = next(n for n in names if n not in (first, second))
        out, _ = procs[survivor].communicate(timeout=WAIT_S)
        with open(os.path.join(tmp, f"{survivor}.log")) as f:
            assert procs[survivor].returncode == 0, f.read()[-4000:]
        outcome = json.loads(out.decode().strip().splitlines()[-1])
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
            p.wait()
    replicated_s = time.monotonic() - t_shared
    stock_thread.join(timeout=WAIT_S)
    stock_s = time.monotonic() - t_stock
    assert not stock_thread.is_alive(), f"jobmon's stock run did not end within {WAIT_S} s more"
    assert "error" not in stock, stock.get("error")
    sampler.halt.set()
    sampler.join()
    elapsed = time.monotonic() - t0

    # --- same final statuses as the stock orchestrator -------------------------------------------
    db_status = dict(
        jobmon_server.query(
            "select id, status from task where workflow_id = ?", (int(wf.workflow_id),)
        )
    )
    stock_status = dict(
        jobmon_server.query(
            "select id, status from task where workflow_id = ?", (int(stock_wf.workflow_id),)
        )
    )
    ours = [db_status[t.task_id] for t in tasks]
    theirs = [stock_status[t.task_id] for t in stock_tasks]
    assert ours == theirs
    assert outcome["final_status"] == stock["status"] == "E"
    assert len(tasks) == N_TASKS
    assert outcome["done_count"] == ours.count("D") == N_TASKS - 2
    assert outcome["failed_count"] == ours.count("F") == 1
    (run_status,) = jobmon_server.query("select status from workflow_run where id = ?", (run_id,))[
        0
    ]
    assert run_status == "E"
    flaky, doomed, child = (t.task_id for t in tasks[N_PREP + N_WORK : N_PREP + N_WORK + 3])

    # --- one task instance per attempt ------------------------------------------------------------
    rows = attempts_and_instances(jobmon_server, int(wf.workflow_id))
    bad = [(t, a, n) for t, a, n in rows if a != n]
    assert not bad, bad
    by_id = {t: (a, n) for t, a, n in rows}
    assert by_id[flaky][0] >= 2  # failed once, then succeeded (a lost heartbeat may add one)
    assert by_id[doomed] == (2, 2)  # the doomed task: max_attempts 2
    assert by_id[child] == (0, 0)  # its child never ran
    stock_rows = attempts_and_instances(jobmon_server, int(stock_wf.workflow_id))
    assert all(a == n for _, a, n in stock_rows)

    # --- no limit exceeded (sampled from the server's task table) --------------------------------
    limits = array_limits(jobmon_server, int(wf.workflow_id))
    assert sampler.samples > 50
    assert 0 < sampler.max_total[int(wf.workflow_id)] <= WF_LIMIT
    for array_id, (name, limit) in limits.items():
        seen = sampler.max_array.get((int(wf.workflow_id), array_id), 0)
        assert seen <= limit, (name, seen, limit)
        if name in LIMITS:
            assert limit == LIMITS[name]

    # --- exactly one distributor at a time, restarted only if it died ---------------------------
    lease_key = RedisSwarmState.attach(client, run_id, prefix=prefix).keys.distributor
    wait_until(lambda: client.get(lease_key) is None, 120, "the distributor lease given back")

    figures = {
        "tasks": len(tasks),
        "kills": kills,
        "stock_s": round(stock_s, 1),
        "replicated_s": round(replicated_s, 1),
        "total_s": round(elapsed, 1),
        "instances_per_attempt_mismatches": len(bad),
        "max_active": sampler.max_total[int(wf.workflow_id)],
        "max_active_per_array": {
            limits[a][0]: n for (w, a), n in sampler.max_array.items() if w == int(wf.workflow_id)
        },
        "limits": {"workflow": WF_LIMIT, **LIMITS},
        "stock_status": stock["status"],
        "outcome": {
            k: outcome[k]
            for k in ("final_status", "done_count", "failed_count", "distributors_started")
        },
        "survivor_calls": outcome["server_calls"],
    }
    print("E2E FIGURES", json.dumps(figures))
    client.close()


def instances_in(server: JobmonServer, wf_id: int, status: str) -> int:
    """Task instances of the workflow in ``status`` (0 while the database is busy)."""
    try:
        return int(
            server.query(
                "select count(*) from task_instance ti join task t on ti.task_id = t.id "
                "where t.workflow_id = ? and ti.status = ?",
                (wf_id, status),
            )[0][0]
        )
    except Exception:
        return 0


def resume_workflow(
    tag: str, marker: str, seconds: float = 0.0, gate_attempts: int = 1, n_quick: int = N_QUICK
) -> Any:
    """``n_quick`` quick tasks (each sleeping ``seconds``), one that needs ``marker``
    (``gate_attempts`` attempts) and its child."""
    from jobmon.client.tool import Tool

    tool = Tool(name=f"swarm-resume-{tag}")
    tool.set_default_compute_resources_from_dict(
        cluster_name="sequential", compute_resources={"queue": "null.q"}
    )
    tt = tool.get_task_template(
        template_name="step", command_template="{arg}", node_args=["arg"], task_args=[], op_args=[]
    )
    wf = tool.create_workflow(name=f"resume-{tag}", workflow_args=f"resume-{tag}")
    nap = f"sleep {seconds}; " if seconds else ""
    quick = [tt.create_task(arg=f"{nap}echo {tag} q{i}", max_attempts=3) for i in range(n_quick)]
    gate = tt.create_task(
        arg=f"test -f {marker}", max_attempts=gate_attempts, upstream_tasks=quick[:2]
    )
    after = tt.create_task(arg=f"echo {tag} after", max_attempts=3, upstream_tasks=[gate])
    wf.add_tasks([*quick, gate, after])
    return wf


@pytest.mark.timeout(3 * QUICK_RUN_S)
def test_resumed_run_continues_on_shared_state(
    jobmon_server: JobmonServer, redis_url: str, prefixes: list[str]
) -> None:
    from swarm_redis.jobmon.run import run

    tag = uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="swarm-jobmon-resume-")
    marker = os.path.join(tmp, "marker")
    prefixes.extend([f"rs1{tag}", f"rs2{tag}"])
    first = run(
        resume_workflow(tag, marker),
        redis_url=redis_url,
        prefix=f"rs1{tag}",
        poll_s=0.1,
        seconds_until_timeout=QUICK_RUN_S,
        distributor_log=os.path.join(tmp, "distributor.log"),
    )
    assert first.final_status == "E"
    assert (first.done_count, first.failed_count, first.num_previously_complete) == (N_QUICK, 1, 0)
    open(marker, "w").close()  # the user fixes the cause, then resumes
    wf = resume_workflow(tag, marker)
    runs: list[int] = []
    second = run(
        wf,
        redis_url=redis_url,
        prefix=f"rs2{tag}",
        resume=True,
        resume_timeout=10,  # jobmon waits a tenth of it before it looks whether it may resume
        poll_s=0.1,
        seconds_until_timeout=QUICK_RUN_S,
        on_run_created=runs.append,
        distributor_log=os.path.join(tmp, "distributor.log"),
    )
    assert second.final_status == "D"
    assert second.num_previously_complete == N_QUICK  # the DONE tasks of the first run
    assert second.done_count == second.total_tasks == N_QUICK + 2
    assert wf._num_previously_completed == N_QUICK
    # only the failed task and its child ran again, once each, in the new run
    instances = jobmon_server.query(
        "select task_id from task_instance where workflow_run_id = ?", (runs[0],)
    )
    assert len(instances) == 2
    client = redis.Redis.from_url(redis_url, protocol=3)
    try:
        state = RedisSwarmState.attach(client, runs[0], prefix=f"rs2{tag}")
        assert state.status == "D" and state.num_previously_complete == N_QUICK
    finally:
        client.close()


@pytest.mark.timeout(3 * QUICK_RUN_S)
def test_dead_distributor_is_restarted_by_the_leader(
    jobmon_server: JobmonServer, redis_url: str, prefixes: list[str]
) -> None:
    """SIGKILL the distributor's supervisor mid-run, while its jobmon distributor holds task
    instances INSTANTIATED (and one RUNNING): the distributor dies with it, the lease expires,
    the leader starts exactly one new distributor, which takes over the dead one's task
    instances (swarm_redis.jobmon.adopt), and the run ends DONE."""
    from swarm_redis.jobmon import distributor as dist
    from swarm_redis.jobmon.run import ReplicaOutcome, run

    tag = uuid.uuid4().hex[:8]
    tmp = tempfile.mkdtemp(prefix="swarm-jobmon-dist-")
    marker = os.path.join(tmp, "marker")
    open(marker, "w").close()
    n_quick = 8  # one batch: while one runs, the others wait INSTANTIATED
    wf = resume_workflow(tag, marker, seconds=0.5, gate_attempts=3, n_quick=n_quick)
    prefix = f"dk{tag}"
    prefixes.append(prefix)
    runs: list[int] = []
    outcomes: list[ReplicaOutcome] = []
    box: dict[str, Any] = {}

    def serve() -> None:
        try:
            box["result"] = run(
                wf,
                redis_url=redis_url,
                prefix=prefix,
                poll_s=0.1,
                seconds_until_timeout=QUICK_RUN_S,
                on_run_created=runs.append,
                outcome=outcomes,
                distributor_log=os.path.join(tmp, "distributor.log"),
            )
        except BaseException as e:  # reported below
            box["error"] = e

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    client = redis.Redis.from_url(redis_url, protocol=3)
    try:
        wait_until(lambda: bool(runs), 120, "the run to be created")
        wf_id = int(wf.workflow_id)
        wait_until(
            lambda: (
                done_count(jobmon_server, wf_id) >= 1
                and instances_in(jobmon_server, wf_id, "I") >= 2
            ),
            300,
            "a task done and task instances INSTANTIATED",
        )
        keys = RedisSwarmState.attach(client, runs[0], prefix=prefix).keys
        lease = dist.read_lease(client, keys)
        assert lease is not None and lease.pid > 0
        os.kill(lease.pid, signal.SIGKILL)
        orphans = instances_in(jobmon_server, wf_id, "I")
        wait_until(
            lambda: (dist.read_lease(client, keys) or lease).token != lease.token,
            120,
            "a new distributor lease",
        )
        thread.join(timeout=QUICK_RUN_S)
        assert not thread.is_alive()
        assert "error" not in box, box.get("error")
        result = box["result"]
        assert result.final_status == "D"
        assert result.done_count == result.total_tasks == n_quick + 2
        assert outcomes[0].distributors_started == 2  # no restart loop
        assert orphans >= 1  # the dead distributor left INSTANTIATED task instances behind
        rows = attempts_and_instances(jobmon_server, wf_id)
        assert all(a == n for _, a, n in rows), rows
        # the supervisor sees the run is over, stops its distributor and gives the lease back
        wait_until(lambda: dist.read_lease(client, keys) is None, 120, "the lease given back")
    finally:
        client.close()


# --- swarm-redis demo --jobmon ---------------------------------------------------------------
# A small run (6 tasks, 2 replicas, no kills: the tests above kill) through the command line, on
# the real Redis with --purge: the verdict passes, every line of it, and the run's keys are gone
# afterwards.


def start_demo(redis_url: str) -> BackgroundProcess:
    """The demo run of the test below, started."""
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [
        sys.executable, "-m", "swarm_redis", "demo", "--jobmon", "--tasks", "6",
        "--replicas", "2", "--kill-every", "0", "--url", redis_url, "--purge",
    ]  # fmt: skip
    return BackgroundProcess(cmd, env=env)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_runs_a_real_workflow_and_passes_its_verdict(real_redis_url: str) -> None:
    code, out, err = start_demo(real_redis_url).result(timeout_s=540)
    assert code == 0, out[-3000:] + err[-3000:]
    verdict = out.split("verdict (from the jobmon server's database):", 1)[1]
    lines = [line.strip() for line in verdict.strip().splitlines()]
    assert lines and all(line.startswith("PASS") for line in lines), verdict
    assert any("6/6 tasks DONE" in line for line in lines), verdict
    assert any("jobmon distributors started: 1" in line for line in lines), verdict
    assert any(re.search(r"array first: at most [123] active, limit 3", x) for x in lines)
    prefix = re.search(r"prefix (\S+)", out)
    assert prefix is not None, out
    assert re.search(r"purged [1-9]\d* keys", out), out
    client = redis.Redis.from_url(real_redis_url)
    try:
        assert not list(client.scan_iter(match=f"{prefix.group(1)}:*", count=1000))
    finally:
        client.close()
