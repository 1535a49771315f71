"""The CLI on a local 3-primary Redis Cluster (``--cluster``): runs on every primary are found,
and the per-run commands work on the primary that holds the run's slot."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis.cluster
from cli_helpers import CliResult, build_run, run_cli
from servers import LocalCluster, missing_binaries, skip_or_fail

from swarm_redis import cli as cli_mod
from swarm_redis.keys import RunKeys

pytestmark = pytest.mark.real


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalCluster]:
    why = missing_binaries("redis-server")
    if why:
        skip_or_fail(f"Redis Cluster tests need redis-server: {why}")
    made = LocalCluster(3).start()
    try:
        yield made
    finally:
        made.stop()


def one_run_per_primary(client: redis.cluster.RedisCluster, prefix: str) -> list[int]:
    """Run ids whose slots are served by three different primaries."""
    chosen: dict[str, int] = {}
    candidate = 10**9 + secrets.randbelow(10**6)
    while len(chosen) < len(client.get_primaries()):
        candidate += 1
        node = client.get_node_from_key(RunKeys(prefix, candidate).meta)
        chosen.setdefault(node.name, candidate)
    return sorted(chosen.values())


def test_cli_on_a_cluster(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    client = cluster.client()
    prefix = "swtc" + secrets.token_hex(4)
    url = f"redis://127.0.0.1:{cluster.ports[0]}"
    try:
        run_ids = one_run_per_primary(client, prefix)
        states = [build_run("", prefix, r, client=client) for r in run_ids]

        def cli(*args: str) -> CliResult:
            return run_cli(capsys, "--cluster", "--url", url, "--prefix", prefix, *args)

        listed = cli("--json", "runs")
        assert listed.code == 0
        assert [r["run_id"] for r in listed.json()] == [str(r) for r in run_ids]
        assert {r["tasks"] for r in listed.json()} == {10}
        last = str(run_ids[-1])
        assert cli("--json", "status", last).json()["counts"]["D"] == 1
        assert cli("--json", "task", last, "2").json()["queue_position"] == 0
        assert cli("--json", "events", last, "--count", "1").lines()[0]["type"] == "run_created"
        client.sadd(states[-1].keys.status_set("Q"), 3)
        assert cli("verify", last).code == cli_mod.EXIT_DRIFT
        assert cli("verify", last, "--repair").code == cli_mod.EXIT_OK
        path = tmp_path / "run.json"
        assert cli("export", last, str(path)).code == 0
        assert cli("purge", last, "--yes").code == 0
        assert cli("status", last).code == cli_mod.EXIT_NOT_FOUND
        assert cli("import", str(path)).code == 0
        assert cli("verify", last).code == cli_mod.EXIT_OK
    finally:
        for key in client.scan_iter(match=f"{prefix}:*", target_nodes=client.get_primaries()):
            client.unlink(key)
        client.close()
