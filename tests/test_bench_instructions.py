"""The callgrind harness (swarm_redis.bench.instructions): its dump parsing, its refusal when a
tool is missing, and one small real count where valgrind is installed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from swarm_redis.bench import instructions
from swarm_redis.bench.loop import OPERATIONS


def test_totals_are_read_from_a_dump() -> None:
    dump = b"version: 1\nevents: Ir\nsummary: 0\n\nfn=x\n0 12\n\ntotals: 123456\n"
    assert instructions.read_totals(dump) == 123456
    with pytest.raises(instructions.HarnessError, match="totals"):
        instructions.read_totals(b"events: Ir\n")


def test_a_missing_tool_is_named(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    real_which = shutil.which
    monkeypatch.setattr(shutil, "which", lambda t: None if t == "valgrind" else real_which(t))
    assert instructions.main(["dequeue"]) == 2
    assert "missing on PATH: valgrind" in capsys.readouterr().err


def test_a_missing_server_build_is_named(capsys: pytest.CaptureFixture[str]) -> None:
    if instructions.missing_tools():
        pytest.skip("the harness refuses earlier: a tool it always needs is missing")
    assert instructions.main(["dequeue", "--redis-server", "/nonexistent/redis-server"]) == 2
    assert "missing on PATH: /nonexistent/redis-server" in capsys.readouterr().err


@pytest.mark.slow
def test_a_small_count(tmp_path: Path) -> None:
    missing = instructions.missing_tools()
    if missing:
        from servers import skip_or_fail

        skip_or_fail(f"the callgrind harness needs {', '.join(missing)} on PATH")
    cg = instructions.Callgrind(keep=tmp_path)
    try:
        life = instructions.lifecycle(cg, tasks=60, width=20, batch=20)
        deq = instructions.dequeue(cg, tasks=300)
    finally:
        cg.close()
    kept = {p.name.rsplit(".", 1)[0] for p in tmp_path.iterdir()}
    assert kept == {"claim", "ack_Q", "apply_R", "apply_D", "dequeue"}
    # the kept dumps add up to the figures printed
    life_total = sum(
        instructions.read_totals(p.read_bytes())
        for p in tmp_path.iterdir()
        if not p.name.startswith("dequeue")
    )
    assert life_total / 60 == pytest.approx(life["total"])
    # every instruction of a dump is in one area (the areas split the count, they add up to it)
    table = instructions.areas(tmp_path, 60)
    by_area = sum(row.get(op, 0.0) for row in table.values() for op in OPERATIONS)
    assert by_area == pytest.approx(life["total"], rel=0.01)
    parts = [life[name] for name in ("claim", "ack Q", "apply R", "apply D")]
    assert all(p > 1000 for p in parts), life  # each operation ran inside its window
    assert life["total"] == pytest.approx(sum(parts))
    assert life["apply D"] > life["apply R"]  # D also credits the children and queues them
    assert deq["dequeue"] > 1000


@pytest.mark.slow
def test_step_costs_are_measured() -> None:
    """Two steps counted: each costs instructions, and a whole-record match more than a match
    of its head (the setup's own count is taken away)."""
    if instructions.missing_tools():
        from servers import skip_or_fail

        skip_or_fail("the callgrind harness needs valgrind on PATH")
    cg = instructions.Callgrind()
    try:
        got = instructions.steps(cg, 200, ["record match", "head match"])
    finally:
        cg.close()
    assert got["record match"] > got["head match"] > 300, got


@pytest.mark.slow
def test_the_floors_cost_less_than_the_scripts() -> None:
    """A layout's floor (the lifecycle with nothing but its writes) costs less than the real
    scripts on the same DAG, and the native layout's floor less than the record layout's: the
    bound the benchmark page reads from them holds on this machine."""
    if instructions.missing_tools():
        from servers import skip_or_fail

        skip_or_fail("the callgrind harness needs valgrind on PATH")
    cg = instructions.Callgrind()
    try:
        real = instructions.lifecycle(cg, tasks=200, width=100, batch=100)
        floors = instructions.floor(cg, tasks=200, width=100, batch=100)
    finally:
        cg.close()
    assert set(floors) == {"record", "native"}
    for layout, row in floors.items():
        assert all(row[op] > 500 for op in OPERATIONS), (layout, row)  # each op was counted
        assert row["total"] == pytest.approx(sum(row[op] for op in OPERATIONS))
        assert row["total"] < real["total"], (layout, row, real)
    assert floors["native"]["total"] < floors["record"]["total"], floors
