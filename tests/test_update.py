"""StateUpdate: construction, server-response parsing, merge, emptiness and immutability."""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

import pytest

from swarm_redis.errors import InvalidTypeError, SwarmRedisError
from swarm_redis.update import StateUpdate

WHEN = datetime.datetime(2024, 5, 1, 12, 0, 0)


def full_update() -> StateUpdate:
    return StateUpdate(
        task_statuses={1: "D", 2: "R"},
        max_concurrently_running=5,
        array_limits={7: 3},
        workflow_run_status="R",
        sync_time=WHEN,
    )


# empty()


def test_empty_has_all_defaults() -> None:
    update = StateUpdate.empty()
    assert dict(update.task_statuses) == {}
    assert update.max_concurrently_running is None
    assert dict(update.array_limits) == {}
    assert update.workflow_run_status is None
    assert update.sync_time is None


def test_default_equals_empty() -> None:
    assert StateUpdate() == StateUpdate.empty()
    assert StateUpdate.empty() == StateUpdate.empty()
    assert full_update() != StateUpdate.empty()


# from_task_status_response


def test_from_task_status_response_inverts_and_casts_ids() -> None:
    update = StateUpdate.from_task_status_response({"D": [1, "2"], "R": ["3", 4]}, sync_time=WHEN)
    assert dict(update.task_statuses) == {1: "D", 2: "D", 3: "R", 4: "R"}
    assert all(type(task_id) is int for task_id in update.task_statuses)
    assert update.sync_time is WHEN
    assert update.max_concurrently_running is None
    assert dict(update.array_limits) == {}
    assert update.workflow_run_status is None


def test_from_task_status_response_last_status_wins() -> None:
    assert dict(StateUpdate.from_task_status_response({"R": [1], "D": [1]}).task_statuses) == {
        1: "D"
    }
    assert dict(StateUpdate.from_task_status_response({"D": [1], "R": ["1"]}).task_statuses) == {
        1: "R"
    }


def test_from_task_status_response_defaults() -> None:
    update = StateUpdate.from_task_status_response({})
    assert update == StateUpdate.empty()
    assert update.sync_time is None


def test_from_task_status_response_keeps_string_sync_time() -> None:
    update = StateUpdate.from_task_status_response({"Q": [5]}, "2024-05-01 12:00:00")
    assert update.sync_time == "2024-05-01 12:00:00"


@pytest.mark.parametrize("bad", ["abc", "1.5", "", "0x1", True, False, None, 1.0])
def test_from_task_status_response_rejects_non_integer_ids(bad: Any) -> None:
    with pytest.raises(InvalidTypeError) as info:
        StateUpdate.from_task_status_response({"D": [1, bad]})
    assert isinstance(info.value, TypeError)
    assert isinstance(info.value, SwarmRedisError)


# merge


def test_merge_other_wins_and_unions_dicts() -> None:
    left = StateUpdate(
        task_statuses={1: "R", 2: "Q"},
        max_concurrently_running=5,
        array_limits={7: 1, 8: 2},
        workflow_run_status="R",
        sync_time="2024-01-01 00:00:00",
    )
    right = StateUpdate(
        task_statuses={2: "D", 3: "F"},
        max_concurrently_running=0,
        array_limits={8: 9},
        workflow_run_status="C",
        sync_time=WHEN,
    )
    merged = left.merge(right)
    assert merged == StateUpdate(
        task_statuses={1: "R", 2: "D", 3: "F"},
        max_concurrently_running=0,
        array_limits={7: 1, 8: 9},
        workflow_run_status="C",
        sync_time=WHEN,
    )


def test_merge_scalar_none_does_not_override() -> None:
    merged = full_update().merge(StateUpdate(task_statuses={3: "Q"}))
    assert merged.max_concurrently_running == 5
    assert merged.workflow_run_status == "R"
    assert merged.sync_time is WHEN
    assert dict(merged.array_limits) == {7: 3}
    assert dict(merged.task_statuses) == {1: "D", 2: "R", 3: "Q"}


