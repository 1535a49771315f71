"""The CLI on a local 3-primary Redis Cluster (``--cluster``): runs on every primary are found,
and the per-run commands work on the primary that holds the run's slot."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from cli_helpers import CliResult, build_run, run_cli
from servers import LocalCluster, runs_on_every_primary

from swarm_redis.ops import cli as cli_mod

pytestmark = pytest.mark.real


def test_cli_on_a_cluster(
    cluster: LocalCluster, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    client = cluster.client()
    prefix = "swtc" + secrets.token_hex(4)
    url = f"redis://127.0.0.1:{cluster.ports[0]}"
    try:
        run_ids = sorted(runs_on_every_primary(client, prefix, 1))
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
        assert cli("purge", last, "--yes").code == cli_mod.EXIT_ERROR  # RUNNING: live
        assert cli("purge", last, "--yes", "--force").code == 0
        assert cli("status", last).code == cli_mod.EXIT_NOT_FOUND
        assert cli("import", str(path)).code == 0
        assert cli("import", str(path), "--force").code == 0  # replaced in one MULTI on the slot
        assert cli("verify", last).code == cli_mod.EXIT_OK
    finally:
        for key in client.scan_iter(match=f"{prefix}:*", target_nodes=client.get_primaries()):
            client.unlink(key)
        client.close()
