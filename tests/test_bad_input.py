"""Bad input is refused before anything is written (DESIGN section 5.1), on both backends.

Each case builds a populated run (tasks in every status, arrays, a queue, cached resources,
last_sync, events), dumps EVERY key of the run (type-aware), feeds one bad input, and checks:
the error is a SwarmRedisError that is also a ValueError/TypeError, its message names the
culprit, and the dump afterwards is identical.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Callable
from typing import Any

import pytest
import redis
from replies import scored_members, stream_entries

from swarm_redis import (
    ArrayRecord,
    InvalidInputError,
    InvalidTypeError,
    RedisSwarmState,
    StateUpdate,
    SwarmRedisError,
    TaskRecord,
)
from swarm_redis.engine.keys import RunKeys

MakeClient = Callable[..., redis.Redis]


def _s(value: Any) -> Any:
    return value.decode("utf-8", "surrogateescape") if isinstance(value, bytes) else value


def dump_run(client: redis.Redis, keys: RunKeys) -> dict[str, tuple[str, Any]]:
    """Every key of the run with its type and full contents."""
    out: dict[str, tuple[str, Any]] = {}
    for raw_key in client.scan_iter(match=keys.match_all, count=1000):
        key = _s(raw_key)
        kind = _s(client.type(key))
        value: Any
        if kind == "hash":
            value = sorted((_s(k), _s(v)) for k, v in client.hgetall(key).items())
        elif kind == "set":
            value = sorted(_s(m) for m in client.smembers(key))
        elif kind == "list":
            value = [_s(m) for m in client.lrange(key, 0, -1)]
        elif kind == "string":
            value = _s(client.get(key))
        elif kind == "zset":
            value = [(_s(m), s) for m, s in scored_members(client, key)]
        elif kind == "stream":
            value = [
                (_s(eid), sorted((_s(k), _s(v)) for k, v in fields.items()))
                for eid, fields in stream_entries(client, key)
            ]
        else:
            raise AssertionError(f"unexpected type {kind} of {key}")
        out[key] = (kind, value)
    return out


def link(upstream: TaskRecord, *downstreams: TaskRecord) -> None:
    for d in downstreams:
        upstream.downstream_swarm_tasks.add(d)
        d.num_upstreams += 1


@pytest.fixture
def state(r: redis.Redis, run_id: int, prefix: str) -> RedisSwarmState:
    """A run with something in every kind of key."""
    s = RedisSwarmState(1, run_id, 5, max_concurrently_running=20, redis=r, prefix=prefix)
    s.add_arrays([ArrayRecord(7, 3), ArrayRecord(8, 4)])
    tasks = [TaskRecord(i, array_id=7 if i % 2 else 8) for i in range(1, 13)]
    link(tasks[0], tasks[4], tasks[5])
    link(tasks[1], tasks[5])
    link(tasks[5], tasks[6])
    s.add_tasks(tasks)
    s.apply_update(
        StateUpdate(
            task_statuses={1: "D", 2: "Q", 3: "I", 4: "O", 8: "R", 9: "E", 10: "A", 11: "F"},
            sync_time=datetime.datetime(2024, 5, 1, 12, 0, 0),
            workflow_run_status="R",
        )
    )
    s.enqueue_tasks([tasks[11], tasks[6]])
    s.cache_resources(99, {"num_cores": 2})
    s.num_previously_complete = 3
    return s


@pytest.fixture
def check(r: redis.Redis, state: RedisSwarmState) -> Callable[..., pytest.ExceptionInfo[Any]]:
    """check(exc_type, culprit_regex, fn, *args): raises, names the culprit, writes nothing."""

    def run(
        expected: type[Exception], culprit: str, fn: Callable[..., Any], *args: Any, **kw: Any
    ) -> pytest.ExceptionInfo[Any]:
        before = dump_run(r, state.keys)
        assert len(before) >= 12  # the run is really populated
        local_tasks = dict(state._core.tasks)
        with pytest.raises(expected, match=culprit) as info:
            fn(*args, **kw)
        assert isinstance(info.value, SwarmRedisError)
        assert isinstance(info.value, (ValueError, TypeError))
        assert dump_run(r, state.keys) == before
        assert dict(state._core.tasks) == local_tasks  # the local registry is untouched too
        return info

    return run


Check = Callable[..., Any]


def test_dump_sees_every_kind_of_key(r: redis.Redis, state: RedisSwarmState) -> None:
    dump = dump_run(r, state.keys)
    kinds = {kind for kind, _ in dump.values()}
    assert {"hash", "set", "zset", "stream"} <= kinds
    for name in ("meta", "task", "ready", "queued", "arrays", "active", "resources", "events"):
        assert state.keys.key(name) in dump, name
    assert all(k.startswith(state.keys.base) for k in dump)


# --- task statuses -------------------------------------------------------------------------------


@pytest.mark.parametrize("letter", ["Z", "d", "", "DD", "B", None, 1], ids=repr)
def test_unknown_status_in_update(state: RedisSwarmState, check: Check, letter: Any) -> None:
    update = StateUpdate(task_statuses={5: "D", 12: letter})
    info = check(InvalidInputError, re.escape(repr(letter)), state.apply_update, update)
    assert isinstance(info.value, ValueError)
    assert "12" in str(info.value)


def test_unknown_status_late_in_a_chunked_update(
    r: redis.Redis, state: RedisSwarmState, check: Check
) -> None:
    chunky = RedisSwarmState.attach(
        r, state.workflow_run_id, prefix=state.keys.prefix, chunk_budget=1
    )
    statuses = {i: "D" for i in range(2, 13)}
    statuses[6] = "X"
    check(
        InvalidInputError,
        "'X'.*task 6",
        chunky.apply_update,
        StateUpdate(task_statuses=statuses, max_concurrently_running=1),
    )


def test_unknown_status_in_update_task_status(state: RedisSwarmState, check: Check) -> None:
    check(InvalidInputError, "'Y'", state.update_task_status, 5, "Y")


@pytest.mark.parametrize("letter", ["X", "g", ""], ids=repr)
def test_unknown_status_in_add_task(state: RedisSwarmState, check: Check, letter: str) -> None:
    check(InvalidInputError, re.escape(repr(letter)), state.add_task, TaskRecord(50, status=letter))


def test_unknown_status_in_add_tasks_writes_none_of_them(
    state: RedisSwarmState, check: Check
) -> None:
    batch = [TaskRecord(i) for i in range(50, 60)] + [TaskRecord(60, status="W")]
    check(InvalidInputError, "'W'.*60", state.add_tasks, batch)
    assert state.get_task(50) is None


def test_unknown_status_in_enqueue_of_a_new_task(state: RedisSwarmState, check: Check) -> None:
    check(InvalidInputError, "'V'", state.enqueue_task, TaskRecord(70, status="V"))


# --- ids -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bad,name",
    [
        (1.5, "float"),
        (True, "bool"),
        (False, "bool"),
        ("5", "str"),
        (None, "NoneType"),
        (b"5", "bytes"),
    ],
    ids=["float", "true", "false", "str", "none", "bytes"],
)
def test_bad_id_in_apply_update(state: RedisSwarmState, check: Check, bad: Any, name: str) -> None:
    update = StateUpdate(task_statuses={5: "D", bad: "D"})
    check(InvalidTypeError, name + ".*" + re.escape(repr(bad)), state.apply_update, update)


@pytest.mark.parametrize("bad", [1.0, True, "5", None], ids=repr)
def test_bad_id_in_add_task(state: RedisSwarmState, check: Check, bad: Any) -> None:
    check(
        InvalidTypeError, re.escape(repr(bad)), state.add_tasks, [TaskRecord(60), TaskRecord(bad)]
    )


def test_bad_downstream_id_in_add_task(state: RedisSwarmState, check: Check) -> None:
    task = TaskRecord(60)
    task.downstream_swarm_tasks = {"x"}
    check(InvalidTypeError, "downstream id.*'x'", state.add_task, task)


@pytest.mark.parametrize("bad", [True, "5", 2.0], ids=repr)
def test_bad_id_in_update_task_status(state: RedisSwarmState, check: Check, bad: Any) -> None:
    check(InvalidTypeError, re.escape(repr(bad)), state.update_task_status, bad, "D")


@pytest.mark.parametrize("bad", [True, "5", 2.0], ids=repr)
def test_bad_id_in_reads(state: RedisSwarmState, check: Check, bad: Any) -> None:
    check(InvalidTypeError, re.escape(repr(bad)), state.get_task, bad)
    check(InvalidTypeError, re.escape(repr(bad)), state.get_array_capacity, bad)


def test_bad_id_in_propagate_completions(state: RedisSwarmState, check: Check) -> None:
    check(InvalidTypeError, "'x'", state.propagate_completions, [1, "x"])
    check(InvalidTypeError, "bool", state.propagate_completions, [True])


def test_bad_id_in_enqueue(state: RedisSwarmState, check: Check) -> None:
    check(InvalidTypeError, "'12'", state.enqueue_task, TaskRecord("12"))  # type: ignore[arg-type]


def test_bad_array_id(state: RedisSwarmState, check: Check) -> None:
    check(InvalidTypeError, "array id.*'7'", state.add_array, ArrayRecord("7", 3))  # type: ignore[arg-type]
    update = StateUpdate(array_limits={"7": 3})  # type: ignore[dict-item]
    check(InvalidTypeError, "array id.*'7'", state.apply_update, update)


# --- limits --------------------------------------------------------------------------------------


def test_negative_limit_in_update(state: RedisSwarmState, check: Check) -> None:
    update = StateUpdate(task_statuses={5: "D"}, max_concurrently_running=-1)
    check(InvalidInputError, "max_concurrently_running.*-1", state.apply_update, update)


def test_non_int_limit_in_update(state: RedisSwarmState, check: Check) -> None:
    update = StateUpdate(task_statuses={5: "D"}, max_concurrently_running="9")  # type: ignore[arg-type]
    check(InvalidTypeError, "max_concurrently_running.*'9'", state.apply_update, update)
    update = StateUpdate(max_concurrently_running=True)
    check(InvalidTypeError, "max_concurrently_running.*bool", state.apply_update, update)


def test_negative_limit_setter(state: RedisSwarmState, check: Check) -> None:
    def set_limit() -> None:
        state.max_concurrently_running = -5

    check(InvalidInputError, "-5", set_limit)


def test_negative_array_limit_in_update(state: RedisSwarmState, check: Check) -> None:
    update = StateUpdate(task_statuses={5: "D"}, array_limits={8: 2, 7: -2})
    check(InvalidInputError, "array 7.*-2", state.apply_update, update)


def test_negative_array_limit_in_add_array(state: RedisSwarmState, check: Check) -> None:
    check(
        InvalidInputError, "array 9.*-1", state.add_arrays, [ArrayRecord(10, 1), ArrayRecord(9, -1)]
    )


def test_negative_limit_in_constructor_writes_nothing(
    r: redis.Redis, run_id: int, prefix: str
) -> None:
    keys = RunKeys(prefix, run_id + 1)
    with pytest.raises(InvalidInputError, match="-3") as info:
        RedisSwarmState(1, run_id + 1, 5, max_concurrently_running=-3, redis=r, prefix=prefix)
    assert isinstance(info.value, ValueError)
    assert dump_run(r, keys) == {}
    with pytest.raises(InvalidInputError, match="'Q'"):
        RedisSwarmState(1, run_id + 1, 5, status="Q", redis=r, prefix=prefix)
    assert dump_run(r, keys) == {}


def test_negative_limit_in_constructor_of_an_existing_run(
    r: redis.Redis, state: RedisSwarmState, check: Check
) -> None:
    check(
        InvalidInputError,
        "-3",
        RedisSwarmState,
        1,
        state.workflow_run_id,
        5,
        max_concurrently_running=-3,
        redis=r,
        prefix=state.keys.prefix,
    )


# --- mappings, run status, sync time -------------------------------------------------------------


@pytest.mark.parametrize("bad", [[(5, "D")], "5D", 5], ids=["list", "str", "int"])
def test_non_mapping_task_statuses(state: RedisSwarmState, check: Check, bad: Any) -> None:
    name = type(bad).__name__
    check(InvalidTypeError, f"task_statuses.*{name}", StateUpdate, task_statuses=bad)
    check(InvalidTypeError, f"array_limits.*{name}", StateUpdate, array_limits=bad)


@pytest.mark.parametrize("bad", [{5: "D"}, None, "D"], ids=["dict", "none", "str"])
def test_apply_update_needs_a_state_update(state: RedisSwarmState, check: Check, bad: Any) -> None:
    check(InvalidTypeError, type(bad).__name__, state.apply_update, bad)


@pytest.mark.parametrize("letter", ["Z", "r", "", "RR", 1], ids=repr)
def test_unknown_run_status(state: RedisSwarmState, check: Check, letter: Any) -> None:
    update = StateUpdate(task_statuses={5: "D"}, workflow_run_status=letter)
    check(InvalidInputError, "run status " + re.escape(repr(letter)), state.apply_update, update)


def test_unknown_run_status_setter(state: RedisSwarmState, check: Check) -> None:
    def set_status() -> None:
        state.status = "X"

    check(InvalidInputError, "'X'", set_status)


@pytest.mark.parametrize(
    "bad,expected,culprit",
    [
        ("yesterday", InvalidInputError, "'yesterday'"),
        ("2024-13-01 00:00:00", InvalidInputError, "2024-13-01"),
        ("", InvalidInputError, "''"),
        (1714564800, InvalidTypeError, "int"),
        (datetime.date(2024, 5, 1), InvalidTypeError, "date"),
    ],
    ids=["word", "month13", "empty", "int", "date"],
)
def test_bad_sync_time(
    state: RedisSwarmState, check: Check, bad: Any, expected: type[Exception], culprit: str
) -> None:
    update = StateUpdate(task_statuses={5: "D"}, sync_time=bad)
    check(expected, culprit, state.apply_update, update)


def test_bad_sync_time_setter(state: RedisSwarmState, check: Check) -> None:
    def set_sync() -> None:
        state.last_sync = "soon"

    check(InvalidInputError, "'soon'", set_sync)


# --- resources, dequeue, misc ----------------------------------------------------------------------


class Opaque:
    pass


@pytest.mark.parametrize(
    "bad,name",
    [(Opaque(), "Opaque"), ([1], "list"), ({"cores": {1, 2}}, "dict"), ({1: object()}, "dict")],
    ids=["class", "list", "set-inside", "object-inside"],
)
def test_unencodable_resources(state: RedisSwarmState, check: Check, bad: Any, name: str) -> None:
    check(InvalidTypeError, name, state.cache_resources, 123, bad)
    assert state.get_cached_resources(123) is None


@pytest.mark.parametrize("bad", [1.5, None, b"k", True], ids=repr)
def test_bad_resource_hash(state: RedisSwarmState, check: Check, bad: Any) -> None:
    check(InvalidTypeError, type(bad).__name__, state.cache_resources, bad, {"a": 1})


@pytest.mark.parametrize("bad", [0, -1, True, 1.5, "2", None], ids=repr)
def test_bad_dequeue_count(state: RedisSwarmState, check: Check, bad: Any) -> None:
    check((InvalidTypeError, InvalidInputError), re.escape(repr(bad)), state.dequeue_tasks, bad)


def test_bad_num_previously_complete(state: RedisSwarmState, check: Check) -> None:
    def set_npc() -> None:
        state.num_previously_complete = "7"  # type: ignore[assignment]

    check(InvalidTypeError, "'7'", set_npc)


def test_good_input_after_bad_input_still_works(r: redis.Redis, state: RedisSwarmState) -> None:
    with pytest.raises(InvalidInputError):
        state.apply_update(StateUpdate(task_statuses={5: "D", 6: "?"}))
    before = state.get_task(6).num_upstreams_done
    state.apply_update(StateUpdate(task_statuses={5: "D", 2: "D"}))
    assert state.get_task(5).status == "D"
    assert state.get_task(6).num_upstreams_done == before + 1


@pytest.mark.parametrize(
    ("kw", "exc", "culprit"),
    [
        ({"batch_size": 1001}, InvalidInputError, "batch size must be in 1..1000"),
        ({"batch_size": 0}, InvalidInputError, "batch size"),
        ({"batch_size": 2.5}, InvalidTypeError, "batch size must be an int"),
        ({"ttl_s": -1.0}, InvalidInputError, "lease ttl"),
        ({"poll_s": float("nan")}, InvalidInputError, "poll period"),
        ({"reconcile_s": "30"}, InvalidTypeError, "reconcile period"),
        ({"queue_retries": -1}, InvalidInputError, "queue retries"),
    ],
)
def test_bad_replica_settings_are_refused_before_it_joins(
    state: RedisSwarmState, check: Check, kw: dict[str, Any], exc: type[Exception], culprit: str
) -> None:
    from swarm_redis.replica.loop import run_replica

    check(exc, culprit, run_replica, state, object(), **kw)  # nothing written: not joined
