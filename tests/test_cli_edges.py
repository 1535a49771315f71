"""The CLI where an operator meets it first: closed pipes, event windows, narrow terminals,
blocked tasks, bad arguments, refused reads, the exporter while Redis is down.

Read-level behaviour runs on both backends (``r``); the command line itself runs in-process
(``main``) or as ``python -m swarm_redis`` against the real server.
"""

from __future__ import annotations

import datetime
import os
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from cli_helpers import CliResult, build_run, run_cli
from rich.console import Console, RenderableType

from swarm_redis import ArrayRecord, RedisSwarmState, StateUpdate, TaskRecord
from swarm_redis.demo.embedded import free_port
from swarm_redis.engine.coordination import ReapReport
from swarm_redis.engine.keys import RunKeys
from swarm_redis.exit_codes import (
    EXIT_CONNECTION,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_PIPE_CLOSED,
    EXIT_USAGE,
    EXIT_WRITE_REFUSED,
)
from swarm_redis.ops import cli as cli_mod
from swarm_redis.ops import render
from swarm_redis.ops import tasks as tasks_mod
from swarm_redis.ops.events import read_events, read_last_events
from swarm_redis.ops.handlers import MIN_INTERVAL
from swarm_redis.ops.reads import list_runs, read_only_acl_rules, read_snapshot, sync_text
from swarm_redis.ops.tasks import list_tasks, task_detail
from swarm_redis.ops.verify import find_drift

Capsys = pytest.CaptureFixture[str]


def chain_run(client: Any, prefix: str, run_id: int) -> RedisSwarmState:
    """Tasks 1 -> 2 -> 3 -> 4 and 1 -> 5, plus 6 alone; task 1 has failed for good."""
    state = RedisSwarmState(1, run_id, 1, max_concurrently_running=5, redis=client, prefix=prefix)
    tasks = {i: TaskRecord(i, array_id=1) for i in range(1, 7)}
    for up, down in ((1, 2), (2, 3), (3, 4), (1, 5)):
        tasks[up].downstream_swarm_tasks.add(tasks[down])
        tasks[down].num_upstreams += 1
    state.add_arrays([ArrayRecord(1, 5)])
    state.add_tasks(tasks.values())
    state.enqueue_tasks([tasks[1], tasks[6]])
    state.apply_update(StateUpdate(task_statuses={1: "Q"}, workflow_run_status="R"))
    state.apply_update(StateUpdate(task_statuses={1: "F"}))
    return state


# --- blocked tasks (both backends) ----------------------------------------------------------------


def test_a_task_below_a_failed_task_is_blocked_not_waiting(
    r: redis.Redis, prefix: str, run_id: int
) -> None:
    state = chain_run(r, prefix, run_id)
    direct = task_detail(r, state.keys, 2)
    assert direct is not None
    assert (
        direct.verdict == "blocked: upstream 1 failed (ERROR_FATAL), so it cannot run in this run"
    )
    assert (direct.blocked_by, direct.blocked_via) == (1, [])
    far = task_detail(r, state.keys, 4)
    assert far is not None and far.blocked_by == 1 and far.blocked_via == [3, 2]
    assert far.verdict.startswith(
        "blocked: upstream 1 failed (ERROR_FATAL), 3 levels up (via 3, 2)"
    )
    queued = task_detail(r, state.keys, 6)  # not below the failure: its own story
    assert queued is not None and queued.blocked_by is None
    assert queued.verdict.startswith("queued at position")
    state.apply_update(StateUpdate(workflow_run_status="E"))
    final = task_detail(r, state.keys, 4)
    assert final is not None
    assert final.verdict.endswith("the run is final (ERROR (E)), so it never will run")
    after = task_detail(r, state.keys, 6)
    assert after is not None
    assert after.verdict.endswith("; the run is final (ERROR (E)): nothing more runs in it")