def test_merge_leaves_inputs_unchanged_and_returns_new_object() -> None:
    left, left_before = full_update(), full_update()
    right = StateUpdate(task_statuses={1: "F"}, array_limits={7: 0})
    right_before = StateUpdate(task_statuses={1: "F"}, array_limits={7: 0})
    merged = left.merge(right)
    assert left == left_before
    assert right == right_before
    assert merged is not left
    assert merged is not right
    assert dict(merged.task_statuses) == {1: "F", 2: "R"}
    assert dict(merged.array_limits) == {7: 0}


def test_merge_with_empty_is_identity_in_value() -> None:
    assert full_update().merge(StateUpdate.empty()) == full_update()
    assert StateUpdate.empty().merge(full_update()) == full_update()


# is_empty and __bool__


def test_is_empty_and_bool() -> None:
    assert StateUpdate().is_empty() is True
    assert bool(StateUpdate()) is False
    assert full_update().is_empty() is False
    assert bool(full_update()) is True


@pytest.mark.parametrize(
    "kwargs",
    [
        {"task_statuses": {1: "D"}},
        {"max_concurrently_running": 0},
        {"array_limits": {1: 0}},
        {"workflow_run_status": "R"},
        {"sync_time": WHEN},
        {"sync_time": "2024-05-01 12:00:00"},
    ],
)
def test_any_single_field_makes_it_non_empty(kwargs: dict[str, Any]) -> None:
    update = StateUpdate(**kwargs)
    assert update.is_empty() is False
    assert bool(update) is True


# Immutability


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("task_statuses", {}),
        ("max_concurrently_running", 1),
        ("array_limits", {}),
        ("workflow_run_status", "R"),
        ("sync_time", None),
    ],
)
def test_fields_cannot_be_assigned(name: str, value: Any) -> None:
    update = full_update()
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(update, name, value)
    assert update == full_update()


def test_field_dicts_are_read_only() -> None:
    update = full_update()
    with pytest.raises(TypeError):
        update.task_statuses[3] = "Q"  # type: ignore[index]
    with pytest.raises(TypeError):
        del update.task_statuses[1]  # type: ignore[attr-defined]
    with pytest.raises(TypeError):
        update.array_limits[7] = 0  # type: ignore[index]
    with pytest.raises(TypeError):
        del update.array_limits[7]  # type: ignore[attr-defined]
    assert update == full_update()


def test_input_dicts_are_copied() -> None:
    statuses, limits = {1: "D"}, {7: 3}
    update = StateUpdate(task_statuses=statuses, array_limits=limits)
    statuses[2] = "R"
    limits[7] = 0
    assert dict(update.task_statuses) == {1: "D"}
    assert dict(update.array_limits) == {7: 3}


def test_non_mapping_dict_field_is_rejected() -> None:
    with pytest.raises(InvalidTypeError):
        StateUpdate(task_statuses=[(1, "D")])  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        StateUpdate(array_limits=5)  # type: ignore[arg-type]


# Equality and hash


def test_equal_updates_hash_alike() -> None:
    assert full_update() == full_update()
    assert hash(full_update()) == hash(full_update())
    assert len({full_update(), full_update(), StateUpdate.empty(), StateUpdate()}) == 2
    assert hash(StateUpdate()) == hash(StateUpdate.empty())


def test_dict_order_does_not_matter_for_equality_or_hash() -> None:
    a = StateUpdate(task_statuses={1: "D", 2: "R"})
    b = StateUpdate(task_statuses={2: "R", 1: "D"})
    assert a == b
    assert hash(a) == hash(b)


@pytest.mark.parametrize(
    "other",
    [
        StateUpdate(task_statuses={1: "D"}),
        StateUpdate(task_statuses={1: "D", 2: "Q"}, max_concurrently_running=5),
        StateUpdate(task_statuses={1: "D", 2: "R"}, max_concurrently_running=4),
        StateUpdate(task_statuses={1: "D", 2: "R"}, max_concurrently_running=5, array_limits={}),
    ],
)
def test_different_updates_are_not_equal(other: StateUpdate) -> None:
    assert other != full_update()


def test_not_equal_to_other_types() -> None:
    assert StateUpdate() != {}
    assert StateUpdate() != None  # noqa: E711
    assert (StateUpdate() == object()) is False


def test_repr_shows_fields() -> None:
    text = repr(StateUpdate(task_statuses={1: "D"}, workflow_run_status="R"))
    assert text.startswith("StateUpdate(")
    assert "{1: 'D'}" in text
    assert "workflow_run_status='R'" in text
