"""The swarm-redis CLI, the consistency checker, snapshots and the exporter, on a real Redis.

Runs are built through RedisSwarmState (see cli_helpers.build_run); the CLI runs in-process
through ``main([...])`` with stdout captured (not a terminal: plain output, no colour), plus
subprocess runs of ``python -m swarm_redis``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from cli_helpers import CliResult, finish_run, run_cli
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from redis.backoff import NoBackoff
from redis.retry import Retry
from replies import as_bytes
from rich.console import Console

from swarm_redis import RedisSwarmState, StateUpdate
from swarm_redis.constants import TASK_STATUSES
from swarm_redis.demo.embedded import free_port
from swarm_redis.engine.keys import RunKeys
from swarm_redis.ops import cli as cli_mod
from swarm_redis.ops import snapshot
from swarm_redis.ops.exporter import make_registry
from swarm_redis.ops.reads import read_snapshot
from swarm_redis.ops.render import watch_view
from swarm_redis.ops.verify import find_drift, repair

Capsys = pytest.CaptureFixture[str]


@pytest.fixture
def client(real_redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(real_redis_url, protocol=3)
    yield c
    c.close()


def empty_run(url: str, prefix: str, run_id: int) -> RedisSwarmState:
    return RedisSwarmState(1, run_id, 1, redis=redis.Redis.from_url(url, protocol=3), prefix=prefix)


# --- runs, status ------------------------------------------------------------------------------


def test_runs_lists_every_run_with_counts(
    cli: Any, state: RedisSwarmState, real_redis_url: str, prefix: str
) -> None:
    empty_run(real_redis_url, prefix, 42)
    res = cli("--json", "runs")
    assert res.code == cli_mod.EXIT_OK
    by_id = {r["run_id"]: r for r in res.json()}
    run = str(state.workflow_run_id)
    assert set(by_id) == {run, "42"}
    assert by_id[run] == {
        "run_id": run,
        "status": "R",
        "tasks": 10,
        "done": 1,
        "failed": 0,
        "claimed": 0,
        "percent_done": 10.0,
    }
    assert by_id["42"]["tasks"] == 0 and by_id["42"]["percent_done"] == 0.0
    human = cli("runs")
    assert human.code == 0
    assert run in human.out and "RUNNING (R)" in human.out and "10.0" in human.out
    assert "\x1b[" not in human.out  # no colour when stdout is not a terminal


def test_runs_on_a_prefix_without_runs(cli: Any) -> None:
    assert cli("--json", "runs").json() == []
    res = cli("runs")
    assert res.code == 0 and "no runs found" in res.out


def test_status_json_and_human(cli: Any, state: RedisSwarmState) -> None:
    run = str(state.workflow_run_id)
    res = cli("--json", "status", run)
    assert res.code == 0
    data = res.json()
    assert data["run_status"] == "R"
    assert data["tasks"] == 10
    assert data["counts"] == {
        "G": 8,
        "Q": 0,
        "I": 0,
        "O": 0,
        "R": 1,
        "D": 1,
        "E": 0,
        "A": 0,
        "F": 0,
    }
    assert data["ready"] == 2 and data["queued"] == 2 and data["claimed"] == 0
    assert data["limit"] == 5 and data["active"] == 1
    assert data["arrays"] == [
        {"array_id": "1", "limit": 3, "active": 1, "reserved": 0},
        {"array_id": "2", "limit": 2, "active": 0, "reserved": 0},
    ]
    assert data["percent_done"] == 10.0 and data["all_final"] is False
    # counters start at 0 and count what happened: 1,5 -> Q; 1 -> D; 5 -> R; one propagation
    counters = data["counters"]
    assert {counters[f"to:{s}"] for s in "GIOEAF"} == {0}
    assert (counters["to:Q"], counters["to:D"], counters["to:R"]) == (2, 1, 1)
    assert counters["propagations"] == 1 and counters["claims"] == 0 and counters["reaps"] == 0
    human = cli("status", run)
    assert human.code == 0
    for text in ("RUNNING (R)", "1/10 done (10.0%)", "REGISTERING", "array 2", "ready queue: 2"):
        assert text in human.out


def test_status_of_an_empty_run(cli: Any, real_redis_url: str, prefix: str) -> None:
    empty_run(real_redis_url, prefix, 43)
    data = cli("--json", "status", "43").json()
    assert data["tasks"] == 0 and data["percent_done"] == 0.0 and data["arrays"] == []
    assert data["run_status"] == "B" and data["leader"] is None and data["replicas"] == []
    assert cli("status", "43").code == 0
    res = cli("tasks", "43")
    assert res.code == 0 and "no tasks match" in res.out
    assert cli("--json", "tasks", "43").json() == {"tasks": [], "shown": 0, "total": 0}
    assert cli("--json", "verify", "43").json()["clean"] is True
    events = cli("--json", "events", "43").lines()
    assert [e["type"] for e in events] == ["run_created"]
    assert cli("--json", "replicas", "43").json()["replicas"] == []
    assert len(cli("--json", "watch", "43", "--count", "1").lines()) == 1


@pytest.mark.parametrize(
    "args",
    [
        ("status",),
        ("watch",),
        ("tasks",),
        ("task", "RUN", "1"),
        ("events",),
        ("verify",),
        ("verify", "RUN", "--repair"),
        ("replicas",),
        ("reap",),
        ("purge", "RUN", "--yes"),
        ("export", "RUN", "unused.json"),
    ],
    ids=lambda a: "-".join(x for x in a if x != "RUN"),
)
def test_unknown_run_exits_3(cli: Any, args: tuple[str, ...]) -> None:
    argv = [a if a != "RUN" else "999" for a in args]
    if "RUN" not in args:
        argv.insert(1, "999")
    res = cli(*argv)
    assert res.code == cli_mod.EXIT_NOT_FOUND
    assert "999" in res.err and ("not found" in res.err or "no keys" in res.err)
    as_json = cli("--json", *argv)
    assert as_json.code == 3 and as_json.json()["exit_code"] == 3


def test_usage_and_connection_errors(cli: Any, capsys: Capsys) -> None:
    assert run_cli(capsys).code == cli_mod.EXIT_USAGE  # no command
    assert cli("status").code == cli_mod.EXIT_USAGE  # no run
    res = run_cli(capsys, "--url", "redis://127.0.0.1:1/0", "runs")
    assert res.code == cli_mod.EXIT_CONNECTION and "connect" in res.err.lower()


# --- tasks, task -------------------------------------------------------------------------------


def test_tasks_with_filters(cli: Any, state: RedisSwarmState) -> None:
    run = str(state.workflow_run_id)
    everything = cli("--json", "tasks", run).json()
    assert [t["task_id"] for t in everything["tasks"]] == list(range(1, 11))
    assert everything["total"] == 10
    assert everything["tasks"][0] == {
        "task_id": 1,
        "status": "D",
        "done": 0,
        "upstreams": 0,
        "start": 0,
        "array_id": 1,
        "propagated": True,
        "stamp": None,
        "downstream": [2, 4],
    }
    assert [t["task_id"] for t in cli("--json", "tasks", run, "--status", "D").json()["tasks"]] == [
        1
    ]
    by_array = cli("--json", "tasks", run, "--array", "2").json()
    assert [t["task_id"] for t in by_array["tasks"]] == [6, 7, 8, 9, 10]
    limited = cli("--json", "tasks", run, "--status", "G", "--limit", "3").json()
    assert limited["shown"] == 3 and limited["total"] == 8
    human = cli("tasks", run, "--status", "G", "--limit", "3")
    assert human.code == 0 and "3 shown of 8" in human.out and "REGISTERING" in human.out
    assert cli("tasks", run, "--status", "X").code == cli_mod.EXIT_USAGE


def test_task_explains_why_it_is_not_running(cli: Any, state: RedisSwarmState) -> None:
    run = str(state.workflow_run_id)
    queued = cli("--json", "task", run, "2").json()
    assert queued["task"]["status"] == "G"
    assert [u["task_id"] for u in queued["upstream"]] == [1]
    assert queued["upstream"][0]["status"] == "D"
    assert queued["downstream"] == [
        {"task_id": 3, "status": "G", "done": 0, "upstreams": 1, "propagated": False}
    ]
    assert queued["queue_position"] == 0 and queued["queue_length"] == 2
    assert queued["claim_batch"] is None
    assert queued["verdict"].startswith("queued at position 0 of 2")
    assert queued["scanned_records"] == 10

    waiting = cli("--json", "task", run, "3").json()
    assert waiting["queue_position"] is None
    assert waiting["verdict"] == "waiting for upstreams: 0 of 1 done (not done: 2)"
    running = cli("--json", "task", run, "5").json()
    assert running["verdict"].startswith("RUNNING")
    assert [d["task_id"] for d in running["downstream"]] == [6, 7, 8, 9, 10]
    assert "DONE" in cli("--json", "task", run, "1").json()["verdict"]

    human = cli("task", run, "3")
    assert human.code == 0
    assert "found by scanning 10 records" in human.out
    assert "why not running: waiting for upstreams" in human.out

    missing = cli("task", run, "999")
    assert missing.code == cli_mod.EXIT_NOT_FOUND and "task 999 not found" in missing.err


def test_task_claimed_by_a_replica(cli: Any, state: RedisSwarmState) -> None:
    run = str(state.workflow_run_id)
    replica = state.join_replica(ttl_s=60, replica_id="rep-a")
    batch = state.claim_batch(replica, 10)
    assert batch is not None and set(batch.task_ids) == {2, 4}
    data = cli("--json", "task", run, "2").json()
    assert data["claim_batch"] == batch.batch_id
    assert data["claim_replica"] == "rep-a" and data["claim_replica_alive"] is True
    assert data["queue_position"] is None
    assert data["verdict"].startswith(f"claimed by replica rep-a in batch {batch.batch_id}")
    status = cli("--json", "status", run).json()
    assert status["claimed"] == 2 and status["reserved"] == 2 and status["batches"] == 1
    assert status["arrays"][0]["reserved"] == 2
    reps = cli("--json", "replicas", run).json()
    (rep,) = reps["replicas"]
    assert rep["replica_id"] == "rep-a" and rep["alive"] is True
    assert rep["batches"] == 1 and rep["claimed"] == 2 and rep["lease_left_ms"] > 0
    assert reps["leader"] is None
    epoch = state.acquire_leadership(replica)
    assert epoch is not None
    reps = cli("--json", "replicas", run).json()
    assert reps["leader"]["replica_id"] == "rep-a" and reps["leader"]["epoch"] == epoch
    assert reps["leader"]["alive"] is True
    human = cli("replicas", run)
    assert "rep-a" in human.out and f"epoch {epoch}" in human.out
    events = [e["type"] for e in cli("--json", "events", run).lines()]
    assert {"join", "claim", "leader"} <= set(events)


def test_reap_takes_over_the_batch_of_an_expired_replica(cli: Any, state: RedisSwarmState) -> None:
    run = str(state.workflow_run_id)
    replica = state.join_replica(ttl_s=0.05, replica_id="rep-short")
    assert state.claim_batch(replica, 10) is not None
    while cli("--json", "replicas", run).json()["replicas"][0]["alive"]:
        time.sleep(0.02)  # wait for the lease to run out (Redis time)
    res = cli("--json", "reap", run)
    assert res.code == 0
    assert res.json()["dead_replicas"] == ["rep-short"] and res.json()["tasks"] == 2
    status = cli("--json", "status", run).json()
    assert status["orphans"] == 1 and status["claimed"] == 2 and status["replicas"] == []
    task = cli("--json", "task", run, "2").json()
    assert "orphaned" in task["verdict"]
    again = cli("reap", run)
    assert again.code == 0
    assert again.out.strip() == f"reap of run {run}: nothing to do, no replica lease has expired"
    assert cli("--json", "verify", run).json()["clean"] is True


# --- watch -------------------------------------------------------------------------------------


def test_watch_ends_when_the_run_is_final(cli: Any, state: RedisSwarmState) -> None:
    run = str(state.workflow_run_id)
    finish_run(state)
    res = cli("watch", run)  # no --count: it must end by itself
    assert res.code == 0
    (line,) = res.out.splitlines()
    assert "10/10 done (100.0%)" in line and "\x1b[" not in line
    frames = cli("--json", "watch", run).lines()
    assert len(frames) == 1 and frames[0]["all_final"] is True


def test_watch_refreshes_with_a_rate(cli: Any, state: RedisSwarmState) -> None:
    run = str(state.workflow_run_id)
    res = cli("watch", run, "--count", "3", "--interval", "0")
    lines = res.out.splitlines()
    assert res.code == 0 and len(lines) == 3
    assert "rate=-" in lines[0] and "rate=0.0/s" in lines[1]
    frames = cli("--json", "watch", run, "--count", "2", "--interval", "0").lines()
    assert [f["rate"] is None for f in frames] == [True, False]


def test_watch_ends_when_the_run_status_is_terminal(cli: Any, state: RedisSwarmState) -> None:
    state.apply_update(StateUpdate(workflow_run_status="E"))
    assert len(cli("--json", "watch", str(state.workflow_run_id)).lines()) == 1


def test_watch_view_renders_a_progress_bar(state: RedisSwarmState) -> None:
    console = Console(record=True, width=100, force_terminal=True)
    console.print(watch_view(read_snapshot(state.redis, state.keys), 2.5))
    text = console.export_text()
    assert "1/10 done (10.0%)" in text and "2.5/s" in text and "━" in text


# --- events ------------------------------------------------------------------------------------


def test_events_human_json_since_and_count(cli: Any, state: RedisSwarmState) -> None:
    run = str(state.workflow_run_id)
    events = cli("--json", "events", run).lines()
    types = [e["type"] for e in events]
    assert types[0] == "run_created" and "register" in types and "propagate" in types
    moves = [(e["task"], e["from"], e["to"]) for e in events if e["type"] == "task"]
    assert moves == [("1", "G", "Q"), ("5", "G", "Q"), ("1", "Q", "D"), ("5", "Q", "R")]
    assert all(e["actor"] == "-" and "epoch" in e and e["time_ms"] > 0 for e in events)
    since = cli("--json", "events", run, "--since", events[2]["id"]).lines()
    assert since == events[3:]
    assert cli("--json", "events", run, "--count", "2").lines() == events[:2]
    human = cli("events", run)
    assert human.code == 0 and len(human.out.splitlines()) == len(events)
    assert "task=1 from=Q to=D" in human.out and "run_created" in human.out


def test_events_follow_waits_for_new_events(cli: Any, state: RedisSwarmState) -> None:
    """--follow with --since replays what came after that id, then waits for new events."""
    run = str(state.workflow_run_id)
    existing = cli("--json", "events", run).lines()
    since = existing[-3]["id"]
    result: list[CliResult] = []
    worker = threading.Thread(
        target=lambda: result.append(
            cli("--json", "events", run, "--follow", "--since", since, "--count", "3")
        )
    )
    worker.start()
    try:
        while not cli_follow_started(state):
            time.sleep(0.01)
        state.apply_update(StateUpdate(task_statuses={3: "F"}))  # one "task" event
    finally:
        worker.join(timeout=60)
    assert not worker.is_alive()
    lines = result[0].lines()
    assert lines[:2] == existing[-2:]
    assert len(lines) == 3
    assert lines[-1]["type"] == "task" and lines[-1]["task"] == "3" and lines[-1]["to"] == "F"


def cli_follow_started(state: RedisSwarmState) -> bool:
    """True once a client blocks in XREAD (the follower waits for new events).

    Any timing gives the same output (events written before the follower's XREAD are read by
    its XRANGE or by XREAD from the last id seen); waiting makes the test cover the blocking
    read.
    """
    return any(
        c.get("cmd") == "xread" and "b" in c.get("flags", "") for c in state.redis.client_list()
    )


# --- verify ------------------------------------------------------------------------------------


def inject_drift(client: redis.Redis, keys: RunKeys) -> None:
    """A wrong counter, a task in two status sets, a ready entry for a DONE task, and more."""
    client.hset(keys.active, "2", 5)  # array 2 has no active task
    client.sadd(keys.status_set("Q"), 3)  # task 3 is G, now also in s:Q
    client.zadd(keys.ready, {"1": 1000})  # task 1 is DONE
    client.sadd(keys.queued, 1)
    client.hset(keys.task, 7, "G|1|||2|1|0|")  # task 7: one upstream done, but 5 is not DONE
    for member in client.zrange(keys.qidx, 0, -1):  # task 2 loses its queue index entry
        if as_bytes(member).endswith(b"|2"):
            client.zrem(keys.qidx, as_bytes(member))
    client.zadd(keys.qidx, {"2|0000000000000001|99": 0})  # an index entry of no queue entry


def test_verify_finds_and_repairs_drift(cli: Any, state: RedisSwarmState) -> None:
    run = str(state.workflow_run_id)
    assert cli("verify", run).code == cli_mod.EXIT_OK
    inject_drift(state.redis, state.keys)
    res = cli("--json", "verify", run)
    assert res.code == cli_mod.EXIT_DRIFT
    report = res.json()
    assert report["clean"] is False and report["consistent_read"] is True
    assert report["drift"] == {
        "multi_status": 1,
        "done_count": 1,
        "active_counter": 1,
        "ready_final": 1,
        "qidx_missing": 1,
        "qidx_stale": 1,
    }
    assert report["examples"]["active_counter"] == [
        {"subject": "2", "observed": "5", "expected": "0"}
    ]
    assert report["examples"]["multi_status"] == [
        {"subject": "3", "observed": "G,Q", "expected": "G"}
    ]
    assert report["examples"]["done_count"] == [{"subject": "7", "observed": "1", "expected": "0"}]
    human = cli("verify", run)
    assert human.code == cli_mod.EXIT_DRIFT
    for kind in report["drift"]:
        assert kind in human.out

    fixed = cli("--json", "verify", run, "--repair")
    assert fixed.code == cli_mod.EXIT_OK
    after = fixed.json()
    assert after["before"]["drift"] == report["drift"]
    assert after["after"]["clean"] is True
    assert after["after"]["repaired"] == report["drift"]
    again = cli("verify", run)
    assert again.code == cli_mod.EXIT_OK and "no drift" in again.out
    # the repair kept what was right: 2 still queued once at the head, 1 gone from the queue
    assert state.redis.zrange(state.keys.ready, 0, -1) == [b"2", b"4"]
    assert state.redis.smembers(state.keys.status_set("Q")) == set()
    assert state.redis.hget(state.keys.active, "2") == b"0"
    events = cli("--json", "events", run).lines()
    assert events[-1]["type"] == "repair" and events[-1]["actor"] == "verify"


def test_verify_checks_claims_batches_and_reservations(state: RedisSwarmState) -> None:
    client, keys = state.redis, state.keys
    replica = state.join_replica(ttl_s=60, replica_id="rep-v")
    batch = state.claim_batch(replica, 10)
    assert batch is not None
    assert find_drift(client, keys).clean
    client.hset(keys.reserved, "run", 7)  # 2 claimed
    client.hdel(keys.claims, 4)  # the batch lists 4
    client.hset(keys.claims, 9, "no-such-batch")
    client.rpush(keys.orphans, "gone")
    report = find_drift(client, keys)
    assert report.counts == {
        "reserved": 1,
        "batch_unclaimed": 1,
        "claim_no_batch": 1,
        "orphan_stale": 1,
    }
    after = repair(client, keys, report, chunk=1)  # one op per script call
    assert after.clean, after.to_json()
    assert after.repaired == report.counts and after.skipped == 0
    assert client.hget(keys.claims, 4) == batch.batch_id.encode()
    assert client.hget(keys.reserved, "run") == b"2"
    state.ack_batch(replica, batch, {2: "Q", 4: "Q"})
    assert find_drift(client, keys).clean


def test_repair_leaves_values_changed_since_the_read(state: RedisSwarmState) -> None:
    client, keys = state.redis, state.keys
    client.hset(keys.active, "2", 5)
    report = find_drift(client, keys)
    client.hset(keys.active, "2", 6)  # changed after the read: compare-and-set skips it
    after = repair(client, keys, report)
    assert after.skipped == 1 and after.repaired == {}
    assert after.counts == {"active_counter": 1}


def test_verify_reads_large_runs_with_scans(state: RedisSwarmState) -> None:
    client, keys = state.redis, state.keys
    client.sadd(keys.status_set("Q"), 3)
    report = find_drift(client, keys, atomic_max=5)
    assert report.consistent is False and report.counts == {"multi_status": 1}
    assert repair(client, keys, report, atomic_max=5).clean


# --- export, purge, import ---------------------------------------------------------------------


def raw_dump(client: redis.Redis, keys: RunKeys) -> dict[bytes, Any]:
    """Every key of the run with its type, content and whether it has a TTL (plain commands)."""
    out: dict[bytes, Any] = {}
    for key in client.scan_iter(match=keys.match_all):
        kind = client.type(key)
        value: Any
        if kind == b"string":
            value = client.get(key)
        elif kind == b"hash":
            value = client.hgetall(key)
        elif kind == b"set":
            value = client.smembers(key)
        elif kind == b"list":
            value = client.lrange(key, 0, -1)
        elif kind == b"zset":
            value = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"stream":
            info = client.xinfo_stream(key)
            value = (
                client.xrange(key),
                info["last-generated-id"],
                info["entries-added"],
                info["max-deleted-entry-id"],
            )
        else:
            raise AssertionError(f"unexpected type {kind!r}")
        out[key] = (kind, value, client.pttl(key) > 0)
    return out


def test_export_purge_import_round_trips_the_run(
    cli: Any, state: RedisSwarmState, tmp_path: Path
) -> None:
    run = str(state.workflow_run_id)
    client, keys = state.redis, state.keys
    replica = state.join_replica(ttl_s=600, replica_id="rep-x")
    assert state.claim_batch(replica, 10) is not None
    assert state.acquire_leadership(replica) is not None
    client.hset(keys.resources, "abc", b"\x80\x81")  # non-UTF-8 bytes
    # a key under the run's hash tag but outside the key table: neither exported nor purged
    extra = keys.base + "extra"
    client.set(extra, b"\xff\x00binary", px=600_000)
    before = raw_dump(client, keys)
    assert {k.split(b"}:")[1] for k in before} >= {
        b"meta",
        b"task",
        b"events",
        b"claims",
        b"leader",
    }
    table = {k: v for k, v in before.items() if k != extra.encode()}
    # keys that matter only to live processes (the reply cache) are neither exported nor imported
    transient = {keys.key(name).encode() for name in snapshot.TRANSIENT_KEYS}
    exportable = {k: v for k, v in table.items() if k not in transient}

    path = tmp_path / "run.json"
    exported = cli("export", run, str(path))
    assert exported.code == 0 and path.exists()
    assert "extra" not in json.loads(path.read_bytes())["keys"]
    live = cli("--json", "purge", run, "--yes")  # RUNNING, with a live replica
    assert live.code == cli_mod.EXIT_ERROR and "rep-x" in live.err and "--force" in live.err
    assert raw_dump(client, keys) == before
    purged = cli("--json", "purge", run, "--yes", "--force")
    assert purged.code == 0 and purged.json()["deleted"] == len(table)
    assert raw_dump(client, keys) == {extra.encode(): before[extra.encode()]}
    assert cli("status", run).code == cli_mod.EXIT_NOT_FOUND
    client.unlink(extra)

    imported = cli("--json", "import", str(path))
    assert imported.code == 0 and imported.json()["keys"] == len(exportable)
    after = raw_dump(client, keys)
    assert after == exportable
    assert all(client.pttl(k) == -1 for k in after)
    assert cli("verify", run).code == cli_mod.EXIT_OK
    # the restored stream keeps growing with ascending ids
    state.apply_update(StateUpdate(task_statuses={3: "F"}))
    assert cli("--json", "events", run).lines()[-1]["task"] == "3"

    refused = cli("import", str(path))
    assert refused.code == cli_mod.EXIT_ERROR and "--force" in refused.err
    forced = cli("import", str(path), "--force")
    assert forced.code == 0 and raw_dump(client, keys) == exportable


def test_import_rejects_a_file_that_is_not_a_snapshot(cli: Any, tmp_path: Path) -> None:
    path = tmp_path / "x.json"
    path.write_text('{"hello": 1}')
    res = cli("import", str(path))
    assert res.code == cli_mod.EXIT_ERROR and "not a swarm-redis-snapshot" in res.err


def test_purge_asks_first(
    cli: Any, state: RedisSwarmState, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = str(state.workflow_run_id)
    state.set_run_status("D")  # a finished run: purge asks, but does not refuse it
    n = len(raw_dump(state.redis, state.keys))
    refused = cli("purge", run)  # stdin is not a terminal under pytest
    assert refused.code == cli_mod.EXIT_USAGE and "--yes" in refused.err
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True)
    prompts: list[str] = []

    def answer(text: str) -> Callable[[str], str]:
        def ask(prompt: str) -> str:
            prompts.append(prompt)
            return text

        return ask

    monkeypatch.setattr("builtins.input", answer("n"))
    assert cli("purge", run).code == cli_mod.EXIT_ERROR
    assert "status DONE (D)" in prompts[-1] and "replicas: none alive" in prompts[-1]
    assert len(raw_dump(state.redis, state.keys)) == n
    monkeypatch.setattr("builtins.input", answer("y"))
    res = cli("purge", run)
    assert res.code == 0 and f"deleted {n} keys" in res.out
    assert raw_dump(state.redis, state.keys) == {}


# --- exporter ----------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def test_exporter_metrics(state: RedisSwarmState, prefix: str) -> None:
    run = str(state.workflow_run_id)
    replica = state.join_replica(ttl_s=60, replica_id="rep-m")
    epoch = state.acquire_leadership(replica)
    assert state.claim_batch(replica, 10) is not None
    got = samples(generate_latest(make_registry(state.redis, prefix)).decode())

    def value(name: str, **labels: str) -> float:
        return got[(name, frozenset({"run": run, **labels}.items()))]

    assert got[("swarm_up", frozenset())] == 1
    assert [value("swarm_run_tasks", status=s) for s in TASK_STATUSES] == [
        8,
        0,
        0,
        0,
        1,
        1,
        0,
        0,
        0,
    ]
    assert value("swarm_run_task_count") == 10
    assert value("swarm_run_ready") == 0 and value("swarm_run_claimed") == 2
    assert value("swarm_run_claimed_batches") == 1 and value("swarm_run_reserved") == 2
    assert value("swarm_run_active") == 1 and value("swarm_run_limit") == 5
    assert value("swarm_array_active", array="1") == 1
    assert value("swarm_array_limit", array="2") == 2
    assert value("swarm_array_reserved", array="1") == 2
    assert value("swarm_run_replicas_alive") == 1 and value("swarm_run_leader_epoch") == epoch
    assert value("swarm_run_leader_alive") == 1
    assert value("swarm_run_done_ratio") == 0.1  # a 0-1 ratio, as Prometheus wants
    assert not any(name == "swarm_run_percent_done" for name, _ in got)
    assert value("swarm_run_info", run_status="R") == 1
    assert value("swarm_run_transitions_total", status="D") == 1
    assert value("swarm_run_transitions_total", status="Q") == 2
    assert value("swarm_run_propagations_total") == 1
    assert value("swarm_run_claims_total") == 1 and value("swarm_run_reaps_total") == 0
    assert value("swarm_run_joins_total") == 1 and value("swarm_run_leader_changes_total") == 1
    # --runs: only the runs asked for
    only = samples(generate_latest(make_registry(state.redis, prefix, ["12345"])).decode())
    assert not any(name == "swarm_run_tasks" for name, _ in only)


def test_exporter_reports_redis_down() -> None:
    broken = redis.Redis(
        host="127.0.0.1",
        port=1,
        protocol=3,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    got = samples(generate_latest(make_registry(broken, "swarm")).decode())
    assert got == {("swarm_up", frozenset()): 0}


# --- subprocess ----------------------------------------------------------------------------------


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("REDIS_URL", None)
    return env


def test_python_dash_m_swarm_redis(
    state: RedisSwarmState, real_redis_url: str, prefix: str
) -> None:
    run = str(state.workflow_run_id)
    base = [sys.executable, "-m", "swarm_redis", "--url", real_redis_url, "--prefix", prefix]
    proc = subprocess.run(
        [*base, "status", run, "--json"], capture_output=True, text=True, env=_env(), check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert '"tasks": 10' in proc.stdout
    proc = subprocess.run(
        [*base, "status", "999"], capture_output=True, text=True, env=_env(), check=False
    )
    assert proc.returncode == 3 and "not found" in proc.stderr


def test_exporter_command_serves_metrics(
    state: RedisSwarmState, real_redis_url: str, prefix: str
) -> None:
    port = free_port()
    cmd = [sys.executable, "-m", "swarm_redis", "--url", real_redis_url, "--prefix", prefix]
    cmd += ["exporter", "--port", str(port), "--addr", "127.0.0.1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=_env())
    try:
        body = ""
        deadline = time.monotonic() + 60
        while not body and proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:
                    body = resp.read().decode()
            except OSError:
                time.sleep(0.05)  # not listening yet
        assert body, "the exporter did not answer"
        got = samples(body)
        key = (
            "swarm_run_tasks",
            frozenset({"run": str(state.workflow_run_id), "status": "D"}.items()),
        )
        assert got[key] == 1
    finally:
        proc.terminate()
        proc.wait()


def test_bench_is_wired_into_the_cli(capsys: pytest.CaptureFixture[str]) -> None:
    from swarm_redis.ops.cli import _bench_argv, main

    assert main(["bench", "--help"]) == 0
    assert "--quick" in capsys.readouterr().out
    assert _bench_argv(["--url", "redis://h:1/0", "bench", "--quick"]) == [
        "--quick",
        "--url",
        "redis://h:1/0",
    ]
    assert _bench_argv(["status", "7"]) is None
    assert main(["bench", "--no-such-option"]) == 2
