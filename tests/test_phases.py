"""Phase profiling of the scripts (``--!phase`` marks, swarm_redis.bench.phases): the marks cost
nothing in production, the profiled variants behave as the scripts do and record every phase."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest
import redis

from swarm_redis.bench import phases
from swarm_redis.bench.config import ARRAY_LIMIT
from swarm_redis.bench.loop import lifecycle_loop
from swarm_redis.bench.scenarios.lifecycle import redis_ops, registered_run
from swarm_redis.engine import scripts
from swarm_redis.errors import LeaseLostError
from swarm_redis.ops import purge, verify
from swarm_redis.state import RedisSwarmState
from swarm_redis.testing.dags import DagShape, build_dag

MakeClient = Callable[..., redis.Redis]


@pytest.fixture
def profiled() -> Iterator[None]:
    """Phase profiling on for the test, off again after it."""
    was = scripts.phases_on()
    scripts.profile_phases(True)
    try:
        yield
    finally:
        scripts.profile_phases(was)


def _names() -> list[str]:
    return [p.stem for p in sorted(scripts.lua_dir().glob("*.lua"))]


def test_marks_are_plain_comments_in_production() -> None:
    assert not scripts.phases_on()
    for name in _names():
        assert "swarm_phase" not in scripts.load(name).source, name
    assert "--!phase apply:flush" in scripts.load("apply_update").source


def test_every_mark_is_well_formed() -> None:
    """A mark the loader would not recognise would stay a comment and measure nothing."""
    folder = scripts.lua_dir()
    for path in [*folder.glob("*.lua"), *(folder / "includes").glob("*.lua")]:
        for line in path.read_text(encoding="utf-8").splitlines():
            if "--!phase" in line:
                assert re.fullmatch(r"[ \t]*--!phase[ \t]+[\w:.-]+[ \t]*", line), (path, line)


def test_profiled_variants_replace_every_mark(profiled: None) -> None:
    source = scripts.load("apply_update").source
    assert "swarm_phase('apply:flush')" in source and "--!phase" not in source
    assert scripts.load("apply_update").sha != scripts._load("apply_update", False).sha
    # a read-only script is never profiled: it could not write its phases
    assert scripts.load("read_status") == scripts._load("read_status", False)


def _lifecycle(client: redis.Redis, prefix: str, run_id: int) -> tuple[int, RedisSwarmState]:
    dag = build_dag(DagShape(120, width=30, fan_in=3), ARRAY_LIMIT)
    state = registered_run(client, prefix, run_id, dag)
    ops, _ = redis_ops(state, 10)
    return lifecycle_loop(ops), state


def test_a_profiled_lifecycle_ends_as_a_plain_one_and_records_its_phases(
    make_client: MakeClient, run_id: int, prefix: str
) -> None:
    client = make_client()
    done, plain = _lifecycle(client, prefix, run_id)
    scripts.profile_phases(True)
    try:
        done_p, prof = _lifecycle(client, prefix, run_id + 1)
    finally:
        scripts.profile_phases(False)  # the fixture-free switch: production variants again
    assert done == done_p == 120
    assert plain.counts() == prof.counts()
    assert verify.find_drift(client, prof.keys).clean
    figures = phases.read_phases(client, prof.keys, 120)
    assert set(figures) == set(phases.LIFECYCLE_SCRIPTS)
    for script, timed in figures.items():
        assert timed["#calls"] > 0, script
        assert all(v >= 0 for v in timed.values()), script
    assert {"apply:load", "apply:loop", "apply:flush", "apply:queue"} <= set(
        figures["apply_update"]
    )
    assert {"claim:joiners", "claim:claims", "idem:store"} <= set(figures["claim_batch"])
    assert {"ack:close", "apply:flush"} <= set(figures["ack_batch"])
    # read once: the hash is gone, and the plain run never wrote one
    assert not client.exists(prof.keys.phases)
    assert not client.exists(plain.keys.phases)


def test_the_tool_prints_every_script(
    real_redis_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        phases.main(["--tasks", "200", "--width", "50", "--batch", "25", "--url", real_redis_url])
        == 0
    )
    out = capsys.readouterr().out
    for script in phases.LIFECYCLE_SCRIPTS:
        assert f"\n{script}: " in out
    assert "apply:flush" in out and "total: " in out
    assert not scripts.phases_on()


def test_purge_takes_a_profiled_runs_phase_times_with_it(
    make_client: MakeClient, run_id: int, prefix: str, profiled: None
) -> None:
    client = make_client()
    done, state = _lifecycle(client, prefix, run_id)
    assert done == 120 and client.exists(state.keys.phases)
    assert purge.unlink_run(client, state.keys, check_liveness=False) > 0
    assert list(client.scan_iter(match=state.keys.match_all)) == []


def test_a_profiled_call_that_answers_an_error_writes_no_phase_times(
    make_client: MakeClient, run_id: int, prefix: str, profiled: None
) -> None:
    client = make_client()
    dag = build_dag(DagShape(30, width=10, fan_in=3), ARRAY_LIMIT)
    state = registered_run(client, prefix, run_id, dag)
    replica = state.join_replica(ttl_s=30)
    batch = state.claim_batch(replica, 5)
    assert batch is not None
    state.ack_batch(replica, batch, {t: "Q" for t in batch.task_ids})
    assert client.hget(state.keys.phases, "ack_batch|#calls") == b"1"
    client.delete(state.keys.phases)
    with pytest.raises(LeaseLostError):  # acknowledged already: the script refuses it
        state.ack_batch(replica, batch, {t: "Q" for t in batch.task_ids})
    assert not client.exists(state.keys.phases)
