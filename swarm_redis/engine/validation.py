"""Input checks run before anything is written: Lua has no rollback, so validate first."""

from __future__ import annotations

import datetime
import math
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

from swarm_redis.constants import TASK_STATUSES, WORKFLOW_RUN_STATUSES
from swarm_redis.errors import InvalidInputError, InvalidTypeError

_DECIMAL = re.compile(r"[0-9]+")
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.timezone.utc)

#: Largest integer a Lua number (a double) holds exactly: every count, id, limit and stamp that
#: a script may do arithmetic on stays in 0..MAX_SAFE_INT (Lua would print 2^60 as 1.15e+18).
MAX_SAFE_INT = 2**53 - 1
#: Cap of the run's event stream: 0 (events off) .. 10,000,000 entries.
MAX_EVENTS_MAXLEN = 10_000_000
#: Per-task event detail threshold: 0 .. 100,000 tasks per call.
MAX_DETAIL_MAX = 100_000
#: Replica and leadership leases: 1 ms .. 1 day.
MIN_TTL_MS = 1
MAX_TTL_MS = 86_400_000
#: The reap mutex interval: 1 ms .. 1 hour.
MAX_REAP_LOCK_MS = 3_600_000
#: Default allowed clock skew of a sync_time into the future (seconds): one day covers jobmon's
#: naive "YYYY-MM-DD HH:MM:SS" server times written in any local time zone (UTC-12 .. UTC+14,
#: read here as UTC) plus ordinary clock drift, and still refuses a year-9999 stamp that would
#: freeze last_sync and every task's stale guard for good.
DEFAULT_MAX_CLOCK_SKEW_S = 86_400.0
#: Upper bound of the configurable skew: ten years.
MAX_CLOCK_SKEW_S = 10 * 365 * 86_400.0


def check_int(value: Any, what: str, *, lo: int = 0, hi: int = MAX_SAFE_INT, unit: str = "") -> int:
    """An int in ``lo..hi`` (bool, float, nan, str and None refused)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    if not lo <= value <= hi:
        raise InvalidInputError(f"{what} must be in {lo}..{hi}{unit}, got {value}")
    return int(value)


def check_flag(value: Any, what: str) -> bool:
    """A bool (0 and 1 pass as False and True): anything else is refused, not taken for its
    truth value ("0" is true in Python) or sent as int() of it (nan, None)."""
    if value is True or value is False or (type(value) is int and value in (0, 1)):
        return bool(value)
    raise InvalidTypeError(f"{what} must be a bool, got {type(value).__name__} {value!r}")


def check_run_ids(workflow_id: Any, workflow_run_id: Any, dag_id: Any) -> tuple[int, int, int]:
    """The three ids of a run: ints in 0..2^53-1."""
    return (
        check_int(workflow_id, "workflow_id"),
        check_int(workflow_run_id, "workflow_run_id"),
        check_int(dag_id, "dag_id"),
    )


def check_upstreams(num_upstreams: Any, num_upstreams_done: Any, *, task_id: Any) -> None:
    """``0 <= num_upstreams_done <= num_upstreams <= 2^53-1``."""
    nup = check_int(num_upstreams, f"num_upstreams of task {task_id!r}")
    done = check_int(num_upstreams_done, f"num_upstreams_done of task {task_id!r}")
    if done > nup:
        raise InvalidInputError(
            f"num_upstreams_done of task {task_id!r} ({done}) exceeds its num_upstreams ({nup})"
        )


def check_events_maxlen(value: Any) -> int:
    """The event stream cap: an int in 0..MAX_EVENTS_MAXLEN (0 switches events off)."""
    return check_int(value, "events_maxlen", hi=MAX_EVENTS_MAXLEN)


def check_detail_max(value: Any) -> int:
    """Calls up to this many tasks get per-task events: an int in 0..MAX_DETAIL_MAX."""
    return check_int(value, "event_detail_max", hi=MAX_DETAIL_MAX)


def seconds_to_ms(
    value: Any, what: str, *, lo_ms: int = MIN_TTL_MS, hi_ms: int = MAX_TTL_MS
) -> int:
    """A duration in seconds (int or float, finite) as whole ms in ``lo_ms..hi_ms``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(
            f"{what} must be a number of seconds, got {type(value).__name__} {value!r}"
        )
    if not math.isfinite(value) or value <= 0:
        raise InvalidInputError(f"{what} must be a finite number of seconds > 0, got {value!r}")
    ms = max(1, round(value * 1000)) if value * 1000 < 2 * hi_ms else hi_ms + 1
    if not lo_ms <= ms <= hi_ms:
        raise InvalidInputError(
            f"{what} must be within {lo_ms / 1000:g}..{hi_ms / 1000:g} s, got {value!r}"
        )
    return ms


