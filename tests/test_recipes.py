"""The redis-cli recipes of docs/redis-cli.md, run with the real ``redis-cli`` on a real server.

The test builds the run the recipes describe (under its own prefix and run id), then executes
every ``bash`` block of the document with ``bash`` (keys rewritten to the test's run, redis-cli
pointed at the test's server) and compares the output with the ``text`` block that follows it.
A few one-line recipes from the prose are checked explicitly as well.
"""

from __future__ import annotations

import datetime
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from urllib.parse import urlparse

import pytest
import redis

from swarm_redis import ArrayRecord, RedisSwarmState, StateUpdate, TaskRecord

RECIPES = Path(__file__).resolve().parents[1] / "docs" / "redis-cli.md"


def recipes_section() -> str:
    """The text of the recipes page."""
    return RECIPES.read_text(encoding="utf-8")


DOC_KEY_BASE = "swarm:{10}:"
RESOURCE_KEY = 2718281828459045235

pytestmark = pytest.mark.skipif(shutil.which("redis-cli") is None, reason="no redis-cli on PATH")


def cli_args(url: str) -> list[str]:
    u = urlparse(url)
    if u.scheme == "unix":
        args = ["-s", u.path]
    else:
        args = ["-h", u.hostname or "127.0.0.1", "-p", str(u.port or 6379)]
        if u.path.strip("/"):
            args += ["-n", u.path.strip("/")]
    if u.password:
        args += ["-a", u.password, "--no-auth-warning"]
    return args


def blocks(doc: str) -> list[tuple[str, str | None]]:
    """(bash block, the text block right after it or None), in document order."""
    found = re.findall(r"```(bash|text)\n(.*?)```", doc, flags=re.S)
    out: list[tuple[str, str | None]] = []
    for i, (kind, body) in enumerate(found):
        if kind != "bash":
            continue
        follows = found[i + 1][1] if i + 1 < len(found) and found[i + 1][0] == "text" else None
        out.append((body, follows))
    return out


@pytest.fixture
def run(real_redis_url: str, prefix: str, run_id: int) -> RedisSwarmState:
    """The run of the document: 9 tasks, two arrays, task 6 ready, task 7 queued."""
    client = redis.Redis.from_url(real_redis_url, protocol=3)
    state = RedisSwarmState(1, run_id, 5, max_concurrently_running=25, redis=client, prefix=prefix)
    state.add_arrays([ArrayRecord(3, 2), ArrayRecord(4, 5)])
    t = {i: TaskRecord(i) for i in range(1, 10)}
    t[1].array_id, t[6].array_id, t[5].array_id, t[8].array_id = 3, 3, 3, 3
    for i in (2, 3, 4, 7, 9):
        t[i].array_id = 4
    t[3].status, t[4].status, t[5].status, t[8].status = "R", "R", "Q", "F"
    for up, down in ((1, 6), (2, 6), (6, 9)):
        t[up].downstream_swarm_tasks.add(t[down])
        t[down].num_upstreams += 1
    state.add_tasks([t[i] for i in (5, 3, 4, 1, 2, 6, 7, 8, 9)])
    state.apply_update(
        StateUpdate(
            task_statuses={1: "D", 2: "D", 6: "G"},
            sync_time=datetime.datetime(2024, 5, 1, 12, 0, 0),
        )
    )
    state.enqueue_task(t[7])
    state.cache_resources(RESOURCE_KEY, {"num_cores": 2, "memory": "4G"})
    return state


def bash(script: str, url: str, *, raw: bool) -> str:
    args = " ".join(shlex.quote(a) for a in cli_args(url))
    mode = "" if raw else "--no-raw"
    fn = f'redis-cli() {{ command redis-cli {args} {mode} "$@"; }}\n'
    proc = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", fn + script],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, f"{script}\n{proc.stderr}"
    return proc.stdout


def localize(script: str, state: RedisSwarmState) -> str:
    assert DOC_KEY_BASE in script or "redis-cli" not in script
    return script.replace(DOC_KEY_BASE, state.keys.base)


def lines(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines()]


