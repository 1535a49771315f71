"""The snapshot format: key types, bounds, errors and the shapes shared by export and import."""

from __future__ import annotations

import base64
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from swarm_redis.engine.keys import RUN_KEY_TYPES, RunKeys
from swarm_redis.errors import SwarmRedisError

FORMAT = "swarm-redis-snapshot"
FORMAT_VERSION = 1
_CHUNK = 500

#: Keys of the key table that snapshots leave out: keys with a TTL whose meaning ends with the
#: processes that wrote them (the reap mutex; the reply cache of retried calls; the lease of a
#: jobmon run's distributor). Import skips them with a note.
TRANSIENT_KEYS: frozenset[str] = frozenset({"reap_lock", "replies", "reply_at", "distributor"})
#: Redis type of each key of the key table that a snapshot carries: keys.RUN_KEY_TYPES without
#: the transient keys.
KEY_TYPES: dict[str, str] = {
    name: kind for name, kind in RUN_KEY_TYPES.items() if name not in TRANSIENT_KEYS
}


#: Largest snapshot file import reads (bytes); the CLI's ``import --max-bytes`` changes it.
MAX_FILE_BYTES = 1 << 30
#: Largest single string (hash field or value, member, list item, stream field or value).
MAX_VALUE_BYTES = 1 << 20
#: Most elements (hash pairs, members, list items, stream entries) in one snapshot.
MAX_ELEMENTS = 20_000_000
#: TTL of the temporary keys an import writes before it moves them into place.
TEMP_TTL_MS = 3_600_000

_INT64_MAX = (1 << 63) - 1
_RUN_ID_RE = re.compile(r"-?[0-9]{1,19}")


class SnapshotError(SwarmRedisError, ValueError):
    """The file is not a snapshot this version can import (nothing was written)."""


class RunExistsError(SwarmRedisError, FileExistsError):
    """Import refused: the run already has keys (pass ``force=True`` to replace them)."""


def _enc(value: Any) -> Any:
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(bytes(value)).decode("ascii")}


def _sort_key(item: Any) -> Any:
    first = item[0] if isinstance(item, list) else item
    return (1, first["b64"]) if isinstance(first, dict) else (0, first)


def parse_run_id(value: Any, *, what: str = "run id") -> int:
    """A workflow run id given as an int or a decimal string (int64), else SnapshotError."""
    if isinstance(value, bool):
        raise SnapshotError(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int) and -_INT64_MAX <= value <= _INT64_MAX:
        return value
    if isinstance(value, str) and _RUN_ID_RE.fullmatch(value):
        number = int(value)
        if -_INT64_MAX <= number <= _INT64_MAX:
            return number
    raise SnapshotError(f"{what} must be an integer, got {value!r}")


def run_keys_present(client: Any, keys: RunKeys) -> list[str]:
    """The keys of the key table that exist for this run (by name, no SCAN)."""
    pipe = client.pipeline(transaction=False)
    for key in keys.all:
        pipe.exists(key)
    return [key for key, n in zip(keys.all, pipe.execute()) if int(n)]


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


@dataclass
class _Entry:
    """One key to write: its name in the key table, Redis type and decoded content."""

    name: str
    kind: str
    items: list[Any]  # hash: (field, value) pairs; set/list: members; string: [value]
    stream: dict[str, Any] | None = None


@dataclass
class ImportPlan:
    """A snapshot checked in full: where it goes and what to write (see :func:`import_run`)."""

    keys: RunKeys
    entries: list[_Entry]
    notes: list[str] = field(default_factory=list)

    @property
    def key_count(self) -> int:
        return len(self.entries)
