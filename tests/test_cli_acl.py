"""Read-only monitoring through a Redis ACL user (real server only).

The test creates a uniquely named ACL user with :func:`swarm_redis.ops.reads.read_only_acl_rules`
(the recipe of docs/operations.md), checks that every read command and the exporter work with
it, and that writes are refused with the "write refused" message and exit code 6.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest
import redis
from cli_helpers import CliResult, run_cli
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from swarm_redis import RedisSwarmState
from swarm_redis.ops import cli as cli_mod
from swarm_redis.ops.exporter import make_registry
from swarm_redis.ops.reads import read_only_acl_rules

Capsys = pytest.CaptureFixture[str]


def with_user(url: str, user: str, password: str) -> str:
    """``url`` logging in as ``user`` (query arguments work for redis:// and unix:// alike)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rsplit("@", 1)[-1]
    query = [(k, v) for k, v in parse_qsl(parts.query) if k not in ("username", "password")]
    query += [("username", user), ("password", password)]
    return urlunsplit((parts.scheme, netloc, parts.path, urlencode(query), ""))


@pytest.fixture
def monitor_url(real_redis_url: str, prefix: str) -> Iterator[str]:
    """A read-only ACL user for ``prefix``, deleted at teardown."""
    admin = redis.Redis.from_url(real_redis_url, protocol=3)
    user = f"{prefix}-monitor"
    password = secrets.token_hex(16)
    try:
        admin.execute_command(
            "ACL", "SETUSER", user, "reset", "on", f">{password}", *read_only_acl_rules(prefix)
        )
    except redis.ResponseError as e:  # pragma: no cover - a server without ACLs or rights
        admin.close()
        pytest.skip(f"cannot create an ACL user on this server: {e}")
    try:
        yield with_user(real_redis_url, user, password)
    finally:
        admin.execute_command("ACL", "DELUSER", user)
        admin.close()


@pytest.fixture
def as_monitor(monitor_url: str, prefix: str, capsys: Capsys) -> Any:
    def run(*args: str) -> CliResult:
        return run_cli(capsys, "--url", monitor_url, "--prefix", prefix, *args)

    return run


@pytest.fixture
def as_admin(real_redis_url: str, prefix: str, capsys: Capsys) -> Any:
    def run(*args: str) -> CliResult:
        return run_cli(capsys, "--url", real_redis_url, "--prefix", prefix, *args)

    return run


def test_the_user_really_is_read_only(monitor_url: str, prefix: str) -> None:
    client = redis.Redis.from_url(monitor_url, protocol=3)
    try:
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.set(f"{prefix}:x", 1)
        with pytest.raises(redis.exceptions.NoPermissionError):
            client.get("elsewhere:x")  # keys outside the prefix
    finally:
        client.close()


def test_read_commands_work_read_only(
    as_monitor: Any, as_admin: Any, state: RedisSwarmState, tmp_path: Path
) -> None:
    run = str(state.workflow_run_id)
    replica = state.join_replica(ttl_s=60, replica_id="rep-ro")
    assert state.claim_batch(replica, 10) is not None
    for args in (
        ("runs",),
        ("status", run),
        ("tasks", run),
        ("task", run, "2"),
        ("events", run),
        ("verify", run),
        ("replicas", run),
        ("watch", run, "--count", "1"),
    ):
        human = as_monitor(*args)
        assert human.code == cli_mod.EXIT_OK, (args, human.err)
        assert as_monitor("--json", *args).code == cli_mod.EXIT_OK, args
    status = as_monitor("--json", "status", run).json()
    admin_status = as_admin("--json", "status", run).json()
    for volatile in ("now_ms", "replicas", "leader"):
        status.pop(volatile)
        admin_status.pop(volatile)
    assert status == admin_status
    assert as_monitor("--json", "task", run, "2").json()["claim_replica"] == "rep-ro"
    assert as_monitor("--json", "runs").json()[0]["run_id"] == run
    assert as_monitor("--json", "verify", run).json()["clean"] is True
    exported = as_monitor("export", run, str(tmp_path / "s.json"))
    assert exported.code == cli_mod.EXIT_OK


def test_exporter_collects_read_only(monitor_url: str, prefix: str, state: RedisSwarmState) -> None:
    client = redis.Redis.from_url(monitor_url, protocol=3)
    try:
        text = generate_latest(make_registry(client, prefix)).decode()
    finally:
        client.close()
    got = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    run = str(state.workflow_run_id)
    assert got[("swarm_up", ())] == 1
    assert got[("swarm_run_tasks", (("run", run), ("status", "D")))] == 1
    assert got[("swarm_run_propagations_total", (("run", run),))] == 1


def test_writes_are_refused_with_exit_code_6(
    as_monitor: Any, as_admin: Any, state: RedisSwarmState, tmp_path: Path
) -> None:
    run = str(state.workflow_run_id)
    state.redis.hset(state.keys.active, "2", 9)  # drift for verify --repair to try to fix
    purge = as_monitor("purge", run, "--yes", "--force")  # live: only --force gets to the write
    assert purge.code == cli_mod.EXIT_WRITE_REFUSED
    assert "write refused" in purge.err
    repair = as_monitor("verify", run, "--repair")
    assert repair.code == cli_mod.EXIT_WRITE_REFUSED and "write refused" in repair.err
    as_json = as_monitor("--json", "verify", run, "--repair")
    assert as_json.json()["exit_code"] == cli_mod.EXIT_WRITE_REFUSED
    assert as_monitor("reap", run).code == cli_mod.EXIT_WRITE_REFUSED
    path = tmp_path / "s.json"
    assert as_admin("export", run, str(path)).code == 0
    assert as_monitor("import", str(path), "--force").code == cli_mod.EXIT_WRITE_REFUSED
    # nothing changed: the run is there and the drift is still there
    still = as_admin("--json", "verify", run)
    assert still.code == cli_mod.EXIT_DRIFT and still.json()["drift"] == {"active_counter": 1}