def test_the_document_has_the_recipes() -> None:
    doc = recipes_section()
    for needle in (
        "SCARD",
        "ZRANGE 'swarm:{10}:ready' 0 9",
        "HGET 'swarm:{10}:task'",
        "HGET 'swarm:{10}:meta' limit",
        "HGETALL 'swarm:{10}:arrays'",
        "HGETALL 'swarm:{10}:active'",
        "HKEYS 'swarm:{10}:resources'",
        "HGET 'swarm:{10}:resources'",
        "S|done|stamp|flags|array|nup|start|children",
    ):
        assert needle in doc, needle


def test_every_recipe_block_gives_the_documented_output(
    run: RedisSwarmState, real_redis_url: str
) -> None:
    checked = 0
    for script, expected in blocks(recipes_section()):
        if "jq" in script and shutil.which("jq") is None:
            continue
        # command substitution is a pipe, where redis-cli prints raw values: keep that form
        out = bash(localize(script, run), real_redis_url, raw="$(" in script or "jq" in script)
        if expected is not None:
            assert lines(out) == lines(expected), script
            checked += 1
        else:
            assert out.strip(), script
    assert checked >= 5


def test_prose_one_liners(run: RedisSwarmState, real_redis_url: str) -> None:
    def cli(script: str, raw: bool = True) -> list[str]:
        return lines(bash(localize(script, run), real_redis_url, raw=raw))

    assert cli("redis-cli HLEN 'swarm:{10}:task'") == ["9"]
    assert cli("redis-cli ZCARD 'swarm:{10}:ready'") == ["2"]
    assert sorted(cli("redis-cli SMEMBERS 'swarm:{10}:s:R'")) == ["3", "4"]
    assert cli("redis-cli SISMEMBER 'swarm:{10}:queued' 7") == ["1"]
    assert cli("redis-cli SISMEMBER 'swarm:{10}:queued' 9") == ["0"]
    assert cli("redis-cli HGET 'swarm:{10}:task' 6 | cut -d'|' -f1,2,6") == ["G|2|2"]
    assert cli("redis-cli HMGET 'swarm:{10}:meta' status last_sync") == [
        "B",
        "d:2024-05-01T12:00:00",
    ]
    events = cli("redis-cli XREVRANGE 'swarm:{10}:events' + - COUNT 5")
    assert "type" in events and "actor" in events


def test_recipe_outputs_agree_with_the_api(run: RedisSwarmState, real_redis_url: str) -> None:
    """What the recipes show is what the Python API says."""

    def cli(script: str) -> list[str]:
        return lines(bash(localize(script, run), real_redis_url, raw=True))

    counts = run.counts()
    for s in "GQIORDEAF":
        assert cli(f"redis-cli SCARD 'swarm:{{10}}:s:{s}'") == [str(counts[s])]
    assert cli("redis-cli ZRANGE 'swarm:{10}:ready' 0 9") == [
        str(t.task_id) for t in run.ready_to_run
    ]
    task = run.get_task(6)
    status, done, _stamp, _flags, array, nup, _start, children = cli(
        "redis-cli HGET 'swarm:{10}:task' 6"
    )[0].split("|")
    assert (status, int(done), int(array), int(nup)) == (
        task.status,
        task.num_upstreams_done,
        task.array_id,
        task.num_upstreams,
    )
    assert children == "9"
    assert cli("redis-cli HGET 'swarm:{10}:meta' limit") == [str(run.max_concurrently_running)]
    arrays = cli("redis-cli HGETALL 'swarm:{10}:arrays'")
    limits = dict(zip(map(int, arrays[::2]), map(int, arrays[1::2])))
    assert limits == {k: run.arrays[k].max_concurrently_running for k in run.arrays}
    active = cli("redis-cli HGETALL 'swarm:{10}:active'")
    used = dict(zip(map(int, active[::2]), map(int, active[1::2])))
    for array_id, limit in limits.items():
        assert run.get_array_capacity(array_id) == max(0, limit - used.get(array_id, 0))
    assert cli("redis-cli HKEYS 'swarm:{10}:resources'") == [str(RESOURCE_KEY)]
    if shutil.which("jq"):
        got = cli(f"redis-cli --raw HGET 'swarm:{{10}}:resources' {RESOURCE_KEY} | jq -c -S .v")
        assert got == ['{"memory":"4G","num_cores":2}']
        assert run.get_cached_resources(RESOURCE_KEY) == {"num_cores": 2, "memory": "4G"}
