"""Input checks run before anything is written: Lua has no rollback, so validate first."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

from swarm_redis.constants import TASK_STATUSES, WORKFLOW_RUN_STATUSES
from swarm_redis.errors import InvalidInputError, InvalidTypeError

_DECIMAL = re.compile(r"[0-9]+")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)


def coerce_task_id(value: Any, *, allow_str: bool = False, what: str = "task id") -> int:
    """An int id (bool rejected); numeric strings only where ``allow_str`` (server responses)."""
    if isinstance(value, bool):
        raise InvalidTypeError(f"{what} must be an int, got bool {value!r}")
    if isinstance(value, int):
        return int(value)
    if allow_str and isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return int(value)
    raise InvalidTypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")


def check_task_status(value: Any, *, task_id: Any = None) -> str:
    """A task status letter from the nine-letter alphabet."""
    if not isinstance(value, str) or value not in TASK_STATUSES:
        where = f" for task {task_id!r}" if task_id is not None else ""
        raise InvalidInputError(
            f"unknown task status {value!r}{where}; expected one of {''.join(TASK_STATUSES)}"
        )
    return value


def check_run_status(value: Any) -> str:
    """A workflow-run status letter."""
    if not isinstance(value, str) or value not in WORKFLOW_RUN_STATUSES:
        raise InvalidInputError(
            f"unknown workflow run status {value!r}; "
            f"expected one of {''.join(WORKFLOW_RUN_STATUSES)}"
        )
    return value


def check_limit(value: Any, what: str) -> int:
    """A non-negative int concurrency limit."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise InvalidInputError(f"{what} must be >= 0, got {value}")
    return int(value)


def check_mapping(value: Any, what: str) -> Mapping[Any, Any]:
    """A mapping, or an error naming the argument."""
    if not isinstance(value, Mapping):
        raise InvalidTypeError(f"{what} must be a mapping, got {type(value).__name__}")
    return value


def sync_stamp(value: Any) -> int:
    """A sortable integer (microseconds since the epoch) for a sync time.

    Naive datetimes and jobmon's "YYYY-MM-DD HH:MM:SS" strings are read as UTC, which is only
    used for ordering: the value itself is stored separately and read back exactly as given.
    """
    when: datetime.datetime
    if isinstance(value, datetime.datetime):
        when = value
    elif isinstance(value, str):
        try:
            text = value.strip()
            if text.endswith(("Z", "z")):  # Python 3.10's fromisoformat has no "Z"
                text = text[:-1] + "+00:00"
            when = datetime.datetime.fromisoformat(text)
        except ValueError:
            raise InvalidInputError(f"sync_time {value!r} is not an ISO date-time") from None
    else:
        raise InvalidTypeError(
            f"sync_time must be a datetime or an ISO string, got {type(value).__name__}"
        )
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.timezone.utc)
    delta = when - _EPOCH
    return (delta.days * 86400 + delta.seconds) * 1_000_000 + delta.microseconds


def encode_sync_time(value: datetime.datetime | str) -> str:
    """A string that :func:`decode_sync_time` turns back into exactly ``value``."""
    if isinstance(value, datetime.datetime):
        return "d:" + value.isoformat()
    return "s:" + value


def decode_sync_time(raw: str | None) -> datetime.datetime | str | None:
    """Inverse of :func:`encode_sync_time`; naive stays naive, strings stay strings."""
    if not raw:
        return None
    if raw.startswith("d:"):
        return datetime.datetime.fromisoformat(raw[2:])
    return raw[2:]
