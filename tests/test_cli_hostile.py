"""The CLI's reads against hostile stored data and hostile option values.

Damaged values planted in a run's keys must come back as one error naming the key, the place
and the value (``CorruptValueError``), never a traceback; values that are not UTF-8 are shown
escaped. Export refuses what import would refuse; import refuses malformed ``pcredit``,
``fanout`` and ``qidx`` entries. Out-of-range option values are usage errors. The reads run on
both backends (``r``); the command line in-process against the real server.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from cli_helpers import CliResult, build_run

from swarm_redis.engine.keys import RunKeys
from swarm_redis.exit_codes import EXIT_ERROR, EXIT_USAGE
from swarm_redis.ops.events import read_events
from swarm_redis.ops.reads import CorruptValueError, read_liveness, read_snapshot
from swarm_redis.ops.snapshot import SnapshotError, export_run, save_snapshot, validate_snapshot
from swarm_redis.ops.tasks import list_tasks, task_detail
from swarm_redis.ops.verify import find_drift

Capsys = pytest.CaptureFixture[str]

# (name, key name, plant(client, key), read(client, keys), what the message must name)
_Plant = Callable[[Any, str], Any]
_Read = Callable[[Any, RunKeys], Any]
CASES: list[tuple[str, str, _Plant, _Read, str]] = [
    # a short record made decode_record raise IndexError (a traceback from the CLI)
    ("short record, tasks", "task", lambda c, k: c.hset(k, "3", "garbage"),
     lambda c, k: list_tasks(c, k), "task 3: 'garbage'"),
    ("empty record, tasks by status", "task", lambda c, k: c.hset(k, "3", ""),
     lambda c, k: list_tasks(c, k, status="G"), "task 3: ''"),
    ("empty record of a downstream, task", "task", lambda c, k: c.hset(k, "3", ""),
     lambda c, k: task_detail(c, k, 2), "task 3: ''"),
    ("non-integer done, task", "task", lambda c, k: c.hset(k, "3", "G|abc|||1|1|0|"),
     lambda c, k: task_detail(c, k, 3), "'G|abc|||1|1|0|'"),
    ("non-UTF-8 record, tasks", "task", lambda c, k: c.hset(k, "3", b"\xff\xfe"),
     lambda c, k: list_tasks(c, k), "task 3: '\\\\xff\\\\xfe' (not UTF-8)"),
    ("non-integer task id, tasks", "task", lambda c, k: c.hset(k, "abc", "G|0|||1|0|0|"),
     lambda c, k: list_tasks(c, k), "'abc' (not an integer)"),
    ("non-integer status member, tasks", "s:G", lambda c, k: c.sadd(k, "abc"),
     lambda c, k: list_tasks(c, k, status="G"), "'abc' (not an integer)"),
    ("batch ids, status", "batches", lambda c, k: c.hset(k, "1", "r|i|1||x,y"),
     lambda c, k: read_snapshot(c, k), "batch '1': 'r|i|1||x,y'"),
    ("batch ids, verify", "batches", lambda c, k: c.hset(k, "1", "r|i|1||x,y"),
     lambda c, k: find_drift(c, k), "batch '1': 'r|i|1||x,y'"),
    ("claims field, verify", "claims", lambda c, k: c.hset(k, "abc", "1"),
     lambda c, k: find_drift(c, k), "'abc' (not an integer)"),
    ("ready member, verify", "ready", lambda c, k: c.zadd(k, {"abc": 1}),
     lambda c, k: find_drift(c, k), "'abc' (not an integer)"),
    ("active counter, verify", "active", lambda c, k: c.hset(k, "1", "abc"),
     lambda c, k: find_drift(c, k), "field '1': 'abc'"),
    ("reserved counter, verify", "reserved", lambda c, k: c.hset(k, "run", "x"),
     lambda c, k: find_drift(c, k), "field 'run': 'x'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "key", "plant", "read", "named"), CASES, ids=[c[0] for c in CASES]
)
def test_a_damaged_value_is_named(
    r: redis.Redis, prefix: str, run_id: int, name: str, key: str, plant: _Plant, read: _Read,
    named: str,
) -> None:  # fmt: skip
    build_run("", prefix, run_id, client=r)
    keys = RunKeys(prefix, run_id)
    plant(r, keys.key(key))
    with pytest.raises(CorruptValueError) as caught:
        read(r, keys)
    message = str(caught.value)
    assert keys.key(key) in message, message
    assert named in message, message


def test_bytes_that_are_not_utf8_are_shown_escaped(
    r: redis.Redis, prefix: str, run_id: int
) -> None:
    """A damaged run status, lease or event field is shown (escaped), not a UnicodeDecodeError."""
    build_run("", prefix, run_id, client=r)
    keys = RunKeys(prefix, run_id)
    r.hset(keys.meta, "status", b"\xff")
    r.hset(keys.replicas, "rep-x", b"\xfe")
    r.hset(keys.task, "3", b"\xff\xfe")
    r.xadd(keys.events, {"type": "odd", "weird": b"\xff\x00"})
    assert read_snapshot(r, keys).run_status == "\\xff"
    life = read_liveness(r, keys)
    assert life.run_status == "\\xff" and life.live  # unreadable: counted live, purge refuses
    assert list(life.unreadable_replicas) == ["rep-x"]
    assert list(read_events(r, keys))[-1].fields["weird"] == "\\xff\x00"
    report = find_drift(r, keys)
    assert [(d.subject, d.observed) for d in report.items["bad_record"]] == [("3", "\\xff\\xfe")]


def test_export_refuses_a_damaged_run(r: redis.Redis, prefix: str, run_id: int) -> None:
    build_run("", prefix, run_id, client=r)
    keys = RunKeys(prefix, run_id)
    snap = export_run(r, keys)  # the healthy run exports and passes import's checks
    validate_snapshot(snap, prefix=prefix)
    r.hset(keys.task, "3", "garbage")
    with pytest.raises(SnapshotError, match=r"refusing to export .*keys\.task.*garbage"):
        export_run(r, keys)
    r.hset(keys.task, "3", "G|0|||1|1|0|")
    r.unlink(keys.replicas)
    r.set(keys.replicas, "x")  # a key of the wrong type
    with pytest.raises(SnapshotError, match=r"keys\.replicas: type 'string'"):
        export_run(r, keys)


def test_a_failed_export_leaves_the_earlier_snapshot_whole(
    r: redis.Redis, prefix: str, run_id: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    build_run("", prefix, run_id, client=r)
    snap = export_run(r, RunKeys(prefix, run_id))
    path = tmp_path / "run.json"
    save_snapshot(snap, path)
    good = path.read_bytes()
    assert json.loads(good)["run_id"] == snap["run_id"]

    def disk_full(*args: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)  # the write fails before the rename
    with pytest.raises(OSError, match="No space left"):
        save_snapshot({**snap, "run_id": "other"}, path)
    assert path.read_bytes() == good
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.json"]  # no partial file


@pytest.mark.parametrize(
    ("name", "kind", "value", "problem"),
    [
        ("pcredit", "hash", [["7", "zz"]], "expected <credits> or <credits>q"),
        ("pcredit", "hash", [["x", "1"]], "not an integer"),
        ("fanout", "hash", [["x", "0:1:2"]], "expected <task id> or <task id>#<slice>"),
        ("fanout", "hash", [["7", "zz"]], "expected <done>:<slice>:<slices>"),
        ("qidx", "zset", [["garbage", "0"]], "expected <array>|<16-digit position>|<task id>"),
    ],
)
def test_import_refuses_malformed_credit_fanout_and_index(
    r: redis.Redis, prefix: str, run_id: int, name: str, kind: str, value: Any, problem: str
) -> None:
    build_run("", prefix, run_id, client=r)
    snap = export_run(r, RunKeys(prefix, run_id))
    snap["keys"][name] = {"type": kind, "pttl": -1, "value": value}
    with pytest.raises(SnapshotError, match=rf"keys\.{name}\[0\]: .*{problem.replace('|', '.')}"):
        validate_snapshot(snap, prefix=prefix, run_id=run_id + 1)
    good = {"pcredit": [["7", "2q"]], "fanout": [["7", "0:1:2"], ["7#1", "8,9"]]}
    good["qidx"] = [["1|4503599627370497|2", "0"]]
    snap["keys"][name]["value"] = good[name]
    validate_snapshot(snap, prefix=prefix, run_id=run_id + 1)  # the well-formed ones pass


def test_cli_names_a_damaged_record_and_writes_no_file(
    cli: Callable[..., CliResult], real_redis_url: str, prefix: str, run_id: int, tmp_path: Path
) -> None:
    build_run(real_redis_url, prefix, run_id)
    redis.Redis.from_url(real_redis_url).hset(RunKeys(prefix, run_id).task, "3", "")
    for args in (("tasks",), ("task", "2")):
        res = cli(args[0], str(run_id), *args[1:], "--json")
        assert res.code == EXIT_ERROR, res
        assert "task 3: ''" in res.err and "Traceback" not in res.err
        assert json.loads(res.out)["exit_code"] == EXIT_ERROR
    out = tmp_path / "snap.json"
    res = cli("export", str(run_id), str(out))
    assert res.code == EXIT_ERROR and "refusing to export" in res.err
    assert not out.exists()


@pytest.mark.parametrize(
    "args",
    [
        ("exporter", "--port", "70000"),
        ("exporter", "--port", "-1"),
        ("watch", "1", "--interval", "1e308"),
        ("verify", "1", "--chunk", "0"),
        ("verify", "1", "--repair", "--chunk", "-1"),
        ("verify", "1", "--repair", "--chunk", "5001"),  # one script call would be unbounded
        ("verify", "1", "--examples", "-1"),
        ("import", "f.json", "--max-bytes", "-1"),
    ],
)
def test_out_of_range_options_are_usage_errors(
    cli: Callable[..., CliResult], args: tuple[str, ...]
) -> None:
    res = cli(*args)
    assert res.code == EXIT_USAGE, res
    assert f"argument {args[-2]}" in res.err and args[-1] in res.err


def test_a_run_id_past_int64_is_called_out_of_range(cli: Callable[..., CliResult]) -> None:
    res = cli("status", "9" * 20)
    assert res.code == EXIT_USAGE and "out of range" in res.err


def test_exporter_skips_a_damaged_run_and_keeps_the_others(
    r: redis.Redis, prefix: str, run_id: int
) -> None:
    """Before: the damaged run's ValueError made the whole scrape ``swarm_up 0``."""
    pytest.importorskip("prometheus_client")
    from swarm_redis.ops.exporter import RunCollector

    build_run("", prefix, run_id, client=r)
    build_run("", prefix, run_id + 1, client=r)
    r.hset(RunKeys(prefix, run_id + 1).batches, "1", "r|i|1||x,y")
    got = {
        (f.name, tuple(sorted(s.labels.items()))): s.value
        for f in RunCollector(r, prefix=prefix).collect()
        for s in f.samples
    }
    assert got[("swarm_up", ())] == 1
    assert got[("swarm_run_unreadable", (("run", str(run_id + 1)),))] == 1
    assert got[("swarm_run_task_count", (("run", str(run_id)),))] == 10
    assert not any(
        labels == (("run", str(run_id + 1)),)
        for name, labels in got
        if name != "swarm_run_unreadable"
    )


