"""Smoke test of ``swarm-redis bench``: the quick suite runs (shrunk further) and writes the
JSON layout of issue 6. It checks that figures exist, never their values (no timed assertions)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swarm_redis.bench.cli import main

pytestmark = pytest.mark.real


def test_quick_suite_writes_every_figure(real_redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--quick", "--scale", "0.03", "--naive-budget", "0.5"]
    assert main([*argv, "--url", real_redis_url, "--json", str(out)]) == 0

    data = json.loads(out.read_text())
    assert {"cores", "python", "redis_version"} <= set(data["machine"])
    for name in ("redis", "memory", "pipelined", "naive"):
        assert data["lifecycle"][f"{name}_tasks_per_s"] > 0
    assert data["lifecycle"]["redis"]["all_done"]
    assert data["lifecycle"]["pipelined"]["all_done"]
    assert set(data["replicas"]["tasks_per_s"]) == {"1", "2", "4"}
    assert all(r["all_done"] for r in data["replicas"]["rounds"].values())
    for path in (
        ("flatness", "ratio"),
        ("blocking", "max_ms"),
        ("memory", "bytes_per_task"),
        ("redis_share", "ratio"),
    ):
        node = data
        for part in path:
            node = node[part]
        assert isinstance(node, (int, float)), path
    expected = {"lifecycle", "replicas", "flatness", "blocking", "memory", "redis_share"}
    if "skipped" not in data["jobmon_tick"]:  # jobmon installed: the tick scenario ran
        expected.add("jobmon_tick")
        for name in ("memory", "redis", "dropin"):
            assert data["jobmon_tick"][name]["queued"] == data["jobmon_tick"]["tasks"]
        assert (
            data["jobmon_tick"]["dropin"]["round_trips"]
            < data["jobmon_tick"]["redis"]["round_trips"]
        )
    assert {t["scenario"] for t in data["targets"]} == expected


def test_only_selects_scenarios(real_redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--quick", "--scale", "0.03", "--only", "memory", "flatness"]
    assert main([*argv, "--url", real_redis_url, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "memory" in data and "flatness" in data
    assert "lifecycle" not in data and "replicas" not in data


@pytest.mark.slow
def test_cli_quick_run_as_documented(real_redis_url: str, tmp_path: Path) -> None:
    """`swarm-redis bench --quick` exactly as the README shows it, on its private redis-server."""
    import os
    import shutil
    import subprocess
    import sys

    if shutil.which("redis-server") is None:
        pytest.skip("no redis-server on PATH for the suite's private server")
    out = tmp_path / "quick.json"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    proc = subprocess.run(
        [sys.executable, "-m", "swarm_redis", "bench", "--quick", "--json", str(out)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "lifecycle" in proc.stdout and "targets" in proc.stdout
    data = json.loads(out.read_text())
    assert data["lifecycle"]["redis"]["all_done"]
    assert data["config"]["quick"] is True