def test_past_the_ancestry_bound_only_direct_upstreams_are_checked(
    r: redis.Redis, prefix: str, run_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    state = chain_run(r, prefix, run_id)
    monkeypatch.setattr(tasks_mod, "ANCESTRY_MAX", 1)  # the scan stops keeping links at once
    direct = task_detail(r, state.keys, 2)
    assert direct is not None and direct.blocked_by == 1
    far = task_detail(r, state.keys, 4)
    assert far is not None and far.blocked_by is None
    assert far.verdict == "waiting for upstreams: 0 of 1 done (not done: 3)"


def test_waiting_for_upstreams_is_kept_when_nothing_failed(
    r: redis.Redis, prefix: str, run_id: int
) -> None:
    state = build_run("", prefix, run_id, client=r)
    detail = task_detail(r, state.keys, 3)  # 2 is queued, not failed
    assert detail is not None and detail.blocked_by is None
    assert detail.verdict == "waiting for upstreams: 0 of 1 done (not done: 2)"


def test_cli_task_says_blocked(cli: Any, real_redis_url: str, prefix: str, run_id: int) -> None:
    state = chain_run(redis.Redis.from_url(real_redis_url, protocol=3), prefix, run_id)
    state.apply_update(StateUpdate(workflow_run_status="E"))
    res = cli("task", str(run_id), "3")
    assert res.code == EXIT_OK
    assert (
        "why not running: blocked: upstream 1 failed (ERROR_FATAL), 2 levels up (via 2); "
        "the run is final (ERROR (E)), so it never will run"
    ) in res.out
    assert "waiting for upstreams" not in res.out
    data = cli("--json", "task", str(run_id), "3").json()
    assert data["blocked_by"] == 1 and data["blocked_via"] == [2]


# --- widths -----------------------------------------------------------------------------------------


def _views(client: Any, state: RedisSwarmState) -> dict[str, RenderableType]:
    replica = state.join_replica(ttl_s=60, replica_id="replica-" + "x" * 40)
    state.acquire_leadership(replica)
    state.claim_batch(replica, 10)
    state.apply_update(StateUpdate(task_statuses={5: "F"}))
    client.hset(state.keys.active, "2", 5)  # drift, so verify has a table to show
    snap = read_snapshot(client, state.keys)
    detail = task_detail(client, state.keys, 7)
    assert detail is not None
    return {
        "runs": render.runs_table(list_runs(client, state.keys.prefix)),
        "status": render.status_view(snap),
        "watch": render.watch_view(snap, 1234.5),
        "tasks": render.tasks_table(*list_tasks(client, state.keys)),
        "task": render.task_view(detail),
        "replicas": render.replicas_view(snap),
        "verify": render.drift_view(find_drift(client, state.keys)),
    }


@pytest.mark.parametrize("width", [80, 130])
def test_every_view_fits_the_terminal(r: redis.Redis, prefix: str, run_id: int, width: int) -> None:
    state = build_run("", prefix, run_id, client=r)
    for name, view in _views(r, state).items():
        console = Console(width=width, record=True, force_terminal=True, color_system=None)
        console.print(view)
        text = console.export_text()
        for line in text.splitlines():
            assert len(line) <= width, (name, line)
        assert "…" not in text, (name, text)  # cells fold, nothing is cut
        if name == "watch":
            lines = [line.rstrip() for line in text.splitlines()]
            header = next(i for i, line in enumerate(lines) if line.split() == list("GQIORDEAF"))
            assert "━" in lines[header - 1] and "G" not in lines[header - 1]  # bar: own line
            assert lines[header + 1].split()[-1] == "1"  # one F
        if name == "replicas":
            assert "age" in text and "lease" in text


def test_piped_output_is_never_wrapped(cli: Any, state: RedisSwarmState) -> None:
    res = cli("status", str(state.workflow_run_id))
    (counters,) = [line for line in res.out.splitlines() if line.startswith("counters:")]
    assert len(counters) > 100 and counters.rstrip().endswith("to:R=1")


# --- closed pipes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [("--json", "events", "{run}"), ("--json", "task", "{run}", "3"), ("events", "{run}")],
)
def test_a_closed_pipe_ends_quietly_in_process(
    state: RedisSwarmState,
    real_redis_url: str,
    prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: Capsys,
    args: tuple[str, ...],
) -> None:
    """stdout is a real pipe whose reading end is closed: writes fail with EPIPE."""
    argv = [a.format(run=state.workflow_run_id) for a in args]
    read_end, write_end = os.pipe()
    os.close(read_end)
    with open(write_end, "w", encoding="utf-8") as closed:
        monkeypatch.setattr(sys, "stdout", closed)
        code = cli_mod.main(["--url", real_redis_url, "--prefix", prefix, *argv])
        monkeypatch.undo()
    assert code == EXIT_PIPE_CLOSED == 141
    assert capsys.readouterr().err == ""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    return env


