"""The wheel: built from the checkout, installed into a fresh venv, used against a real Redis.

Proves that the Lua scripts and ``py.typed`` ship inside the wheel and that an installed
swarm_redis (imported from the venv, not from the checkout) finds its scripts and works.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

SMOKE = textwrap.dedent(
    """
    import json, sys
    import redis
    import swarm_redis
    from swarm_redis import RedisSwarmState, StateUpdate, TaskRecord
    from swarm_redis.engine import scripts

    url, prefix, run_id = sys.argv[1], sys.argv[2], int(sys.argv[3])
    client = redis.Redis.from_url(url, protocol=3)
    state = RedisSwarmState(1, run_id, 5, max_concurrently_running=3, redis=client, prefix=prefix)
    a, b, c = TaskRecord(1), TaskRecord(2), TaskRecord(3)
    for up in (a, b):
        up.downstream_swarm_tasks.add(c)
        c.num_upstreams += 1
    state.add_tasks([a, b, c])
    result = state.apply(StateUpdate(task_statuses={1: "D", 2: "D"}, sync_time="2024-05-01 12:00:00"))
    again = state.apply(StateUpdate(task_statuses={1: "D", 2: "D"}))
    print(json.dumps({
        "file": swarm_redis.__file__,
        "lua_dir": str(scripts.lua_dir()),
        "changed": sorted(t.task_id for t in result.changed),
        "ready": [t.task_id for t in result.ready],
        "again_ready": [t.task_id for t in again.ready],
        "done": state.get_task(3).num_upstreams_done,
        "queue": [t.task_id for t in state.ready_to_run],
        "last_sync": state.last_sync,
        "counts": state.counts(),
    }))
    """
)


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"{cmd} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    # --no-isolation: build with the hatchling already in this venv (no download needed)
    run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        cwd=out,
    )
    wheels = list(out.glob("swarm_redis-*.whl"))
    assert len(wheels) == 1, wheels
    return wheels[0]


@pytest.mark.slow
def test_wheel_contents(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "swarm_redis/py.typed" in names
    assert "swarm_redis/__init__.py" in names
    lua_files = sorted(
        p.relative_to(ROOT / "lua").as_posix() for p in (ROOT / "lua").rglob("*.lua")
    )
    assert "apply_update.lua" in lua_files
    assert "includes/prelude.lua" in lua_files
    for rel in lua_files:
        assert f"swarm_redis/lua/{rel}" in names, rel
    assert not any(n.startswith("tests/") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "Requires-Dist: redis" in text
    assert "Requires-Dist: orjson" in text
    assert "Requires-Python: >=3.10" in text


@pytest.mark.slow
def test_wheel_installs_and_runs_a_state_update(
    wheel: Path, tmp_path: Path, real_redis_url: str, prefix: str, run_id: int
) -> None:
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", str(venv)], cwd=tmp_path)
    py = venv / "bin" / "python"
    run(
        [str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(wheel)],
        cwd=tmp_path,
    )
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "smoke.py").write_text(SMOKE)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    out = run([str(py), "smoke.py", real_redis_url, prefix, str(run_id)], cwd=work, env=env)
    report = json.loads(out.strip().splitlines()[-1])
    # imported from the venv, scripts found inside the installed package
    assert Path(report["file"]).resolve().is_relative_to(venv.resolve())
    assert not Path(report["file"]).resolve().is_relative_to(ROOT)
    lua_dir = Path(report["lua_dir"]).resolve()
    assert lua_dir.is_relative_to(venv.resolve())
    assert lua_dir.name == "lua" and lua_dir.parent.name == "swarm_redis"
    # and it works
    assert report["changed"] == [1, 2]
    assert report["ready"] == [3]
    assert report["again_ready"] == []
    assert report["done"] == 2
    assert report["queue"] == [3]
    assert report["last_sync"] == "2024-05-01 12:00:00"
    assert report["counts"]["D"] == 2
    assert report["counts"]["G"] == 1
    assert report["counts"]["ready"] == 1