def test_tasks_keeps_only_the_rows_it_shows(
    real_only: redis.Redis, prefix: str, run_id: int
) -> None:
    """``tasks`` without --status held every record of the run before it cut to --limit
    (~210 bytes per task: 2 GB at 10M tasks); now the ``limit`` lowest ids only."""
    import tracemalloc

    from swarm_redis import ArrayRecord, RedisSwarmState
    from swarm_redis.testing.dags import from_edges

    n = 30_000
    state = RedisSwarmState(1, run_id, 1, redis=real_only, prefix=prefix)
    state.add_arrays([ArrayRecord(1, 3)])
    state.add_tasks(from_edges(n, [], arrays=[1] * n))
    keys = RunKeys(prefix, run_id)
    tracemalloc.start()
    try:
        rows, total = list_tasks(real_only, keys, limit=5)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [row["task_id"] for row in rows] == [1, 2, 3, 4, 5] and total == n
    assert peak < 3_000_000, peak  # before: ~6 MB for 30k tasks
    rows, total = list_tasks(real_only, keys, array_id=1, limit=3)
    assert [row["task_id"] for row in rows] == [1, 2, 3] and total is None


def test_runs_passes_over_meta_keys_of_no_run_id_the_cli_takes(
    r: redis.Redis, prefix: str, run_id: int
) -> None:
    """A meta key with thousands of digits made ``runs`` (and the exporter) fail with int()'s
    digit limit; one past int64 was listed though no command could name it."""
    from swarm_redis.engine.keys import run_id_from_meta_key
    from swarm_redis.ops.reads import list_runs

    r.hset(RunKeys(prefix, run_id).meta, "status", "D")
    for odd in ("9" * 5000, "9" * 20, str(1 << 63), "-0", "007"):
        r.hset(f"{prefix}:{{{odd}}}:meta", "status", "R")
        assert run_id_from_meta_key(prefix, f"{prefix}:{{{odd}}}:meta") is None
    assert run_id_from_meta_key(prefix, RunKeys(prefix, (1 << 63) - 1).meta) == str((1 << 63) - 1)
    assert [run.run_id for run in list_runs(r, prefix)] == [str(run_id)]


