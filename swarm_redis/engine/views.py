"""Attribute views that let jobmon's code keep using ``state.tasks``, ``state.ready_to_run`` ...

Each view reads through to Redis on every access (through the owning state's public methods),
so what it shows is never a stale local copy.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from typing import TYPE_CHECKING, Any

from swarm_redis.constants import SEED_TRACKED_STATUSES, TASK_STATUSES

if TYPE_CHECKING:
    from swarm_redis.state import RedisSwarmState


class TasksView(Mapping[int, Any]):
    """``state.tasks``: task id -> task object, for every task of the run in Redis."""

    def __init__(self, state: RedisSwarmState) -> None:
        self._state = state

    def __getitem__(self, task_id: int) -> Any:
        task = self._state.get_task(task_id)
        if task is None:
            raise KeyError(task_id)
        return task

    def __contains__(self, task_id: object) -> bool:
        if isinstance(task_id, bool) or not isinstance(task_id, int):
            return False
        return self._state.get_task(task_id) is not None

    def __len__(self) -> int:
        return self._state.task_count()

    def __iter__(self) -> Iterator[int]:
        return iter(self._state.get_all_tasks())

    def values(self) -> Any:  # refreshed objects in one pass, not one read per key
        return list(self._state.get_all_tasks().values())

    def items(self) -> Any:
        return list(self._state.get_all_tasks().items())

    def __setitem__(self, task_id: int, task: Any) -> None:
        """``tasks[k] = task`` registers it (as ``add_task``; nothing is ever removed)."""
        if getattr(task, "task_id", task_id) != task_id:
            raise KeyError(f"task key {task_id!r} differs from its task_id {task.task_id!r}")
        self._state.add_task(task)


class ArraysView(MutableMapping[int, Any]):
    """``state.arrays``: array id -> array object; ``arrays[k] = array`` registers it."""

    def __init__(self, state: RedisSwarmState) -> None:
        self._state = state

    def _current(self) -> dict[int, Any]:
        return self._state.get_arrays()

    def __getitem__(self, array_id: int) -> Any:
        return self._current()[array_id]

    def __setitem__(self, array_id: int, array: Any) -> None:
        if getattr(array, "array_id", array_id) != array_id:
            raise KeyError(f"array key {array_id!r} differs from its array_id {array.array_id!r}")
        self._state.add_array(array)

    def __delitem__(self, array_id: int) -> None:
        raise TypeError("arrays cannot be removed from a run")

    def __iter__(self) -> Iterator[int]:
        return iter(self._current())

    def __len__(self) -> int:
        return len(self._current())


class ReadyQueueView:
    """``state.ready_to_run``: a deque-like view over the shared ready queue."""

    def __init__(self, state: RedisSwarmState) -> None:
        self._state = state

    def __len__(self) -> int:
        return self._state.get_ready_to_run_count()

    def __bool__(self) -> bool:
        return len(self) > 0

    def __getitem__(self, index: int) -> Any:
        if not isinstance(index, int):
            raise TypeError("ready_to_run indices must be integers")
        found = self._state.ready_to_run_list(index, index)
        if not found:
            raise IndexError("ready_to_run index out of range")
        return found[0]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._state.ready_to_run_list())

    def __contains__(self, task: object) -> bool:
        return any(t is task or t == task for t in self)

    def append(self, task: Any) -> None:
        self._state.enqueue_task(task)

    def appendleft(self, task: Any) -> None:
        self._state.enqueue_task(task, front=True)

    def extend(self, tasks: Any) -> None:
        self._state.enqueue_tasks(list(tasks))

    def popleft(self) -> Any:
        task = self._state.dequeue_task()
        if task is None:
            raise IndexError("pop from an empty ready_to_run")
        return task

    def clear(self) -> None:
        """Take every queued task off the shared queue (they stay registered)."""
        while self._state.dequeue_tasks(1000):
            pass

    def __repr__(self) -> str:
        return f"ReadyQueueView({list(self)!r})"


class StatusMapView(Mapping[str, set[Any]]):
    """Read-only ``state._task_status_map``: status -> snapshot set of task objects.

    Its keys are the seed's eight buckets (jobmon's tests check that exact set); 'E', which the
    seed does not track but Redis does, is still readable by index.
    """

    def __init__(self, state: RedisSwarmState) -> None:
        self._state = state

    def __getitem__(self, status: str) -> set[Any]:
        if status not in TASK_STATUSES:
            raise KeyError(status)
        return self._state.get_tasks_by_status(status)

    def __iter__(self) -> Iterator[str]:
        return iter(SEED_TRACKED_STATUSES)

    def __len__(self) -> int:
        return len(SEED_TRACKED_STATUSES)


class ResourceCacheView(MutableMapping[Any, Any]):
    """``state.task_resources_cache``: resource hash -> cached resources (first writer wins)."""

    def __init__(self, state: RedisSwarmState) -> None:
        self._state = state

    def __getitem__(self, resource_hash: Any) -> Any:
        value = self._state.get_cached_resources(resource_hash)
        if value is None:
            raise KeyError(resource_hash)
        return value

    def __setitem__(self, resource_hash: Any, value: Any) -> None:
        self._state.cache_resources(resource_hash, value)

    def __delitem__(self, resource_hash: Any) -> None:
        raise TypeError("the shared resource cache has no eviction")

    def __iter__(self) -> Iterator[Any]:
        return iter(self._state.resource_keys())

    def __len__(self) -> int:
        return len(self._state.resource_keys())
