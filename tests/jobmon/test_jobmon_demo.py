"""``swarm-redis demo --jobmon``: a real jobmon workflow on a local jobmon server, as a user runs it.

A small run (6 tasks, 2 replicas, no kills: the end-to-end tests kill) through the command line,
on the real Redis with ``--purge``: the verdict passes, every line of it, and the run's keys are
gone afterwards. The demo starts at the session's first jobmon test (tests/jobmon/conftest.py)
and runs beside the others; the test waits for it.
"""

from __future__ import annotations

import os
import re
import sys
from typing import Any

import pytest
import redis
from background import BackgroundProcess
from jobmon_env import require_jobmon

require_jobmon()


def start_demo(redis_url: str) -> BackgroundProcess:
    """The demo run of the test below, started (tests/jobmon/conftest.py starts it early)."""
    env = dict(os.environ)
    env.pop("PYTEST_ADDOPTS", None)
    cmd = [
        sys.executable, "-m", "swarm_redis", "demo", "--jobmon", "--tasks", "6",
        "--replicas", "2", "--kill-every", "0", "--url", redis_url, "--purge",
    ]  # fmt: skip
    return BackgroundProcess(cmd, env=env)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_demo_runs_a_real_workflow_and_passes_its_verdict(
    jobmon_background: dict[str, Any], real_redis_url: str
) -> None:
    run = jobmon_background.get("test_demo_runs_a_real_workflow_and_passes_its_verdict")
    code, out, err = (run or start_demo(real_redis_url)).result(timeout_s=540)
    assert code == 0, out[-3000:] + err[-3000:]
    verdict = out.split("verdict (from the jobmon server's database):", 1)[1]
    lines = [line.strip() for line in verdict.strip().splitlines()]
    assert lines and all(line.startswith("PASS") for line in lines), verdict
    assert any("6/6 tasks DONE" in line for line in lines), verdict
    assert any("jobmon distributors started: 1" in line for line in lines), verdict
    assert any(re.search(r"array first: at most [123] active, limit 3", x) for x in lines)
    prefix = re.search(r"prefix (\S+)", out)
    assert prefix is not None, out
    assert re.search(r"purged [1-9]\d* keys", out), out
    client = redis.Redis.from_url(real_redis_url)
    try:
        assert not list(client.scan_iter(match=f"{prefix.group(1)}:*", count=1000))
    finally:
        client.close()
