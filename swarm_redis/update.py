"""StateUpdate: the immutable delta that the server's responses turn into."""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

SyncTime = datetime.datetime | str


def _frozen(mapping: Mapping[Any, Any] | None, name: str) -> Mapping[Any, Any]:
    if mapping is None:
        return MappingProxyType({})
    if not isinstance(mapping, Mapping):
        from swarm_redis.errors import InvalidTypeError

        raise InvalidTypeError(
            f"StateUpdate.{name} must be a mapping, got {type(mapping).__name__}"
        )
    return MappingProxyType(dict(mapping))


@dataclass(frozen=True)
class StateUpdate:
    """Changes to apply to a swarm state; None or empty means "no change".

    Immutable in fact: the dict fields are copied into read-only mappings, and the instance is
    frozen. ``StateUpdate() == StateUpdate.empty()``.
    """

    task_statuses: Mapping[int, str] = field(default_factory=dict)
    max_concurrently_running: int | None = None
    array_limits: Mapping[int, int] = field(default_factory=dict)
    workflow_run_status: str | None = None
    sync_time: SyncTime | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "task_statuses", _frozen(self.task_statuses, "task_statuses"))
        object.__setattr__(self, "array_limits", _frozen(self.array_limits, "array_limits"))

    def __hash__(self) -> int:
        return hash(
            (
                frozenset(self.task_statuses.items()),
                self.max_concurrently_running,
                frozenset(self.array_limits.items()),
                self.workflow_run_status,
                self.sync_time,
            )
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, StateUpdate):
            return NotImplemented
        return (
            dict(self.task_statuses) == dict(other.task_statuses)
            and self.max_concurrently_running == other.max_concurrently_running
            and dict(self.array_limits) == dict(other.array_limits)
            and self.workflow_run_status == other.workflow_run_status
            and self.sync_time == other.sync_time
        )

    def __repr__(self) -> str:
        return (
            f"StateUpdate(task_statuses={dict(self.task_statuses)!r}, "
            f"max_concurrently_running={self.max_concurrently_running!r}, "
            f"array_limits={dict(self.array_limits)!r}, "
            f"workflow_run_status={self.workflow_run_status!r}, sync_time={self.sync_time!r})"
        )

    #: The fields an update carries: jobmon's ``StateUpdate`` has exactly these.
    FIELDS = (
        "task_statuses",
        "max_concurrently_running",
        "array_limits",
        "workflow_run_status",
        "sync_time",
    )

    @classmethod
    def coerce(cls, update: Any) -> StateUpdate:
        """``update`` as our StateUpdate: ours as is, or any object with all of :attr:`FIELDS`.

        jobmon's scheduler, synchronizer and heartbeat service build jobmon's own StateUpdate
        class; an object of any class with these five attributes is read field by field (and
        then validated like ours). Anything else raises InvalidTypeError naming what is missing.
        """
        if isinstance(update, StateUpdate):
            return update
        missing = [name for name in cls.FIELDS if not hasattr(update, name)]
        if missing:
            from swarm_redis.errors import InvalidTypeError

            raise InvalidTypeError(
                f"apply_update needs a StateUpdate (or an object with its fields "
                f"{', '.join(cls.FIELDS)}), got {type(update).__name__} without "
                f"{', '.join(missing)}"
            )
        return cls(
            task_statuses=update.task_statuses,
            max_concurrently_running=update.max_concurrently_running,
            array_limits=update.array_limits,
            workflow_run_status=update.workflow_run_status,
            sync_time=update.sync_time,
        )

    @classmethod
    def empty(cls) -> StateUpdate:
        """An update that changes nothing."""
        return cls()

    @classmethod
    def from_task_status_response(
        cls,
        tasks_by_status: Mapping[str, Iterable[int | str]],
        sync_time: SyncTime | None = None,
    ) -> StateUpdate:
        """Invert the server's ``{status: [task_ids]}`` shape; numeric string ids become ints.

        If an id appears under two statuses, the one iterated last wins (as in jobmon).
        """
        from swarm_redis.engine.validation import coerce_task_id

        statuses: dict[int, str] = {}
        for status, ids in tasks_by_status.items():
            for task_id in ids:
                statuses[coerce_task_id(task_id, allow_str=True)] = status
        return cls(task_statuses=statuses, sync_time=sync_time)

    def merge(self, other: StateUpdate) -> StateUpdate:
        """A new update combining both; ``other`` wins on conflicts. Neither input changes."""
        return StateUpdate(
            task_statuses={**self.task_statuses, **other.task_statuses},
            max_concurrently_running=(
                other.max_concurrently_running
                if other.max_concurrently_running is not None
                else self.max_concurrently_running
            ),
            array_limits={**self.array_limits, **other.array_limits},
            workflow_run_status=(
                other.workflow_run_status
                if other.workflow_run_status is not None
                else self.workflow_run_status
            ),
            sync_time=other.sync_time if other.sync_time is not None else self.sync_time,
        )

    def is_empty(self) -> bool:
        """True when nothing would change. An update carrying only ``sync_time`` is not empty."""
        return (
            not self.task_statuses
            and not self.array_limits
            and self.max_concurrently_running is None
            and self.workflow_run_status is None
            and self.sync_time is None
        )

    def __bool__(self) -> bool:
        return not self.is_empty()
