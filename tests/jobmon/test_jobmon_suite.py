"""jobmon's own swarm tests, run with jobmon's SwarmState swapped for swarm_redis.

Each test runs a part of jobmon's test suite (from jobmon's source tree: ``$JOBMON_SRC``, else
``.jobmon-src/`` in this checkout, which ``.ci/run`` extracts) in a subprocess with
``-p swap_plugin`` (``tests/jobmon/swap_plugin.py``: every SwarmState is a
``swarm_redis.jobmon.JobmonSwarmState`` on the real Redis). The tests that fail must be exactly
the ones docs/jobmon.md lists as deliberate differences ("fails"); a test listed "flaky" may
fail or pass. A new failure fails this suite, and so does a listed one that passes.

* ``test_unit_suite``: jobmon's ``tests/unit/swarm`` (about a minute): in CI. It starts beside
  the end-to-end tests when they run in the same session (``tests/jobmon/conftest.py``).
* ``test_integration_subset``: a part of ``tests/integration/swarm`` (a real jobmon server on
  sqlite, the sequential distributor, real shell tasks), chosen for its time: in CI.
* ``test_integration_suite``: all of ``tests/integration/swarm`` (about 2 minutes on a quiet
  2-core machine, 12 on a loaded one): only with ``SWARM_REDIS_JOBMON_FULL=1``:

      SWARM_REDIS_JOBMON_FULL=1 .venv/bin/python -m pytest -q tests/jobmon/test_jobmon_suite.py
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import pytest
from background import BackgroundProcess
from jobmon_env import HOW_TO_GET_JOBMON, require_jobmon

require_jobmon()

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DOC = ROOT / "docs" / "jobmon.md"

UNIT = ["tests/unit/swarm"]
INTEGRATION_SUBSET = [
    "tests/integration/swarm/test_swarm_task.py",
    "tests/integration/swarm/test_swarm_workflow_run.py",
    "tests/integration/swarm/test_swarm.py::test_build_swarm_from_workflow_id",
    "tests/integration/swarm/test_swarm.py::test_callable_returns_wrong_object",
    "tests/integration/swarm/test_swarm.py::test_propagate_result",
]
INTEGRATION = ["tests/integration/swarm"]

_ROW = re.compile(r"^\|\s*`(tests/[^`]+)`\s*\|\s*(fails|flaky)\s*\|")
_OUTCOME = re.compile(r"^(PASSED|FAILED|ERROR) (tests/\S+)")


def jobmon_src() -> Path:
    """jobmon's source tree with its tests (skip, or fail under CI=true, without it)."""
    for candidate in (os.environ.get("JOBMON_SRC"), str(ROOT / ".jobmon-src")):
        if candidate and (Path(candidate) / "tests" / "unit" / "swarm").is_dir():
            return Path(candidate)
    why = "jobmon's source tree with its tests is not here ($JOBMON_SRC or .jobmon-src/). "
    if os.environ.get("CI", "").strip().lower() in ("true", "1"):
        pytest.fail(why + HOW_TO_GET_JOBMON, pytrace=False)
    pytest.skip(why + HOW_TO_GET_JOBMON)


def documented() -> dict[str, str]:
    """Test id -> "fails" or "flaky", from the table of docs/jobmon.md."""
    out: dict[str, str] = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        m = _ROW.match(line)
        if m:
            out[m.group(1)] = m.group(2)
    return out


def _selected(test_id: str, paths: list[str]) -> bool:
    """Whether ``test_id`` is under one of ``paths`` (a folder, a file, or a test id)."""
    for p in paths:
        p = p.rstrip("/")
        if test_id == p or test_id.startswith(p + "::") or test_id.startswith(p + "/"):
            return True
    return False


#: Our tests that need jobmon's fixtures: copied into jobmon's tree for the run.
JOBMON_SIDE = HERE / "jobmon_side"
JOBMON_SIDE_DEST = "tests/integration/swarm"