@pytest.mark.parametrize(
    "args",
    [("--json", "events", "{run}"), ("--json", "task", "{run}", "3"), ("events", "{run}")],
)
def test_a_closed_pipe_ends_quietly(
    state: RedisSwarmState, real_redis_url: str, prefix: str, args: tuple[str, ...]
) -> None:
    """The reader closes before the command writes: exit 141, nothing on stderr."""
    argv = [a.format(run=state.workflow_run_id) for a in args]
    cmd = [sys.executable, "-m", "swarm_redis", "--url", real_redis_url, "--prefix", prefix]
    proc = subprocess.Popen(
        [*cmd, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env()
    )
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == EXIT_PIPE_CLOSED
    assert err == ""


def test_head_reads_one_line_and_the_pipeline_is_quiet(
    state: RedisSwarmState, real_redis_url: str, prefix: str
) -> None:
    base = f"{sys.executable} -m swarm_redis --url {real_redis_url} --prefix {prefix}"
    proc = subprocess.run(
        ["bash", "-c", f"{base} events {state.workflow_run_id} | head -n 1"],
        capture_output=True,
        text=True,
        env=_env(),
        check=False,
    )
    assert proc.returncode == 0 and proc.stderr == ""
    assert len(proc.stdout.splitlines()) == 1 and "run_created" in proc.stdout


# --- events -------------------------------------------------------------------------------------


def test_last_events_are_the_latest(r: redis.Redis, prefix: str, run_id: int) -> None:
    state = build_run("", prefix, run_id, client=r)
    every = list(read_events(r, state.keys))
    assert len(every) > 5
    assert read_last_events(r, state.keys, 3) == every[-3:]
    assert read_last_events(r, state.keys, 10_000) == every
    assert read_last_events(r, state.keys, 100, since=every[-2].id) == every[-1:]


def test_events_last_count_and_since_on_the_command_line(cli: Any, state: RedisSwarmState) -> None:
    run = str(state.workflow_run_id)
    every = cli("--json", "events", run).lines()
    assert cli("--json", "events", run, "--last", "2").lines() == every[-2:]
    assert cli("--json", "events", run, "--count", "2").lines() == every[:2]
    human = cli("events", run, "--last", "1")
    assert human.code == EXIT_OK and len(human.out.splitlines()) == 1
    for bad in (
        ("--count", "2", "--last", "2"),
        ("--last", "0"),
        ("--count", "-1"),
        ("--since", "yesterday"),
        ("--since", "1-2-3"),
        ("--since", "99999999999999999999999-0"),
    ):
        res = cli("events", run, *bad)
        assert res.code == EXIT_USAGE, bad
        assert "Traceback" not in res.err and "error:" in res.err, bad
    assert "not an event id" in cli("events", run, "--since", "x").err
    assert cli("--json", "events", run, "--since", every[-2]["id"].split("-")[0]).code == 0


def test_follow_starts_at_the_end(cli: Any, state: RedisSwarmState) -> None:
    run = str(state.workflow_run_id)
    result: list[CliResult] = []
    worker = threading.Thread(
        target=lambda: result.append(cli("--json", "events", run, "--follow", "--count", "1"))
    )
    worker.start()
    try:
        deadline = time.monotonic() + 30
        while not any(
            c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in state.redis.client_list()
        ):
            assert time.monotonic() < deadline, "the follower never blocked in XREAD"
            time.sleep(0.01)
        state.apply_update(StateUpdate(task_statuses={3: "F"}))
    finally:
        worker.join(timeout=60)
    assert not worker.is_alive()
    (only,) = result[0].lines()  # none of the kept events, only the new one
    assert (only["type"], only["task"], only["to"]) == ("task", "3", "F")


# --- usage errors and messages ---------------------------------------------------------------------


def test_watch_interval(cli: Any, state: RedisSwarmState) -> None:
    run = str(state.workflow_run_id)
    for bad in ("-1", "nan", "inf", "soon"):
        res = cli("watch", run, "--interval", bad)
        assert res.code == EXIT_USAGE and "interval" in res.err, bad
    assert cli("watch", run, "--count", "-2").code == EXIT_USAGE
    started = time.monotonic()
    res = cli("watch", run, "--count", "3", "--interval", "0")
    assert res.code == EXIT_OK and len(res.out.splitlines()) == 3
    assert time.monotonic() - started >= 2 * MIN_INTERVAL  # 0 pauses the minimum, no spin


def test_cluster_flag_on_a_plain_server_is_one_line(cli: Any) -> None:
    res = cli("--cluster", "runs")
    assert res.code == EXIT_CONNECTION
    assert res.err.count("\n") == 1 and "Traceback" not in res.err
    assert "not part of a Redis Cluster" in res.err and "leave out --cluster" in res.err


def test_last_sync_shows_a_time(cli: Any, state: RedisSwarmState) -> None:
    run = str(state.workflow_run_id)
    when = datetime.datetime(2024, 5, 6, 7, 8, 9, tzinfo=datetime.timezone.utc)
    state.apply_update(StateUpdate(sync_time=when))
    assert "last sync: 2024-05-06 07:08:09+00:00" in cli("status", run).out
    assert cli("--json", "status", run).json()["last_sync"] == "2024-05-06 07:08:09+00:00"
    state.apply_update(StateUpdate(sync_time="2024-06-01 10:00:00"))  # jobmon's text form
    assert "last sync: 2024-06-01 10:00:00\n" in cli("status", run).out
    assert sync_text("d:not a date") == "d:not a date"  # shown as stored, never a crash
    assert sync_text(None) is None


def test_reap_summary_reads_as_a_sentence() -> None:
    report = ReapReport(dead_replicas=("rep-a", "rep-b"), batches=3, tasks=7, leader_cleared=True)
    assert render.reap_summary("9", report) == (
        "reap of run 9: 2 dead replicas removed (rep-a, rep-b); 3 claimed batches (7 tasks) "
        "orphaned, to be re-driven by the next claim of a live replica; the dead leader's "
        "lease was cleared"
    )
    assert "skipped" in render.reap_summary("9", ReapReport(skipped=True))
    assert "(" not in render.reap_summary("9", ReapReport()).split(":", 1)[1]


def test_purge_says_what_it_deleted(cli: Any, state: RedisSwarmState, capsys: Capsys) -> None:
    run = str(state.workflow_run_id)
    state.join_replica(ttl_s=60, replica_id="rep-live")
    refused = cli("purge", run, "--yes")
    assert refused.code == cli_mod.EXIT_ERROR
    assert "status RUNNING (R)" in refused.err and "rep-live (lease" in refused.err
    forced = cli("purge", run, "--yes", "--force")
    assert forced.code == EXIT_OK
    assert "purging a live run (--force)" in forced.err and "rep-live" in forced.err
    assert "status RUNNING (R); replicas: rep-live (lease" in forced.out
    assert "IT IS LIVE" in forced.out


# --- a read refused by the key pattern (real server) -------------------------------------------


@pytest.fixture
def other_prefix_monitor(real_redis_url: str, prefix: str) -> Iterator[str]:
    """A read-only user whose key pattern covers ``<prefix>x``, not ``prefix``."""
    from test_cli_acl import with_user

    admin = redis.Redis.from_url(real_redis_url, protocol=3)
    user = f"{prefix}-elsewhere"
    password = secrets.token_hex(16)
    rules = read_only_acl_rules(prefix + "x")
    admin.execute_command("ACL", "SETUSER", user, "reset", "on", f">{password}", *rules)
    try:
        yield with_user(real_redis_url, user, password)
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


def test_a_denied_read_is_called_a_read(
    other_prefix_monitor: str, state: RedisSwarmState, prefix: str, capsys: Capsys
) -> None:
    run = str(state.workflow_run_id)
    res = run_cli(capsys, "--url", other_prefix_monitor, "--prefix", prefix, "status", run)
    assert res.code == EXIT_WRITE_REFUSED
    assert res.err.startswith("swarm-redis: read refused: Redis answered NOPERM")
    assert f"~{prefix}:*" in res.err and "write" not in res.err


# --- exporter while Redis is down ----------------------------------------------------------------


def _scrape(port: int, proc: subprocess.Popen[bytes]) -> str:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the exporter exited"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
                return str(resp.read().decode())
        except OSError:
            time.sleep(0.05)
    raise AssertionError("the exporter did not answer")


@pytest.mark.parametrize("cluster", [False, True], ids=["plain", "cluster"])
def test_exporter_starts_while_redis_is_down(cluster: bool) -> None:
    port = free_port()
    down = f"redis://127.0.0.1:{free_port()}/0"
    cmd = [sys.executable, "-m", "swarm_redis", "--url", down, *(["--cluster"] * cluster)]
    cmd += ["exporter", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=_env())
    try:
        body = _scrape(port, proc)
        assert re.search(r"^swarm_up 0\.0$", body, re.M), body
    finally:
        proc.terminate()
        proc.wait()


def test_exporter_help_texts(r: redis.Redis, prefix: str, run_id: int) -> None:
    from prometheus_client import generate_latest

    from swarm_redis.ops.exporter import make_registry

    build_run("", prefix, run_id, client=r)
    text = generate_latest(make_registry(r, prefix)).decode()
    helps = dict(re.findall(r"^# HELP (\S+) (.*)$", text, re.M))
    assert helps["swarm_run_reaps_total"].startswith("Replicas reaped")
    assert "0 to 1" in helps["swarm_run_done_ratio"]
    assert f'swarm_run_done_ratio{{run="{run_id}"}} 0.1' in text
    keys = RunKeys(prefix, run_id)
    assert read_snapshot(r, keys).done == 1


def test_jobmon_replica_without_jobmon_says_how_to_get_it(
    monkeypatch: pytest.MonkeyPatch, capsys: Capsys
) -> None:
    """Its own options (``--run`` ...) are not known without jobmon: the command still says
    that jobmon is missing and how to get it, not a usage error."""
    from swarm_redis.ops.cli import main

    monkeypatch.setitem(sys.modules, "swarm_redis.jobmon.cli", None)  # the import fails
    code = main(["jobmon-replica", "--run", "1234", "--url", "redis://redis.example:6379/0"])
    err = capsys.readouterr().err
    assert code == EXIT_ERROR and err.startswith("swarm-redis jobmon-replica: "), err
    assert "unrecognized arguments" not in err
    assert main(["status", "7", "--bogus"]) == EXIT_USAGE  # other commands stay strict
    assert "unrecognized arguments: --bogus" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "1001", "abc"])
def test_replica_commands_refuse_a_batch_size_claim_batch_would_refuse(bad: str) -> None:
    """A usage error naming --batch-size (exit 2), not a replica refused at every claim. Without
    jobmon, jobmon-replica says how to get it whatever its arguments (tested elsewhere)."""
    from swarm_redis.bench.scenarios.jobmon_tick import jobmon_available

    commands = [[sys.executable, "-m", "swarm_redis.replica", "--run", "1", "--sim", "h:1"]]
    if jobmon_available():  # not find_spec("jobmon"): tests/jobmon would be found
        commands.append([sys.executable, "-m", "swarm_redis", "jobmon-replica", "--run", "1"])
    for argv in commands:
        out = subprocess.run(
            [*argv, "--batch-size", bad], capture_output=True, text=True, timeout=60
        )
        assert out.returncode == 2, out
        assert "argument --batch-size: must be" in out.stderr
