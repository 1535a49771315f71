"""Conformance with the seed's public API (jobmon client.swarm.state).

The expected signatures are transcribed literally from the seed's API listing, so this test
does not need the listing at run time. Both the in-memory reference state and RedisSwarmState
must offer every seed method and attribute with the seed's parameter names, order and defaults.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Callable
from typing import Any

import pytest

from swarm_redis.testing import oracle as memory
from swarm_redis.update import StateUpdate

EMPTY = inspect.Parameter.empty
POSITIONAL = inspect.Parameter.POSITIONAL_OR_KEYWORD

Spec = tuple[tuple[str, Any], ...]

#: SwarmState(workflow_id, workflow_run_id, dag_id, max_concurrently_running=10000, status='B')
SEED_CONSTRUCTOR: Spec = (
    ("workflow_id", EMPTY),
    ("workflow_run_id", EMPTY),
    ("dag_id", EMPTY),
    ("max_concurrently_running", 10000),
    ("status", "B"),
)

#: Every SwarmState method of the seed listing, parameters after ``self``.
SEED_METHODS: dict[str, Spec] = {
    "add_task": (("task", EMPTY),),
    "add_array": (("array", EMPTY),),
    "get_task": (("task_id", EMPTY),),
    "get_tasks_by_status": (("status", EMPTY),),
    "has_pending_work": (),
    "get_array_capacity": (("array_id", EMPTY),),
    "apply_update": (("update", EMPTY),),
    "update_task_status": (("task_id", EMPTY), ("new_status", EMPTY)),
    "propagate_completions": (("completed_tasks", EMPTY),),
    "enqueue_task": (("task", EMPTY), ("front", False)),
    "dequeue_task": (),
    "get_cached_resources": (("resource_hash", EMPTY),),
    "cache_resources": (("resource_hash", EMPTY), ("task_resources", EMPTY)),
}

#: jobmon's other public queries (not in the listing, used by the orchestrator and its tests).
JOBMON_QUERIES: dict[str, Spec] = {
    name: ()
    for name in (
        "get_active_task_count",
        "get_ready_to_run_count",
        "get_done_count",
        "get_failed_count",
        "get_done_tasks",
        "get_failed_tasks",
        "all_tasks_final",
        "get_available_capacity",
        "get_percent_done",
        "compute_initial_upstream_done_counts",
    )
}

#: Attributes of the seed listing.
SEED_ATTRIBUTES = (
    "workflow_id",
    "workflow_run_id",
    "dag_id",
    "ready_to_run",
    "status",
    "max_concurrently_running",
    "last_sync",
)

#: Attributes other jobmon modules and tests read or assign directly.
JOBMON_ATTRIBUTES = (
    "tasks",
    "arrays",
    "task_resources_cache",
    "num_previously_complete",
    "_task_status_map",
)

#: RedisSwarmState attributes that live on instances, so the class must define them as
#: properties or other descriptors.
REDIS_CLASS_ATTRIBUTES = (
    "tasks",
    "arrays",
    "ready_to_run",
    "status",
    "max_concurrently_running",
    "last_sync",
    "task_resources_cache",
    "num_previously_complete",
    "_task_status_map",
)

#: StateUpdate of the seed listing.
STATE_UPDATE_METHODS: dict[str, Spec] = {
    "empty": (),
    "from_task_status_response": (("tasks_by_status", EMPTY), ("sync_time", None)),
    "merge": (("other", EMPTY),),
}


def redis_swarm_state() -> type[Any]:
    """RedisSwarmState as exported by the package (imported late: it may land after this test)."""
    from swarm_redis import RedisSwarmState

    cls: type[Any] = RedisSwarmState
    return cls


def parameters(func: Callable[..., Any], *, bound: bool) -> list[inspect.Parameter]:
    params = list(inspect.signature(func).parameters.values())
    return params[1:] if bound else params


def describe(params: list[inspect.Parameter]) -> list[tuple[str, Any]]:
    return [(p.name, p.default) for p in params]


def assert_exact(func: Callable[..., Any], spec: Spec, *, bound: bool = True) -> None:
    """The parameters are exactly the seed's, all positional-or-keyword."""
    params = parameters(func, bound=bound)
    assert describe(params) == list(spec)
    assert all(p.kind is POSITIONAL for p in params)


