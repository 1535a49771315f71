"""Smoke test of ``swarm-redis bench``: the quick suite runs (shrunk further) and writes every
figure of its JSON layout. It checks that figures exist, never their values (no timed
assertions); the verdict rules are tested on made-up figures."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import swarm_redis.bench.scenarios.peers as peers_module
from swarm_redis.bench.cli import main
from swarm_redis.bench.loop import OPERATIONS
from swarm_redis.bench.probes import longest_command_ms
from swarm_redis.bench.report import to_markdown
from swarm_redis.bench.targets import LOADED_CORES, TARGETS, evaluate_targets

SMOKE = ["--quick", "--scale", "0.03", "--naive-budget", "0.5"]


def _at(data: dict[str, Any], *path: str) -> Any:
    node: Any = data
    for part in path:
        node = node[part]
    return node


@pytest.mark.real
def test_quick_suite_writes_every_figure(real_redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    assert main([*SMOKE, "--url", real_redis_url, "--json", str(out)]) == 0

    data = json.loads(out.read_text())
    assert {"cores", "python", "redis_version"} <= set(data["machine"])
    lc = data["lifecycle"]
    for name in ("redis", "memory", "pipelined", "naive"):
        assert lc[f"{name}_tasks_per_s"] > 0
        assert "others_cpu_s" in lc[name]["load"]
    assert lc["redis"]["all_done"] and lc["pipelined"]["all_done"]
    # the layout floors ran the whole DAG beside them, and are compared with the same references
    for floor in ("floor_native", "floor_record"):
        assert lc[floor]["all_done"] and lc[floor]["tasks"] == lc["dag"]["tasks"], floor
        assert lc[f"{floor}_vs_pipelined"] > 0 and lc[f"{floor}_vs_memory"] > 0, floor
    assert lc["redis"]["register"]["tasks"] == lc["dag"]["tasks"]
    # Redis CPU per task of every Redis implementation, per operation
    assert set(lc["per_op"]) == {"redis", "pipelined", "naive"}
    for name, x in lc["per_op"].items():
        assert x["tasks"] > 0, name
        assert set(x["ops"]) == set(OPERATIONS), name
        for op in OPERATIONS:
            assert isinstance(x["ops"][op]["redis_cpu_us"], float), (name, op)
    assert lc["per_op"]["redis"]["all_done"] and lc["per_op"]["pipelined"]["all_done"]

    rep = data["replicas"]
    for key in ("tasks_per_s", "pipelined_tasks_per_s", "vs_pipelined"):
        assert set(rep[key]) == {"1", "2", "4"}, key
    for rounds in (rep["rounds"], rep["pipelined_rounds"]):
        assert all(r["all_done"] for r in rounds.values())
        assert all(r["tasks"] == rep["dag"]["tasks"] for r in rounds.values())
    assert all(isinstance(r["watch_retries"], int) for r in rep["pipelined_rounds"].values())

    for path in (
        ("flatness", "ratio"),
        ("blocking", "max_ms"),
        ("blocking", "fanout", "register_max_ms"),
        ("memory", "bytes_per_task"),
        ("redis_share", "ratio"),
        ("lifecycle", "redis", "us_per_task_redis"),
    ):
        assert isinstance(_at(data, *path), (int, float)), path

    expected = {"lifecycle", "replicas", "flatness", "blocking", "memory", "redis_share", "peers"}
    if peers_module.rq_available():
        for kind in ("plain", "dag"):
            w = data["peers"]["workloads"][kind]
            for side in ("ours", "rq"):
                assert w[side]["run"]["tasks"] == data["peers"]["jobs"], (kind, side)
                assert w[side]["run"]["all_done"], (kind, side)
                assert w[side]["run"]["tasks_per_s"] > 0
                assert w[side]["run"]["us_per_task_redis"] is not None
            assert w["run_ratio"] > 0
    else:
        assert "rq" in data["peers"]["skipped"]
    if "skipped" not in data["jobmon_tick"]:  # jobmon installed: the tick scenario ran
        expected.add("jobmon_tick")
        for name in ("memory", "redis", "dropin"):
            assert data["jobmon_tick"][name]["queued"] == data["jobmon_tick"]["tasks"]
        assert (
            data["jobmon_tick"]["dropin"]["round_trips"]
            < data["jobmon_tick"]["redis"]["round_trips"]
        )
    targets = data["targets"]
    assert {t["scenario"] for t in targets} >= expected
    assert all(t["verdict"] for t in targets)
    cost = [t for t in targets if t["cost"]]
    assert targets[: len(cost)] == cost  # the cost-model targets come first
    assert any("4 processes" in t["target"] and t["value"] is not None for t in cost)
    # every measured figure carries its load (memory aside); a skipped peer has no figure
    assert all(t["load"] for t in cost if "bytes" not in t["target"] and t["value"] is not None)


@pytest.mark.real
def test_peers_skips_with_a_note_without_rq(
    real_redis_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(peers_module, "rq_available", lambda: False)
    out = tmp_path / "bench.json"
    assert main([*SMOKE, "--only", "peers", "--url", real_redis_url, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "pip install" in data["peers"]["skipped"]
    peer_targets = [t for t in data["targets"] if t["scenario"] == "peers"]
    assert peer_targets and all(t["verdict"] == "n/a" for t in peer_targets)
    text = to_markdown(data)
    assert "peers: skipped" in text and "rq is not installed" in text


@pytest.mark.real
def test_only_selects_scenarios(real_redis_url: str, tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    argv = ["--quick", "--scale", "0.03", "--only", "memory", "flatness"]
    assert main([*argv, "--url", real_redis_url, "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert "memory" in data and "flatness" in data
    assert "lifecycle" not in data and "replicas" not in data


def _figures(ratio: float, us: float, others_cores: float) -> dict[str, Any]:
    load = {"loadavg_1m": [1.0, 2.5], "others_cores": others_cores}
    return {
        "lifecycle": {
            "redis_vs_pipelined": ratio,
            "redis_vs_memory": 0.2,
            "redis": {"us_per_task_redis": us, "load": load},
            "pipelined": {"load": {"loadavg_1m": [0.5, 0.5], "others_cores": 0.0}},
            "memory": {"load": load},
        }
    }


def _verdict(results: dict[str, Any], start: str) -> str:
    (hit,) = [t for t in evaluate_targets(results) if t["target"].startswith(start)]
    return str(hit["verdict"])


def test_verdicts_weigh_the_load_of_wall_clock_figures() -> None:
    busy = LOADED_CORES + 0.5
    pipelined = "RedisSwarmState / pipelined"
    assert _verdict(_figures(2.0, 10.0, busy), pipelined) == "met"
    assert _verdict(_figures(1.0, 10.0, 0.0), pipelined) == "NOT met"
    assert _verdict(_figures(1.0, 10.0, busy), pipelined).startswith("not met under load")
    # a CPU-time figure is not excused by the load
    assert _verdict(_figures(1.0, 30.0, busy), "Redis CPU µs") == "NOT met"
    assert _verdict(_figures(1.0, 15.0, busy), "Redis CPU µs") == "met"
    got = evaluate_targets(_figures(1.0, 10.0, busy))
    loads = {t["target"]: t["load"] for t in got}
    assert loads[next(k for k in loads if k.startswith(pipelined))] == {
        "loadavg_1m_max": 2.5,
        "others_cores_max": busy,
    }


def test_reported_and_missing_figures() -> None:
    results = {"peers": {"run_ratio": {"plain": 40.0}}, "replicas": {}}
    got = {t["target"]: t["verdict"] for t in evaluate_targets(results)}
    assert got["ours / RQ tasks/s, plain jobs"] == "reported"
    assert got["ours / RQ tasks/s, depends_on DAG fan-in 3"] == "n/a"
    assert got["ours / pipelined tasks/s, 4 processes each >= 3"] == "n/a"
    assert all(t.op in (">=", "<=", "report") for t in TARGETS)


@pytest.mark.real
@pytest.mark.slow
def test_cli_quick_run_as_documented(real_redis_url: str, tmp_path: Path) -> None:
    """`swarm-redis bench --quick` exactly as docs/benchmarks-running.md shows it, on its private redis-server."""
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


def test_the_longest_command_leaves_the_suites_slowlog_calls_out() -> None:
    """A SLOWLOG RESET that frees thousands of entries is logged as slow itself: it must not
    stand for the longest of the calls the blocking scenario measures."""
    entries: list[dict[str, Any]] = [
        {"duration": 29_019, "command": b"SLOWLOG RESET"},
        {"duration": 6_655, "command": b"EVALSHA b79b 35 k1 k2"},
        {"duration": 12_000, "command": "slowlog get 100000"},
        {"duration": 5_051, "command": "EVALSHA b79b 35 k1 k2"},
    ]
    assert longest_command_ms(entries) == 6.655
    assert longest_command_ms(entries[:1]) == 0.0


@pytest.mark.real
def test_the_longest_command_of_a_real_slowlog() -> None:
    """Entries as a real server gives them (RESP3, bytes): a script that ran 15 ms is found
    among thousands of entries, the reset's own entry among them."""
    from servers import private_redis

    with private_redis("a SLOWLOG of our own") as client:
        client.config_set("slowlog-log-slower-than", 0)
        client.config_set("slowlog-max-len", 1_000_000)
        client.slowlog_reset()
        client.eval(
            "local t = redis.call('TIME') local t0 = t[1] * 1e6 + t[2] "
            "repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - t0 >= 15000 return 1",
            0,
        )
        # every command is logged (the script's TIME calls too): the whole log, reset included
        entries = client.slowlog_get(1_000_000)
        assert entries[-1]["command"] == b"SLOWLOG RESET"
        assert 15.0 <= longest_command_ms(entries) < 1000.0
