"""The CLI cannot touch another run (issue 10, findings 2, 9 and the exporter part of 7).

Several runs of several ids live side by side under several prefixes on the real server; each
attack (glob characters in RUN or --prefix, hostile snapshot files, purge of a live run) runs
through the CLI, and every key of every run is compared before and after with DUMP + PTTL.
"""

from __future__ import annotations

import base64
import inspect as pyinspect
import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis
from cli_helpers import CliResult, build_run, run_cli

from swarm_redis import RedisSwarmState
from swarm_redis.demo.embedded import free_port
from swarm_redis.engine.keys import (
    RUN_KEY_NAMES,
    RunKeys,
    check_prefix,
    glob_escape,
    meta_pattern,
    run_id_from_meta_key,
)
from swarm_redis.errors import InvalidInputError
from swarm_redis.ops import cli as cli_mod
from swarm_redis.ops import handlers as handlers_mod
from swarm_redis.ops import purge as purge_mod
from swarm_redis.ops import reads as reads_mod
from swarm_redis.ops import snapshot as snapshot_mod
from swarm_redis.ops.exporter import serve
from swarm_redis.ops.snapshot import KEY_TYPES, TRANSIENT_KEYS
from swarm_redis.ops.snapshot import restore as restore_mod

Capsys = pytest.CaptureFixture[str]
Dump = dict[bytes, tuple[bytes | None, int]]


# --- the neighbourhood -------------------------------------------------------------------------


def ttl_kind(client: redis.Redis, key: Any) -> int:
    """PTTL, with any running TTL read as 1: the reply cache expires on its own, so only "no
    TTL" (-1) versus "a TTL" is stable between two dumps."""
    pttl = int(client.pttl(key))
    return pttl if pttl < 0 else 1


def dump_all(client: redis.Redis, prefix: str) -> Dump:
    """DUMP + TTL kind of every key under the test's prefix (every run of every sub-prefix)."""
    out: Dump = {}
    for key in client.scan_iter(match=f"{prefix}:*", count=1000):
        out[key] = (client.dump(key), ttl_kind(client, key))
    return out


def light_run(url: str, prefix: str, run_id: int) -> RedisSwarmState:
    """A created run with no tasks (status B): cheaper than build_run for the many neighbours."""
    return RedisSwarmState(1, run_id, 1, redis=redis.Redis.from_url(url, protocol=3), prefix=prefix)


class Hood:
    """Runs side by side: ``main`` holds 1, 2, 5, 7, 10..19 and 100; ``other`` holds 5; and
    prefixes whose names are glob patterns hold their own runs."""

    def __init__(self, url: str, root: str) -> None:
        self.url = url
        self.root = root
        self.main = f"{root}:main"
        self.other = f"{root}:other"
        self.star = f"{root}:a*"  # a prefix that is itself a pattern
        self.ab = f"{root}:ab"
        self.client = redis.Redis.from_url(url, protocol=3)
        self.states: dict[tuple[str, int], RedisSwarmState] = {}
        for run in (1, 2, 7):
            self.states[(self.main, run)] = build_run(url, self.main, run)
        for run in (5, 100, *range(10, 20)):
            self.states[(self.main, run)] = light_run(url, self.main, run)
        self.states[(self.other, 5)] = build_run(url, self.other, 5)
        self.states[(self.star, 3)] = light_run(url, self.star, 3)
        self.states[(self.ab, 4)] = light_run(url, self.ab, 4)

    def dump(self) -> Dump:
        return dump_all(self.client, self.root)

    def keys_of(self, prefix: str, run: int) -> Dump:
        base = RunKeys(prefix, run).base.encode()
        return {k: v for k, v in self.dump().items() if k.startswith(base)}

    def finish(self, prefix: str, run: int) -> None:
        """Mark a run DONE (terminal) so that purge does not refuse it as live."""
        self.states[(prefix, run)].set_run_status("D")


@pytest.fixture
def hood(real_redis_url: str, prefix: str) -> Iterator[Hood]:
    made = Hood(real_redis_url, prefix)
    yield made
    made.client.close()