class SuiteRun:
    """A run of jobmon's tests at ``paths`` with the swap, in a subprocess (started at once).

    Our jobmon-side tests (tests/jobmon/jobmon_side/) run along when ``paths`` include
    jobmon's integration tests.
    """

    def __init__(self, paths: list[str], redis_url: str) -> None:
        src = jobmon_src()
        self.copied: list[Path] = []
        if any(p.startswith("tests/integration") for p in paths):
            whole_folder = any(p.rstrip("/") == JOBMON_SIDE_DEST for p in paths)
            for f in sorted(JOBMON_SIDE.glob("*.py")):  # not test_*.py: our own run skips them
                name = f"test_zz_{f.name}"
                dest = src / JOBMON_SIDE_DEST / name
                dest.write_text(f.read_text(encoding="utf-8"), encoding="utf-8")
                self.copied.append(dest)
                if not whole_folder:
                    paths = [*paths, f"{JOBMON_SIDE_DEST}/{name}"]
        env = dict(os.environ)
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        env["PYTHONPATH"] = str(HERE) + os.pathsep + env.get("PYTHONPATH", "")
        env["SWARM_REDIS_URL"] = redis_url
        env.pop("PYTEST_ADDOPTS", None)
        cmd = [
            sys.executable, "-m", "pytest", "-q", "-rA", "-p", "swap_plugin",
            "-p", "no:cacheprovider", "-p", "no:randomly", "-o", "addopts=", *paths,
        ]  # fmt: skip
        self.process = BackgroundProcess(cmd, env=env, cwd=src)

    def outcomes(self, timeout_s: float) -> dict[str, str]:
        """Wait for the run; test id -> PASSED/FAILED/ERROR."""
        try:
            returncode, stdout, stderr = self.process.result(timeout_s)
        finally:
            self.stop()
        outcomes: dict[str, str] = {}
        for line in stdout.splitlines():
            m = _OUTCOME.match(line)
            if m:
                outcome, test_id = m.groups()
                if outcome == "ERROR" and test_id in outcomes:
                    continue  # a teardown error after a pass/fail: the test's own outcome stands
                outcomes[test_id] = outcome
        assert returncode in (0, 1), (
            f"jobmon's suite did not run (exit {returncode}):\n{stdout[-3000:]}\n{stderr[-3000:]}"
        )
        assert "swarm_redis swap: jobmon SwarmState" in stdout or outcomes, stdout[-2000:]
        return outcomes

    def stop(self) -> None:
        """End the run if it still runs; remove the copied jobmon-side tests."""
        self.process.stop()
        for dest in self.copied:
            dest.unlink(missing_ok=True)


def start_unit_suite(redis_url: str) -> SuiteRun:
    """jobmon's unit tests with the swap, started (tests/jobmon/conftest.py starts it early)."""
    return SuiteRun(UNIT, redis_url)


def run_suite(paths: list[str], redis_url: str, timeout_s: int) -> dict[str, str]:
    """Run jobmon's tests at ``paths`` with the swap; test id -> PASSED/FAILED/ERROR."""
    return SuiteRun(paths, redis_url).outcomes(timeout_s)


def check(paths: list[str], outcomes: dict[str, str]) -> None:
    listed = {k: v for k, v in documented().items() if _selected(k, paths)}
    ours = [k for k in outcomes if Path(k.split("::")[0]).name.startswith("test_zz_swarm_redis")]
    if any(p.startswith("tests/integration") for p in paths):
        assert ours, "our jobmon-side tests did not run"
    failed = {k for k, v in outcomes.items() if v != "PASSED"}
    must_fail = {k for k, v in listed.items() if v == "fails"}
    may_fail = {k for k, v in listed.items() if v == "flaky"}
    new_failures = sorted(failed - must_fail - may_fail)
    now_passing = sorted(must_fail - failed)
    assert outcomes, "no test outcome found in jobmon's output"
    assert sum(v == "PASSED" for v in outcomes.values()) > 0
    assert not new_failures, f"failures not listed in docs/jobmon.md: {new_failures}"
    assert not now_passing, f"listed as failing in docs/jobmon.md but passed: {now_passing}"
    missing = sorted(k for k in listed if k not in outcomes)
    assert not missing, f"listed in docs/jobmon.md but not run: {missing}"


@pytest.mark.slow
@pytest.mark.timeout(660)
def test_unit_suite(background_run: SuiteRun) -> None:
    check(UNIT, background_run.outcomes(timeout_s=600))


@pytest.mark.slow
@pytest.mark.timeout(960)
@pytest.mark.skipif(
    os.environ.get("SWARM_REDIS_JOBMON_FULL") != "1",
    reason="jobmon's server teardown hung under load through this runner (docs/jobmon.md): "
    "SWARM_REDIS_JOBMON_FULL=1 runs it; CI runs test_unit_suite",
)
def test_integration_subset(real_redis_url: str) -> None:
    check(INTEGRATION_SUBSET, run_suite(INTEGRATION_SUBSET, real_redis_url, timeout_s=900))


@pytest.mark.slow
@pytest.mark.timeout(1860)
@pytest.mark.skipif(
    os.environ.get("SWARM_REDIS_JOBMON_FULL") != "1",
    reason="all of jobmon's tests/integration/swarm with the swap takes 2-12 minutes: "
    "SWARM_REDIS_JOBMON_FULL=1 runs it (docs/jobmon.md); CI runs test_integration_subset",
)
def test_integration_suite(real_redis_url: str) -> None:
    check(INTEGRATION, run_suite(INTEGRATION, real_redis_url, timeout_s=1800))