def assert_compatible(func: Callable[..., Any], spec: Spec) -> None:
    """The seed's parameters come first, in order; anything extra is optional."""
    params = parameters(func, bound=True)
    assert describe(params[: len(spec)]) == list(spec)
    assert all(p.kind is POSITIONAL for p in params[: len(spec)])
    for extra in params[len(spec) :]:
        assert extra.default is not EMPTY or extra.kind in (
            inspect.Parameter.VAR_POSITIONAL,
            inspect.Parameter.VAR_KEYWORD,
        ), f"extra parameter {extra.name!r} must be optional"


ALL_METHODS = {**SEED_METHODS, **JOBMON_QUERIES}


# In-memory reference state: exactly the seed.


def test_memory_constructor_signature() -> None:
    assert_exact(memory.SwarmState.__init__, SEED_CONSTRUCTOR)


@pytest.mark.parametrize(("name", "spec"), ALL_METHODS.items(), ids=list(ALL_METHODS))
def test_memory_method_signature(name: str, spec: Spec) -> None:
    method = getattr(memory.SwarmState, name)
    assert callable(method)
    assert_exact(method, spec)


@pytest.mark.parametrize("name", SEED_ATTRIBUTES + JOBMON_ATTRIBUTES)
def test_memory_attribute_exists(name: str) -> None:
    assert hasattr(memory.SwarmState(1, 10, 5), name)


def test_memory_module_exports() -> None:
    assert memory.ACTIVE_TASK_STATUSES == ("Q", "I", "O", "R")
    assert sorted(memory.SERVER_STOP_STATUSES) == ["E", "S", "T"]
    assert memory.TERMINATING_STATUSES == ("C", "H")


# RedisSwarmState: the seed's parameters, plus the Redis connection as keyword-only.


def test_redis_constructor_signature() -> None:
    params = parameters(redis_swarm_state().__init__, bound=True)
    assert describe(params[:5]) == list(SEED_CONSTRUCTOR)
    assert all(p.kind is POSITIONAL for p in params[:5])
    assert [p.name for p in params[5:7]] == ["redis", "prefix"]
    redis_param, prefix_param = params[5:7]
    # Tuning options may follow, but only as optional keywords: the seed's call still works.
    for extra in params[7:]:
        assert extra.kind is inspect.Parameter.KEYWORD_ONLY, extra.name
        assert extra.default is not EMPTY, extra.name
    assert redis_param.kind is inspect.Parameter.KEYWORD_ONLY
    assert redis_param.default in (EMPTY, None)
    assert prefix_param.kind is inspect.Parameter.KEYWORD_ONLY
    assert prefix_param.default == "swarm"


@pytest.mark.parametrize(("name", "spec"), ALL_METHODS.items(), ids=list(ALL_METHODS))
def test_redis_method_signature(name: str, spec: Spec) -> None:
    method = getattr(redis_swarm_state(), name)
    assert callable(method)
    assert_compatible(method, spec)


@pytest.mark.parametrize("name", REDIS_CLASS_ATTRIBUTES)
def test_redis_instance_attribute_is_a_class_descriptor(name: str) -> None:
    assert hasattr(redis_swarm_state(), name)


@pytest.mark.parametrize("name", ["workflow_id", "workflow_run_id", "dag_id"])
def test_redis_identity_attribute_exists(name: str) -> None:
    cls = redis_swarm_state()
    if hasattr(cls, name):
        return
    # Plain instance attributes: build an instance on a private in-process server.
    fakeredis = pytest.importorskip("fakeredis")
    client = fakeredis.FakeRedis(server=fakeredis.FakeServer(), protocol=2)
    state = cls(1, 10, 5, redis=client, prefix="seedapi")
    assert getattr(state, name) == {"workflow_id": 1, "workflow_run_id": 10, "dag_id": 5}[name]


def test_redis_module_has_logger() -> None:
    module = sys.modules[redis_swarm_state().__module__]
    assert hasattr(module, "logger")


# StateUpdate (shared by both states).


@pytest.mark.parametrize(
    ("name", "spec"), STATE_UPDATE_METHODS.items(), ids=list(STATE_UPDATE_METHODS)
)
def test_state_update_method_signature(name: str, spec: Spec) -> None:
    # Classmethods and methods are read from an instance so that ``cls``/``self`` is bound.
    assert_exact(getattr(StateUpdate(), name), spec, bound=False)


def test_state_update_sync_time_defaults_to_none() -> None:
    assert StateUpdate().sync_time is None
    assert inspect.signature(StateUpdate).parameters["sync_time"].default is None