@pytest.fixture
def cli(real_redis_url: str, capsys: Capsys) -> Callable[..., CliResult]:
    """``cli(prefix, "purge", "7")`` runs the CLI against the real server under ``prefix``."""

    def run(prefix: str, *args: str) -> CliResult:
        return run_cli(capsys, "--url", real_redis_url, "--prefix", prefix, *args)

    return run


def no_traceback(res: CliResult) -> None:
    assert "Traceback" not in res.err and "Traceback" not in res.out
    assert res.err.startswith("swarm-redis") or res.err.startswith("usage:"), res.err


# --- finding 2: glob characters ------------------------------------------------------------------


@pytest.mark.parametrize("run", ["?", "1?", "\\*", "*", "[12]", "1*", "", "1.0", "0x10", "1_0"])
def test_run_must_be_an_integer(
    hood: Hood, cli: Callable[..., CliResult], run: str, capsys: Capsys
) -> None:
    before = hood.dump()
    for command in (
        ["purge", run, "--yes", "--force"],
        ["status", run],
        ["export", run, "/dev/null"],
        ["verify", run, "--repair"],
    ):
        res = cli(hood.main, *command)
        assert res.code == cli_mod.EXIT_USAGE, (command, res)
        assert "must be an integer" in res.err
        no_traceback(res)
    assert hood.dump() == before  # every run of every prefix byte-identical


def test_purge_of_a_terminal_run_deletes_only_that_run(
    hood: Hood, cli: Callable[..., CliResult]
) -> None:
    hood.finish(hood.main, 1)
    before = hood.dump()
    own = hood.keys_of(hood.main, 1)
    res = cli(hood.main, "--json", "purge", "1", "--yes")
    assert res.code == cli_mod.EXIT_OK, res.err
    assert res.json()["deleted"] == len(own) and res.json()["run_status"] == "D"
    after = hood.dump()
    assert after == {k: v for k, v in before.items() if k not in own}
    # 10..19 and the run 1 of other prefixes are untouched; "1" never matched "1?" / "10"
    assert all(hood.keys_of(hood.main, r) for r in range(10, 20))


def test_glob_prefixes_reach_no_other_prefix(hood: Hood, cli: Callable[..., CliResult]) -> None:
    hood.finish(hood.other, 5)
    before = hood.dump()
    attack = f"{hood.root}:othe?"
    res = cli(attack, "purge", "5", "--yes", "--force")
    assert res.code == cli_mod.EXIT_NOT_FOUND and "othe?" in res.err
    assert cli(attack, "--json", "runs").json() == []
    assert cli(f"{hood.root}:*", "--json", "runs").json() == []
    assert cli(f"{hood.root}:[mo]ain", "--json", "runs").json() == []
    assert cli(f"{hood.root}:ma\\in", "--json", "runs").json() == []
    # 'a*' lists only the prefix literally named a*, not 'ab'
    listed = cli(hood.star, "--json", "runs")
    assert [r["run_id"] for r in listed.json()] == ["3"]
    assert cli(f"{hood.root}:a?", "--json", "runs").json() == []
    assert cli(f"{hood.root}:othe?", "export", "5", "/dev/null").code == cli_mod.EXIT_NOT_FOUND
    assert hood.dump() == before
    # the real prefix works, of course
    mains = cli(hood.main, "--json", "runs").json()
    assert [r["run_id"] for r in mains] == [str(r) for r in (1, 2, 5, 7, *range(10, 20), 100)]


@pytest.mark.parametrize("bad", ["", "a{b", "a}b", "{x}"])
def test_prefix_is_validated(cli: Callable[..., CliResult], bad: str) -> None:
    res = cli(bad, "runs")
    assert res.code == cli_mod.EXIT_USAGE and "prefix" in res.err
    no_traceback(res)
    with pytest.raises(InvalidInputError):
        check_prefix(bad)
    with pytest.raises(InvalidInputError):
        RunKeys(bad, 1)


