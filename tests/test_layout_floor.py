"""The layout floors of the benchmark (swarm_redis.bench.layout_floor): each runs the whole
lifecycle of a layered DAG correctly on both backends, so the instructions it is counted at are
those of real work, not of a script that skipped some."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from swarm_redis.bench import layout_floor
from swarm_redis.bench.loop import lifecycle_loop
from swarm_redis.testing.dags import DagShape

SHAPE = DagShape(90, width=12, fan_in=3)


@pytest.mark.parametrize("layout", layout_floor.LAYOUTS)
def test_a_floor_runs_the_lifecycle_in_dependency_order(
    r: redis.Redis, prefix: str, layout: str
) -> None:
    p = f"{prefix}:floor:"
    ops = layout_floor.floor_run(r, layout, SHAPE, 7, p)
    done: set[int] = set()
    order: list[int] = []
    take, apply_d = ops.take, ops.apply_d

    def checked_take() -> Any:
        got = take()
        if got is not None:
            for tid in got[1]:
                parents = {SHAPE.first_id + i for i in SHAPE.parents_of(tid - SHAPE.first_id)}
                assert parents <= done, f"task {tid} claimed before its upstreams"
                order.append(tid)
        return got

    def recorded_d(statuses: dict[int, str]) -> Any:
        reply = apply_d(statuses)
        done.update(statuses)
        return reply

    ops.take, ops.apply_d = checked_take, recorded_d
    assert lifecycle_loop(ops) == SHAPE.n_tasks
    assert sorted(order) == list(range(1, SHAPE.n_tasks + 1))  # each task claimed once
    assert r.scard(p + "s:D") == SHAPE.n_tasks
    for key in ("s:G", "s:Q", "s:R", "ready", "claimed", "batches", "left"):
        assert not r.exists(p + key), key
    assert int(r.hget(p + "reserved", "run") or 0) == 0
    if layout == "record":
        # every record is DONE with its done count equal to its number of upstreams
        for i in range(SHAPE.n_tasks):
            raw = r.hget(p + "task", str(i + 1))
            assert isinstance(raw, bytes), i
            fields = raw.decode().split("|")
            assert fields[0] == "D" and fields[1] == fields[5] == str(len(SHAPE.parents_of(i)))
    else:
        assert set(r.hvals(p + "st")) == {b"D"}
        assert r.hlen(p + "st") == SHAPE.n_tasks


def test_a_floor_reports_what_it_changed_credited_and_queued(r: redis.Redis, prefix: str) -> None:
    """The first layer's D answers each change, each credited child with its count, and the
    children it made ready (the native layout counts upstreams left, the record one done)."""
    shape = DagShape(6, width=3, fan_in=2)
    for layout in layout_floor.LAYOUTS:
        ops = layout_floor.floor_run(r, layout, shape, 10, f"{prefix}:{layout}:")
        got = ops.take()
        assert got is not None and got[1] == [1, 2, 3]
        ops.ack(got[0], dict.fromkeys(got[1], "Q"))
        ops.apply_r(dict.fromkeys(got[1], "R"))
        changed, credited, queued = ops.apply_d({1: "D"})
        assert changed == b"1:D:R"
        # task 1's children are 4 (upstreams 1, 2) and 6 (upstreams 3, 1): one done, one left
        assert dict(e.split(b":") for e in credited.split()) == {b"4": b"1", b"6": b"1"}
        assert queued == b""
        changed, credited, queued = ops.apply_d({2: "D", 3: "D"})
        assert sorted(queued.split()) == [b"4", b"5", b"6"]
        # sending the same D again changes nothing and credits nothing (DONE is final)
        assert ops.apply_d({2: "D"}) == [b"", b"", b""]


def test_a_floor_refuses_a_used_prefix_and_an_unknown_layout(r: redis.Redis, prefix: str) -> None:
    r.set(f"{prefix}:x:stray", 1)
    with pytest.raises(ValueError, match="already holds 1 keys"):
        layout_floor.floor_run(r, "native", SHAPE, 5, f"{prefix}:x:")
    with pytest.raises(ValueError, match="unknown layout 'packed'"):
        layout_floor.floor_run(r, "packed", SHAPE, 5, f"{prefix}:y:")


def test_a_floor_prefix_with_glob_characters_matches_only_itself(
    r: redis.Redis, prefix: str
) -> None:
    """Another key the prefix would match as a pattern does not count as a leftover."""
    r.set(f"{prefix}:ab:stray", 1)
    ops = layout_floor.floor_run(r, "native", DagShape(4, width=2, fan_in=1), 5, f"{prefix}:a?:")
    assert lifecycle_loop(ops) == 4
    assert r.get(f"{prefix}:ab:stray") == b"1"