def test_repair_chunks_are_bounded(r: redis.Redis, prefix: str, run_id: int) -> None:
    from swarm_redis.errors import InvalidInputError
    from swarm_redis.ops.verify import REPAIR_CHUNK_MAX, repair

    build_run("", prefix, run_id, client=r)
    keys = RunKeys(prefix, run_id)
    r.hset(keys.active, "1", "7")
    report = find_drift(r, keys)
    for chunk in (0, REPAIR_CHUNK_MAX + 1, 10**9):
        with pytest.raises(InvalidInputError, match="chunk must be 1 to"):
            repair(r, keys, report, chunk=chunk)
    assert r.hget(keys.active, "1") == b"7"  # nothing written
    assert repair(r, keys, report, chunk=REPAIR_CHUNK_MAX).clean


@pytest.mark.parametrize("last_id", ["18446744073709551615-18446744073709551615", f"{1 << 48}-0"])
def test_import_refuses_an_event_id_no_clock_wrote(
    r: redis.Redis, prefix: str, run_id: int, last_id: str
) -> None:
    """Imported with a last id of 2^64-1, the stream took no new event: every write of the run
    failed (``The stream has exhausted the last possible ID``)."""
    build_run("", prefix, run_id, client=r)
    snap = export_run(r, RunKeys(prefix, run_id))
    snap["keys"]["events"]["value"]["last_id"] = last_id
    with pytest.raises(SnapshotError, match=r"keys\.events\.last_id: .*no Redis time"):
        validate_snapshot(snap, prefix=prefix, run_id=run_id + 1)