def test_glob_escape_matches_exactly_itself(
    make_client: Callable[..., redis.Redis], prefix: str
) -> None:
    """On both backends: patterns built by keys.py match the literal prefix and nothing else."""
    client = make_client()
    weird = f"{prefix}:x?[a-b]\\*^-!"
    look_alikes = [f"{prefix}:xy[a-b]\\*^-!", f"{prefix}:x?a\\*^-!", f"{prefix}:x?[a-b]*^-!"]
    for p in (weird, *look_alikes):
        client.hset(RunKeys(p, 7).meta, "status", "D")
        client.hset(RunKeys(p, 71).meta, "status", "D")
    assert glob_escape("a*b?c[d]e\\f^-") == "a\\*b\\?c\\[d\\]e\\\\f^-"
    found = {k.decode() for k in client.scan_iter(match=meta_pattern(weird), count=1000)}
    assert found == {RunKeys(weird, 7).meta, RunKeys(weird, 71).meta}
    found = {k.decode() for k in client.scan_iter(match=RunKeys(weird, 7).match_all, count=1000)}
    assert found == {RunKeys(weird, 7).meta}
    assert run_id_from_meta_key(weird, RunKeys(weird, 71).meta) == "71"
    assert run_id_from_meta_key(weird, f"{weird}:{{x}}:meta") is None
    assert run_id_from_meta_key(weird, f"{weird}:{{1}}:a:{{2}}:meta") is None
    for p in (weird, *look_alikes):
        client.delete(RunKeys(p, 7).meta, RunKeys(p, 71).meta)


# --- purge: own keys only, live runs refused -----------------------------------------------------


def test_purge_refuses_a_live_run_and_force_purges_it(
    hood: Hood, cli: Callable[..., CliResult]
) -> None:
    state = hood.states[(hood.main, 2)]  # RUNNING (R)
    before = hood.dump()
    res = cli(hood.main, "purge", "2", "--yes")
    assert res.code == cli_mod.EXIT_ERROR
    assert "live" in res.err and "RUNNING (R)" in res.err and "--force" in res.err
    assert hood.dump() == before

    # terminal status but a replica with a valid lease: still live, the replica named
    state.set_run_status("D")
    state.join_replica(ttl_s=300, replica_id="rep-live")
    state.join_replica(ttl_s=1, replica_id="rep-gone")
    time.sleep(1.1)
    before = hood.dump()
    res = cli(hood.main, "--json", "purge", "2", "--yes")
    assert res.code == cli_mod.EXIT_ERROR
    msg = res.json()["error"]
    assert "rep-live (lease 29" in msg and "s left" in msg and "1 expired" in msg
    assert "rep-gone" not in msg.split("replicas:")[1].split("expired")[0]
    assert hood.dump() == before

    own = hood.keys_of(hood.main, 2)
    forced = cli(hood.main, "--json", "purge", "2", "--yes", "--force")
    assert forced.code == cli_mod.EXIT_OK, forced.err
    assert forced.json()["live"] is True and forced.json()["forced"] is True
    assert forced.json()["deleted"] == len(own)
    assert hood.dump() == {k: v for k, v in before.items() if k not in own}


def test_purge_counts_an_unreadable_lease_as_live(
    hood: Hood, cli: Callable[..., CliResult]
) -> None:
    hood.finish(hood.main, 7)
    keys = RunKeys(hood.main, 7)
    hood.client.hset(keys.replicas, "rep-odd", "garbage")
    before = hood.dump()
    res = cli(hood.main, "purge", "7", "--yes")
    assert res.code == cli_mod.EXIT_ERROR and "rep-odd (lease unreadable: 'garbage')" in res.err
    assert hood.dump() == before
    assert cli(hood.main, "purge", "7", "--yes", "--force").code == cli_mod.EXIT_OK
    assert not hood.client.exists(keys.meta)