def check_clock_skew(value: Any) -> float:
    """The allowed future skew of a sync_time, in seconds (a number or a timedelta)."""
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidTypeError(
            f"max_clock_skew must be seconds or a timedelta, got {type(value).__name__} {value!r}"
        )
    if not math.isfinite(value) or not 0 <= value <= MAX_CLOCK_SKEW_S:
        raise InvalidInputError(
            f"max_clock_skew must be within 0..{MAX_CLOCK_SKEW_S:g} s, got {value!r}"
        )
    return float(value)


def check_sync_stamp(stamp: int, value: Any, max_skew_s: float, now: float | None = None) -> int:
    """Refuse a sync stamp (µs) before the epoch or more than ``max_skew_s`` in the future."""
    if stamp < 0:
        raise InvalidInputError(f"sync_time {value!r} is before 1970-01-01 UTC")
    wall = time.time() if now is None else now
    limit = int((wall + max_skew_s) * 1_000_000)
    if stamp > limit:
        raise InvalidInputError(
            f"sync_time {value!r} is {(stamp - wall * 1_000_000) / 1e6:.0f} s in the future "
            f"(more than max_clock_skew={max_skew_s:g} s ahead of this replica's clock)"
        )
    return stamp


_RECORD = re.compile(
    r"([GQIORDEAF])\|([0-9]{1,16})\|([0-9]{0,16})\|([^|]*)\|([0-9]{1,16})\|([0-9]{1,16})\|"
    r"([0-9]{1,16})\|((?:-?[0-9]+(?:,-?[0-9]+)*)?|\*[1-9][0-9]{0,4})"
)


def record_problem(raw: Any) -> str | None:
    """Why a stored task record ``S|done|stamp|flags|array|nup|start|children`` is unusable, or
    None when it parses (a known status letter, every number in 0..2^53-1). A done count above
    the number of upstreams still parses: :mod:`swarm_redis.ops.verify` reports it as drift."""
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            return "not UTF-8"
    if not isinstance(raw, str):
        return f"not a string ({type(raw).__name__})"
    m = _RECORD.fullmatch(raw)
    if m is None:
        return "does not match S|done|stamp|flags|array|nup|start|children"
    nums = [int(m.group(i)) for i in (2, 5, 6, 7)] + ([int(m.group(3))] if m.group(3) else [])
    if any(n > MAX_SAFE_INT for n in nums):
        return "a number exceeds 2^53-1"
    return None


def coerce_task_id(value: Any, *, allow_str: bool = False, what: str = "task id") -> int:
    """An int id (bool rejected); numeric strings only where ``allow_str`` (server responses)."""
    if isinstance(value, bool):
        raise InvalidTypeError(f"{what} must be an int, got bool {value!r}")
    if isinstance(value, int):
        return int(value)
    if allow_str and isinstance(value, str) and _DECIMAL.fullmatch(value.strip()):
        return int(value)
    raise InvalidTypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")


_STATUS_SET = frozenset(TASK_STATUSES)


def checked_changes(
    pairs: Iterable[tuple[Any, Any]], *, allow_str: bool = False
) -> list[tuple[int, str]]:
    """(task id, status) pairs as ``(int, letter)``, each checked as :func:`coerce_task_id` and
    :func:`check_task_status` check it. The usual pair (an int and a letter) costs one type
    test and one set lookup: this runs once per task of every update."""
    out = []
    for task_id, status in pairs:
        if type(task_id) is int and type(status) is str and status in _STATUS_SET:
            out.append((task_id, status))
            continue
        tid = coerce_task_id(task_id, allow_str=allow_str)
        out.append((tid, check_task_status(status, task_id=tid)))
    return out


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
    """A concurrency limit: an int in 0..2^53-1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidTypeError(f"{what} must be an int, got {type(value).__name__} {value!r}")
    if value < 0:
        raise InvalidInputError(f"{what} must be >= 0, got {value}")
    if value > MAX_SAFE_INT:
        raise InvalidInputError(f"{what} must be <= 2^53-1 ({MAX_SAFE_INT}), got {value}")
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


def stored_int(raw: Any, default: int = 0) -> int:
    """An integer read back from Redis, or ``default`` when it does not parse (never trust what
    is stored: a bad meta field must not make ``attach()`` fail for every replica)."""
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if isinstance(raw, str) and re.fullmatch(r"-?[0-9]{1,19}", raw.strip()):
        return int(raw)
    return default
