"""``swarm-redis demo --jobmon``: a real jobmon workflow, N replicas, kills, and a verdict.

Starts a local jobmon server (sqlite) and, unless ``--url`` / ``$REDIS_URL`` is given, a private
``redis-server``; builds a jobmon workflow of ``--tasks`` shell tasks (two arrays with their own
limits, a fan-in, a task that fails once then succeeds), creates its run, starts ``--replicas``
``swarm-redis jobmon-replica`` processes, SIGKILLs the current leader every ``--kill-every``
seconds (at least :data:`MIN_KILL_EVERY_S`: a replica takes seconds to start) and starts a
replacement, and when the run ends prints a verdict read from the jobmon server's database: run
status, every task DONE, one task instance per attempt, the most tasks active at once per array
against its limit (sampled from the server's records), and how many distributors ran (from
their log). ``--purge`` deletes the run's keys at the end (with ``--url``; a private Redis goes
away with the demo).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from typing import Any

__all__ = ["MIN_KILL_EVERY_S", "run_jobmon_demo"]

#: Shortest interval between leader kills (a replica needs seconds to load jobmon and the run).
MIN_KILL_EVERY_S = 10.0

_ACTIVE_SQL = (
    "select array_id, count(*) from task where workflow_id = ? and status in "
    "('Q','I','O','R') group by array_id"
)


def _private_redis(tmp: str) -> tuple[str, subprocess.Popen[bytes]]:
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("no --url, no $REDIS_URL and no redis-server on PATH")
    sock = os.path.join(tmp, "redis.sock")
    proc = subprocess.Popen(
        [exe, "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while not os.path.exists(sock):
        if time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError("private redis-server did not start")
        time.sleep(0.05)
    return f"unix://{sock}", proc


def _count_in(path: str, text: str) -> int:
    """Lines of the file at ``path`` that contain ``text`` (0 when there is no file)."""
    try:
        with open(path, errors="replace") as f:
            return sum(text in line for line in f)
    except OSError:
        return 0


def _workflow(tag: str, n: int, marker: str, limits: dict[str, int]) -> Any:
    from jobmon.client.tool import Tool

    tool = Tool(name=f"swarm-demo-{tag}")
    tool.set_default_compute_resources_from_dict(
        cluster_name="sequential", compute_resources={"queue": "null.q"}
    )

    def template(name: str) -> Any:
        return tool.get_task_template(
            template_name=name,
            command_template="{arg}",
            node_args=["arg"],
            task_args=[],
            op_args=[],
        )

    first, second, flaky = template("first"), template("second"), template("flaky")
    wf = tool.create_workflow(name=f"demo-{tag}", workflow_args=f"demo-{tag}")
    n_first = max(2, (n * 3) // 5)
    a = [first.create_task(arg=f"echo {tag} a{i}") for i in range(n_first)]
    b = [
        second.create_task(
            arg=f"echo {tag} b{j}", upstream_tasks=[a[j % n_first], a[-1 - j % n_first]]
        )
        for j in range(max(1, n - n_first - 1))
    ]
    f = flaky.create_task(
        arg=f"sh -c 'if [ -f {marker} ]; then echo ok; else touch {marker}; exit 3; fi'",
        upstream_tasks=[a[0]],
    )
    wf.add_tasks([*a, *b, f])
    for name, limit in limits.items():
        wf.set_task_template_max_concurrency_limit(name, limit)
    return wf


def run_jobmon_demo(args: argparse.Namespace) -> int:
    """The ``--jobmon`` mode of the demo; 0 when every check passed."""
    try:
        import jobmon.client.api
        import jobmon.server.web.api  # noqa: F401
    except ImportError:
        print(
            "swarm-redis demo --jobmon: jobmon 3.6 is not installed (see the README, 'Use with jobmon')",
            file=sys.stderr,
        )
        return 2
    import redis as redis_py

    from swarm_redis.engine.keys import RunKeys
    from swarm_redis.jobmon.localserver import JobmonServer
    from swarm_redis.ops.reads import scan_keys
    from swarm_redis.state import RedisSwarmState

    n_tasks = int(getattr(args, "tasks", 60) or 60)
    if n_tasks > 1000:
        n_tasks = 60  # the simulated demo's default is far too many for a local sqlite server
    replicas = max(1, int(getattr(args, "replicas", 3) or 3))
    kill_every = float(getattr(args, "kill_every", 20.0))
    if kill_every > 0:
        kill_every = max(kill_every, MIN_KILL_EVERY_S)
    limits = {"first": 3, "second": 2}
    tmp = tempfile.mkdtemp(prefix="swarm-jobmon-demo-")
    url = getattr(args, "url", None) or os.environ.get("REDIS_URL")
    redis_proc = None
    if not url:
        url, redis_proc = _private_redis(tmp)
    prefix = f"demo{uuid.uuid4().hex[:6]}"
    say = print
    say(f"jobmon demo: {n_tasks} tasks, {replicas} replicas, leader killed every {kill_every}s")
    say(f"  logs in {tmp}; Redis {url}, prefix {prefix}")
    procs: dict[str, subprocess.Popen[bytes]] = {}
    kills: list[str] = []
    try:
        with JobmonServer(tmp) as server:
            from jobmon.client.workflow_run import WorkflowRunFactory

            tag = uuid.uuid4().hex[:8]
            wf = _workflow(tag, n_tasks, os.path.join(tmp, "flaky-marker"), limits)
            wf.bind()
            wf._bind_tasks(reset_if_running=True, chunk_size=wf._chunk_size)
            wfr = WorkflowRunFactory(wf.workflow_id).create_workflow_run()
            wfr._update_status("B")
            run_id, wf_id = int(wfr.workflow_run_id), int(wf.workflow_id)
            say(f"  jobmon server {server.url}: workflow {wf_id}, run {run_id}")
            peaks: dict[int, int] = {}
            halt = threading.Event()

            def sample() -> None:
                while not halt.wait(0.3):
                    with contextlib.suppress(Exception):
                        for array_id, n in server.query(_ACTIVE_SQL, (wf_id,)):
                            peaks[int(array_id)] = max(peaks.get(int(array_id), 0), int(n))

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            counter = 0

            def start() -> None:
                nonlocal counter
                name = f"r{counter}"
                counter += 1
                with open(os.path.join(tmp, f"{name}.log"), "wb") as log:
                    procs[name] = subprocess.Popen(
                        [
                            sys.executable, "-m", "swarm_redis", "jobmon-replica",
                            "--run", str(run_id), "--workflow-id", str(wf_id),
                            "--url", url, "--prefix", prefix, "--replica-id", name,
                            "--ttl", "5", "--sync", "1", "--json",
                            "--distributor-log", os.path.join(tmp, "distributor.log"),
                        ],
                        stdout=subprocess.PIPE,
                        stderr=log,
                    )  # fmt: skip

            for _ in range(replicas):
                start()
            client = redis_py.Redis.from_url(url, protocol=3)
            next_kill = time.monotonic() + kill_every
            outcome: dict[str, Any] = {}
            while True:
                finished = [n for n, p in procs.items() if p.poll() == 0]
                if finished:
                    out = procs[finished[0]].stdout
                    text = out.read().decode() if out is not None else ""
                    lines = text.strip().splitlines()
                    outcome = json.loads(lines[-1]) if lines else {}
                    break
                if kill_every > 0 and time.monotonic() >= next_kill:
                    next_kill = time.monotonic() + kill_every
                    with contextlib.suppress(Exception):
                        info = RedisSwarmState.attach(client, run_id, prefix=prefix).leader()
                        if info is not None and info.replica_id in procs:
                            victim = procs[info.replica_id]
                            if victim.poll() is None:
                                victim.send_signal(signal.SIGKILL)
                                kills.append(info.replica_id)
                                say(f"  SIGKILL leader {info.replica_id}; starting a replacement")
                                start()
                time.sleep(0.5)
            for p in procs.values():  # the others end on their own once the run is final
                try:
                    p.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    p.kill()
            halt.set()
            sampler.join()
            if redis_proc is None and getattr(args, "purge", False):
                keys = list(scan_keys(client, RunKeys(prefix, run_id).match_all))
                for first in range(0, len(keys), 500):
                    client.unlink(*keys[first : first + 500])
                say(f"  purged {len(keys)} keys of run {run_id}")
            client.close()
            distributors = _count_in(os.path.join(tmp, "distributor.log"), "Distributor running")
            statuses = dict(
                server.query(
                    "select status, count(*) from task where workflow_id = ? group by status",
                    (wf_id,),
                )
            )
            (run_status,) = server.query("select status from workflow_run where id = ?", (run_id,))[
                0
            ]
            mismatched = server.query(
                "select count(*) from task t where t.workflow_id = ? and t.num_attempts != "
                "(select count(*) from task_instance ti where ti.task_id = t.id)",
                (wf_id,),
            )[0][0]
            names = dict(
                server.query(
                    "select a.id, tt.name from array a join task_template_version v on "
                    "a.task_template_version_id = v.id join task_template tt on "
                    "v.task_template_id = tt.id where a.workflow_id = ?",
                    (wf_id,),
                )
            )
    finally:
        for p in procs.values():
            if p.poll() is None:
                p.kill()
        if redis_proc is not None:
            redis_proc.terminate()
    total = sum(statuses.values())
    checks = [
        (run_status == "D", f"run {run_id} is DONE on the server (status {run_status})"),
        (statuses.get("D", 0) == total, f"{statuses.get('D', 0)}/{total} tasks DONE"),
        (mismatched == 0, f"one task instance per attempt ({mismatched} tasks differ)"),
    ]
    for array_id, peak in sorted(peaks.items()):
        name = names.get(array_id, str(array_id))
        limit = limits.get(name)
        if limit is not None:
            checks.append((peak <= limit, f"array {name}: at most {peak} active, limit {limit}"))
    checks.append((len(kills) > 0 or kill_every <= 0, f"leaders killed: {len(kills)} {kills}"))
    checks.append((distributors >= 1, f"jobmon distributors started: {distributors}"))
    checks.append(
        (outcome.get("final_status") == "D", f"replica result: {outcome.get('final_status')}")
    )
    say("verdict (from the jobmon server's database):")
    for ok, text in checks:
        say(f"  {'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for ok, _ in checks) else 1