def test_purge_deletes_only_key_table_names(hood: Hood, cli: Callable[..., CliResult]) -> None:
    hood.finish(hood.main, 7)
    keys = RunKeys(hood.main, 7)
    stray = keys.base + "not-a-run-key"
    hood.client.set(stray, "kept")
    res = cli(hood.main, "--json", "purge", "7", "--yes")
    assert res.code == 0
    assert hood.client.get(stray) == b"kept"
    assert not any(hood.client.exists(k) for k in keys.all)


def test_purge_aborts_when_the_run_changes_under_it(
    hood: Hood, cli: Callable[..., CliResult], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The liveness check and UNLINK are one WATCHed transaction: a write in between wins."""
    hood.finish(hood.main, 7)
    keys = RunKeys(hood.main, 7)
    real = reads_mod.read_liveness  # what purge calls, until the test swaps it
    calls = []

    def racing(client: Any, k: RunKeys) -> Any:
        out = real(client, k)
        calls.append(1)
        if len(calls) == 2:  # the check under WATCH: a replica joins right after it
            hood.states[(hood.main, 7)].join_replica(ttl_s=60, replica_id="rep-late")
        return out

    monkeypatch.setattr(handlers_mod, "read_liveness", racing)
    monkeypatch.setattr(purge_mod, "read_liveness", racing)
    before = hood.keys_of(hood.main, 7)
    res = cli(hood.main, "purge", "7", "--yes")
    assert res.code == cli_mod.EXIT_ERROR and "nothing deleted" in res.err
    after = hood.keys_of(hood.main, 7)
    assert "changed during the purge" in res.err
    assert set(before) < set(after) and hood.client.hexists(keys.replicas, "rep-late")


# --- finding 9: import validates everything first ------------------------------------------------


def export_of(
    hood: Hood, cli: Callable[..., CliResult], tmp_path: Path, run: int
) -> dict[str, Any]:
    path = tmp_path / f"run{run}.json"
    assert cli(hood.main, "export", str(run), str(path)).code == 0
    return cast("dict[str, Any]", json.loads(path.read_bytes()))


def write(tmp_path: Path, data: Any, name: str = "bad.json") -> str:
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else json.dumps(data).encode())
    return str(path)


def test_import_of_run_id_question_mark_touches_nothing(
    hood: Hood, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    snap = export_of(hood, cli, tmp_path, 1)
    snap["run_id"] = "?"
    path = write(tmp_path, snap)
    before = hood.dump()
    for args in ([], ["--force"]):
        res = cli(hood.main, "import", path, *args)
        assert res.code == cli_mod.EXIT_ERROR and "run_id must be an integer" in res.err
        no_traceback(res)
    assert hood.dump() == before
    # --run picks a (valid) run id instead: a copy of run 1 as run 555
    res = cli(hood.main, "--json", "import", path, "--run", "555")
    assert res.code == 0, res.err
    assert any("importing it as run 555" in n for n in res.json()["notes"])
    copy = RunKeys(hood.main, 555)
    assert hood.client.hget(copy.meta, "workflow_run_id") == b"555"
    assert hood.client.hlen(copy.task) == 10
    after = hood.dump()
    assert {k: v for k, v in after.items() if not k.startswith(copy.base.encode())} == before


def test_import_takes_the_prefix_from_the_command_line(
    hood: Hood, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    snap = export_of(hood, cli, tmp_path, 1)
    snap["prefix"] = hood.other  # the file asks for another prefix (where run 5 lives)
    snap["run_id"] = "5"
    path = write(tmp_path, snap)
    other_before = hood.keys_of(hood.other, 5)
    res = cli(f"{hood.root}:fresh", "--json", "import", path)
    assert res.code == 0, res.err
    assert any("never from the file" in n for n in res.json()["notes"])
    assert hood.client.exists(RunKeys(f"{hood.root}:fresh", 5).meta)
    assert hood.keys_of(hood.other, 5) == other_before


def _bad_snapshots(good: dict[str, Any]) -> dict[str, tuple[Any, str]]:
    """name -> (file content, a piece of the expected message)."""

    def edited(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        copy: dict[str, Any] = json.loads(json.dumps(good))
        edit(copy)
        return copy

    def put(name: str, entry: Any) -> Callable[[dict[str, Any]], None]:
        return lambda d: d["keys"].__setitem__(name, entry)

    def last_entry(entry: Any) -> Callable[[dict[str, Any]], None]:
        """A bad task record AFTER every good key and record (dict order is file order)."""

        def edit(d: dict[str, Any]) -> None:
            task = d["keys"].pop("task")
            task["value"].append(entry)
            d["keys"]["task"] = task

        return edit

    def status(value: str) -> Callable[[dict[str, Any]], None]:
        def edit(d: dict[str, Any]) -> None:
            meta = d["keys"]["meta"]["value"]
            meta[:] = [[f, value if f == "status" else v] for f, v in meta]

        return edit

    return {
        "not-json": (b"{not json", "not JSON"),
        "not-an-object": ([1, 2], "not a swarm-redis-snapshot"),
        "wrong-format": ({"format": "other", "keys": {}}, "not a swarm-redis-snapshot"),
        "version-bool": (edited(lambda d: d.__setitem__("version", True)), "version"),
        "version-new": (edited(lambda d: d.__setitem__("version", 99)), "newer"),
        "keys-list": (edited(lambda d: d.__setitem__("keys", [])), "'keys' must be an object"),
        "foreign-key": (
            edited(put("evil", {"type": "string", "value": "x"})),
            "'evil' is not a key",
        ),
        "other-run-key": (
            edited(put("{1}:meta", {"type": "hash", "value": [["a", "b"]]})),
            "is not a key of a run",
        ),
        "ttl": (
            edited(lambda d: d["keys"]["counters"].__setitem__("pttl", 5000)),
            "has a TTL",
        ),
        "wrong-type": (
            edited(lambda d: d["keys"]["task"].__setitem__("type", "set")),
            "is a hash in the key table",
        ),
        "entry-not-object": (edited(put("task", "x")), "expected an object"),
        "value-not-list": (
            edited(lambda d: d["keys"]["task"].__setitem__("value", {"a": 1})),
            "expected a JSON array",
        ),
        "bad-base64": (
            edited(put("resources", {"type": "hash", "value": [["k", {"b64": "%%%"}]]})),
            "bad base64",
        ),
        "number-value": (
            edited(lambda d: d["keys"]["counters"].__setitem__("value", [["claims", 3]])),
            "expected a string",
        ),
        "bad-task-record-last": (edited(last_entry(["999", "Z|0||"])), "8"),
        "bad-task-status-last": (edited(last_entry(["999", "Z|0||||0|0|"])), "unknown status"),
        "task-id-not-int-last": (edited(last_entry(["x?", "G|0|||1|0|0|"])), "not an integer"),
        "no-meta": (edited(lambda d: d["keys"].pop("meta")), "no 'meta'"),
        "bad-stream-id": (
            edited(lambda d: d["keys"]["events"]["value"]["entries"][0].__setitem__(0, "x-1")),
            "bad stream id",
        ),
        "bad-lease": (
            edited(put("replicas", {"type": "hash", "pttl": -1, "value": [["r", "x|y"]]})),
            "incarnation|deadline",
        ),
        "bad-run-status": (edited(status("?")), "unknown run status"),
        "duplicate-field": (
            edited(lambda d: d["keys"]["meta"]["value"].append(["status", "D"])),
            "appears twice",
        ),
    }


def test_hostile_snapshots_are_refused_before_any_write(
    hood: Hood, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    good = export_of(hood, cli, tmp_path, 1)
    hood.finish(hood.main, 2)
    before = hood.dump()
    for name, (content, expected) in _bad_snapshots(good).items():
        path = write(tmp_path, content, f"{name}.json")
        # onto the file's own run 1, onto another run, onto a new one
        for target in (["--force"], ["--run", "2", "--force"], ["--run", "9000"]):
            res = cli(hood.main, "import", path, *target)
            assert res.code == cli_mod.EXIT_ERROR, (name, target, res)
            assert expected in res.err, (name, res.err)
            no_traceback(res)
            assert hood.dump() == before, name  # every key of every run, DUMP + PTTL


def test_import_bounds(hood: Hood, cli: Callable[..., CliResult], tmp_path: Path) -> None:
    good = export_of(hood, cli, tmp_path, 1)
    path = write(tmp_path, good)
    before = hood.dump()
    res = cli(hood.main, "import", path, "--run", "9001", "--max-bytes", "100")
    assert res.code == cli_mod.EXIT_ERROR and "--max-bytes" in res.err
    huge = json.loads(json.dumps(good))
    big = base64.b64encode(b"x" * (snapshot_mod.MAX_VALUE_BYTES + 1)).decode()
    huge["keys"]["resources"] = {"type": "hash", "pttl": -1, "value": [["k", {"b64": big}]]}
    res = cli(hood.main, "import", write(tmp_path, huge, "huge.json"), "--run", "9001")
    assert res.code == cli_mod.EXIT_ERROR and "more than" in res.err
    with pytest.raises(snapshot_mod.SnapshotError, match="more than 5 elements"):
        snapshot_mod.validate_snapshot(good, prefix=hood.main, max_elements=5)
    assert cli(hood.main, "import", str(tmp_path / "missing.json")).code == cli_mod.EXIT_ERROR
    assert hood.dump() == before


def test_a_failed_write_leaves_nothing_and_force_keeps_the_old_run(
    hood: Hood, cli: Callable[..., CliResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A valid file whose write fails half way (Redis error on the 3rd key) imports nothing."""
    good = export_of(hood, cli, tmp_path, 1)
    path = write(tmp_path, good)
    hood.finish(hood.main, 2)
    before = hood.dump()
    real = restore_mod._write_temp
    written: list[str] = []

    def failing(client: Any, key: str, entry: Any) -> None:
        if len(written) == 3:
            raise redis.ResponseError("ERR injected failure")
        written.append(key)
        real(client, key, entry)

    monkeypatch.setattr(restore_mod, "_write_temp", failing)
    for target in (["--run", "2", "--force"], ["--run", "9002"]):
        written.clear()
        res = cli(hood.main, "import", path, *target)
        assert res.code == cli_mod.EXIT_ERROR and "nothing was imported" in res.err
        assert len(written) == 3
        assert hood.dump() == before  # temporary keys gone, run 2 byte-identical


def test_import_aborts_when_the_run_appears_meanwhile(
    hood: Hood, cli: Callable[..., CliResult], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    good = export_of(hood, cli, tmp_path, 1)
    path = write(tmp_path, good)
    real = restore_mod._commit

    def racing(client: Any, keys: RunKeys, *args: Any) -> Any:
        light_run(hood.url, hood.main, 9003)  # another process creates the run first
        return real(client, keys, *args)

    monkeypatch.setattr(restore_mod, "_commit", racing)
    res = cli(hood.main, "import", path, "--run", "9003")
    assert res.code == cli_mod.EXIT_ERROR and "exists" in res.err
    created = hood.keys_of(hood.main, 9003)
    assert hood.client.hlen(RunKeys(hood.main, 9003).task) == 0 and created
    leftovers = list(hood.client.scan_iter(match=f"{hood.main}:import-*", count=1000))
    assert leftovers == []


def test_force_replaces_the_run_atomically(
    hood: Hood, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    snap = export_of(hood, cli, tmp_path, 1)
    path = write(tmp_path, snap)
    hood.finish(hood.main, 2)
    keys = RunKeys(hood.main, 2)
    hood.states[(hood.main, 2)].join_replica(ttl_s=1, replica_id="rep-old")
    time.sleep(1.1)  # an expired replica: the run is not live, and its replicas key exists
    others = {k: v for k, v in hood.dump().items() if not k.startswith(keys.base.encode())}
    res = cli(hood.main, "import", path, "--run", "2", "--force")
    assert res.code == 0, res.err
    assert hood.client.hget(keys.meta, "workflow_run_id") == b"2"
    assert hood.client.hget(keys.meta, "status") == b"R"  # run 1's content now
    assert not hood.client.exists(keys.replicas)  # run 2's own keys went with it
    after = hood.dump()
    assert {k: v for k, v in after.items() if not k.startswith(keys.base.encode())} == others
    assert list(hood.client.scan_iter(match=f"{hood.main}:replaced-*", count=1000)) == []
    assert cli(hood.main, "verify", "2").code == cli_mod.EXIT_OK


def test_a_run_with_orphans_and_a_reap_lock_round_trips(
    hood: Hood, cli: Callable[..., CliResult], tmp_path: Path
) -> None:
    """Every record kind an export holds passes the import checks; the reap mutex is skipped."""
    state = hood.states[(hood.main, 2)]
    replica = state.join_replica(ttl_s=0.05, replica_id="rep-short")
    assert state.claim_batch(replica, 10) is not None
    time.sleep(0.1)
    state.reap(force=True)
    keys = RunKeys(hood.main, 2)
    assert hood.client.llen(keys.orphans) == 1 and hood.client.hlen(keys.batches) == 1
    snap = export_of(hood, cli, tmp_path, 2)
    assert "reap_lock" not in snap["keys"]
    snap["keys"]["reap_lock"] = {"type": "string", "pttl": 400, "value": "token"}  # older file
    res = cli(hood.main, "--json", "import", write(tmp_path, snap), "--run", "9100")
    assert res.code == 0, res.err
    assert any("reap_lock" in n for n in res.json()["notes"])
    copy = RunKeys(hood.main, 9100)
    assert not hood.client.exists(copy.reap_lock)
    c = hood.client
    for name in ("task", "batches", "claims", "reserved", "counters"):
        assert c.hgetall(copy.key(name)) == c.hgetall(keys.key(name)), name
    assert c.lrange(copy.orphans, 0, -1) == c.lrange(keys.orphans, 0, -1)
    assert c.xrange(copy.events) == c.xrange(keys.events)
    assert cli(hood.main, "verify", "9100").code == cli_mod.EXIT_OK


def test_snapshot_api_on_both_backends(
    make_client: Callable[..., redis.Redis], prefix: str
) -> None:
    """export_run -> validate_snapshot -> import_run (fakeredis and real Redis): a copy under
    another prefix and run id, then a hostile edit refused with every key unchanged."""
    client = make_client()
    src = RedisSwarmState(1, 41, 1, max_concurrently_running=3, redis=client, prefix=prefix)
    src.set_run_status("R")
    snap = snapshot_mod.export_run(client, src.keys)
    dest_prefix = f"{prefix}:copy"
    plan = snapshot_mod.validate_snapshot(snap, prefix=dest_prefix, run_id=42)
    assert any("never from the file" in n for n in plan.notes)
    keys = snapshot_mod.import_run(client, plan)
    assert keys.base == f"{dest_prefix}:{{42}}:"
    assert client.hget(keys.meta, "workflow_run_id") == b"42"
    assert client.hget(keys.meta, "status") == b"R"
    assert client.xlen(keys.events) == client.xlen(src.keys.events)
    with pytest.raises(snapshot_mod.RunExistsError):
        snapshot_mod.import_run(client, plan)
    before = {
        k: (client.dump(k), ttl_kind(client, k)) for k in client.scan_iter(match=f"{prefix}:*")
    }
    snap["keys"]["task"] = {"type": "hash", "pttl": -1, "value": [["1", "G|0|"]]}
    with pytest.raises(snapshot_mod.SnapshotError, match=r"keys\.task"):
        snapshot_mod.validate_snapshot(snap, prefix=dest_prefix, run_id=42)
    after = {
        k: (client.dump(k), ttl_kind(client, k)) for k in client.scan_iter(match=f"{prefix}:*")
    }
    assert after == before
    again = snapshot_mod.validate_snapshot(
        snapshot_mod.export_run(client, src.keys), prefix=dest_prefix, run_id=42
    )
    snapshot_mod.import_run(client, again, force=True)
    assert client.hget(keys.meta, "status") == b"R"


def test_zset_keys_round_trip(
    make_client: Callable[..., redis.Redis], prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Sorted sets (the bounded branch's ready queue and qidx) export and import exactly."""
    client = make_client()
    src = RedisSwarmState(1, 43, 1, redis=client, prefix=prefix)
    monkeypatch.setitem(snapshot_mod.KEY_TYPES, "ready", "zset")
    client.zadd(src.keys.ready, {"7": 2**52 + 3, "8": -5, "9": 0})
    snap = snapshot_mod.export_run(client, src.keys)
    assert snap["keys"]["ready"]["value"] == [["8", "-5"], ["9", "0"], ["7", str(2**52 + 3)]]
    keys = snapshot_mod.import_run(
        client, snapshot_mod.validate_snapshot(snap, prefix=prefix, run_id=44)
    )
    assert client.zrange(keys.ready, 0, -1, withscores=True) == client.zrange(
        src.keys.ready, 0, -1, withscores=True
    )
    for bad, message in ((["7", 1], "bad score"), (["x", "1"], "not an integer")):
        snap["keys"]["ready"]["value"] = [bad]
        with pytest.raises(snapshot_mod.SnapshotError, match=message):
            snapshot_mod.validate_snapshot(snap, prefix=prefix, run_id=45)


def test_every_key_of_the_key_table_has_a_snapshot_type() -> None:
    """Fails when a name is appended to RUN_KEY_NAMES without a type in snapshot.KEY_TYPES (or
    a place in TRANSIENT_KEYS): export/import must know each key's Redis type."""
    missing = set(RUN_KEY_NAMES) - set(KEY_TYPES) - TRANSIENT_KEYS
    assert not missing, f"add these names to snapshot.KEY_TYPES or TRANSIENT_KEYS: {missing}"
    assert not set(KEY_TYPES) & TRANSIENT_KEYS


# --- finding 7 (part): the exporter's bind address -----------------------------------------------


def test_exporter_binds_loopback_by_default(
    hood: Hood, real_redis_url: str, capsys: Capsys
) -> None:
    args = cli_mod.build_parser().parse_args(["exporter", "--port", "9"])
    assert args.addr == "127.0.0.1"
    for flag in ("--bind", "--host", "--addr"):
        assert (
            cli_mod.build_parser().parse_args(["exporter", "--port", "9", flag, "::1"]).addr
            == "::1"
        )
    assert pyinspect.signature(serve).parameters["addr"].default == "127.0.0.1"
    assert cli_mod.main(["exporter", "--help"]) == 0
    assert "127.0.0.1" in capsys.readouterr().out

    port = free_port()
    cmd = [sys.executable, "-m", "swarm_redis", "--url", real_redis_url, "--prefix", hood.main]
    proc = subprocess.Popen(
        [*cmd, "exporter", "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        body = ""
        deadline = time.monotonic() + 60
        while not body and proc.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as resp:
                    body = resp.read().decode()
            except OSError:
                time.sleep(0.05)
        assert "swarm_up 1.0" in body
        assert listening_addresses(port) == {"127.0.0.1"}
    finally:
        proc.terminate()
        proc.wait()


def listening_addresses(port: int) -> set[str]:
    """IPv4/IPv6 addresses listening on ``port`` (from /proc/net/tcp{,6}, Linux)."""
    found: set[str] = set()
    for table, size in (("/proc/net/tcp", 8), ("/proc/net/tcp6", 32)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except FileNotFoundError:
            continue
        for line in lines:
            local, state = line.split()[1], line.split()[3]
            addr, hex_port = local.split(":")
            if int(hex_port, 16) != port or state != "0A":
                continue
            if size == 8:
                found.add(".".join(str(b) for b in reversed(bytes.fromhex(addr))))
            else:
                found.add("v6:" + addr)
    assert found, f"nothing listens on port {port} (is /proc/net/tcp readable?)"
    return found
