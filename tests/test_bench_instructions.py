"""The callgrind harness (swarm_redis.bench.instructions): its dump parsing, its refusal when a
tool is missing, and one small real count where valgrind is installed."""

from __future__ import annotations

import shutil

import pytest

from swarm_redis.bench import instructions


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


@pytest.mark.slow
def test_a_small_count(capsys: pytest.CaptureFixture[str]) -> None:
    missing = instructions.missing_tools()
    if missing:
        from servers import skip_or_fail

        skip_or_fail(f"the callgrind harness needs {', '.join(missing)} on PATH")
    cg = instructions.Callgrind()
    try:
        life = instructions.lifecycle(cg, tasks=60, width=20, batch=20)
        deq = instructions.dequeue(cg, tasks=300)
    finally:
        cg.close()
    parts = [life[name] for name in ("claim", "ack Q", "apply R", "apply D")]
    assert all(p > 1000 for p in parts), life  # each operation ran inside its window
    assert life["total"] == pytest.approx(sum(parts))
    assert life["apply D"] > life["apply R"]  # D also credits the children and queues them
    assert deq["dequeue"] > 1000
